//! Helpers for tests that talk to the real servers started by `scripts/test.sh` (PostgreSQL and
//! an S3-compatible server), and for conformance tests that run the same checks against both
//! backends of each store. Only compiled with the `test-support` feature:
//!
//! ```toml
//! [dev-dependencies]
//! thumbnail-core = { workspace = true, features = ["test-support"] }
//! ```
//!
//! The servers are found through environment variables that `scripts/test.sh` (or
//! `eval "$(scripts/dev-services.sh env)"`) exports: `TEST_DATABASE_URL` (an admin URL; every
//! test gets a database of its own) and `TEST_S3_ENDPOINT`, `TEST_S3_ACCESS_KEY`,
//! `TEST_S3_SECRET_KEY`, `TEST_S3_REGION` (every test gets buckets of its own). Tests that need
//! them panic with a message saying so when they are unset: they never pass by skipping.

pub mod proxy;
use crate::jobstore::{DynJobStore, PostgresJobStore, SqliteJobStore};
use crate::model::{JobRecord, JobStatus, NewJob, OutputSpec, now};
use crate::objects::{DynObjectStore, LocalObjectStore, S3Config, S3ObjectStore};
use crate::signing::LinkSigner;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tempfile::TempDir;
use thumbnail_engine::{ImageFormat, ThumbnailOptions};
use uuid::Uuid;

const HOW_TO_RUN: &str = "run the tests with `scripts/test.sh`, which installs and starts PostgreSQL and an \
     S3 server; or start them once with `scripts/dev-services.sh start` and then \
     `eval \"$(scripts/dev-services.sh env)\"` before `cargo test`";

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!("{name} is not set: this test needs a real server; {HOW_TO_RUN}"),
    }
}

/// A finished job of 100 bytes with no outputs, for tests to adjust.
pub fn job_record(id: Uuid) -> JobRecord {
    JobRecord {
        id,
        status: JobStatus::Success,
        owner: None,
        source_bucket: "b".into(),
        source_key: format!("uploads/{id}.jpg"),
        source_format: ImageFormat::Jpeg,
        source_width: 1,
        source_height: 1,
        source_bytes: 100,
        outputs_requested: vec![],
        outputs: vec![],
        error: None,
        attempts: 1,
        dependency_retries: 0,
        version: 1,
        created_at: now(),
        started_at: None,
        finished_at: None,
        expires_at: None,
        purged_at: None,
        batch_id: None,
    }
}

/// A name unique to this call: `{prefix}-{12 random hex digits}`, lower case, at most 63 bytes,
/// usable as a bucket or database name.
/// Poll `check` until it returns `Some`, or panic with `what` after `timeout`: how tests wait for
/// a state (never a fixed sleep).
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

