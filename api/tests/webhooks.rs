//! Completion webhooks against a real receiving server in the test (axum on loopback, allowed by
//! WEBHOOK_ALLOW_CIDRS), on SQLite + local objects and on PostgreSQL + S3: the signature checked
//! by the Standard Webhooks reference library, retries of failing receivers, timeouts of slow
//! ones, redirects not followed, 410 disabling the target, the SSRF rule, a restart in between,
//! and the deliveries endpoint's owner rule.
mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::{Stores, TestApp, fixture, spawn_app_in, use_backends};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thumbnail_api::config::{ApiConfig, AuthMode};
use thumbnail_core::apikeys::Scope;
use thumbnail_core::testsupport::{eventually, fresh_postgres_url, test_s3_config};

const DEADLINE: Duration = Duration::from_secs(60);
/// The Standard Webhooks test secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_dGhpcyBpcyBhIG5ldyBzZWNyZXQga2V5IQ==";

/// How the receiver answers one request.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16),
    /// 200, but only after this long.
    Slow(Duration),
    /// 302 to `/elsewhere` (which records any visit).
    Redirect,
}

/// A request the receiver got, and whether the reference library accepted its signature.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Value,
    verified_with: Vec<&'static str>,
}

#[derive(Default)]
struct ReceiverState {
    /// Answers to give, in order; 200 once empty (unless `default` says otherwise).
    answers: VecDeque<Answer>,
    default: Option<u16>,
    received: Vec<Received>,
    elsewhere_visits: usize,
}

#[derive(Clone)]
struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    port: u16,
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let verified_with = [("old", SECRET), ("new", NEW_SECRET)]
        .into_iter()
        .filter(|(_, secret)| {
            standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(&body, &headers)
                .is_ok()
        })
        .map(|(name, _)| name)
        .collect();
    let answer = {
        let mut s = state.lock().unwrap();
        s.received.push(Received {
            headers: headers.clone(),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            verified_with,
        });
        s.answers
            .pop_front()
            .unwrap_or(Answer::Status(s.default.unwrap_or(200)))
    };
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
        Answer::Redirect => (StatusCode::FOUND, [("location", "/elsewhere")]).into_response(),
    }
}

async fn elsewhere(State(state): State<Arc<Mutex<ReceiverState>>>) -> StatusCode {
    state.lock().unwrap().elsewhere_visits += 1;
    StatusCode::OK
}

impl Receiver {
    async fn start(answers: Vec<Answer>) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            answers: answers.into(),
            ..Default::default()
        }));
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .route("/elsewhere", axum::routing::any(elsewhere))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Receiver { state, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn answer_by_default(&self, code: u16) {
        self.state.lock().unwrap().default = Some(code);
    }
}

/// Webhooks on, with a short retry schedule and timeout, loopback allowed.
fn webhooks_on(c: &mut ApiConfig) {
    c.webhooks.webhook_secret = Some(SECRET.into());
    c.webhooks.webhook_retry_schedule = "0,200ms,200ms,200ms".into();
    c.webhooks.webhook_timeout_seconds = 1;
    c.webhooks.webhook_allow_cidrs = "127.0.0.0/8".into();
}

async fn upload_with_hook(app: &TestApp, url: &str) -> String {
    let form = Form::new()
        .part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"))
        .text("webhook_url", url.to_owned());
    app.accepted(app.upload_form(form, "").await).await
}

