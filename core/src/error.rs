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
}

impl CoreError {
    /// Errors of a dependency that may come back (database or object store down, timeouts):
    /// worth retrying with backoff, and answered 503 at the API.
    pub fn is_transient(&self) -> bool {
        match self {
            CoreError::JobStore(e) => {
                !matches!(e, sqlx::Error::RowNotFound | sqlx::Error::ColumnDecode { .. })
            }
            CoreError::ObjectStore(_) | CoreError::Io(_) => true,
            _ => false,
        }
    }

    /// The dependency that failed, for `detail` texts and `/ready`.
    pub fn dependency(&self) -> Option<&'static str> {
        match self {
            CoreError::JobStore(_) | CoreError::Migrate(_) => Some("job store (database)"),
            CoreError::ObjectStore(_) => Some("object store (S3)"),
            _ => None,
        }
    }
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;
