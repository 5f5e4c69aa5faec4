//! Idempotency keys in PostgreSQL (table `idempotency_keys`, migration 0004).
use super::{CLAIM_ROUNDS, Claim, ClaimOutcome, IdempotencyStore, outcome_of_existing};
use crate::Result;
use crate::jobstore::PostgresJobStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub struct PostgresIdempotencyStore {
    pool: PgPool,
}

impl PostgresIdempotencyStore {
    /// A lazily connecting pool on the (already migrated) database at `url`.
    pub fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Ok(PostgresIdempotencyStore {
            pool: PostgresJobStore::pool(url, max_connections)?,
        })
    }
}

#[async_trait]
impl IdempotencyStore for PostgresIdempotencyStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome> {
        for _ in 0..CLAIM_ROUNDS {
            // Insert, or take over a row that expired or whose holder never finished; the
            // conflict is resolved under the row's lock, so two claims never both win.
            let taken = sqlx::query(
                "INSERT INTO idempotency_keys AS k \
                 (scope, key, fingerprint, claim_token, job_id, created_at, lease_until, expires_at) \
                 VALUES ($1, $2, $3, $4, NULL, $5, $6, $7) \
                 ON CONFLICT (scope, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
                 claim_token = EXCLUDED.claim_token, job_id = NULL, created_at = EXCLUDED.created_at, \
                 lease_until = EXCLUDED.lease_until, expires_at = EXCLUDED.expires_at \
                 WHERE k.expires_at <= $5 OR (k.job_id IS NULL AND k.lease_until <= $5)",
            )
            .bind(&claim.scope)
            .bind(&claim.key)
            .bind(&claim.fingerprint)
            .bind(claim.token)
            .bind(claim.now)
            .bind(claim.now + claim.lease)
            .bind(claim.now + claim.ttl)
            .execute(&self.pool)
            .await?;
            if taken.rows_affected() == 1 {
                return Ok(ClaimOutcome::Claimed);
            }
            let row =
                sqlx::query("SELECT fingerprint, job_id FROM idempotency_keys WHERE scope = $1 AND key = $2")
                    .bind(&claim.scope)
                    .bind(&claim.key)
                    .fetch_optional(&self.pool)
                    .await?;
            let Some(row) = row else { continue };
            let fingerprint: String = row.try_get("fingerprint")?;
            let job: Option<Uuid> = row.try_get("job_id")?;
            return Ok(outcome_of_existing(claim, &fingerprint, job));
        }
        Ok(ClaimOutcome::InProgress)
    }

    async fn complete(&self, claim: &Claim, job: Uuid) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET job_id = $1 WHERE scope = $2 AND key = $3 AND claim_token = $4",
        )
        .bind(job)
        .bind(&claim.scope)
        .bind(&claim.key)
        .bind(claim.token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND claim_token = $3 \
             AND job_id IS NULL",
        )
        .bind(&claim.scope)
        .bind(&claim.key)
        .bind(claim.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
