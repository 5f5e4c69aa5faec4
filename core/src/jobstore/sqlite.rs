//! The embedded default's job store: one SQLite file in the data directory, WAL mode.
use super::{Caps, JobStore, Outcome, OwnerUsage, Refusal, migrate_error, status_from_db};
use crate::batches::{BatchRecord, NewBatch};
use crate::model::{JobRecord, JobStatus, ListQuery, NewJob, now};
use crate::{CoreError, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Executor, QueryBuilder, Row, Sqlite, SqlitePool};
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteJobStore {
    pool: SqlitePool,
}

const COLUMNS: &str = "id, status, owner, source_bucket, source_key, source_format, source_width, \
    source_height, source_bytes, outputs_requested, outputs, error_reason, error_message, attempts, \
    dependency_retries, version, created_at, started_at, finished_at, expires_at, purged_at, batch_id";

/// A pool on the SQLite file `url` (WAL mode), for the job store and the key store.
pub(crate) async fn open_pool(url: &str, max_connections: u32) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| CoreError::Config(format!("DATABASE_URL: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));
    Ok(SqlitePoolOptions::new()
        .max_connections(max_connections)
        .connect_with(options)
        .await?)
}

impl SqliteJobStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = open_pool(url, 4).await?;
        MIGRATOR.run(&pool).await.map_err(migrate_error)?;
        Ok(SqliteJobStore { pool })
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

fn row_to_record(row: &SqliteRow) -> Result<JobRecord> {
    let id: String = row.try_get("id")?;
    let status: String = row.try_get("status")?;
    let format: String = row.try_get("source_format")?;
    let requested: String = row.try_get("outputs_requested")?;
    let outputs: String = row.try_get("outputs")?;
    let error_reason: Option<String> = row.try_get("error_reason")?;
    let error_message: Option<String> = row.try_get("error_message")?;
    Ok(JobRecord {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("job id", e))?,
        status: status_from_db(&status)?,
        owner: row.try_get("owner")?,
        source_bucket: row.try_get("source_bucket")?,
        source_key: row.try_get("source_key")?,
        source_format: serde_json::from_value(serde_json::Value::String(format))
            .map_err(|e| corrupt("source format", e))?,
        source_width: row.try_get::<i64, _>("source_width")? as u32,
        source_height: row.try_get::<i64, _>("source_height")? as u32,
        source_bytes: row.try_get::<i64, _>("source_bytes")? as u64,
        outputs_requested: serde_json::from_str(&requested).map_err(|e| corrupt("requested outputs", e))?,
        outputs: serde_json::from_str(&outputs).map_err(|e| corrupt("outputs", e))?,
        error: match (error_reason, error_message) {
            (Some(reason), message) => Some(crate::model::JobError {
                reason,
                message: message.unwrap_or_default(),
            }),
            _ => None,
        },
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        dependency_retries: row.try_get::<i64, _>("dependency_retries")? as u32,
        version: row.try_get("version")?,
        created_at: from_micros(Some(row.try_get("created_at")?))
            .ok_or_else(|| corrupt("created_at", "out of range"))?,
        started_at: from_micros(row.try_get("started_at")?),
        finished_at: from_micros(row.try_get("finished_at")?),
        expires_at: from_micros(row.try_get("expires_at")?),
        purged_at: from_micros(row.try_get("purged_at")?),
        batch_id: row
            .try_get::<Option<String>, _>("batch_id")?
            .map(|id| Uuid::parse_str(&id).map_err(|e| corrupt("batch id", e)))
            .transpose()?,
    })
}

