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

    /// Read at most the first `max_len` bytes of an object, and its whole size: memory stays
    /// bounded whatever the object's size (an object named by a hand-written manifest can be
    /// anything). `CoreError::ObjectNotFound` when it does not exist.
    async fn get_prefix(&self, key: &str, max_len: u64) -> Result<Prefix>;

    /// Delete an object; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Whether an object exists.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// At most `limit` objects whose keys start with `prefix` (which ends in `/`), in key order,
    /// starting after the key `after` (for paging). The retention sweeper's orphan scan reads it.
    async fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<ObjectEntry>>;

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

/// One object of a listing ([`ObjectStore::list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub key: String,
    pub bytes: u64,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// The start of an object ([`ObjectStore::get_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix {
    /// The first bytes, at most as many as asked for.
    pub bytes: Bytes,
    /// The object's whole size.
    pub total_size: u64,
}

impl Prefix {
    /// Whether `bytes` is the whole object.
    pub fn is_whole(&self) -> bool {
        self.bytes.len() as u64 == self.total_size
    }
}

/// The total size in a `Content-Range: bytes FIRST-LAST/TOTAL` value. Pure.
pub fn content_range_total(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes")?
        .rsplit_once('/')?
        .1
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_totals() {
        assert_eq!(content_range_total("bytes 0-99/1234"), Some(1234));
        assert_eq!(content_range_total("bytes */0"), Some(0));
        assert_eq!(content_range_total("bytes 0-99/*"), None);
        assert_eq!(content_range_total("items 0-1/2"), None);
    }
}
