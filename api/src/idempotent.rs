//! `Idempotency-Key` on uploads: the header, the request's fingerprint, and the claim on the key
//! in the job store's database (see `thumbnail_core::idempotency`).
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use thumbnail_core::idempotency::{Claim, ClaimOutcome, validate_key};
use tracing::warn;
use uuid::Uuid;

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that repeats the first request's (Stripe's name).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// How long a claim is held before it counts as abandoned: the request has been received by then,
/// so what remains (store the original, insert the row, launch) takes seconds.
const LEASE: chrono::Duration = chrono::Duration::minutes(5);

/// The header's value, checked; `None` when absent. Pure.
pub fn key_of(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::Invalid("Idempotency-Key: send the header once".into()));
    }
    let key = value
        .to_str()
        .map_err(|_| ApiError::Invalid("Idempotency-Key: only visible ASCII characters".into()))?;
    validate_key(key).map_err(|e| ApiError::Invalid(format!("Idempotency-Key: {e}")))?;
    Ok(Some(key.to_owned()))
}

/// Hex SHA-256 over what the service understood of a request: which endpoint, every text field
/// (query parameters included, by name) and the file's SHA-256. The multipart framing (boundary,
/// field order, file name) does not count, so an identical retry from any client matches. Pure.
pub fn fingerprint(endpoint: &str, fields: &HashMap<String, String>, files: &[[u8; 32]]) -> String {
    let mut names: Vec<&String> = fields.keys().collect();
    names.sort();
    let mut hash = Sha256::new();
    // Every part length-prefixed, so that no two different requests give the same byte stream.
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    part(endpoint.as_bytes());
    for name in names {
        part(name.as_bytes());
        part(fields[name].as_bytes());
    }
    for file in files {
        part(file);
    }
    hex::encode(hash.finalize())
}

/// A claim this request holds on a key.
pub struct Held(Claim);

/// What to do with a request that carries a key.
pub enum Decision {
    /// Go on; settle the claim with [`Held::complete`] or [`Held::release`].
    Proceed(Held),
    /// Answer with the first request's job.
    Replay(Uuid),
}

/// Step "claim": take the key for this request, or learn what holds it.
pub async fn claim(
    state: &SharedState,
    principal: &Principal,
    key: String,
    fingerprint: String,
) -> ApiResult<Decision> {
    let claim = Claim {
        scope: principal.owner.clone().unwrap_or_default(),
        key,
        fingerprint,
        token: Uuid::new_v4(),
        now: thumbnail_core::model::now(),
        ttl: state.idempotency_ttl,
        lease: LEASE,
    };
    match state.idempotency.claim(&claim).await? {
        ClaimOutcome::Claimed => Ok(Decision::Proceed(Held(claim))),
        ClaimOutcome::Replay(id) => Ok(Decision::Replay(id)),
        ClaimOutcome::InProgress => Err(ApiError::Conflict(
            "Idempotency-Key: a request with this key is still being processed; retry it in a moment".into(),
        )),
        ClaimOutcome::Mismatch => Err(ApiError::Invalid(
            "Idempotency-Key: this key was already used for a different request (other fields or another \
             file); use a new key for a new request"
                .into(),
        )),
    }
}

impl Held {
    /// The job is stored: later requests with the key get it.
    pub async fn complete(self, state: &SharedState, job: Uuid) {
        match state.idempotency.complete(&self.0, job).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(job_id = %job, "the idempotency key was taken over before the job was recorded")
            }
            // The job exists; the key stays unfinished until its lease runs out.
            Err(error) => warn!(job_id = %job, %error, "could not record the job of an idempotency key"),
        }
    }

    /// Nothing was stored: a retry may use the key.
    pub async fn release(self, state: &SharedState) {
        if let Err(error) = state.idempotency.release(&self.0).await {
            warn!(%error, "could not release an idempotency key; it frees itself when its lease runs out");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_fingerprint_ignores_order_and_sees_every_value() {
        let file = [7u8; 32];
        let a = fingerprint(
            "thumbnails",
            &fields(&[("width", "200"), ("fit", "contain")]),
            &[file],
        );
        let b = fingerprint(
            "thumbnails",
            &fields(&[("fit", "contain"), ("width", "200")]),
            &[file],
        );
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        for other in [
            fingerprint(
                "thumbnails",
                &fields(&[("width", "201"), ("fit", "contain")]),
                &[file],
            ),
            fingerprint("thumbnails", &fields(&[("width", "200")]), &[file]),
            fingerprint(
                "thumbnails",
                &fields(&[("width", "200"), ("fit", "contain")]),
                &[[8u8; 32]],
            ),
            fingerprint(
                "batches",
                &fields(&[("width", "200"), ("fit", "contain")]),
                &[file],
            ),
            // Moving bytes between name and value changes it too.
            fingerprint(
                "thumbnails",
                &fields(&[("width2", "00"), ("fit", "contain")]),
                &[file],
            ),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn the_header_is_checked() {
        let mut headers = HeaderMap::new();
        assert!(key_of(&headers).unwrap().is_none());
        headers.insert(HEADER, "order-42".parse().unwrap());
        assert_eq!(key_of(&headers).unwrap().as_deref(), Some("order-42"));
        headers.append(HEADER, "again".parse().unwrap());
        assert!(matches!(key_of(&headers), Err(ApiError::Invalid(d)) if d.contains("once")));
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, "has space".parse().unwrap());
        assert!(matches!(key_of(&headers), Err(ApiError::Invalid(d)) if d.starts_with("Idempotency-Key")));
    }
}
