//! The one error type of the shared library. Variants say which dependency failed, so that
//! callers can map them: user errors to 4xx, unavailable dependencies to 503, the rest to 500.
use thumbnail_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("job store: {0}")]
    JobStore(#[from] sqlx::Error),
    #[error("job store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("object store: {0}")]
    ObjectStore(String),
    /// The object store refused our credentials or permissions (a wrong or revoked key, a
    /// missing grant): retrying cannot help until someone changes the configuration.
    #[error("object store refused the credentials or permissions: {0}")]
    ObjectStoreDenied(String),
    #[error("object not found: {0}")]
    ObjectNotFound(String),
    #[error("invalid object key: {0}")]
    InvalidKey(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal: {0}")]
    Internal(String),
    /// The Kubernetes API failed or did not answer (deleting a job's ThumbnailJob).
    #[error("Kubernetes API: {0}")]
    Cluster(String),
    /// The render panicked (a bug in a decoder or the pipeline); the job is retried up to the
    /// attempt cap.
    #[error("the render panicked: {0}")]
    RenderPanicked(String),
    /// The render took longer than RENDER_TIMEOUT_SECONDS.
    #[error("the render took longer than {} s", .0.as_secs_f64())]
    RenderTimeout(std::time::Duration),
}

impl CoreError {
    /// Errors of a dependency that may come back (database or object store down, timeouts):
    /// worth retrying with backoff, and answered 503 at the API.
    pub fn is_transient(&self) -> bool {
        match self {
            CoreError::JobStore(e) => sqlx_is_transient(e),
            CoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => sqlx_is_transient(e),
            CoreError::ObjectStore(_) | CoreError::Io(_) | CoreError::Cluster(_) => true,
            _ => false,
        }
    }

    /// The dependency that failed, for `detail` texts and `/ready`.
    pub fn dependency(&self) -> Option<&'static str> {
        match self {
            CoreError::JobStore(_) | CoreError::Migrate(_) => Some("job store (database)"),
            CoreError::ObjectStore(_) | CoreError::ObjectStoreDenied(_) => Some("object store (S3)"),
            CoreError::Cluster(_) => Some("the Kubernetes API"),
            _ => None,
        }
    }
}

/// Whether a database error may go away by itself: the server unreachable, restarting or
/// overloaded, a pool exhausted, a serialization conflict, a busy SQLite file. Mistakes of the
/// caller or of the data (constraint violations, decoding, bad configuration) are not.
fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
                matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6))
            } else {
                // SQLSTATE classes: connection exception, transaction rollback (serialization
                // failure, deadlock), insufficient resources, operator intervention (admin
                // shutdown, cannot connect now), system error; a lock not available; a read-only
                // transaction (talking to a replica during a failover).
                ["08", "40", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || code == "55P03"
                    || code == "25006"
            }
        }
        sqlx::Error::Migrate(m) => {
            matches!(&**m, sqlx::migrate::MigrateError::Execute(inner) if sqlx_is_transient(inner))
        }
        _ => false,
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
