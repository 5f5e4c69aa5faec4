//! What the API and the operator share: the job model, the job store (SQLite, PostgreSQL), the
//! object store (local directory, S3), signed links, and the worker that turns one job into
//! thumbnails, and API keys. The image pipeline itself is the pure `thumbnail-engine` crate, re-exported here.
#![forbid(unsafe_code)]

pub mod apikeys;
pub mod batches;
pub mod error;
pub mod handoff;
pub mod idempotency;
pub mod jobstore;
pub mod keys;
pub mod metrics;
pub mod model;
pub mod objects;
pub mod placeholder;
pub mod retention;
pub mod runner;
pub mod settings;
pub mod shutdown;
pub mod signing;
#[cfg(feature = "test-support")]
pub mod testsupport;
pub mod webhooks;
pub mod worker;

pub use error::{CoreError, Result};
pub use thumbnail_engine as engine;
