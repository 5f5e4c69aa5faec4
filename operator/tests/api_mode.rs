//! The API's batches and webhooks in Kubernetes mode, against the real API server: every
//! accepted image of a batch becomes a ThumbnailJob labelled with the batch, so the real `kubectl
//! get tj -l thumbnailer.dev/batch=ID` shows exactly the batch's jobs, and the operator's work
//! brings the batch's progress to N/M in the REST API; a job's webhook attempts are shown on its
//! ThumbnailJob's status next to what the operator writes there.
mod common;

use common::*;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batchs_thumbnailjobs_carry_its_label_and_the_operator_completes_it() {
    let world = World::new().await;
    let operator = world.operator().await;
    let dir = tempfile::tempdir().unwrap();
    let api = RunningApi::start(&world, world.api_config(dir.path())).await;

    let mut form = Form::new().text("width", "32").text("owner", "alice");
    for i in 0..5 {
        form = form.part(
            "image",
            Part::bytes(fixture("photo.jpg")).file_name(format!("p{i}.jpg")),
        );
    }
    form = form.part(
        "image",
        Part::bytes(b"not an image".to_vec()).file_name("bad.txt"),
    );
    let response = api.post_form("/api/v1/batches/", form).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let batch = body["batch_id"].as_str().unwrap().to_owned();
    let mut job_ids: Vec<String> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["job_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(job_ids.len(), 5, "{body}");
    assert_eq!(body["entries"][5]["status"], 415, "{body}");

    // The real kubectl finds the batch's resources, and only them, by its label.
    let selector = format!("thumbnailer.dev/batch={batch}");
    let (ok, out, err) = world.cluster.kubectl(
        &[
            "get",
            "tj",
            "-n",
            &world.ns,
            "-l",
            &selector,
            "-o",
            "jsonpath={.items[*].spec.jobId}",
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut listed: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    listed.sort();
    job_ids.sort();
    assert_eq!(listed, job_ids);
    let (ok, out, _) = world.cluster.kubectl(
        &[
            "get",
            "tj",
            "-n",
            &world.ns,
            "-l",
            "thumbnailer.dev/batch=00000000-0000-0000-0000-000000000000",
            "-o",
            "name",
        ],
        None,
    );
    assert!(ok && out.trim().is_empty(), "{out}");

    // The operator renders them; the batch's progress comes from the rows it updates.
    let done = eventually("the batch to complete", WAIT, || async {
        let (_, v) = api.get(&format!("/api/v1/batches/{batch}")).await;
        (v["progress"]["done"] == true).then_some(v)
    })
    .await;
    assert_eq!(done["progress"]["summary"], "5/5", "{done}");
    assert_eq!(done["progress"]["succeeded"], 5, "{done}");
    assert_eq!(done["progress"]["refused"], 1, "{done}");

    api.stop().await;
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);
}

/// A receiver that answers 500 once, then 200, and counts what it got.
async fn start_receiver() -> (u16, Arc<Mutex<u32>>) {
    let got = Arc::new(Mutex::new(0u32));
    let state = got.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let state = state.clone();
            async move {
                let mut n = state.lock().unwrap();
                *n += 1;
                if *n == 1 {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (port, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_attempts_are_shown_on_the_thumbnailjob() {
    let world = World::new().await;
    let operator = world.operator().await;
    let (port, got) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = world.api_config(dir.path());
    config.webhooks.webhook_secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    config.webhooks.webhook_retry_schedule = "0,200ms,200ms".into();
    config.webhooks.webhook_allow_cidrs = "127.0.0.0/8".into();
    let api = RunningApi::start(&world, config).await;
    let hook = format!("http://127.0.0.1:{port}/hook");
    let id = api.upload(&[("webhook_url", &hook)]).await;
    let name = format!("tj-{id}");

    // The operator's status and the API's `status.webhook` side by side: a 500, then delivered.
    let tj = eventually("the delivery on the ThumbnailJob", WAIT, || async {
        let tj = world.tj(&name).await?;
        let webhook = tj.status.as_ref()?.webhook.as_ref()?;
        (webhook.state == "delivered").then_some(tj)
    })
    .await;
    let status = tj.status.unwrap();
    println!(
        "status.webhook: {}",
        serde_json::to_string(&status.webhook).unwrap()
    );
    assert_eq!(status.phase, Some(thumbnail_crds::Phase::Succeeded));
    let webhook = status.webhook.unwrap();
    assert_eq!(webhook.event_type, "thumbnail.job.succeeded");
    assert_eq!(webhook.attempts, 2);
    assert_eq!(webhook.last_attempt.status_code, Some(200));
    assert_eq!(webhook.last_attempt.outcome, "delivered");
    assert!(webhook.next_attempt_time.is_none());
    assert_eq!(*got.lock().unwrap(), 2);
    // The same attempts as the REST API lists.
    let (_, list) = api.get(&format!("/api/v1/jobs/{id}/deliveries")).await;
    assert_eq!(list["deliveries"][0]["id"], webhook.delivery_id.as_str());
    assert_eq!(list["deliveries"][0]["attempts"].as_array().unwrap().len(), 2);

    api.stop().await;
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);
}
