//! Retention against the real server, on SQLite + local objects and on PostgreSQL + S3: jobs carry
//! `expires_at`, the sweeper deletes the original, thumbnails and row (410 Gone for the grace
//! period, then 404), a sweep interrupted half-way resumes, rows without an expiry get the
//! default, and owners delete jobs early.
mod common;

use common::{Stores, TestApp, detail, fixture};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use std::time::{Duration, Instant};
use thumbnail_api::config::AuthMode;
use thumbnail_core::apikeys::Scope;
use thumbnail_core::model::now;
use thumbnail_core::testsupport::eventually;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(60);

async fn upload(app: &TestApp, fields: &[(&str, &str)]) -> reqwest::Response {
    let mut form = Form::new().part("image", Part::bytes(fixture("photo.jpg")).file_name("p.jpg"));
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    app.upload_form(form, "").await
}

/// The keys of everything the job stored: its original and its thumbnails.
fn keys_of(job: &Value) -> Vec<String> {
    let mut keys = vec![job["source"]["key"].as_str().unwrap().to_owned()];
    for output in job["outputs"].as_array().unwrap() {
        keys.push(output["key"].as_str().unwrap().to_owned());
    }
    keys
}

async fn exists(app: &TestApp, key: &str) -> bool {
    app.state.objects.exists(key).await.unwrap()
}