/// Insert a new job in `PENDING` through `executor` (the pool or a transaction).
async fn insert_job<'c>(executor: impl Executor<'c, Database = Sqlite>, job: &NewJob) -> Result<JobRecord> {
    let requested = serde_json::to_string(&job.outputs).map_err(|e| CoreError::Internal(e.to_string()))?;
    let sql = format!(
        "INSERT INTO jobs (id, status, owner, source_bucket, source_key, source_format, source_width, \
         source_height, source_bytes, outputs_requested, created_at, expires_at, webhook_url, batch_id, \
         batch_index) \
         VALUES (?, 'PENDING', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(job.id.to_string())
        .bind(&job.owner)
        .bind(&job.source_bucket)
        .bind(&job.source_key)
        .bind(job.source_format.as_str())
        .bind(i64::from(job.source_width))
        .bind(i64::from(job.source_height))
        .bind(job.source_bytes as i64)
        .bind(requested)
        .bind(micros(now()))
        .bind(job.expires_at.map(micros))
        .bind(&job.webhook_url)
        .bind(job.batch.map(|b| b.batch_id.to_string()))
        .bind(job.batch.map(|b| i64::from(b.index)))
        .fetch_one(executor)
        .await?;
    row_to_record(&row)
}

/// Unfinished jobs of everyone, counted up to `cap` (the count only needs to reach the cap).
async fn count_unfinished<'c>(executor: impl Executor<'c, Database = Sqlite>, cap: u64) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE status IN ('PENDING', 'STARTED') LIMIT ?)",
    )
    .bind(cap.min(i64::MAX as u64) as i64)
    .fetch_one(executor)
    .await?;
    Ok(n as u64)
}

async fn owner_usage<'c>(executor: impl Executor<'c, Database = Sqlite>, owner: &str) -> Result<OwnerUsage> {
    let row = sqlx::query("SELECT unfinished_jobs, stored_bytes FROM owner_usage WHERE owner = ?")
        .bind(owner)
        .fetch_optional(executor)
        .await?;
    Ok(match row {
        Some(row) => OwnerUsage {
            unfinished_jobs: row.try_get::<i64, _>("unfinished_jobs")?.max(0) as u64,
            stored_bytes: row.try_get::<i64, _>("stored_bytes")?.max(0) as u64,
        },
        None => OwnerUsage::default(),
    })
}

impl SqliteJobStore {
    /// The resource columns of a row; `None` when there is no row.
    async fn binding_columns(&self, id: Uuid) -> Result<Option<super::BindingColumns>> {
        sqlx::query("SELECT resource_namespace, resource_name, resource_uid FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| {
                Ok((
                    row.try_get("resource_namespace")?,
                    row.try_get("resource_name")?,
                    row.try_get("resource_uid")?,
                ))
            })
            .transpose()
    }
}

#[async_trait]
impl JobStore for SqliteJobStore {
    async fn create(&self, job: &NewJob) -> Result<JobRecord> {
        insert_job(&self.pool, job).await
    }

