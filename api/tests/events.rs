//! Server-sent events of a job against the real server, on SQLite + local objects and on
//! PostgreSQL + S3: PENDING → STARTED → SUCCESS/FAILURE as another process (its own connection to
//! the job store) moves the job, the stream closing after the final event; keep-alives that keep
//! the stream open past the server's idle timeout; the per-caller cap; 404 and 410.
mod common;

use common::{Stores, TestApp, detail};
use serde_json::Value;
use std::time::{Duration, Instant};
use thumbnail_core::jobstore::{self, Outcome};
use thumbnail_core::model::JobError;
use thumbnail_core::testsupport::sample_job;

const DEADLINE: Duration = Duration::from_secs(60);

/// An open event stream, read chunk by chunk.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
    /// Keep-alive comments seen so far.
    comments: usize,
}

impl EventStream {
    async fn open(app: &TestApp, id: &str) -> Self {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/jobs/{id}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        EventStream {
            response,
            buffer: String::new(),
            comments: 0,
        }
    }

    /// The next event as (name, data), or `None` when the server closed the stream.
    async fn next(&mut self) -> Option<(String, Value)> {
        let until = Instant::now() + DEADLINE;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    } else if line.starts_with(':') {
                        self.comments += 1;
                    }
                }
                if !name.is_empty() {
                    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    return Some((name, data));
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .expect("an event within the deadline")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }
}

#[tokio::test]
async fn status_changes_made_by_another_process_stream_until_the_final_one() {
    for stores in Stores::BOTH {
        let app = stores.spawn(|_| {}).await;
        // Another process: its own connection to the same job store.
        let other = jobstore::connect(&app.database_url, 2).await.unwrap();
        for outcome in ["SUCCESS", "FAILURE"] {
            // A job nobody here runs (created, never queued).
            let job = app.state.jobs.create(&sample_job(None)).await.unwrap();
            let id = job.id.to_string();
            let mut events = EventStream::open(&app, &id).await;
            let (name, first) = events.next().await.unwrap();
            assert_eq!(
                (name.as_str(), first["status"].as_str()),
                ("status", Some("PENDING")),
                "{first}"
            );
            assert_eq!(first["job_id"], id);
            let started = other.start(job.id).await.unwrap().unwrap();
            let (_, second) = events.next().await.unwrap();
            assert_eq!(second["status"], "STARTED", "{stores:?}: {second}");
            let result = if outcome == "SUCCESS" {
                Outcome::Success(vec![])
            } else {
                Outcome::Failure(JobError {
                    reason: "CorruptImage".into(),
                    message: "broken".into(),
                })
            };
            assert!(other.finish(job.id, started.attempts, &result).await.unwrap());
            let (_, last) = events.next().await.unwrap();
            assert_eq!(last["status"], outcome, "{stores:?}: {last}");
            if outcome == "FAILURE" {
                assert_eq!(last["error"]["reason"], "CorruptImage");
            }
            // Closed after the final event.
            assert!(events.next().await.is_none(), "{stores:?}");
        }
        // A real upload, run by this process, ends in SUCCESS on the stream too.
        let id = app
            .accepted(app.upload(common::fixture("photo.jpg"), "p.jpg").await)
            .await;
        let mut events = EventStream::open(&app, &id).await;
        let mut last = None;
        while let Some((_, job)) = events.next().await {
            last = Some(job);
        }
        assert_eq!(last.unwrap()["status"], "SUCCESS", "{stores:?}");
    }
}

#[tokio::test]
async fn keep_alives_hold_the_stream_open_past_the_idle_timeout() {
    let app = common::spawn_app_with(|c| c.edge.keep_alive_timeout_seconds = 2).await;
    let job = app.state.jobs.create(&sample_job(None)).await.unwrap();
    let mut events = EventStream::open(&app, &job.id.to_string()).await;
    assert_eq!(events.next().await.unwrap().1["status"], "PENDING");
    // Three idle timeouts of silence from the job: only keep-alive comments flow.
    let quiet_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < quiet_until {
        let left = quiet_until - Instant::now();
        if let Ok(chunk) = tokio::time::timeout(left, events.response.chunk()).await {
            let bytes = chunk.unwrap().expect("the stream stays open");
            events.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }
    let started = app.state.jobs.start(job.id).await.unwrap().unwrap();
    assert_eq!(events.next().await.unwrap().1["status"], "STARTED");
    assert!(events.comments >= 3, "{} keep-alives in 6 s", events.comments);
    assert!(
        app.state
            .jobs
            .finish(job.id, started.attempts, &Outcome::Success(vec![]))
            .await
            .unwrap()
    );
    assert_eq!(events.next().await.unwrap().1["status"], "SUCCESS");
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn streams_are_capped_per_caller_and_unknown_or_expired_jobs_are_refused() {
    let app = common::spawn_app().await;
    let job = app.state.jobs.create(&sample_job(None)).await.unwrap();
    let mut open = Vec::new();
    for _ in 0..thumbnail_api::limits::MAX_WAITS_PER_CALLER {
        open.push(EventStream::open(&app, &job.id.to_string()).await);
    }
    let response = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{}/events", job.id)))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, text) = detail(response).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("event streams"), "{text}");
    // Closing one frees its place.
    drop(open.pop());
    let until = Instant::now() + DEADLINE;
    loop {
        let response = app
            .client
            .get(app.url(&format!("/api/v1/jobs/{}/events", job.id)))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the closed stream's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(open);

    let unknown = uuid::Uuid::new_v4();
    let response = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{unknown}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let started = app.state.jobs.start(job.id).await.unwrap().unwrap();
    assert!(
        app.state
            .jobs
            .finish(job.id, started.attempts, &Outcome::Success(vec![]))
            .await
            .unwrap()
    );
    assert!(
        app.state
            .jobs
            .expire_now(job.id, thumbnail_core::model::now())
            .await
            .unwrap()
    );
    let response = app
        .client
        .get(app.url(&format!("/api/v1/jobs/{}/events", job.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 410);
}

#[tokio::test]
async fn open_streams_end_when_the_server_stops() {
    let app = common::spawn_app_with(|c| c.shutdown_grace_seconds = 120).await;
    let job = app.state.jobs.create(&sample_job(None)).await.unwrap();
    let mut events = EventStream::open(&app, &job.id.to_string()).await;
    assert_eq!(events.next().await.unwrap().1["status"], "PENDING");
    // Far inside the 120 s grace: the stream does not hold the shutdown up.
    let stopped = Instant::now();
    app.stop().await;
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "{:?}",
        stopped.elapsed()
    );
    assert!(events.next().await.is_none());
}
