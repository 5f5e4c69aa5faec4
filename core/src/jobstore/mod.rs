//! Where jobs live: SQLite for the embedded default, PostgreSQL in production.
//!
//! Every state change is conditional: `start` only moves an unfinished job, and `finish` only
//! lands when the attempt it belongs to is still the current one, so a stale or duplicate writer
//! can never overwrite a newer state, and a finished job never goes back to running.
use crate::batches::{BatchRecord, NewBatch};
use crate::model::{JobError, JobOutput, JobRecord, JobStatus, ListQuery, NewJob};
use crate::{CoreError, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

mod events;
mod mirror;
mod postgres;
mod quota;
mod sqlite;

pub use events::{JobEvents, NotifyingJobStore};
pub use mirror::{JobMirror, Mirrored, mirror};
pub use postgres::{FINISHED_CHANNEL, PostgresJobStore, relay_finished_jobs};
pub use quota::{Caps, OwnerUsage, Refusal};
pub use sqlite::SqliteJobStore;
pub(crate) use sqlite::open_pool as open_sqlite_pool;

/// The ThumbnailJob a job row belongs to (Kubernetes mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`: names can be reused after a deletion, uids cannot.
    pub uid: String,
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

/// What [`JobStore::bind_resource`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// The row belongs to this resource (bound now, or already).
    Bound,
    /// The row belongs to another resource.
    BoundElsewhere(ResourceRef),
    /// There is no such row.
    Missing,
}

/// Whom a job row belongs to ([`JobStore::resource_binding`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowBinding {
    NoRow,
    /// No resource has bound it yet (an API job whose ThumbnailJob was not seen yet).
    Unbound,
    BoundTo(ResourceRef),
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success(Vec<JobOutput>),
    Failure(JobError),
}

impl Outcome {
    /// Bytes of the thumbnails stored (counted in the owner's usage).
    pub fn output_bytes(&self) -> u64 {
        match self {
            Outcome::Success(outputs) => outputs.iter().map(|o| o.bytes).sum(),
            Outcome::Failure(_) => 0,
        }
    }
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Insert a new job in `PENDING`.
    async fn create(&self, job: &NewJob) -> Result<JobRecord>;

    /// Insert a new job in `PENDING` unless that exceeds one of `caps` (see [`Caps::check`]).
    /// The owner caps are exact across processes: the owner's usage is read and the job inserted
    /// while holding the owner's lock (SQLite's write lock; PostgreSQL's row lock on the owner's
    /// usage). The global cap is read without a lock: concurrent uploads may pass it by as many
    /// as are in flight.
    async fn admit(&self, job: &NewJob, caps: &Caps) -> Result<Result<JobRecord, Refusal>>;

    /// What `owner` uses now: unfinished jobs and bytes stored.
    async fn usage(&self, owner: &str) -> Result<OwnerUsage>;

    /// Record that attempt `attempt` ended because a dependency was unavailable, so that it does
    /// not count against the embedded runner's attempt cap. Returns whether it was recorded.
    async fn count_dependency_retry(&self, id: Uuid, attempt: u32) -> Result<bool>;

    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>>;

    /// Newest first, at most `query.limit` jobs, strictly after `query.after`.
    async fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>>;

    /// Move an unfinished job to `STARTED` and count an attempt. `None` when the job is already
    /// finished (or unknown): the caller must not process it.
    async fn start(&self, id: Uuid) -> Result<Option<JobRecord>>;

    /// Finish the job, but only if `attempt` is still its current attempt and it is unfinished.
    /// Returns whether this write landed.
    async fn finish(&self, id: Uuid, attempt: u32, outcome: &Outcome) -> Result<bool>;

    /// Unfinished jobs (`PENDING` or `STARTED`), oldest first: the work to resume after a restart.
    async fn unfinished(&self, limit: u32) -> Result<Vec<Uuid>>;

    /// Bind the row of job `id` to `resource` unless another resource holds it: the first
    /// resource that uses a job id owns it. Idempotent for the same resource (same uid).
    async fn bind_resource(&self, id: Uuid, resource: &ResourceRef) -> Result<Binding>;

    /// Whom the row of job `id` belongs to, without changing it.
    async fn resource_binding(&self, id: Uuid) -> Result<RowBinding>;

