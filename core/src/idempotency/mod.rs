//! Idempotent uploads (`Idempotency-Key`): the first request with a key claims it, stores its job
//! and records the job's id; a repeat with the same key and the same request answers with that
//! job, a repeat while the first is still being stored is told so (409), and the same key with a
//! different request is refused (422). Kept in the job store's database, so that the answer is the
//! same on every replica and after restarts.
mod postgres;
mod sqlite;

use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

pub use postgres::PostgresIdempotencyStore;
pub use sqlite::SqliteIdempotencyStore;

/// Longest accepted `Idempotency-Key` (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;

/// Check a presented key: 1-255 visible ASCII characters (a UUID is typical). Pure.
pub fn validate_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("at most {MAX_KEY_LEN} characters, got {}", key.len()));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("only visible ASCII characters (no spaces), e.g. a UUID".into());
    }
    Ok(())
}

/// A request's claim on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// Whose key it is: the caller's owner ('' without authentication).
    pub scope: String,
    pub key: String,
    /// Hex SHA-256 of the request as understood (its fields and file), see the API.
    pub fingerprint: String,
    /// Identifies this request's claim; only it may complete or release the key.
    pub token: Uuid,
    pub now: DateTime<Utc>,
    /// How long the key is kept (24 h by default), from `now`.
    pub ttl: chrono::Duration,
    /// How long an unfinished claim is held before it counts as abandoned (a crash).
    pub lease: chrono::Duration,
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The key is this request's: store the job, then [`IdempotencyStore::complete`].
    Claimed,
    /// The same request was stored before: answer with its job.
    Replay(Uuid),
    /// The same key is held by a request still being stored.
    InProgress,
    /// The key was used for a different request.
    Mismatch,
}

/// What the row of a key held by someone else says (pure decision, shared by both backends).
pub(crate) fn outcome_of_existing(claim: &Claim, fingerprint: &str, job: Option<Uuid>) -> ClaimOutcome {
    if fingerprint != claim.fingerprint {
        return ClaimOutcome::Mismatch;
    }
    match job {
        Some(id) => ClaimOutcome::Replay(id),
        None => ClaimOutcome::InProgress,
    }
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claim `claim.key` for this request unless a live row holds it (a row whose `expires_at`
    /// passed, or an unfinished claim whose lease ran out, is replaced).
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome>;

    /// Record the job the claim stored; false when the claim is no longer this request's.
    async fn complete(&self, claim: &Claim, job: Uuid) -> Result<bool>;

    /// Give the key up after the request failed (nothing was stored), so that a retry can use it.
    async fn release(&self, claim: &Claim) -> Result<()>;

    /// Delete keys whose `expires_at` is before `now`; how many went.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64>;
}

pub type DynIdempotencyStore = Arc<dyn IdempotencyStore>;

/// The store in the database named by `url` (`sqlite://...` or `postgres://...`), which
/// `jobstore::connect` has migrated.
pub async fn connect(url: &str, max_connections: u32) -> Result<DynIdempotencyStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteIdempotencyStore::connect(url).await?))
    } else {
        Ok(Arc::new(PostgresIdempotencyStore::connect(url, max_connections)?))
    }
}

/// How many times a claim re-reads when the row it collided with vanished in between (expired
/// and purged, or released).
pub(crate) const CLAIM_ROUNDS: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(fingerprint: &str) -> Claim {
        Claim {
            scope: "alice".into(),
            key: "k".into(),
            fingerprint: fingerprint.into(),
            token: Uuid::new_v4(),
            now: crate::model::now(),
            ttl: chrono::Duration::hours(24),
            lease: chrono::Duration::minutes(5),
        }
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(validate_key("5f2b7c1e-4c8e-4b7a-9d0e-2f6a1b3c4d5e").is_ok());
        assert!(validate_key(&"x".repeat(255)).is_ok());
        for bad in ["", "a b", "tab\t", "josé", &"x".repeat(256)] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_existing_row_decides_by_fingerprint_then_by_job() {
        let id = Uuid::new_v4();
        assert_eq!(
            outcome_of_existing(&claim("a"), "a", Some(id)),
            ClaimOutcome::Replay(id)
        );
        assert_eq!(
            outcome_of_existing(&claim("a"), "a", None),
            ClaimOutcome::InProgress
        );
        assert_eq!(
            outcome_of_existing(&claim("a"), "b", Some(id)),
            ClaimOutcome::Mismatch
        );
        assert_eq!(
            outcome_of_existing(&claim("a"), "b", None),
            ClaimOutcome::Mismatch
        );
    }
}