async fn status_of(app: &TestApp, id: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Poll until GET of the job answers `status`.
async fn wait_for_status(app: &TestApp, id: &str, status: u16) -> Value {
    let until = Instant::now() + DEADLINE;
    loop {
        let (got, body) = status_of(app, id).await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < until, "job {id} still answers {got}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn expired_jobs_lose_their_images_answer_410_then_404() {
    for stores in Stores::BOTH {
        let app = stores
            .spawn(|c| {
                c.retention.retention_sweep_seconds = 1;
                c.retention.retention_gone_seconds = 2;
            })
            .await;
        let id = app
            .accepted(upload(&app, &[("retention_seconds", "3")]).await)
            .await;
        let job = app.wait_finished(&id, DEADLINE).await;
        assert_eq!(job["status"], "SUCCESS", "{job}");
        let created: chrono::DateTime<chrono::Utc> = job["created_at"].as_str().unwrap().parse().unwrap();
        let expires: chrono::DateTime<chrono::Utc> = job["expires_at"].as_str().unwrap().parse().unwrap();
        let lifetime = expires - created;
        assert!(
            // The expiry counts from when the original was stored, just before the row was inserted.
            lifetime >= chrono::Duration::seconds(2) && lifetime <= chrono::Duration::seconds(3),
            "{stores:?}: {job}"
        );
        let keys = keys_of(&job);
        assert_eq!(keys.len(), 2);
        for key in &keys {
            assert!(exists(&app, key).await, "{key}");
        }
        // A job kept the default time is untouched by the same sweeps.
        let kept = app.accepted(upload(&app, &[]).await).await;
        let kept_job = app.wait_finished(&kept, DEADLINE).await;
        let kept_expiry: chrono::DateTime<chrono::Utc> =
            kept_job["expires_at"].as_str().unwrap().parse().unwrap();
        assert!(kept_expiry > now() + chrono::Duration::days(6), "{kept_job}");

        let gone = wait_for_status(&app, &id, 410).await;
        assert!(gone["detail"].as_str().unwrap().contains("expired"), "{gone}");
        let thumbnail = app
            .client
            .get(app.url(&format!("/api/v1/jobs/{id}/thumbnail")))
            .send()
            .await
            .unwrap();
        assert_eq!(thumbnail.status(), 410, "{stores:?}");
        // 410 may be answered just before the sweep (expired, not yet purged): wait for the purge.
        let until = Instant::now() + DEADLINE;
        while exists(&app, &keys[0]).await || exists(&app, &keys[1]).await {
            assert!(Instant::now() < until, "{stores:?}: objects of {id} not deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The objects go before the row is marked: the listing drops the job at the mark.
        eventually("the listing to drop the expired job", DEADLINE, || async {
            let listed: Vec<String> = app
                .all_jobs()
                .await
                .iter()
                .map(|j| j["job_id"].as_str().unwrap().to_owned())
                .collect();
            (listed == vec![kept.clone()]).then_some(())
        })
        .await;
        wait_for_status(&app, &id, 404).await;
        for key in keys_of(&kept_job) {
            assert!(exists(&app, &key).await, "{stores:?}: {key} of the kept job");
        }
        let metrics = app.metrics().await;
        assert!(
            metrics.contains("thumbnail_retention_objects_deleted_total 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("thumbnail_retention_jobs_purged_total 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("thumbnail_retention_rows_deleted_total 1"),
            "{metrics}"
        );
        assert!(metrics.contains("thumbnail_retention_backlog 0"), "{metrics}");
        assert!(
            metrics.contains("thumbnail_retention_sweep_duration_seconds_count"),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn retention_seconds_is_checked() {
    let app = common::spawn_app_with(|c| c.max_retention_seconds = 3600).await;
    for (value, want) in [
        ("0", "between 1 and 3600"),
        ("3601", "between 1 and 3600"),
        ("1h", "integer"),
    ] {
        let (status, text) = detail(upload(&app, &[("retention_seconds", value)]).await).await;
        assert_eq!(status, 422, "{value}: {text}");
        assert!(
            text.starts_with("retention_seconds:") && text.contains(want),
            "{text}"
        );
        assert!(text.contains("MAX_RETENTION_SECONDS"), "{text}");
    }
    let id = app
        .accepted(upload(&app, &[("retention_seconds", "3600")]).await)
        .await;
    let job = app.job(&id).await;
    let created: chrono::DateTime<chrono::Utc> = job["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = job["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (expires - created - chrono::Duration::hours(1))
            .num_seconds()
            .abs()
            <= 1,
        "{job}"
    );
    assert!(!app.stored_objects().is_empty());
}

#[tokio::test]
async fn an_interrupted_sweep_resumes_and_leaves_nothing_behind() {
    for stores in Stores::BOTH {
        // Sweeps only when the test says so.
        let app = stores.spawn(|c| c.retention.retention_sweep_seconds = 3600).await;
        let ids: Vec<String> =
            futures::future::join_all((0..3).map(|_| async { app.accepted(upload(&app, &[]).await).await }))
                .await;
        let mut jobs = Vec::new();
        for id in &ids {
            jobs.push(app.wait_finished(id, DEADLINE).await);
        }
        let later = now() + chrono::Duration::days(8);
        // What a sweeper killed half-way leaves: job 0 lost its thumbnail but not its original,
        // job 1 lost both objects but its row was not marked; job 2 was not reached.
        app.state.objects.delete(&keys_of(&jobs[0])[1]).await.unwrap();
        for key in keys_of(&jobs[1]) {
            app.state.objects.delete(&key).await.unwrap();
        }
        let report = app.state.sweeper.sweep(later).await.unwrap();
        assert_eq!(report.jobs_purged, 3, "{stores:?}: {report:?}");
        assert_eq!(report.backlog, 0);
        for job in &jobs {
            for key in keys_of(job) {
                assert!(!exists(&app, &key).await, "{stores:?}: {key} left behind");
            }
        }
        for id in &ids {
            let row = app.state.jobs.get(id.parse().unwrap()).await.unwrap().unwrap();
            assert!(row.purged_at.is_some(), "{stores:?}");
            assert_eq!(row.source_bytes, 0);
        }
        // A second sweep finds nothing to do; after the grace period the rows go.
        let again = app.state.sweeper.sweep(later).await.unwrap();
        assert_eq!((again.jobs_purged, again.rows_deleted), (0, 0), "{again:?}");
        let after_grace = later + chrono::Duration::days(2);
        assert_eq!(
            app.state.sweeper.sweep(after_grace).await.unwrap().rows_deleted,
            3
        );
        for id in &ids {
            assert!(app.state.jobs.get(id.parse().unwrap()).await.unwrap().is_none());
            assert_eq!(status_of(&app, id).await.0, 404);
        }
    }
}

#[tokio::test]
async fn rows_without_an_expiry_get_the_default_and_usage_drops_when_purged() {
    for stores in Stores::BOTH {
        let app = stores
            .spawn(|c| {
                c.retention.retention_sweep_seconds = 3600;
                c.retention.retention_seconds = 600;
                c.auth.auth_mode = AuthMode::ApiKey;
            })
            .await;
        // A row as the operator's mirror writes it: no expiry.
        let mut row = thumbnail_core::testsupport::sample_job(Some("mirror"));
        row.source_bytes = 1234;
        let created = app.state.jobs.create(&row).await.unwrap();
        assert!(created.expires_at.is_none());
        assert_eq!(app.state.jobs.usage("mirror").await.unwrap().stored_bytes, 1234);
        // (The sweep at start-up may have run after the insert and defaulted it already.)
        app.state.sweeper.sweep(now()).await.unwrap();
        let row = app.state.jobs.get(created.id).await.unwrap().unwrap();
        assert_eq!(
            row.expires_at,
            Some(created.created_at + chrono::Duration::seconds(600))
        );
        // Unfinished jobs are never swept, even past their expiry.
        let report = app
            .state
            .sweeper
            .sweep(now() + chrono::Duration::days(1))
            .await
            .unwrap();
        assert_eq!(report.jobs_purged, 0, "{stores:?}");
        let started = app.state.jobs.start(created.id).await.unwrap().unwrap();
        let failure = thumbnail_core::jobstore::Outcome::Failure(thumbnail_core::model::JobError {
            reason: "CorruptImage".into(),
            message: "test".into(),
        });
        assert!(
            app.state
                .jobs
                .finish(created.id, started.attempts, &failure)
                .await
                .unwrap()
        );
        let report = app
            .state
            .sweeper
            .sweep(now() + chrono::Duration::days(1))
            .await
            .unwrap();
        assert_eq!(report.jobs_purged, 1, "{stores:?}");
        assert_eq!(app.state.jobs.usage("mirror").await.unwrap().stored_bytes, 0);
    }
}

#[tokio::test]
async fn owners_delete_their_finished_jobs_early() {
    for stores in Stores::BOTH {
        let app = stores.spawn(|c| c.auth.auth_mode = AuthMode::ApiKey).await;
        let alice = app.create_key("alice", &[Scope::Submit, Scope::Read]).await;
        let bob = app.create_key("bob", &[Scope::Submit, Scope::Read]).await;
        let reader = app.create_key("alice", &[Scope::Read]).await;
        let response = app.upload_as(&alice, "").await;
        let id = response.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let job = app.wait_finished_as(&alice, &id, DEADLINE).await;
        let path = format!("/api/v1/jobs/{id}");
        let delete = |key: &str| {
            app.client
                .delete(app.url(&path))
                .bearer_auth(key.to_owned())
                .send()
        };
        // Someone else's job is not found; a key without submit may not delete.
        assert_eq!(delete(&bob).await.unwrap().status(), 404);
        assert_eq!(delete(&reader).await.unwrap().status(), 403);
        for key in keys_of(&job) {
            assert!(exists(&app, &key).await);
        }
        assert_eq!(delete(&alice).await.unwrap().status(), 204, "{stores:?}");
        for key in keys_of(&job) {
            assert!(!exists(&app, &key).await, "{stores:?}: {key}");
        }
        let response = app.get_as(&alice, &path).send().await.unwrap();
        assert_eq!(response.status(), 410);
        let (status, text) = detail(delete(&alice).await.unwrap()).await;
        assert_eq!(status, 410, "{text}");
        assert_eq!(app.state.jobs.usage("alice").await.unwrap().stored_bytes, 0);

        // An unfinished job cannot be deleted yet.
        let pending = app
            .state
            .jobs
            .create(&thumbnail_core::testsupport::sample_job(Some("alice")))
            .await
            .unwrap();
        let (status, text) = detail(
            app.client
                .delete(app.url(&format!("/api/v1/jobs/{}", pending.id)))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 409, "{text}");
        assert!(text.contains("PENDING"), "{text}");
        let unknown = Uuid::new_v4();
        let response = app
            .client
            .delete(app.url(&format!("/api/v1/jobs/{unknown}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
    }
}

#[tokio::test]
async fn objects_no_row_knows_are_found_and_removed_after_the_grace() {
    for stores in Stores::BOTH {
        let app = stores
            .spawn(|c| {
                c.retention.retention_sweep_seconds = 3600;
                c.retention.orphan_scan_seconds = 3600;
                c.retention.orphan_grace_seconds = 600;
            })
            .await;
        let kept = app.accepted(upload(&app, &[]).await).await;
        let kept = app.wait_finished(&kept, DEADLINE).await;
        // What a crash between storing an original and inserting its row leaves, and a thumbnail
        // whose row was removed by hand; and a file under the prefix that is not the service's.
        let keys = &app.state.keys;
        let (lost, gone) = (Uuid::new_v4(), Uuid::new_v4());
        let orphans = [
            keys.original(lost, "jpg"),
            keys.thumbnail(gone, "default", "png"),
            keys.thumbnail(gone, "large", "webp"),
        ];
        let foreign = keys
            .original(Uuid::nil(), "jpg")
            .replace(&Uuid::nil().to_string(), "holiday");
        for key in orphans.iter().chain([&foreign]) {
            app.state
                .objects
                .put_bytes(key, bytes::Bytes::from_static(b"orphan"), "image/jpeg")
                .await
                .unwrap();
        }
        // Within the grace period (an upload may be between its put and its insert): kept.
        let report = app.state.sweeper.scan_orphans(now()).await.unwrap();
        assert_eq!(report.deleted, 0, "{stores:?}: {report:?}");
        assert!(report.scanned >= 6, "{stores:?}: {report:?}");
        // After it: the three orphans go; the job's objects and the foreign file stay.
        let report = app
            .state
            .sweeper
            .scan_orphans(now() + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(
            (report.deleted, report.bytes_deleted),
            (3, 18),
            "{stores:?}: {report:?}"
        );
        for key in &orphans {
            assert!(!exists(&app, key).await, "{stores:?}: orphan {key} left");
        }
        for key in keys_of(&kept).iter().chain([&foreign]) {
            assert!(exists(&app, key).await, "{stores:?}: {key} deleted");
        }
        assert_eq!(
            app.job(kept["job_id"].as_str().unwrap()).await["status"],
            "SUCCESS"
        );
        // Idempotent: nothing left to do.
        let again = app
            .state
            .sweeper
            .scan_orphans(now() + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(again.deleted, 0, "{again:?}");
        assert!(
            app.metrics()
                .await
                .contains("thumbnail_retention_orphans_deleted_total 3"),
            "{stores:?}"
        );
    }
}
