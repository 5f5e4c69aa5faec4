//! The REST API in Kubernetes mode, running in-process next to the operators of a [`World`].
use super::{World, eventually, fixture};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::time::Duration;
use thumbnail_api::Application;
use thumbnail_api::config::ApiConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct RunningApi {
    pub base: String,
    pub http: reqwest::Client,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningApi {
    /// Start the API with `config` (see [`World::api_config`]) and the chart's API ServiceAccount.
    pub async fn start(world: &World, config: ApiConfig) -> RunningApi {
        let app = Application::build_with_kube_client(config, Some(world.api_client()))
            .await
            .expect("the API starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(app.run_until_stopped(async move { token.cancelled().await }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        RunningApi {
            base,
            http,
            stop,
            task,
        }
    }

    /// POST `form` to `path` (e.g. `/api/v1/thumbnails/`).
    pub async fn post_form(&self, path: &str, form: Form) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// Upload `form` as a single image.
    pub async fn upload_form(&self, form: Form) -> reqwest::Response {
        self.post_form("/api/v1/thumbnails/", form).await
    }

    /// Upload photo.jpg with extra form fields; the job id.
    pub async fn upload(&self, fields: &[(&str, &str)]) -> Uuid {
        let mut form = Form::new().part("image", Part::bytes(fixture("photo.jpg")).file_name("photo.jpg"));
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let response = self.upload_form(form).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        body["job_id"].as_str().unwrap().parse().unwrap()
    }

    /// GET `path`: the status and the JSON body (null when there is none).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Wait until GET of the job answers `want` (never FAILURE meanwhile).
    pub async fn until_status(&self, id: Uuid, want: StatusCode, timeout: Duration) -> Value {
        eventually(&format!("GET of job {id} to answer {want}"), timeout, || async {
            let (status, body) = self.get(&format!("/api/v1/jobs/{id}")).await;
            assert_ne!(body["status"], "FAILURE", "{body}");
            (status == want).then_some(body)
        })
        .await
    }

    /// Wait until the job succeeds (never FAILURE meanwhile).
    pub async fn until_success(&self, id: Uuid, timeout: Duration) -> Value {
        eventually(&format!("job {id} to succeed"), timeout, || async {
            let (_, body) = self.get(&format!("/api/v1/jobs/{id}")).await;
            assert_ne!(body["status"], "FAILURE", "{body}");
            (body["status"] == "SUCCESS").then_some(body)
        })
        .await
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}
