//! The outbox on SQLite: one process per file, so a claim is one `UPDATE ... RETURNING` (SQLite
//! serialises writers); the lease still protects a restart that finds a claim of the process
//! before it.
use super::{Attempt, Claimed, Delivery, DeliveryState, DeliveryStore, Next, OutboxEvent};
use crate::{CoreError, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Row, SqlitePool};
use std::time::Duration;
use uuid::Uuid;

pub struct SqliteDeliveryStore {
    pool: SqlitePool,
}

impl SqliteDeliveryStore {
    /// On the job store's file; its migrations are the job store's.
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(SqliteDeliveryStore {
            pool: crate::jobstore::open_sqlite_pool(url, 2).await?,
        })
    }
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(v: Option<i64>) -> Option<DateTime<Utc>> {
    v.and_then(DateTime::from_timestamp_micros)
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::Corrupt(format!("{what}: {e}"))
}

fn lease_micros(lease: Duration) -> i64 {
    lease.as_micros().min(i64::MAX as u128) as i64
}

#[async_trait]
impl DeliveryStore for SqliteDeliveryStore {
    async fn claim_due(&self, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<Claimed>> {
        let token = Uuid::new_v4();
        let rows = sqlx::query(
            "UPDATE webhook_deliveries SET lease_token = ?, lease_until = ? \
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
               AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?) \
               ORDER BY next_attempt_at LIMIT ?) \
             RETURNING id, job_id, url, payload, attempts",
        )
        .bind(token.to_string())
        .bind(micros(now) + lease_micros(lease))
        .bind(micros(now))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let job_id: String = row.try_get("job_id")?;
                Ok(Claimed {
                    id: row.try_get("id")?,
                    job_id: Uuid::parse_str(&job_id).map_err(|e| corrupt("job id", e))?,
                    url: row.try_get("url")?,
                    payload: row.try_get("payload")?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let moved = sqlx::query(
            "UPDATE webhook_deliveries SET state = ?, attempts = attempts + 1, next_attempt_at = ?, \
             finished_at = ?, last_error = ?, lease_token = NULL, lease_until = NULL \
             WHERE id = ? AND lease_token = ?",
        )
        .bind(state.as_str())
        .bind(next_at.map(micros))
        .bind(finished_at.map(micros))
        .bind(error)
        .bind(&claimed.id)
        .bind(claimed.token.to_string())
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, latency_ms, outcome, error) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&claimed.id)
        .bind(i64::from(attempt.attempt))
        .bind(micros(attempt.at))
        .bind(attempt.status_code.map(i64::from))
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
             WHERE id = ? AND lease_token = ?",
        )
        .bind(&claimed.id)
        .bind(claimed.token.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn of_job(&self, job_id: Uuid) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, event_type, url, state, created_at, next_attempt_at, finished_at, last_error \
             FROM webhook_deliveries WHERE job_id = ? ORDER BY created_at, id",
        )
        .bind(job_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let attempts = sqlx::query(
                "SELECT attempt, at, status_code, latency_ms, outcome, error FROM webhook_attempts \
                 WHERE delivery_id = ? ORDER BY attempt",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|a| {
                Ok(Attempt {
                    attempt: a.try_get::<i64, _>("attempt")? as u32,
                    at: from_micros(Some(a.try_get("at")?))
                        .ok_or_else(|| corrupt("attempt time", "out of range"))?,
                    status_code: a.try_get::<Option<i64>, _>("status_code")?.map(|c| c as u16),
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
                created_at: from_micros(Some(row.try_get("created_at")?))
                    .ok_or_else(|| corrupt("delivery created_at", "out of range"))?,
                next_attempt_at: from_micros(row.try_get("next_attempt_at")?),
                finished_at: from_micros(row.try_get("finished_at")?),
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
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT b.id FROM batches b WHERE b.webhook_url IS NOT NULL AND b.notified_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.id \
             AND j.status IN ('PENDING', 'STARTED')) ORDER BY b.created_at LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| Uuid::parse_str(id).map_err(|e| corrupt("batch id", e)))
            .collect()
    }

    async fn enqueue_batch_event(
        &self,
        batch_id: Uuid,
        anchor_job: Uuid,
        url: &str,
        event: &OutboxEvent,
    ) -> Result<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let marked = sqlx::query("UPDATE batches SET notified_at = ? WHERE id = ? AND notified_at IS NULL")
            .bind(micros(event.created_at))
            .bind(batch_id.to_string())
            .execute(&mut *tx)
            .await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, job_id, event_type, url, payload, state, created_at, \
             next_attempt_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&event.id)
        .bind(anchor_job.to_string())
        .bind(event.event_type)
        .bind(url)
        .bind(&event.payload)
        .bind(micros(event.created_at))
        .bind(micros(event.created_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
