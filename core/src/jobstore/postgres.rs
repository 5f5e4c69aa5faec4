//! The production job store: PostgreSQL, migrations embedded and applied at start-up.
use super::JobEvents;
use super::{Caps, JobStore, Outcome, OwnerUsage, Refusal, migrate_error, status_from_db};
use crate::batches::{BatchRecord, NewBatch};
use crate::model::{JobError, JobRecord, JobStatus, ListQuery, NewJob, now};
use crate::runner::retry_delay;
use crate::{CoreError, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Executor, PgPool, Postgres, QueryBuilder, Row};
use std::str::FromStr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresJobStore {
    pool: PgPool,
}

/// The channel on which every landed `finish` notifies the job id (`pg_notify`), whichever
/// process made it: the operator, another API replica.
pub const FINISHED_CHANNEL: &str = "thumbnail_job_finished";

/// Relay the notifications of jobs finished by any process into `events`, so that long-polling
/// readers (`GET /api/v1/jobs/{id}?wait=`) answer at once rather than at their next re-read.
/// Runs until `stop` is cancelled; reconnects with backoff when the connection drops.
/// Notifications sent while it is down are lost, which only delays waiters to their next re-read.
pub async fn relay_finished_jobs(url: String, events: JobEvents, stop: CancellationToken) {
    // Failed connection attempts in a row, for the job runner's backoff schedule.
    let mut failures = 0u32;
    loop {
        let connect = async {
            let mut listener = PgListener::connect(&url).await?;
            listener.listen(FINISHED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            connected = connect => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    failures += 1;
                    let delay = retry_delay(failures);
                    warn!(%error, retry_ms = delay.as_millis() as u64, "cannot listen for finished jobs");
                    // Wait out the delay unless stopped first.
                    if tokio::time::timeout(delay, stop.cancelled()).await.is_ok() {
                        return;
                    }
                    continue;
                }
            },
        };
        failures = 0;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.recv() => match received {
                    Ok(notification) => match notification.payload().parse::<Uuid>() {
                        Ok(id) => events.publish(id),
                        Err(_) => warn!(payload = notification.payload(), "ignoring a malformed finished-job notification"),
                    },
                    Err(error) => {
                        warn!(%error, "lost the finished-job notifications; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

const COLUMNS: &str = "id, status, owner, source_bucket, source_key, source_format, source_width, \
    source_height, source_bytes, outputs_requested, outputs, error_reason, error_message, attempts, \
    dependency_retries, version, created_at, started_at, finished_at, expires_at, purged_at, batch_id";

impl PostgresJobStore {
    /// Connect and apply migrations. Fails fast when the server is unreachable; callers that
    /// must wait for the database retry around this.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = Self::pool(url, max_connections)?;
        MIGRATOR.run(&pool).await.map_err(migrate_error)?;
        Ok(PostgresJobStore { pool })
    }

    /// A lazily connecting pool, without running migrations.
    pub fn pool(url: &str, max_connections: u32) -> Result<PgPool> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| CoreError::Config(format!("DATABASE_URL: {e}")))?;
        Ok(PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options))
    }

    /// The plan PostgreSQL picks for [`JobStore::list`] with this query (`EXPLAIN` output), to
    /// check that the list is answered from the indexes.
    pub async fn explain_list(&self, query: &ListQuery) -> Result<String> {
        let rows = list_query("EXPLAIN ", query)
            .build()
            .fetch_all(&self.pool)
            .await?;
        let lines = rows
            .iter()
            .map(|row| row.try_get::<String, _>(0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(lines.join("\n"))
    }

    /// Apply the embedded migrations (the `migrate` subcommand).
    pub async fn migrate(url: &str) -> Result<()> {
        let pool = Self::pool(url, 1)?;
        MIGRATOR.run(&pool).await.map_err(migrate_error)?;
        Ok(())
    }
}

fn row_to_record(row: &PgRow) -> Result<JobRecord> {
    let status: String = row.try_get("status")?;
    let format: String = row.try_get("source_format")?;
    let Json(outputs_requested) = row.try_get("outputs_requested")?;
    let Json(outputs) = row.try_get("outputs")?;
    let error_reason: Option<String> = row.try_get("error_reason")?;
    let error_message: Option<String> = row.try_get("error_message")?;
    Ok(JobRecord {
        id: row.try_get("id")?,
        status: status_from_db(&status)?,
        owner: row.try_get("owner")?,
        source_bucket: row.try_get("source_bucket")?,
        source_key: row.try_get("source_key")?,
        source_format: serde_json::from_value(serde_json::Value::String(format))
            .map_err(|e| CoreError::Corrupt(format!("source format: {e}")))?,
        source_width: row.try_get::<i32, _>("source_width")? as u32,
        source_height: row.try_get::<i32, _>("source_height")? as u32,
        source_bytes: row.try_get::<i64, _>("source_bytes")? as u64,
        outputs_requested,
        outputs,
        error: error_reason.map(|reason| JobError {
            reason,
            message: error_message.unwrap_or_default(),
        }),
        attempts: row.try_get::<i32, _>("attempts")? as u32,
        dependency_retries: row.try_get::<i32, _>("dependency_retries")? as u32,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        expires_at: row.try_get("expires_at")?,
        purged_at: row.try_get("purged_at")?,
        batch_id: row.try_get("batch_id")?,
    })
}

/// The list query, after `prefix` (empty, or `EXPLAIN ` to see its plan).
fn list_query<'a>(prefix: &str, query: &'a ListQuery) -> QueryBuilder<'a, Postgres> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "{prefix}SELECT {COLUMNS} FROM jobs WHERE purged_at IS NULL"
    ));
    if let Some(status) = query.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(owner) = &query.owner {
        qb.push(" AND owner = ").push_bind(owner.clone());
    }
    if let Some(after) = query.after {
        qb.push(" AND (created_at, id) < (")
            .push_bind(after.created_at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(query.limit));
    qb
}

