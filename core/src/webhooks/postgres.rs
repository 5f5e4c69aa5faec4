//! The outbox on PostgreSQL, shared by every API replica: a claim locks the due rows it takes
//! with `FOR UPDATE SKIP LOCKED` (concurrent claimers take other rows instead of waiting) and
//! leases them, so one replica at a time attempts a delivery; a lease that runs out (a replica
//! that died mid-attempt) lets another claim it again.
use super::{Attempt, Claimed, Delivery, DeliveryState, DeliveryStore, Next, OutboxEvent};
use crate::Result;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

pub struct PostgresDeliveryStore {
    pool: PgPool,
}

impl PostgresDeliveryStore {
    /// A lazily connecting pool on the job store's database (its migrations are the job store's).
    pub fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Ok(PostgresDeliveryStore {
            pool: crate::jobstore::PostgresJobStore::pool(url, max_connections)?,
        })
    }
}

#[async_trait]
impl DeliveryStore for PostgresDeliveryStore {
    async fn claim_due(&self, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<Claimed>> {
        let token = Uuid::new_v4();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1));
        let rows = sqlx::query(
            "UPDATE webhook_deliveries SET lease_token = $1, lease_until = $2 \
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
               AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
               ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id, job_id, url, payload, attempts",
        )
        .bind(token)
        .bind(until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Claimed {
                    id: row.try_get("id")?,
                    job_id: row.try_get("job_id")?,
                    url: row.try_get("url")?,
                    payload: row.try_get("payload")?,
                    attempts: row.try_get::<i32, _>("attempts")? as u32,
                    token,
                })
            })
            .collect()
    }

    async fn record(
        &self,
        claimed: &Claimed,
        attempt: &Attempt,
        next: Next,
        error: Option<&str>,
    ) -> Result<bool> {
        let (state, next_at, finished_at) = super::columns_of(next, attempt.at);
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, next_attempt_at = $2, \
             finished_at = $3, last_error = $4, lease_token = NULL, lease_until = NULL \
             WHERE id = $5 AND lease_token = $6",
        )
        .bind(state.as_str())
        .bind(next_at)
        .bind(finished_at)
        .bind(error)
        .bind(&claimed.id)
        .bind(claimed.token)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, latency_ms, outcome, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&claimed.id)
        .bind(attempt.attempt as i32)
        .bind(attempt.at)
        .bind(attempt.status_code.map(i32::from))
        .bind(attempt.latency_ms.min(i64::MAX as u64) as i64)
        .bind(&attempt.outcome)
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn release(&self, claimed: &Claimed) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries SET lease_token = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_token = $2",
        )
        .bind(&claimed.id)
        .bind(claimed.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn of_job(&self, job_id: Uuid) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, event_type, url, state, created_at, next_attempt_at, finished_at, last_error \
             FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at, id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let attempts = sqlx::query(
                "SELECT attempt, at, status_code, latency_ms, outcome, error FROM webhook_attempts \
                 WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                Ok(Attempt {
                    attempt: a.try_get::<i32, _>("attempt")? as u32,
                    at: a.try_get("at")?,
                    status_code: a.try_get::<Option<i32>, _>("status_code")?.map(|c| c as u16),
                    latency_ms: a.try_get::<i64, _>("latency_ms")?.max(0) as u64,
                    outcome: a.try_get("outcome")?,
                    error: a.try_get("error")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
            let state: String = row.try_get("state")?;
            deliveries.push(Delivery {
                id,
                event_type: row.try_get("event_type")?,
                url: row.try_get("url")?,
                state: DeliveryState::parse(&state)?,
                created_at: row.try_get("created_at")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                finished_at: row.try_get("finished_at")?,
                last_error: row.try_get("last_error")?,
                attempts,
            });
        }
        Ok(deliveries)
    }

    async fn pending(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn batches_to_notify(&self, limit: u32) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT b.id FROM batches b WHERE b.webhook_url IS NOT NULL AND b.notified_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id \
             AND j.status IN ('PENDING', 'STARTED')) ORDER BY b.created_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn enqueue_batch_event(
        &self,
        batch_id: Uuid,
        anchor_job: Uuid,
        url: &str,
        event: &OutboxEvent,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let marked = sqlx::query("UPDATE batches SET notified_at = $1 WHERE id = $2 AND notified_at IS NULL")
            .bind(event.created_at)
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, job_id, event_type, url, payload, state, created_at, \
             next_attempt_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6) ON CONFLICT DO NOTHING",
        )
        .bind(&event.id)
        .bind(anchor_job)
        .bind(event.event_type)
        .bind(url)
        .bind(&event.payload)
        .bind(event.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
