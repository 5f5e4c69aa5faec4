//! The API on PostgreSQL and a real S3 server (started by `scripts/test.sh`), and what happens when
//! either goes away: 503 naming the dependency with nothing half-stored, jobs that retry and finish
//! when it returns, `/ready` naming what is down, and a start-up that waits.
mod common;

use common::{detail, fixture, spawn_app_with, use_backends};
use serde_json::Value;
use std::time::{Duration, Instant};
use thumbnail_api::config::ApiConfig;
use thumbnail_core::jobstore::{JobStore, Outcome, PostgresJobStore};
use thumbnail_core::model::JobError;
use thumbnail_core::model::{NewJob, OutputSpec};
use thumbnail_core::objects::{ObjectStore, S3ObjectStore};
use thumbnail_core::testsupport::proxy::{Proxy, socket_of, via};
use thumbnail_core::testsupport::{fresh_postgres_url, s3_store, sample_job, test_s3_config};
use thumbnail_engine::{ImageFormat, ThumbnailOptions};

const DEADLINE: Duration = Duration::from_secs(60);

async fn object_count(store: &S3ObjectStore) -> usize {
    let listed = store
        .client()
        .list_objects_v2()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    listed.contents().len()
}

#[tokio::test]
async fn postgres_and_s3_end_to_end_with_a_presigned_url() {
    let pg = fresh_postgres_url().await;
    let s3 = test_s3_config("e2e");
    let endpoint = s3.endpoint_url.clone().unwrap();
    let app = spawn_app_with(|c| use_backends(c, &pg, &s3, &endpoint)).await;
    let id = app
        .accepted(app.upload(fixture("photo.jpg"), "p.jpg").await)
        .await;
    let job = app.wait_finished(&id, DEADLINE).await;
    assert_eq!(job["status"], "SUCCESS", "{job}");
    assert_eq!(
        job["result"],
        serde_json::json!({
            "job_id": id, "endpoint_url": endpoint.trim_end_matches('/'), "bucket": s3.bucket,
            "key": format!("svc/images/thumbnail/{id}.jpg"),
        })
    );
    assert_eq!(job["source"]["key"], format!("svc/images/original/{id}.jpg"));
    let url = app.thumbnail_url(&id).await;
    assert!(
        url.starts_with(&format!(
            "{}/{}/svc/images/thumbnail/{id}.jpg?",
            endpoint.trim_end_matches('/'),
            s3.bucket
        )),
        "{url}"
    );
    assert!(url.contains("X-Amz-Signature="), "{url}");
    // A plain HTTP client, no SDK: the presigned URL alone is enough.
    let response = common::http_client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let img = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (100, 100));
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
}

#[tokio::test]
async fn s3_down_at_upload_answers_503_and_stores_nothing() {
    let pg = fresh_postgres_url().await;
    let s3 = test_s3_config("s3down");
    let real = s3_store(&s3).await;
    let proxy = Proxy::start(socket_of(s3.endpoint_url.as_deref().unwrap())).await;
    let app = spawn_app_with(|c| use_backends(c, &pg, &s3, &proxy.url("http"))).await;

    proxy.cut();
    let (status, text) = detail(app.upload(fixture("photo.jpg"), "p.jpg").await).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("object store"), "{text}");
    let response = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let ready: Value = response.json().await.unwrap();
    assert!(
        ready["detail"].as_str().unwrap().contains("object store"),
        "{ready}"
    );
    assert_eq!(ready["checks"]["database"], "ok", "{ready}");
    // Only what clients may know: no error text of the S3 client.
    let check = ready["checks"]["object_store"].as_str().unwrap();
    assert!(check == "unavailable" || check == "timeout", "{ready}");
    assert_eq!(
        ready["detail"].as_str().unwrap(),
        format!("object store (s3) {check}"),
        "{ready}"
    );
    assert!(app.all_jobs().await.is_empty());
    assert_eq!(object_count(&real).await, 0);
    // Liveness does not depend on S3.
    assert_eq!(
        app.client.get(app.url("/health")).send().await.unwrap().status(),
        200
    );

    proxy.restore();
    let id = app
        .accepted(app.upload(fixture("photo.jpg"), "p.jpg").await)
        .await;
    assert_eq!(app.wait_finished(&id, DEADLINE).await["status"], "SUCCESS");
}

#[tokio::test]
async fn postgres_down_at_upload_answers_503_and_removes_the_original() {
    let pg = fresh_postgres_url().await;
    let s3 = test_s3_config("pgdown");
    let real = s3_store(&s3).await;
    let proxy = Proxy::start(socket_of(&pg)).await;
    let pg_via_proxy = via(&pg, &proxy);
    let endpoint = s3.endpoint_url.clone().unwrap();
    let app = spawn_app_with(|c| use_backends(c, &pg_via_proxy, &s3, &endpoint)).await;

    proxy.cut();
    let (status, text) = detail(app.upload(fixture("photo.png"), "p.png").await).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("database"), "{text}");
    let response = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let ready: Value = response.json().await.unwrap();
    assert!(ready["detail"].as_str().unwrap().contains("database"), "{ready}");
    assert_eq!(
        object_count(&real).await,
        0,
        "the original of the refused upload is still in the bucket"
    );

    proxy.restore();
    let id = app
        .accepted(app.upload(fixture("photo.png"), "p.png").await)
        .await;
    assert_eq!(app.wait_finished(&id, DEADLINE).await["status"], "SUCCESS");
    assert_eq!(object_count(&real).await, 2);
}

