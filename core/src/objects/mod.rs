//! Where image bytes live: a local directory for the embedded default, S3 in production.
use crate::Result;
use async_trait::async_trait;
use bytes::Bytes;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod local;
mod s3;

pub use local::LocalObjectStore;
pub use s3::{
    CREDENTIALS_FILE_ENV, PING_TIMEOUT, S3Config, S3ObjectStore, StaticKeys, read_credentials_file,
};

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// Store a file's contents under `key`, streamed from disk (memory does not grow with size).
    async fn put_file(&self, key: &str, path: &Path, content_type: &str) -> Result<()>;

    /// Store small in-memory bytes (thumbnails) under `key`.
    async fn put_bytes(&self, key: &str, bytes: Bytes, content_type: &str) -> Result<()>;

    /// Read a whole object. `CoreError::ObjectNotFound` when it does not exist.
    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Delete an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Whether an object exists.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// A URL that downloads the object without further credentials, valid for `expires_in`.
    async fn presign_get(&self, key: &str, expires_in: Duration) -> Result<String>;

    /// The bucket name reported in job results (the local store reports its own name).
    fn bucket(&self) -> &str;

    /// The endpoint reported in job results (`endpoint_url` of the original service).
    fn endpoint_url(&self) -> &str;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<()>;

    /// "local" or "s3".
    fn backend(&self) -> &'static str;
}

pub type DynObjectStore = Arc<dyn ObjectStore>;