pub fn unique_name(prefix: &str) -> String {
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.len() < 3 { "test" } else { prefix };
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

/// The admin URL of the test PostgreSQL server (`TEST_DATABASE_URL`). Panics when unset.
pub fn admin_postgres_url() -> String {
    required_env("TEST_DATABASE_URL")
}

/// Create a new, empty database on the test PostgreSQL server and return its URL. Every call
/// gives a different database, so tests running in parallel never see each other's rows.
/// Panics when `TEST_DATABASE_URL` is unset or the server cannot be reached.
pub async fn fresh_postgres_url() -> String {
    use sqlx::Connection;
    let admin = admin_postgres_url();
    let name = unique_name("test").replace('-', "_");
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("connecting to TEST_DATABASE_URL: {e}; {HOW_TO_RUN}"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    let _ = conn.close().await;
    let mut url = url::Url::parse(&admin).expect("TEST_DATABASE_URL is not a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The test S3 server's settings (`TEST_S3_*`) with a new bucket name made from `bucket` (see
/// [`unique_name`]) and `create_bucket: true`. Panics when the variables are unset.
pub fn test_s3_config(bucket: &str) -> S3Config {
    S3Config {
        endpoint_url: Some(required_env("TEST_S3_ENDPOINT")),
        public_endpoint_url: None,
        region: std::env::var("TEST_S3_REGION")
            .ok()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_owned()),
        bucket: unique_name(bucket),
        access_key_id: Some(required_env("TEST_S3_ACCESS_KEY")),
        secret_access_key: Some(required_env("TEST_S3_SECRET_KEY")),
        credentials_file: None,
        create_bucket: true,
    }
}

/// Build an S3 store from `config` and create its bucket (when `config.create_bucket`).
pub async fn s3_store(config: &S3Config) -> S3ObjectStore {
    let store = S3ObjectStore::new(config)
        .await
        .unwrap_or_else(|e| panic!("building the S3 store: {e}"));
    store
        .ensure_bucket(config.create_bucket)
        .await
        .unwrap_or_else(|e| panic!("creating bucket {}: {e}; {HOW_TO_RUN}", config.bucket));
    store
}

/// Which implementation a test store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite job store or local-directory object store: the embedded default.
    Embedded,
    /// PostgreSQL job store or S3 object store: the real servers.
    Server,
}

/// A job store for one test, with what it needs kept alive (a temporary directory for SQLite).
pub struct TestJobStore {
    pub store: DynJobStore,
    /// The database URL (`sqlite://...` or `postgres://...`), to open a second connection.
    pub url: String,
    pub backend: Backend,
    _dir: Option<TempDir>,
}

impl std::ops::Deref for TestJobStore {
    type Target = DynJobStore;
    fn deref(&self) -> &DynJobStore {
        &self.store
    }
}

impl TestJobStore {
    /// A SQLite job store in a new temporary directory, migrated.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = SqliteJobStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
        TestJobStore {
            store: Arc::new(store),
            url,
            backend: Backend::Embedded,
            _dir: Some(dir),
        }
    }

    /// A PostgreSQL job store on a fresh database of the test server, migrated.
    pub async fn postgres() -> Self {
        let url = fresh_postgres_url().await;
        let store = PostgresJobStore::connect(&url, 8)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test database: {e}"));
        TestJobStore {
            store: Arc::new(store),
            url,
            backend: Backend::Server,
            _dir: None,
        }
    }

    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => Self::sqlite().await,
            Backend::Server => Self::postgres().await,
        }
    }

    /// Open the same database again as another store (as a second replica or a restart would).
    pub async fn reconnect(&self) -> DynJobStore {
        crate::jobstore::connect(&self.url, 4)
            .await
            .unwrap_or_else(|e| panic!("reconnecting to {}: {e}", self.url))
    }

    /// Run one SQL statement on the store's database through a separate connection: for tests
    /// that must arrange what the API cannot (identical timestamps, corrupt rows). Returns the
    /// number of rows affected. Timestamps in SQLite are microseconds since the epoch.
    pub async fn execute(&self, sql: &str) -> u64 {
        use sqlx::Connection;
        let done = match self.backend {
            Backend::Embedded => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("sqlite");
                let done = sqlx::query(sql).execute(&mut conn).await;
                let _ = conn.close().await;
                done.map(|d| d.rows_affected())
            }
            Backend::Server => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("postgres");
                let done = sqlx::query(sql).execute(&mut conn).await;
                let _ = conn.close().await;
                done.map(|d| d.rows_affected())
            }
        };
        done.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Set a job's `created_at`, e.g. to give several jobs the same one.
    pub async fn set_created_at(&self, id: Uuid, at: DateTime<Utc>) {
        let sql = match self.backend {
            Backend::Embedded => format!(
                "UPDATE jobs SET created_at = {} WHERE id = '{id}'",
                at.timestamp_micros()
            ),
            Backend::Server => format!(
                "UPDATE jobs SET created_at = '{}' WHERE id = '{id}'",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
        };
        assert_eq!(self.execute(&sql).await, 1, "no job {id}");
    }
}

/// The signing key of the local object stores made here.
pub const TEST_LINK_KEY: &[u8; 32] = b"test-support-link-signing-key-32";

/// An object store for one test.
pub struct TestObjectStore {
    pub store: DynObjectStore,
    pub backend: Backend,
    /// The local store's link signer (to check its presigned URLs).
    pub signer: Option<LinkSigner>,
    /// The S3 store's settings (bucket included).
    pub s3_config: Option<S3Config>,
    /// The local store's root directory (kept alive as long as this value).
    pub dir: Option<TempDir>,
}

impl std::ops::Deref for TestObjectStore {
    type Target = DynObjectStore;
    fn deref(&self) -> &DynObjectStore {
        &self.store
    }
}

impl TestObjectStore {
    /// A local-directory store in a new temporary directory; links point at
    /// `http://127.0.0.1:8080` and are signed with [`TEST_LINK_KEY`].
    pub fn local() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let signer = LinkSigner::new(TEST_LINK_KEY.to_vec());
        let store = LocalObjectStore::new(dir.path(), "http://127.0.0.1:8080", signer.clone())
            .expect("local object store");
        TestObjectStore {
            store: Arc::new(store),
            backend: Backend::Embedded,
            signer: Some(signer),
            s3_config: None,
            dir: Some(dir),
        }
    }

    /// An S3 store on the test server, with a new bucket.
    pub async fn s3() -> Self {
        let config = test_s3_config("objects");
        let store = s3_store(&config).await;
        TestObjectStore {
            store: Arc::new(store),
            backend: Backend::Server,
            signer: None,
            s3_config: Some(config),
            dir: None,
        }
    }

    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => Self::local(),
            Backend::Server => Self::s3().await,
        }
    }
}

/// A plausible new job owned by `owner`, with the default output.
pub fn sample_job(owner: Option<&str>) -> NewJob {
    let id = Uuid::new_v4();
    NewJob {
        expires_at: None,
        webhook_url: None,
        id,
        owner: owner.map(str::to_owned),
        source_bucket: "uploads".to_owned(),
        source_key: format!("images/original/{id}.jpg"),
        source_format: ImageFormat::Jpeg,
        source_width: 4000,
        source_height: 3000,
        source_bytes: 2_345_678,
        outputs: vec![OutputSpec::default_output(ThumbnailOptions::default())],
        batch: None,
    }
}