    /// Remove a job row entirely (used to undo an upload that failed half-way).
    async fn delete(&self, id: Uuid) -> Result<bool>;

    /// Which of `ids` have a row (tombstones included): the orphan scan keeps their objects.
    async fn known_ids(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>>;

    /// Retention: give rows written without an expiry (the operator's mirror, rows from before
    /// retention existed) `created_at + retention`. How many rows changed.
    async fn apply_default_expiry(&self, retention: std::time::Duration) -> Result<u64>;

    /// Retention: finished jobs not yet purged whose expiry is at or before `now`, soonest first,
    /// at most `limit`.
    async fn expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<JobRecord>>;

    /// How many jobs [`JobStore::expired`] would return without a limit (the sweep's backlog).
    async fn count_expired(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Retention: the job's objects are deleted; make the row a tombstone (`purged_at`, bytes
    /// zeroed so that the owner's usage drops). False when it was purged already or is gone.
    async fn mark_purged(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool>;

    /// Retention: remove tombstones purged at or before `before` (the grace period is over).
    async fn delete_purged(&self, before: DateTime<Utc>, limit: u32) -> Result<u64>;

    /// Let a finished job expire now (an early delete by its owner). False when the job is
    /// unknown, unfinished or already purged.
    async fn expire_now(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool>;

    /// Store a batch once every entry is answered (its jobs exist already, so that a batch is
    /// never seen complete before its jobs are).
    async fn create_batch(&self, batch: &NewBatch) -> Result<()>;

    async fn get_batch(&self, id: Uuid) -> Result<Option<BatchRecord>>;

    /// The batch's jobs still in the store (purged ones included), in upload order.
    async fn batch_jobs(&self, id: Uuid) -> Result<Vec<JobRecord>>;

    /// Retention: remove batches that expired at or before `before` (their jobs go on their own).
    async fn delete_expired_batches(&self, before: DateTime<Utc>) -> Result<u64>;

    /// Number of jobs per status, for metrics.
    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<()>;

    /// Which backend this is ("sqlite" or "postgres"), for logs and `/ready`.
    fn backend(&self) -> &'static str;
}

pub type DynJobStore = Arc<dyn JobStore>;

/// Open the job store named by a URL: `sqlite://...` or `postgres://...`, applying migrations.
pub async fn connect(url: &str, max_connections: u32) -> Result<DynJobStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteJobStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresJobStore::connect(url, max_connections).await?))
    } else {
        Err(CoreError::Config(format!(
            "DATABASE_URL must start with sqlite: or postgres:, got '{}'",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

/// Migration errors that are really database errors (the server unreachable, a lost connection)
/// are reported as such, so that callers see a transient `CoreError::JobStore` and retry.
pub(crate) fn migrate_error(e: sqlx::migrate::MigrateError) -> CoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => CoreError::JobStore(inner),
        other => CoreError::Migrate(other),
    }
}

/// `resource_namespace`, `resource_name`, `resource_uid` of a row.
pub(crate) type BindingColumns = (Option<String>, Option<String>, Option<String>);

/// A row's binding from its three columns (`None`: no row).
pub(crate) fn row_binding(columns: Option<BindingColumns>) -> RowBinding {
    match columns {
        None => RowBinding::NoRow,
        Some((_, _, None)) => RowBinding::Unbound,
        Some((namespace, name, Some(uid))) => RowBinding::BoundTo(ResourceRef {
            namespace: namespace.unwrap_or_default(),
            name: name.unwrap_or_default(),
            uid,
        }),
    }
}

/// The outcome of a bind that did not touch the row, from the binding read back (`None`: no row).
pub(crate) fn binding_not_taken(existing: Option<BindingColumns>) -> Binding {
    match existing {
        None => Binding::Missing,
        Some((namespace, name, uid)) => Binding::BoundElsewhere(ResourceRef {
            namespace: namespace.unwrap_or_default(),
            name: name.unwrap_or_default(),
            uid: uid.unwrap_or_default(),
        }),
    }
}

pub(crate) fn status_from_db(s: &str) -> Result<JobStatus> {
    s.parse()
        .map_err(|e: String| CoreError::Corrupt(format!("job status in the database: {e}")))
}
