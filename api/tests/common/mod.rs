//! `spawn_app()`: the real server on a free port with a fresh data directory, plus helpers.
#![allow(dead_code)]

pub mod issuer;

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use thumbnail_api::Application;
use thumbnail_api::config::ApiConfig;
use thumbnail_core::apikeys::{self, Scope, Scopes};
use thumbnail_core::objects::S3Config;
use thumbnail_core::testsupport::{fresh_postgres_url, test_s3_config};
use tokio_util::sync::CancellationToken;

/// Point `config` at PostgreSQL (`database_url`) and the S3 server at `s3_endpoint` (the test
/// server's, or a proxy in front of it), with a key prefix.
pub fn use_backends(config: &mut ApiConfig, database_url: &str, s3: &S3Config, s3_endpoint: &str) {
    config.store.database_url = Some(database_url.to_owned());
    config.store.s3_bucket_name = Some(s3.bucket.clone());
    config.store.s3_endpoint_url = Some(s3_endpoint.to_owned());
    config.store.s3_region = s3.region.clone();
    config.store.aws_access_key_id = s3.access_key_id.clone();
    config.store.aws_secret_access_key = s3.secret_access_key.clone();
    config.store.s3_create_bucket = true;
    config.store.s3_key_prefix = "svc/".into();
    config.startup_timeout_seconds = 60;
}

/// Which stores an app under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stores {
    /// SQLite and the local object directory.
    Embedded,
    /// PostgreSQL and the S3 server started by scripts/test.sh.
    PostgresS3,
}

impl Stores {
    pub const BOTH: [Stores; 2] = [Stores::Embedded, Stores::PostgresS3];

    /// Start an app on these stores, with `tweak` applied after.
    pub async fn spawn(self, tweak: impl FnOnce(&mut ApiConfig)) -> TestApp {
        match self {
            Stores::Embedded => spawn_app_with(tweak).await,
            Stores::PostgresS3 => {
                let pg = fresh_postgres_url().await;
                let s3 = test_s3_config("tenancy");
                let endpoint = s3.endpoint_url.clone().unwrap();
                spawn_app_with(|c| {
                    use_backends(c, &pg, &s3, &endpoint);
                    tweak(c)
                })
                .await
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    /// The job store's database (`sqlite://…` or `postgres://…`).
    pub database_url: String,
    pub state: thumbnail_api::state::SharedState,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// No request of the tests waits longer than this for its answer (the longest long-poll they
/// make asks for 30 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client of the tests: every request has a deadline, so a hung server fails a test
/// instead of hanging the run.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("the HTTP client")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A GIF made from the PNG fixture (GIF encoding is not something the service does itself).
pub fn gif_fixture() -> Vec<u8> {
    let img = image::load_from_memory(&fixture("photo.png")).unwrap().to_rgba8();
    let mut out = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut out);
        encoder.encode_frame(image::Frame::new(img)).unwrap();
    }
    out
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut ApiConfig)) -> TestApp {
    let dir = tempfile::tempdir().unwrap().keep();
    spawn_app_in(dir, tweak).await
}

/// Start the app on an existing data directory (restarts keep their jobs and objects).
pub async fn spawn_app_in(data_dir: PathBuf, tweak: impl FnOnce(&mut ApiConfig)) -> TestApp {
    let mut config = ApiConfig::for_tests(&data_dir);
    tweak(&mut config);
    let database_url = config.store.database_url();
    let app = Application::build(config).await.expect("the app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(app.run_until_stopped(async move { stop.cancelled().await }));
    TestApp {
        address,
        client: http_client(),
        data_dir,
        database_url,
        state,
        shutdown,
        server,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Store a new API key for `owner` and return it.
    pub async fn create_key(&self, owner: &str, scopes: &[Scope]) -> String {
        let generated = apikeys::generate(owner, Scopes::of(scopes), Some("test".into()), None);
        self.state.key_store.insert(&generated.record).await.unwrap();
        generated.key
    }

    /// A request to `path` with `Authorization: Bearer {key}`.
    pub fn get_as(&self, key: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(key)
    }

    pub fn post_as(&self, key: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(key)
    }

    /// Upload the JPEG fixture with `key`, with `query` (e.g. `?owner=bob`).
    pub async fn upload_as(&self, key: &str, query: &str) -> reqwest::Response {
        let form = Form::new().part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"));
        self.post_as(key, &format!("/api/v1/thumbnails/{query}"))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Poll as `key` until the job is finished.
    pub async fn wait_finished_as(&self, key: &str, id: &str, deadline: Duration) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let response = self
                .get_as(key, &format!("/api/v1/jobs/{id}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let job: Value = response.json().await.unwrap();
            let status = job["status"].as_str().unwrap().to_owned();
            if status == "SUCCESS" || status == "FAILURE" {
                return job;
            }
            assert!(
                Instant::now() < until,
                "job {id} still {status} after {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop as SIGTERM would: stop accepting, let running jobs finish within the grace period.
    pub async fn stop(self) -> PathBuf {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
        self.data_dir
    }

    pub async fn upload_form(&self, form: Form, query: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/api/v1/thumbnails/{query}")))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn upload(&self, bytes: Vec<u8>, file_name: &str) -> reqwest::Response {
        let form = Form::new().part("image", Part::bytes(bytes).file_name(file_name.to_owned()));
        self.upload_form(form, "").await
    }

    /// Upload and return the job id, asserting the 202 contract.
    pub async fn accepted(&self, response: reqwest::Response) -> String {
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["message"], "Started to generate thumbnail");
        let id = body["job_id"].as_str().unwrap().to_owned();
        assert_eq!(location.as_deref(), Some(format!("/api/v1/jobs/{id}").as_str()));
        id
    }

    pub async fn job(&self, id: &str) -> Value {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/jobs/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Poll until the job is SUCCESS or FAILURE, failing after `deadline`.
    pub async fn wait_finished(&self, id: &str, deadline: Duration) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let job = self.job(id).await;
            let status = job["status"].as_str().unwrap().to_owned();
            if status == "SUCCESS" || status == "FAILURE" {
                return job;
            }
            assert!(
                Instant::now() < until,
                "job {id} still {status} after {deadline:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn thumbnail_url(&self, id: &str) -> String {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/jobs/{id}/thumbnail")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["job_id"], id);
        body["thumbnail_url"].as_str().unwrap().to_owned()
    }

    /// Files under the local object store (to prove nothing was left behind).
    pub fn stored_objects(&self) -> Vec<PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.is_dir() { walk(&p, out) } else { out.push(p) }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir.join("objects"), &mut out);
        out
    }

    pub async fn all_jobs(&self) -> Vec<Value> {
        let response = self
            .client
            .get(self.url("/api/v1/jobs/?limit=1000"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

pub async fn detail(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("no detail in {body}"))
            .to_owned(),
    )
}