    async fn admit(&self, job: &NewJob, caps: &Caps) -> Result<Result<JobRecord, Refusal>> {
        let queued_cap = (caps.max_queued_jobs > 0).then_some(caps.max_queued_jobs);
        let Some(owner) = job.owner.as_deref().filter(|_| caps.has_owner_caps()) else {
            let queued = match queued_cap {
                Some(cap) => Some(count_unfinished(&self.pool, cap).await?),
                None => None,
            };
            if let Err(refusal) = caps.check(queued, None, job.source_bytes) {
                return Ok(Err(refusal));
            }
            return insert_job(&self.pool, job).await.map(Ok);
        };
        // The write lock first, so that no other writer (another process on this file) can
        // admit a job of this owner between the read and the insert.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let queued = match queued_cap {
            Some(cap) => Some(count_unfinished(&mut *tx, cap).await?),
            None => None,
        };
        let usage = owner_usage(&mut *tx, owner).await?;
        if let Err(refusal) = caps.check(queued, Some(usage), job.source_bytes) {
            tx.rollback().await?;
            return Ok(Err(refusal));
        }
        let record = insert_job(&mut *tx, job).await?;
        tx.commit().await?;
        Ok(Ok(record))
    }

    async fn usage(&self, owner: &str) -> Result<OwnerUsage> {
        owner_usage(&self.pool, owner).await
    }

    async fn count_dependency_retry(&self, id: Uuid, attempt: u32) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET dependency_retries = dependency_retries + 1, version = version + 1 \
             WHERE id = ? AND attempts = ? AND status IN ('PENDING', 'STARTED')",
        )
        .bind(id.to_string())
        .bind(i64::from(attempt))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_record).transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM jobs WHERE purged_at IS NULL"));
        if let Some(status) = query.status {
            qb.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(owner) = &query.owner {
            qb.push(" AND owner = ").push_bind(owner.clone());
        }
        if let Some(after) = query.after {
            let at = micros(after.created_at);
            qb.push(" AND (created_at < ")
                .push_bind(at)
                .push(" OR (created_at = ")
                .push_bind(at)
                .push(" AND id < ")
                .push_bind(after.id.to_string())
                .push("))");
        }
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(query.limit));
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn start(&self, id: Uuid) -> Result<Option<JobRecord>> {
        let sql = format!(
            "UPDATE jobs SET status = 'STARTED', attempts = attempts + 1, version = version + 1, \
             started_at = COALESCE(started_at, ?) \
             WHERE id = ? AND status IN ('PENDING', 'STARTED') RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(micros(now()))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_record).transpose()
    }

    async fn finish(&self, id: Uuid, attempt: u32, outcome: &Outcome) -> Result<bool> {
        let (status, outputs, reason, message) = match outcome {
            Outcome::Success(outputs) => (
                JobStatus::Success,
                serde_json::to_string(outputs).map_err(|e| CoreError::Internal(e.to_string()))?,
                None,
                None,
            ),
            Outcome::Failure(err) => (
                JobStatus::Failure,
                "[]".to_owned(),
                Some(err.reason.clone()),
                Some(err.message.clone()),
            ),
        };
        let finished_at = now();
        // The job's webhook delivery (when it has a URL) is written in the same transaction as
        // the finish: no finished job is ever left without it.
        let event = crate::webhooks::event_for(id, outcome, finished_at);
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE jobs SET status = ?, outputs = ?, output_bytes = ?, error_reason = ?, \
             error_message = ?, finished_at = ?, version = version + 1 \
             WHERE id = ? AND attempts = ? AND status IN ('PENDING', 'STARTED')",
        )
        .bind(status.as_str())
        .bind(outputs)
        .bind(outcome.output_bytes() as i64)
        .bind(reason)
        .bind(message)
        .bind(micros(finished_at))
        .bind(id.to_string())
        .bind(i64::from(attempt))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, job_id, event_type, url, payload, state, created_at, \
             next_attempt_at) SELECT ?, id, ?, webhook_url, ?, 'pending', ?, ? FROM jobs \
             WHERE id = ? AND webhook_url IS NOT NULL ON CONFLICT DO NOTHING",
        )
        .bind(&event.id)
        .bind(event.event_type)
        .bind(&event.payload)
        .bind(micros(event.created_at))
        .bind(micros(event.created_at))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn unfinished(&self, limit: u32) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE status IN ('PENDING', 'STARTED') ORDER BY created_at ASC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id")?;
                Uuid::parse_str(&id).map_err(|e| corrupt("job id", e))
            })
            .collect()
    }

    async fn bind_resource(&self, id: Uuid, resource: &super::ResourceRef) -> Result<super::Binding> {
        let done = sqlx::query(
            "UPDATE jobs SET resource_namespace = ?, resource_name = ?, resource_uid = ? \
             WHERE id = ? AND (resource_uid IS NULL OR resource_uid = ?)",
        )
        .bind(&resource.namespace)
        .bind(&resource.name)
        .bind(&resource.uid)
        .bind(id.to_string())
        .bind(&resource.uid)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(super::Binding::Bound);
        }
        Ok(super::binding_not_taken(self.binding_columns(id).await?))
    }

    async fn resource_binding(&self, id: Uuid) -> Result<super::RowBinding> {
        Ok(super::row_binding(self.binding_columns(id).await?))
    }

    async fn delete(&self, id: Uuid) -> Result<bool> {
        let done = sqlx::query("DELETE FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn known_ids(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>> {
        let mut known = std::collections::HashSet::new();
        // Within SQLite's bound on parameters per statement.
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT id FROM jobs WHERE id IN ({marks})");
            let query = chunk.iter().fold(sqlx::query_scalar::<_, String>(&sql), |q, id| {
                q.bind(id.to_string())
            });
            for id in query.fetch_all(&self.pool).await? {
                known.extend(Uuid::parse_str(&id).ok());
            }
        }
        Ok(known)
    }

    async fn apply_default_expiry(&self, retention: Duration) -> Result<u64> {
        let done = sqlx::query("UPDATE jobs SET expires_at = created_at + ? WHERE expires_at IS NULL")
            .bind(retention.as_micros().min(i64::MAX as u128) as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE purged_at IS NULL AND expires_at <= ? \
             AND status IN ('SUCCESS', 'FAILURE') ORDER BY expires_at LIMIT ?"
        );
        let rows = sqlx::query(&sql)
            .bind(micros(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn count_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE purged_at IS NULL AND expires_at <= ? \
             AND status IN ('SUCCESS', 'FAILURE')",
        )
        .bind(micros(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn mark_purged(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET purged_at = ?, source_bytes = 0, output_bytes = 0, version = version + 1 \
             WHERE id = ? AND purged_at IS NULL",
        )
        .bind(micros(now))
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_purged(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE purged_at <= ? LIMIT ?)")
                .bind(micros(before))
                .bind(i64::from(limit))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    async fn expire_now(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET expires_at = MIN(COALESCE(expires_at, ?), ?), version = version + 1 \
             WHERE id = ? AND purged_at IS NULL AND status IN ('SUCCESS', 'FAILURE')",
        )
        .bind(micros(now))
        .bind(micros(now))
        .bind(id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_batch(&self, batch: &NewBatch) -> Result<()> {
        let entries =
            serde_json::to_string(&batch.entries).map_err(|e| CoreError::Internal(e.to_string()))?;
        sqlx::query(
            "INSERT INTO batches (id, owner, created_at, expires_at, entries, webhook_url) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(batch.id.to_string())
        .bind(&batch.owner)
        .bind(micros(batch.created_at))
        .bind(micros(batch.expires_at))
        .bind(entries)
        .bind(&batch.webhook_url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_batch(&self, id: Uuid) -> Result<Option<BatchRecord>> {
        let row = sqlx::query(
            "SELECT id, owner, created_at, expires_at, entries, webhook_url, notified_at FROM batches WHERE id = ?",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let entries: String = row.try_get("entries")?;
        Ok(Some(BatchRecord {
            id,
            owner: row.try_get("owner")?,
            created_at: from_micros(Some(row.try_get("created_at")?))
                .ok_or_else(|| corrupt("batch created_at", "out of range"))?,
            expires_at: from_micros(Some(row.try_get("expires_at")?))
                .ok_or_else(|| corrupt("batch expires_at", "out of range"))?,
            entries: serde_json::from_str(&entries).map_err(|e| corrupt("batch entries", e))?,
            webhook_url: row.try_get("webhook_url")?,
            notified_at: from_micros(row.try_get("notified_at")?),
        }))
    }

    async fn batch_jobs(&self, id: Uuid) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE batch_id = ? ORDER BY batch_index");
        let rows = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn delete_expired_batches(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM batches WHERE expires_at <= ?")
            .bind(micros(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                let n: i64 = row.try_get("n")?;
                Ok((status_from_db(&status)?, n as u64))
            })
            .collect()
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
