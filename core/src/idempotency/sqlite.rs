//! Idempotency keys in SQLite (table `idempotency_keys`, migration 0004).
use super::{CLAIM_ROUNDS, Claim, ClaimOutcome, IdempotencyStore, outcome_of_existing};
use crate::{CoreError, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

pub struct SqliteIdempotencyStore {
    pool: SqlitePool,
}

impl SqliteIdempotencyStore {
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(SqliteIdempotencyStore {
            pool: crate::jobstore::open_sqlite_pool(url, 2).await?,
        })
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotencyStore {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome> {
        let now = micros(claim.now);
        for _ in 0..CLAIM_ROUNDS {
            // Insert, or take over a row that expired or whose holder never finished.
            let taken = sqlx::query(
                "INSERT INTO idempotency_keys \
                 (scope, key, fingerprint, claim_token, job_id, created_at, lease_until, expires_at) \
                 VALUES (?, ?, ?, ?, NULL, ?, ?, ?) \
                 ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
                 claim_token = excluded.claim_token, job_id = NULL, created_at = excluded.created_at, \
                 lease_until = excluded.lease_until, expires_at = excluded.expires_at \
                 WHERE idempotency_keys.expires_at <= ? \
                 OR (idempotency_keys.job_id IS NULL AND idempotency_keys.lease_until <= ?)",
            )
            .bind(&claim.scope)
            .bind(&claim.key)
            .bind(&claim.fingerprint)
            .bind(claim.token.to_string())
            .bind(now)
            .bind(micros(claim.now + claim.lease))
            .bind(micros(claim.now + claim.ttl))
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
            if taken.rows_affected() == 1 {
                return Ok(ClaimOutcome::Claimed);
            }
            let row =
                sqlx::query("SELECT fingerprint, job_id FROM idempotency_keys WHERE scope = ? AND key = ?")
                    .bind(&claim.scope)
                    .bind(&claim.key)
                    .fetch_optional(&self.pool)
                    .await?;
            let Some(row) = row else { continue };
            let fingerprint: String = row.try_get("fingerprint")?;
            let job: Option<String> = row.try_get("job_id")?;
            let job = job
                .map(|id| Uuid::parse_str(&id))
                .transpose()
                .map_err(|e| CoreError::Corrupt(format!("idempotency key job id: {e}")))?;
            return Ok(outcome_of_existing(claim, &fingerprint, job));
        }
        Ok(ClaimOutcome::InProgress)
    }

    async fn complete(&self, claim: &Claim, job: Uuid) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE idempotency_keys SET job_id = ? WHERE scope = ? AND key = ? AND claim_token = ?",
        )
        .bind(job.to_string())
        .bind(&claim.scope)
        .bind(&claim.key)
        .bind(claim.token.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, claim: &Claim) -> Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND claim_token = ? \
             AND job_id IS NULL",
        )
        .bind(&claim.scope)
        .bind(&claim.key)
        .bind(claim.token.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= ?")
            .bind(micros(now))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
