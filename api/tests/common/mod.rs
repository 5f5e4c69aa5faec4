//! `spawn_app()`: the real server on a free port with a fresh data directory, plus helpers.
#![allow(dead_code)]

use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use thumbnail_api::Application;
use thumbnail_api::config::ApiConfig;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
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
        state,
        shutdown,
        server,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
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