async fn deliveries(app: &TestApp, id: &str) -> Value {
    let response = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{id}/deliveries")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Poll the deliveries endpoint until the job's one delivery is in `state`.
async fn wait_delivery(app: &TestApp, id: &str, state: &str) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let list = deliveries(app, id).await;
        if list["deliveries"][0]["state"] == state {
            assert_eq!(list["deliveries"].as_array().unwrap().len(), 1, "{list}");
            return list["deliveries"][0].clone();
        }
        assert!(Instant::now() < until, "delivery of job {id} not {state}: {list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn outcomes(delivery: &Value) -> Vec<(String, Value)> {
    delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap().to_owned(),
                a["status_code"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_event_is_signed_and_verified_by_the_reference_library_on_both_stores() {
    for stores in Stores::BOTH {
        let receiver = Receiver::start(vec![]).await;
        // A rotation: the new secret signs first, the old one too.
        let app = stores
            .spawn(|c| {
                webhooks_on(c);
                c.webhooks.webhook_secret = Some(format!("{NEW_SECRET} {SECRET}"));
            })
            .await;
        let id = upload_with_hook(&app, &receiver.url()).await;
        let job = app.wait_finished(&id, DEADLINE).await;
        assert_eq!(job["status"], "SUCCESS", "{job}");
        let delivery = wait_delivery(&app, &id, "delivered").await;
        assert_eq!(
            outcomes(&delivery),
            [("delivered".to_owned(), Value::from(200))],
            "{stores:?}"
        );
        assert_eq!(delivery["event_type"], "thumbnail.job.succeeded");
        assert_eq!(delivery["url"], receiver.url());
        assert_eq!(delivery["attempts"][0]["error"], Value::Null);

        let received = receiver.received();
        assert_eq!(received.len(), 1);
        let got = &received[0];
        assert_eq!(
            got.verified_with,
            ["old", "new"],
            "both secrets' signatures verify"
        );
        assert_eq!(got.headers["webhook-id"], delivery["id"].as_str().unwrap());
        assert_eq!(got.headers["content-type"], "application/json");
        let signatures = got.headers["webhook-signature"].to_str().unwrap();
        assert_eq!(signatures.split(' ').filter(|s| s.starts_with("v1,")).count(), 2);
        assert_eq!(got.body["type"], "thumbnail.job.succeeded");
        assert_eq!(got.body["data"]["job_id"], id);
        assert_eq!(got.body["data"]["status"], "SUCCESS");
        assert_eq!(got.body["data"]["error"], Value::Null);
        let thumbnail = &got.body["data"]["result"]["thumbnails"][0];
        assert_eq!(thumbnail["key"], job["outputs"][0]["key"], "{job}");
        assert_eq!(thumbnail["bytes"], job["outputs"][0]["bytes"]);

        let metrics = app.metrics().await;
        assert!(
            metrics.contains("thumbnail_webhook_deliveries_total{outcome=\"delivered\"} 1"),
            "{metrics}"
        );
        assert!(metrics.contains("thumbnail_webhook_attempts_total{outcome=\"delivered\"} 1"));
        app.stop().await;
    }
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_answers_on_both_stores() {
    for stores in Stores::BOTH {
        let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(503)]).await;
        let app = stores.spawn(webhooks_on).await;
        let id = upload_with_hook(&app, &receiver.url()).await;
        let delivery = wait_delivery(&app, &id, "delivered").await;
        assert_eq!(
            outcomes(&delivery),
            [
                ("http_error".to_owned(), Value::from(500)),
                ("http_error".to_owned(), Value::from(503)),
                ("delivered".to_owned(), Value::from(200)),
            ],
            "{stores:?}: {delivery}"
        );
        assert_eq!(delivery["attempts"][0]["error"], "HTTP 500");
        // One event: the same id and body on every attempt, each freshly signed.
        let received = receiver.received();
        assert_eq!(received.len(), 3);
        for got in &received {
            assert_eq!(got.headers["webhook-id"], delivery["id"].as_str().unwrap());
            assert_eq!(got.body, received[0].body);
            assert_eq!(got.verified_with, ["old"]);
        }
        let metrics = app.metrics().await;
        assert!(
            metrics.contains("thumbnail_webhook_attempts_total{outcome=\"http_error\"} 2"),
            "{metrics}"
        );
        // The backlog gauge is re-read every round: it drops to 0 once the round that delivered ends.
        let until = Instant::now() + DEADLINE;
        loop {
            let metrics = app.metrics().await;
            if metrics.contains("thumbnail_webhook_pending 0") {
                break;
            }
            assert!(metrics.contains("thumbnail_webhook_pending"), "{metrics}");
            assert!(Instant::now() < until, "{metrics}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn a_slow_receiver_times_out_and_the_schedule_ends_in_failure() {
    let receiver = Receiver::start(vec![Answer::Slow(Duration::from_secs(3))]).await;
    receiver.answer_by_default(500);
    let app = Stores::Embedded.spawn(webhooks_on).await;
    let id = upload_with_hook(&app, &receiver.url()).await;
    let delivery = wait_delivery(&app, &id, "failed").await;
    let attempts = outcomes(&delivery);
    assert_eq!(attempts.len(), 4, "the schedule has four attempts: {delivery}");
    assert_eq!(attempts[0], ("timeout".to_owned(), Value::Null));
    assert_eq!(delivery["attempts"][0]["error"], "no answer within 1 s");
    let latency = delivery["attempts"][0]["latency_ms"].as_u64().unwrap();
    assert!(
        (1000..3000).contains(&latency),
        "cut at the timeout: {latency} ms"
    );
    assert!(
        attempts[1..]
            .iter()
            .all(|(o, code)| o == "http_error" && code == 500)
    );
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert_eq!(delivery["last_error"], "HTTP 500");
    app.stop().await;
}

#[tokio::test]
async fn redirects_are_not_followed_and_410_disables_the_target() {
    let redirecting = Receiver::start(vec![Answer::Redirect; 4]).await;
    let gone = Receiver::start(vec![Answer::Status(410)]).await;
    let app = Stores::Embedded.spawn(webhooks_on).await;
    let redirected = upload_with_hook(&app, &redirecting.url()).await;
    let disabled = upload_with_hook(&app, &gone.url()).await;

    let delivery = wait_delivery(&app, &redirected, "failed").await;
    assert_eq!(
        outcomes(&delivery),
        vec![("redirect".to_owned(), Value::from(302)); 4]
    );
    assert!(
        delivery["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{delivery}"
    );
    assert_eq!(redirecting.state.lock().unwrap().elsewhere_visits, 0);

    let delivery = wait_delivery(&app, &disabled, "disabled").await;
    assert_eq!(outcomes(&delivery), [("gone".to_owned(), Value::from(410))]);
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert_eq!(gone.received().len(), 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("thumbnail_webhook_deliveries_total{outcome=\"disabled\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn internal_targets_are_refused_without_the_allow_list() {
    let receiver = Receiver::start(vec![]).await;
    let app = Stores::Embedded
        .spawn(|c| {
            webhooks_on(c);
            c.webhooks.webhook_allow_cidrs = String::new();
        })
        .await;
    // An IP literal (checked before sending) and a name that resolves to loopback (checked by
    // the resolver, on the addresses connected to).
    let literal = upload_with_hook(&app, &receiver.url()).await;
    let named = upload_with_hook(&app, &format!("http://localhost:{}/hook", receiver.port)).await;
    for (id, host) in [(&literal, "127.0.0.1"), (&named, "localhost")] {
        let delivery = wait_delivery(&app, id, "failed").await;
        assert_eq!(
            outcomes(&delivery),
            [("refused".to_owned(), Value::Null)],
            "{delivery}"
        );
        let error = delivery["attempts"][0]["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("refused: {host} is ")) && error.contains("loopback address"),
            "{error}"
        );
    }
    assert!(receiver.received().is_empty(), "nothing was sent");
    app.stop().await;
}

/// Start an app on `data_dir` and, for PostgreSQL, on `pg` (the same database across restarts).
async fn start_on(stores: Stores, data_dir: std::path::PathBuf, pg: &str) -> TestApp {
    let s3 = test_s3_config("webhooks");
    let endpoint = s3.endpoint_url.clone().unwrap();
    spawn_app_in(data_dir, |c| {
        if stores == Stores::PostgresS3 {
            use_backends(c, pg, &s3, &endpoint);
        }
        webhooks_on(c);
        c.webhooks.webhook_retry_schedule = "0,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms".into();
    })
    .await
}

#[tokio::test]
async fn a_pending_delivery_is_delivered_after_a_restart_on_both_stores() {
    for stores in Stores::BOTH {
        let pg = match stores {
            Stores::PostgresS3 => fresh_postgres_url().await,
            Stores::Embedded => String::new(),
        };
        let receiver = Receiver::start(vec![]).await;
        receiver.answer_by_default(503);
        let app = start_on(stores, tempfile::tempdir().unwrap().keep(), &pg).await;
        let id = upload_with_hook(&app, &receiver.url()).await;
        let until = Instant::now() + DEADLINE;
        while receiver.received().is_empty() {
            assert!(Instant::now() < until, "no attempt reached the receiver");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let data_dir = app.stop().await;
        receiver.answer_by_default(200);

        let app = start_on(stores, data_dir, &pg).await;
        let delivery = wait_delivery(&app, &id, "delivered").await;
        let attempts = outcomes(&delivery);
        // The attempt under way at the stop was finished and recorded, not lost.
        assert!(attempts.len() >= 2, "{delivery}");
        assert_eq!(
            attempts.last().unwrap(),
            &("delivered".to_owned(), Value::from(200))
        );
        assert!(
            attempts[..attempts.len() - 1].iter().all(|(_, code)| code == 503),
            "{delivery}"
        );
        let ids: Vec<_> = receiver
            .received()
            .iter()
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        assert!(ids.iter().all(|i| i == ids[0]), "one event, retried: {ids:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn webhook_urls_are_checked_at_upload() {
    let app = Stores::Embedded.spawn(webhooks_on).await;
    for (url, expected) in [
        (
            "ftp://example.com/hook",
            "webhook_url: the scheme must be http or https, got 'ftp'",
        ),
        (
            "https://user:pw@example.com/hook",
            "webhook_url: credentials in the URL",
        ),
        ("/hook", "webhook_url: not an absolute URL"),
    ] {
        let form = Form::new()
            .part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"))
            .text("webhook_url", url.to_owned());
        let (status, detail) = common::detail(app.upload_form(form, "").await).await;
        assert_eq!(status, 422, "{url}: {detail}");
        assert!(detail.starts_with(expected), "{url}: {detail}");
    }
    // As a query parameter too.
    let form = Form::new().part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"));
    let (status, detail) =
        common::detail(app.upload_form(form, "?webhook_url=gopher://example.com/").await).await;
    assert_eq!(status, 422);
    assert!(detail.contains("got 'gopher'"), "{detail}");
    // A job without a webhook has no deliveries.
    let id = app
        .accepted(app.upload(fixture("photo.jpg"), "p.jpg").await)
        .await;
    app.wait_finished(&id, DEADLINE).await;
    assert_eq!(deliveries(&app, &id).await["deliveries"], serde_json::json!([]));
    app.stop().await;

    // Without a secret nothing could be signed: refused, saying why.
    let app = Stores::Embedded.spawn(|_| {}).await;
    let form = Form::new()
        .part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"))
        .text("webhook_url", "https://example.com/hook");
    let (status, detail) = common::detail(app.upload_form(form, "").await).await;
    assert_eq!(status, 422);
    assert!(detail.contains("WEBHOOK_SECRET is not set"), "{detail}");
    app.stop().await;
}

#[tokio::test]
async fn deliveries_follow_the_jobs_owner_rules() {
    let receiver = Receiver::start(vec![]).await;
    let app = Stores::Embedded
        .spawn(|c| {
            webhooks_on(c);
            c.auth.auth_mode = AuthMode::ApiKey;
        })
        .await;
    let alice = app.create_key("alice", &[Scope::Submit, Scope::Read]).await;
    let bob = app.create_key("bob", &[Scope::Submit, Scope::Read]).await;
    let form = Form::new()
        .part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"))
        .text("webhook_url", receiver.url());
    let response = app
        .post_as(&alice, "/api/v1/thumbnails/")
        .multipart(form)
        .send()
        .await
        .unwrap();
    let id = app.accepted(response).await;
    let path = format!("/api/v1/jobs/{id}/deliveries");
    let until = Instant::now() + DEADLINE;
    loop {
        let list: Value = app
            .get_as(&alice, &path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list["deliveries"][0]["state"] == "delivered" {
            break;
        }
        assert!(Instant::now() < until, "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, detail) = common::detail(app.get_as(&bob, &path).send().await.unwrap()).await;
    assert_eq!((status, detail), (404, format!("job '{id}' not found")));
    let response = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    app.stop().await;
}

/// Kubernetes mode: the operator finishes jobs through the job store's mirror, in its own
/// process. The outbox row comes with that finish, and the API's dispatcher delivers it.
#[tokio::test]
async fn a_job_finished_by_another_process_is_delivered_by_the_api() {
    use thumbnail_core::jobstore::{JobMirror, JobStore, Mirrored, Outcome, PostgresJobStore, mirror};
    use thumbnail_core::model::JobStatus;
    let pg = fresh_postgres_url().await;
    let receiver = Receiver::start(vec![]).await;
    let app = start_on(Stores::PostgresS3, tempfile::tempdir().unwrap().keep(), &pg).await;
    // The operator's view of the same database.
    let operator = PostgresJobStore::connect(&pg, 2).await.unwrap();
    let mut job = thumbnail_core::testsupport::sample_job(None);
    job.webhook_url = Some(receiver.url());
    operator.create(&job).await.unwrap();
    let state = JobMirror {
        id: job.id,
        status: JobStatus::Failure,
        attempts: 1,
        outcome: Some(Outcome::Failure(thumbnail_core::model::JobError {
            reason: "DeadlineExceeded".into(),
            message: "the render took too long".into(),
        })),
    };
    assert!(matches!(
        mirror(&operator, None, &state).await.unwrap(),
        Mirrored::Written(_)
    ));
    let id = job.id.to_string();
    let delivery = wait_delivery(&app, &id, "delivered").await;
    assert_eq!(delivery["event_type"], "thumbnail.job.failed");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].verified_with, ["old"]);
    assert_eq!(received[0].body["data"]["job_id"], id);
    assert_eq!(received[0].body["data"]["status"], "FAILURE");
    assert_eq!(received[0].body["data"]["result"], Value::Null);
    assert_eq!(received[0].body["data"]["error"]["reason"], "DeadlineExceeded");
    // Mirroring the same state again changes nothing: still one delivery.
    assert!(matches!(
        mirror(&operator, None, &state).await.unwrap(),
        Mirrored::Unchanged(_)
    ));
    assert_eq!(
        deliveries(&app, &id).await["deliveries"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

/// Several replicas: concurrent claims never take the same delivery, a claimed delivery is not
/// claimed again while its lease runs, and is once the lease ran out (its dispatcher died).
#[tokio::test]
async fn replicas_claim_each_delivery_once_per_lease_on_both_stores() {
    use std::collections::HashSet;
    use thumbnail_core::jobstore::Outcome;
    use thumbnail_core::model::now;
    use thumbnail_core::webhooks;
    for stores in Stores::BOTH {
        let url = match stores {
            Stores::PostgresS3 => fresh_postgres_url().await,
            Stores::Embedded => {
                let dir = tempfile::tempdir().unwrap().keep();
                format!("sqlite://{}", dir.join("jobs.db").display())
            }
        };
        let jobs = thumbnail_core::jobstore::connect(&url, 4).await.unwrap();
        let mut ids = HashSet::new();
        for _ in 0..10 {
            let mut job = thumbnail_core::testsupport::sample_job(None);
            job.webhook_url = Some("https://example.com/hook".into());
            jobs.create(&job).await.unwrap();
            let started = jobs.start(job.id).await.unwrap().unwrap();
            assert!(
                jobs.finish(job.id, started.attempts, &Outcome::Success(vec![]))
                    .await
                    .unwrap()
            );
            ids.insert(job.id);
        }
        // A job without a URL gets no delivery.
        let plain = thumbnail_core::testsupport::sample_job(None);
        jobs.create(&plain).await.unwrap();
        jobs.start(plain.id).await.unwrap().unwrap();
        assert!(jobs.finish(plain.id, 1, &Outcome::Success(vec![])).await.unwrap());

        let a = webhooks::connect(&url, 2).await.unwrap();
        let b = webhooks::connect(&url, 2).await.unwrap();
        assert_eq!(a.pending().await.unwrap(), 10, "{stores:?}");
        let lease = Duration::from_millis(300);
        let (got_a, got_b) = tokio::join!(a.claim_due(now(), lease, 7), b.claim_due(now(), lease, 7));
        let (got_a, got_b) = (got_a.unwrap(), got_b.unwrap());
        let claimed_a: HashSet<_> = got_a.iter().map(|c| c.job_id).collect();
        let claimed_b: HashSet<_> = got_b.iter().map(|c| c.job_id).collect();
        assert!(
            claimed_a.is_disjoint(&claimed_b),
            "{stores:?}: both claimed one delivery"
        );
        assert_eq!(claimed_a.len() + claimed_b.len(), 10, "{stores:?}");
        assert!(claimed_a.union(&claimed_b).all(|id| ids.contains(id)));
        // Leased: nobody else gets them.
        assert!(a.claim_due(now(), lease, 100).await.unwrap().is_empty());
        assert!(
            webhooks::connect(&url, 1)
                .await
                .unwrap()
                .of_job(plain.id)
                .await
                .unwrap()
                .is_empty()
        );
        // The lease runs out: claimable again (a dispatcher that died mid-attempt).
        let until = Instant::now() + DEADLINE;
        loop {
            let again = b.claim_due(now(), lease, 100).await.unwrap();
            if !again.is_empty() {
                assert_eq!(again.len(), 10, "{stores:?}");
                break;
            }
            assert!(Instant::now() < until);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A stale claimer (its lease taken over) cannot record.
        let stale = &got_a[0];
        let attempt = webhooks::Attempt {
            attempt: 1,
            at: now(),
            status_code: Some(200),
            latency_ms: 1,
            outcome: "delivered".into(),
            error: None,
        };
        assert!(
            !a.record(stale, &attempt, webhooks::Next::Delivered, None)
                .await
                .unwrap(),
            "{stores:?}"
        );
        assert_eq!(a.pending().await.unwrap(), 10);
    }
}

/// A key's default `webhook_url` is used by the uploads made with it that name none; an
/// upload's own wins; a bad default is refused when the key is made.
#[tokio::test]
async fn a_keys_default_webhook_url_applies_unless_the_upload_names_one() {
    let by_default = Receiver::start(vec![]).await;
    let named = Receiver::start(vec![]).await;
    let app = Stores::Embedded
        .spawn(|c| {
            webhooks_on(c);
            c.auth.auth_mode = AuthMode::ApiKey;
        })
        .await;
    let admin = app.create_key("root", &[Scope::Admin]).await;
    let bad = app
        .post_as(&admin, "/api/v1/keys")
        .json(&serde_json::json!({"owner": "alice", "webhook_url": "ftp://example.com/x"}))
        .send()
        .await
        .unwrap();
    let (status, detail) = common::detail(bad).await;
    assert_eq!(status, 422, "{detail}");
    assert!(
        detail.starts_with("webhook_url: the scheme must be http or https"),
        "{detail}"
    );
    let created: Value = app
        .post_as(&admin, "/api/v1/keys")
        .json(&serde_json::json!({"owner": "alice", "webhook_url": by_default.url()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["webhook_url"], by_default.url().as_str(), "{created}");
    let key = created["key"].as_str().unwrap().to_owned();

    let first = app.accepted(app.upload_as(&key, "").await).await;
    let form = Form::new()
        .part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"))
        .text("webhook_url", named.url());
    let second = app
        .accepted(
            app.post_as(&key, "/api/v1/thumbnails/")
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await;
    let (a, b) = eventually("an event at both receivers", DEADLINE, || async {
        let (a, b) = (by_default.received(), named.received());
        (!a.is_empty() && !b.is_empty()).then_some((a, b))
    })
    .await;
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(a[0].body["data"]["job_id"], first.as_str());
    assert_eq!(b[0].body["data"]["job_id"], second.as_str());
    assert_eq!(a[0].verified_with, ["old"]);
    app.stop().await;
}