#[tokio::test]
async fn a_job_retries_while_s3_is_down_and_completes_when_it_returns() {
    let pg = fresh_postgres_url().await;
    let s3 = test_s3_config("retry");
    let proxy = Proxy::start(socket_of(s3.endpoint_url.as_deref().unwrap())).await;
    let app = spawn_app_with(|c| use_backends(c, &pg, &s3, &proxy.url("http"))).await;

    // The original is stored; then S3 goes away before the job runs.
    let id = uuid::Uuid::new_v4();
    let key = format!("svc/images/original/{id}.png");
    app.state
        .objects
        .put_bytes(&key, fixture("photo.png").into(), "image/png")
        .await
        .unwrap();
    let job = app
        .state
        .jobs
        .create(&NewJob {
            expires_at: None,
            webhook_url: None,
            id,
            owner: None,
            source_bucket: s3.bucket.clone(),
            source_key: key,
            source_format: ImageFormat::Png,
            source_width: 240,
            source_height: 150,
            source_bytes: 1,
            outputs: vec![OutputSpec::default_output(ThumbnailOptions::default())],
            batch: None,
        })
        .await
        .unwrap();
    proxy.cut();
    app.state.launcher.launch(&job, None).await.unwrap();

    // It keeps trying (attempts grow) without failing.
    let until = Instant::now() + DEADLINE;
    loop {
        let job = app.job(&id.to_string()).await;
        assert_ne!(job["status"], "FAILURE", "{job}");
        if job["attempts"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(Instant::now() < until, "no retry: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.restore();
    let job = app.wait_finished(&id.to_string(), DEADLINE).await;
    assert_eq!(job["status"], "SUCCESS", "{job}");
    assert!(job["attempts"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn start_up_waits_for_the_database_instead_of_crashing() {
    let pg = fresh_postgres_url().await;
    let s3 = test_s3_config("startup");
    let proxy = Proxy::start(socket_of(&pg)).await;
    proxy.cut();
    let pg_via_proxy = via(&pg, &proxy);
    let endpoint = s3.endpoint_url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let mut config = ApiConfig::for_tests(&dir);
    use_backends(&mut config, &pg_via_proxy, &s3, &endpoint);
    let starting = tokio::spawn(thumbnail_api::Application::build(config));
    // While the database is unreachable, start-up keeps retrying rather than failing: wait until
    // it has knocked three times (each refused by the proxy), still running.
    let until = Instant::now() + DEADLINE;
    while proxy.refused() < 3 {
        assert!(
            !starting.is_finished(),
            "start-up gave up while the database was down"
        );
        assert!(Instant::now() < until, "start-up did not retry the database");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !starting.is_finished(),
        "start-up gave up while the database was down"
    );
    proxy.restore();
    let app = tokio::time::timeout(DEADLINE, starting)
        .await
        .expect("start-up finishes")
        .unwrap();
    assert!(app.is_ok(), "start-up failed after the database came back");
}

/// Jobs another process finishes (here a second store connection standing in for the operator)
/// reach this API's long-poll waiters through PostgreSQL's notifications, not only at the next
/// re-read. The relay may still be connecting when the test starts, so fresh jobs are finished
/// until one is seen, within the deadline.
#[tokio::test]
async fn jobs_finished_by_another_process_wake_this_processs_waiters() {
    let pg = fresh_postgres_url().await;
    let s3 = test_s3_config("notify");
    let endpoint = s3.endpoint_url.clone().unwrap();
    let app = spawn_app_with(|c| use_backends(c, &pg, &s3, &endpoint)).await;
    let mut finished = app.state.job_events.subscribe();
    let operator = PostgresJobStore::connect(&pg, 2).await.unwrap();
    let failure = Outcome::Failure(JobError {
        reason: "Test".into(),
        message: "finished by another process".into(),
    });
    let until = Instant::now() + DEADLINE;
    loop {
        assert!(
            Instant::now() < until,
            "no finished-job notification reached the API"
        );
        let job = operator.create(&sample_job(None)).await.unwrap();
        operator.start(job.id).await.unwrap();
        assert!(operator.finish(job.id, 1, &failure).await.unwrap());
        let seen = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(id) = finished.recv().await {
                if id == job.id {
                    return true;
                }
            }
            false
        })
        .await;
        if seen == Ok(true) {
            break;
        }
    }
}

/// Wrong S3 keys are a configuration mistake, not an outage: start-up names the refusal and
/// gives up at once instead of retrying for STARTUP_TIMEOUT_SECONDS (300 s by default).
#[tokio::test]
async fn start_up_with_wrong_s3_keys_fails_at_once() {
    let pg = fresh_postgres_url().await;
    let s3 = test_s3_config("startup-keys");
    let endpoint = s3.endpoint_url.clone().unwrap();
    // Positive control: the same settings with the right keys start.
    let dir = tempfile::tempdir().unwrap();
    let mut config = ApiConfig::for_tests(dir.path());
    use_backends(&mut config, &pg, &s3, &endpoint);
    config.store.s3_create_bucket = true;
    let app = tokio::time::timeout(DEADLINE, thumbnail_api::Application::build(config))
        .await
        .expect("start-up with the right keys hangs");
    assert!(
        app.is_ok(),
        "start-up with the right keys failed: {:?}",
        app.err()
    );
    drop(app);

    let dir = tempfile::tempdir().unwrap();
    let mut config = ApiConfig::for_tests(dir.path());
    use_backends(&mut config, &pg, &s3, &endpoint);
    config.store.aws_secret_access_key = Some("not-the-secret".into());
    config.startup_timeout_seconds = 300;
    let started = Instant::now();
    let err = match tokio::time::timeout(DEADLINE, thumbnail_api::Application::build(config))
        .await
        .expect("start-up with wrong keys kept retrying")
    {
        Ok(_) => panic!("start-up with wrong keys succeeded"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!err.is_transient(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "start-up took {:?} to give up",
        started.elapsed()
    );
}
