//! `Idempotency-Key` on uploads against the real server, on SQLite + local objects and on
//! PostgreSQL + S3: a repeat answers with the first job, a concurrent repeat with 409 or the same
//! job (never a second job), a different request with 422, keys are per owner, and they hold
//! across a restart (SQLite) and another replica (PostgreSQL) until they expire.
mod common;

use common::{Stores, TestApp, detail, fixture, spawn_app_in, spawn_app_with, use_backends};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::time::{Duration, Instant};
use thumbnail_api::config::AuthMode;
use thumbnail_core::apikeys::Scope;
use thumbnail_core::idempotency::{Claim, ClaimOutcome};
use thumbnail_core::testsupport::{fresh_postgres_url, test_s3_config};

const DEADLINE: Duration = Duration::from_secs(60);

fn form(width: &str) -> Form {
    Form::new()
        .text("width", width.to_owned())
        .part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"))
}

async fn post(app: &TestApp, key: &str, width: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/thumbnails/"))
        .header("Idempotency-Key", key)
        .multipart(form(width))
        .send()
        .await
        .unwrap()
}

/// Status, whether the answer says it is a replay, and the job id (when accepted).
async fn answer(response: reqwest::Response) -> (u16, bool, Option<String>) {
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body: Value = response.json().await.unwrap();
    (status, replayed, body["job_id"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn a_repeat_answers_with_the_first_job_and_a_different_request_is_refused() {
    for stores in Stores::BOTH {
        let app = stores.spawn(|_| {}).await;
        let (status, replayed, first) = answer(post(&app, "order-1", "120").await).await;
        assert_eq!((status, replayed), (202, false), "{stores:?}");
        let first = first.unwrap();
        // The same request again, also after the job finished: the same job, marked as a replay.
        let (status, replayed, again) = answer(post(&app, "order-1", "120").await).await;
        assert_eq!(
            (status, replayed, again.as_deref()),
            (202, true, Some(first.as_str())),
            "{stores:?}"
        );
        assert_eq!(app.wait_finished(&first, DEADLINE).await["status"], "SUCCESS");
        let response = post(&app, "order-1", "120").await;
        assert_eq!(
            response.headers().get("location").unwrap(),
            &format!("/api/v1/jobs/{first}")
        );
        assert_eq!(
            answer(response).await,
            (202, true, Some(first.clone())),
            "{stores:?}"
        );

        // The same key with other options, or another file: 422, nothing stored.
        let (status, text) = detail(post(&app, "order-1", "121").await).await;
        assert_eq!(status, 422, "{stores:?}: {text}");
        assert!(
            text.starts_with("Idempotency-Key:") && text.contains("different request"),
            "{text}"
        );
        let other_file = Form::new()
            .text("width", "120")
            .part("image", Part::bytes(fixture("photo.png")).file_name("p.jpg"));
        let response = app
            .client
            .post(app.url("/api/v1/thumbnails/"))
            .header("Idempotency-Key", "order-1")
            .multipart(other_file)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{stores:?}");

        // Another key is another job; no key is always a new job.
        let (status, _, second) = answer(post(&app, "order-2", "120").await).await;
        assert_eq!(status, 202);
        assert_ne!(second.as_deref(), Some(first.as_str()));
        assert_eq!(app.all_jobs().await.len(), 2, "{stores:?}");

        // Malformed keys are refused before anything is read.
        for bad in ["", "has space", &"x".repeat(256)] {
            let (status, text) = detail(post(&app, bad, "120").await).await;
            assert_eq!(status, 422, "{bad:?}: {text}");
            assert!(text.starts_with("Idempotency-Key:"), "{text}");
        }
        assert_eq!(app.all_jobs().await.len(), 2, "{stores:?}");
    }
}

#[tokio::test]
async fn concurrent_repeats_make_one_job() {
    for stores in Stores::BOTH {
        let app = stores.spawn(|_| {}).await;
        let answers = futures::future::join_all(
            (0..8).map(|_| async { answer(post(&app, "burst", "100").await).await }),
        )
        .await;
        let accepted: Vec<&String> = answers
            .iter()
            .filter(|(status, _, _)| *status == 202)
            .map(|(_, _, id)| id.as_ref().unwrap())
            .collect();
        // Each answer is the one job, or 409 while the first was being stored.
        assert!(!accepted.is_empty(), "{answers:?}");
        assert!(accepted.iter().all(|id| *id == accepted[0]), "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|(status, _, _)| *status == 202 || *status == 409),
            "{answers:?}"
        );
        assert_eq!(
            answers
                .iter()
                .filter(|(status, replayed, _)| *status == 202 && !replayed)
                .count(),
            1,
            "{answers:?}"
        );
        assert_eq!(app.all_jobs().await.len(), 1, "{stores:?}");
    }
}

#[tokio::test]
async fn a_key_held_by_a_request_in_progress_answers_409_and_an_abandoned_one_is_taken_over() {
    for stores in Stores::BOTH {
        let app = stores.spawn(|_| {}).await;
        let fingerprint = "0".repeat(64);
        let mut claim = Claim {
            scope: String::new(),
            key: "held".into(),
            fingerprint,
            token: uuid::Uuid::new_v4(),
            now: thumbnail_core::model::now(),
            ttl: chrono::Duration::hours(24),
            lease: chrono::Duration::minutes(5),
        };
        assert_eq!(
            app.state.idempotency.claim(&claim).await.unwrap(),
            ClaimOutcome::Claimed
        );
        // Another request with the same fingerprint while it is held: in progress.
        let mut rival = claim.clone();
        rival.token = uuid::Uuid::new_v4();
        assert_eq!(
            app.state.idempotency.claim(&rival).await.unwrap(),
            ClaimOutcome::InProgress
        );
        let (status, text) = detail(post(&app, "held", "100").await).await;
        // The upload's fingerprint differs from the held one: refused as a different request.
        assert_eq!(status, 422, "{text}");

        // A held claim whose lease ran out (its request crashed) is taken over.
        claim.key = "crashed".into();
        claim.now -= chrono::Duration::minutes(10);
        assert_eq!(
            app.state.idempotency.claim(&claim).await.unwrap(),
            ClaimOutcome::Claimed
        );
        let (status, replayed, id) = answer(post(&app, "crashed", "100").await).await;
        assert_eq!((status, replayed), (202, false), "{stores:?}");
        assert!(id.is_some());
        // The stale holder can no longer complete or release it.
        assert!(
            !app.state
                .idempotency
                .complete(&claim, uuid::Uuid::new_v4())
                .await
                .unwrap()
        );
        app.state.idempotency.release(&claim).await.unwrap();
        assert_eq!(
            answer(post(&app, "crashed", "100").await).await,
            (202, true, id),
            "{stores:?}"
        );
    }
}

#[tokio::test]
async fn a_request_in_progress_is_answered_409() {
    // A request in progress is one whose claim is held and not yet completed: the test holds a
    // claim with the fingerprint the server computes for its upload, as a slow first request would.
    for stores in Stores::BOTH {
        let app = stores.spawn(|_| {}).await;
        let (status, _, first) = answer(post(&app, "probe", "100").await).await;
        assert_eq!(status, 202);
        let fields = std::collections::HashMap::from([("width".to_owned(), "100".to_owned())]);
        let file: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(fixture("photo.jpg")).into();
        let fingerprint = thumbnail_api::idempotent::fingerprint("thumbnails", &fields, &[file]);
        let claim = Claim {
            scope: String::new(),
            key: "busy".into(),
            fingerprint: fingerprint.clone(),
            token: uuid::Uuid::new_v4(),
            now: thumbnail_core::model::now(),
            ttl: chrono::Duration::hours(24),
            lease: chrono::Duration::minutes(5),
        };
        assert_eq!(
            app.state.idempotency.claim(&claim).await.unwrap(),
            ClaimOutcome::Claimed
        );
        let (status, text) = detail(post(&app, "busy", "100").await).await;
        assert_eq!(status, 409, "{stores:?}: {text}");
        assert!(text.contains("still being processed"), "{text}");
        // Once the holder completes, the repeat gets its job.
        let job = uuid::Uuid::parse_str(first.as_deref().unwrap()).unwrap();
        assert!(app.state.idempotency.complete(&claim, job).await.unwrap());
        assert_eq!(
            answer(post(&app, "busy", "100").await).await,
            (202, true, first.clone())
        );
        // A holder that gives up frees the key for the next request.
        let released = Claim {
            key: "given-up".into(),
            token: uuid::Uuid::new_v4(),
            ..claim
        };
        assert_eq!(
            app.state.idempotency.claim(&released).await.unwrap(),
            ClaimOutcome::Claimed
        );
        app.state.idempotency.release(&released).await.unwrap();
        let (status, replayed, _) = answer(post(&app, "given-up", "100").await).await;
        assert_eq!((status, replayed), (202, false));
    }
}

#[tokio::test]
async fn keys_are_per_owner() {
    for stores in Stores::BOTH {
        let app = stores.spawn(|c| c.auth.auth_mode = AuthMode::ApiKey).await;
        let alice = app.create_key("alice", &[Scope::Submit, Scope::Read]).await;
        let bob = app.create_key("bob", &[Scope::Submit, Scope::Read]).await;
        let mut ids = Vec::new();
        for key in [&alice, &bob] {
            let response = app
                .post_as(key, "/api/v1/thumbnails/")
                .header("Idempotency-Key", "same-key")
                .multipart(form("100"))
                .send()
                .await
                .unwrap();
            let (status, replayed, id) = answer(response).await;
            assert_eq!((status, replayed), (202, false), "{stores:?}");
            ids.push(id.unwrap());
        }
        assert_ne!(ids[0], ids[1], "{stores:?}");
        // Bob's repeat is his own job, which Alice cannot see.
        let response = app
            .post_as(&bob, "/api/v1/thumbnails/")
            .header("Idempotency-Key", "same-key")
            .multipart(form("100"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer(response).await, (202, true, Some(ids[1].clone())));
        let response = app
            .get_as(&alice, &format!("/api/v1/jobs/{}", ids[1]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
}

#[tokio::test]
async fn keys_hold_across_a_restart_and_another_replica_until_they_expire() {
    // SQLite: the same data directory after a restart.
    let app = spawn_app_with(|_| {}).await;
    let (_, _, first) = answer(post(&app, "kept", "100").await).await;
    let dir = app.stop().await;
    let app = spawn_app_in(dir, |_| {}).await;
    assert_eq!(
        answer(post(&app, "kept", "100").await).await,
        (202, true, first.clone())
    );

    // PostgreSQL: a second replica on the same database answers with the first's job.
    let pg = fresh_postgres_url().await;
    let s3 = test_s3_config("idem");
    let endpoint = s3.endpoint_url.clone().unwrap();
    let one = spawn_app_with(|c| use_backends(c, &pg, &s3, &endpoint)).await;
    let other = spawn_app_with(|c| use_backends(c, &pg, &s3, &endpoint)).await;
    let (status, _, shared) = answer(post(&one, "shared", "100").await).await;
    assert_eq!(status, 202);
    assert_eq!(
        answer(post(&other, "shared", "100").await).await,
        (202, true, shared)
    );

    // Keys kept one second: after that the same key makes a new job, and the purge removes it.
    for stores in Stores::BOTH {
        let app = stores.spawn(|c| c.idempotency_key_ttl_seconds = 1).await;
        let (_, _, first) = answer(post(&app, "short", "100").await).await;
        let until = Instant::now() + DEADLINE;
        loop {
            let (status, replayed, id) = answer(post(&app, "short", "100").await).await;
            assert_eq!(status, 202);
            if !replayed {
                assert_ne!(id, first, "{stores:?}");
                break;
            }
            assert!(Instant::now() < until, "the key never expired");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let later = thumbnail_core::model::now() + chrono::Duration::seconds(2);
        assert_eq!(
            app.state.idempotency.purge_expired(later).await.unwrap(),
            1,
            "{stores:?}"
        );
    }
}