/// Insert a new job in `PENDING` through `executor` (the pool or a transaction).
async fn insert_job<'c>(executor: impl Executor<'c, Database = Postgres>, job: &NewJob) -> Result<JobRecord> {
    let sql = format!(
        "INSERT INTO jobs (id, status, owner, source_bucket, source_key, source_format, source_width, \
         source_height, source_bytes, outputs_requested, created_at, expires_at, webhook_url, batch_id, \
         batch_index) \
         VALUES ($1, 'PENDING', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(job.id)
        .bind(&job.owner)
        .bind(&job.source_bucket)
        .bind(&job.source_key)
        .bind(job.source_format.as_str())
        .bind(job.source_width as i32)
        .bind(job.source_height as i32)
        .bind(job.source_bytes as i64)
        .bind(Json(&job.outputs))
        .bind(now())
        .bind(job.expires_at)
        .bind(&job.webhook_url)
        .bind(job.batch.map(|b| b.batch_id))
        .bind(job.batch.map(|b| b.index as i32))
        .fetch_one(executor)
        .await?;
    row_to_record(&row)
}

/// Unfinished jobs of everyone, counted up to `cap` (answered from `jobs_by_status_created`; the
/// count only needs to reach the cap).
const COUNT_UNFINISHED: &str =
    "SELECT COUNT(*) FROM (SELECT 1 FROM jobs WHERE status IN ('PENDING', 'STARTED') LIMIT $1) AS q";

fn cap_param(cap: u64) -> i64 {
    cap.min(i64::MAX as u64) as i64
}

fn usage_of(row: &PgRow) -> Result<OwnerUsage> {
    Ok(OwnerUsage {
        unfinished_jobs: row.try_get::<i64, _>("unfinished_jobs")?.max(0) as u64,
        stored_bytes: row.try_get::<i64, _>("stored_bytes")?.max(0) as u64,
    })
}

impl PostgresJobStore {
    /// The resource columns of a row; `None` when there is no row.
    async fn binding_columns(&self, id: Uuid) -> Result<Option<super::BindingColumns>> {
        sqlx::query("SELECT resource_namespace, resource_name, resource_uid FROM jobs WHERE id = $1")
            .bind(id)
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
impl JobStore for PostgresJobStore {
    async fn create(&self, job: &NewJob) -> Result<JobRecord> {
        insert_job(&self.pool, job).await
    }

    async fn admit(&self, job: &NewJob, caps: &Caps) -> Result<Result<JobRecord, Refusal>> {
        // LIMIT 0 when uncapped: the count is then not used.
        let queued_cap = cap_param(caps.max_queued_jobs);
        let Some(owner) = job.owner.as_deref().filter(|_| caps.has_owner_caps()) else {
            let queued = if caps.max_queued_jobs > 0 {
                let n: i64 = sqlx::query_scalar(COUNT_UNFINISHED)
                    .bind(queued_cap)
                    .fetch_one(&self.pool)
                    .await?;
                Some(n as u64)
            } else {
                None
            };
            if let Err(refusal) = caps.check(queued, None, job.source_bytes) {
                return Ok(Err(refusal));
            }
            return insert_job(&self.pool, job).await.map(Ok);
        };
        let mut tx = self.pool.begin().await?;
        // The upsert locks the owner's usage row until the transaction ends: another replica
        // admitting a job of the same owner waits here, then reads the count including ours.
        let row = sqlx::query(&format!(
            "WITH queued AS ({COUNT_UNFINISHED}) \
             INSERT INTO owner_usage AS u (owner) VALUES ($2) \
             ON CONFLICT (owner) DO UPDATE SET owner = EXCLUDED.owner \
             RETURNING u.unfinished_jobs, u.stored_bytes, (SELECT * FROM queued) AS queued"
        ))
        .bind(queued_cap)
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
        let usage = usage_of(&row)?;
        let queued = (caps.max_queued_jobs > 0).then(|| row.try_get::<i64, _>("queued").map(|n| n as u64));
        if let Err(refusal) = caps.check(queued.transpose()?, Some(usage), job.source_bytes) {
            tx.rollback().await?;
            return Ok(Err(refusal));
        }
        let record = insert_job(&mut *tx, job).await?;
        tx.commit().await?;
        Ok(Ok(record))
    }

    async fn usage(&self, owner: &str) -> Result<OwnerUsage> {
        let row = sqlx::query("SELECT unfinished_jobs, stored_bytes FROM owner_usage WHERE owner = $1")
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(usage_of).unwrap_or(Ok(OwnerUsage::default()))
    }

    async fn count_dependency_retry(&self, id: Uuid, attempt: u32) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET dependency_retries = dependency_retries + 1, version = version + 1 \
             WHERE id = $1 AND attempts = $2 AND status IN ('PENDING', 'STARTED')",
        )
        .bind(id)
        .bind(attempt as i32)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(row_to_record).transpose()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>> {
        let rows = list_query("", query).build().fetch_all(&self.pool).await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn start(&self, id: Uuid) -> Result<Option<JobRecord>> {
        let sql = format!(
            "UPDATE jobs SET status = 'STARTED', attempts = attempts + 1, version = version + 1, \
             started_at = COALESCE(started_at, $1) \
             WHERE id = $2 AND status IN ('PENDING', 'STARTED') RETURNING {COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(now())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(row_to_record).transpose()
    }

    async fn finish(&self, id: Uuid, attempt: u32, outcome: &Outcome) -> Result<bool> {
        let empty = Vec::new();
        let (status, outputs, reason, message) = match outcome {
            Outcome::Success(outputs) => (JobStatus::Success, outputs, None, None),
            Outcome::Failure(err) => (JobStatus::Failure, &empty, Some(&err.reason), Some(&err.message)),
        };
        let finished_at = now();
        let event = crate::webhooks::event_for(id, outcome, finished_at);
        // The notification goes out when the update commits, to every process listening (see
        // `relay_finished_jobs`); no row updated, no notification. The job's webhook delivery
        // (when it has a URL) is written by the same statement, whichever process finishes it
        // (an API replica, the operator's mirror): no finished job is left without it.
        let landed = sqlx::query(
            "WITH finished AS (\
               UPDATE jobs SET status = $1, outputs = $2, error_reason = $3, error_message = $4, \
               finished_at = $5, output_bytes = $9, version = version + 1 \
               WHERE id = $6 AND attempts = $7 AND status IN ('PENDING', 'STARTED') \
               RETURNING id, webhook_url), \
             outbox AS (\
               INSERT INTO webhook_deliveries (id, job_id, event_type, url, payload, state, created_at, \
               next_attempt_at) SELECT $10, id, $11, webhook_url, $12, 'pending', $5, $5 FROM finished \
               WHERE webhook_url IS NOT NULL ON CONFLICT DO NOTHING) \
             SELECT pg_notify($8, id::text) FROM finished",
        )
        .bind(status.as_str())
        .bind(Json(outputs))
        .bind(reason)
        .bind(message)
        .bind(finished_at)
        .bind(id)
        .bind(attempt as i32)
        .bind(FINISHED_CHANNEL)
        .bind(outcome.output_bytes() as i64)
        .bind(&event.id)
        .bind(event.event_type)
        .bind(&event.payload)
        .fetch_all(&self.pool)
        .await?;
        Ok(landed.len() == 1)
    }

    async fn unfinished(&self, limit: u32) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT id FROM jobs WHERE status IN ('PENDING', 'STARTED') ORDER BY created_at ASC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok(row.try_get("id")?)).collect()
    }

    async fn bind_resource(&self, id: Uuid, resource: &super::ResourceRef) -> Result<super::Binding> {
        let done = sqlx::query(
            "UPDATE jobs SET resource_namespace = $1, resource_name = $2, resource_uid = $3 \
             WHERE id = $4 AND (resource_uid IS NULL OR resource_uid = $3)",
        )
        .bind(&resource.namespace)
        .bind(&resource.name)
        .bind(&resource.uid)
        .bind(id)
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
        let done = sqlx::query("DELETE FROM jobs WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn known_ids(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>> {
        let known: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(known.into_iter().collect())
    }

    async fn apply_default_expiry(&self, retention: Duration) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET expires_at = created_at + make_interval(secs => $1) WHERE expires_at IS NULL",
        )
        .bind(retention.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE purged_at IS NULL AND expires_at <= $1 \
             AND status IN ('SUCCESS', 'FAILURE') ORDER BY expires_at LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn count_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE purged_at IS NULL AND expires_at <= $1 \
             AND status IN ('SUCCESS', 'FAILURE')",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    async fn mark_purged(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET purged_at = $1, source_bytes = 0, output_bytes = 0, version = version + 1 \
             WHERE id = $2 AND purged_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_purged(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE purged_at <= $1 LIMIT $2)")
                .bind(before)
                .bind(i64::from(limit))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    async fn expire_now(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET expires_at = LEAST(COALESCE(expires_at, $1), $1), version = version + 1 \
             WHERE id = $2 AND purged_at IS NULL AND status IN ('SUCCESS', 'FAILURE')",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn create_batch(&self, batch: &NewBatch) -> Result<()> {
        sqlx::query(
            "INSERT INTO batches (id, owner, created_at, expires_at, entries, webhook_url) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(batch.id)
        .bind(&batch.owner)
        .bind(batch.created_at)
        .bind(batch.expires_at)
        .bind(Json(&batch.entries))
        .bind(&batch.webhook_url)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_batch(&self, id: Uuid) -> Result<Option<BatchRecord>> {
        let row = sqlx::query(
            "SELECT id, owner, created_at, expires_at, entries, webhook_url, notified_at FROM batches WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let entries: Json<Vec<crate::batches::BatchEntry>> = row.try_get("entries")?;
        Ok(Some(BatchRecord {
            id,
            owner: row.try_get("owner")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            entries: entries.0,
            webhook_url: row.try_get("webhook_url")?,
            notified_at: row.try_get("notified_at")?,
        }))
    }

    async fn batch_jobs(&self, id: Uuid) -> Result<Vec<JobRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE batch_id = $1 ORDER BY batch_index");
        let rows = sqlx::query(&sql).bind(id).fetch_all(&self.pool).await?;
        rows.iter().map(row_to_record).collect()
    }

    async fn delete_expired_batches(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM batches WHERE expires_at <= $1")
            .bind(before)
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
        "postgres"
    }
}
