//! The job store's contract, checked against both backends: SQLite (the embedded default) and a
//! real PostgreSQL server (started by `scripts/test.sh`, see `thumbnail_core::testsupport`).
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use thumbnail_core::CoreError;
use thumbnail_core::jobstore::{FINISHED_CHANNEL, JobStore, Outcome, PostgresJobStore};
use thumbnail_core::model::{JobError, JobOutput, JobRecord, JobStatus, ListCursor, ListQuery, OutputSpec};
use thumbnail_core::testsupport::{Backend, TestJobStore, sample_job};
use thumbnail_engine::{Fit, OutputFormat, ThumbnailOptions};
use uuid::Uuid;

/// Run one check against each backend, as two tests: `name::embedded` and `name::server`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name(super::TestJobStore::new(super::Backend::Embedded).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn server() {
                super::$name(super::TestJobStore::new(super::Backend::Server).await).await;
            }
        }
    )*};
}

conformance!(
    create_and_get_round_trip_every_field,
    list_is_newest_first_with_limit_and_filters,
    cursor_pages_have_no_duplicates_or_gaps_even_with_equal_timestamps,
    start_counts_attempts_and_refuses_finished_jobs,
    finish_is_conditional_on_the_attempt,
    failure_round_trips_and_duplicate_writers_do_not_overwrite,
    unfinished_returns_pending_and_started_oldest_first,
    delete_removes_the_row,
    count_by_status_counts_every_status,
    concurrent_starts_get_distinct_attempts,
    migrations_apply_twice,
);

fn micros_precision(t: DateTime<Utc>) -> bool {
    t.timestamp_subsec_nanos().is_multiple_of(1000)
}

async fn create_and_get_round_trip_every_field(store: TestJobStore) {
    let mut job = sample_job(Some("alice"));
    job.source_format = thumbnail_engine::ImageFormat::Webp;
    job.source_width = u32::MAX / 2;
    job.source_bytes = 5_000_000_000;
    job.outputs.push(OutputSpec {
        name: "small".into(),
        options: ThumbnailOptions {
            width: 32,
            height: 48,
            fit: Fit::Contain,
            format: Some(OutputFormat::Png),
            quality: 55,
            upscale: true,
            gravity: thumbnail_engine::Gravity::Southwest,
            animated: true,
        },
    });
    let before = Utc::now();
    let created = store.create(&job).await.unwrap();
    assert_eq!(created.id, job.id);
    assert_eq!(created.status, JobStatus::Pending);
    assert_eq!(created.owner.as_deref(), Some("alice"));
    assert_eq!(created.source_bucket, job.source_bucket);
    assert_eq!(created.source_key, job.source_key);
    assert_eq!(created.source_format, job.source_format);
    assert_eq!(created.source_width, job.source_width);
    assert_eq!(created.source_height, job.source_height);
    assert_eq!(created.source_bytes, job.source_bytes);
    assert_eq!(created.outputs_requested, job.outputs);
    assert!(created.outputs.is_empty());
    assert_eq!(created.error, None);
    assert_eq!(created.attempts, 0);
    assert_eq!(created.started_at, None);
    assert_eq!(created.finished_at, None);
    assert!(micros_precision(created.created_at));
    assert!(created.created_at >= before - ChronoDuration::milliseconds(1));
    assert!(created.created_at <= Utc::now());
    // What `get` reads back is exactly what `create` returned, timestamps to the microsecond.
    assert_eq!(store.get(job.id).await.unwrap(), Some(created.clone()));
    assert_eq!(store.get(Uuid::new_v4()).await.unwrap(), None);

    // A job without owner, then started and finished: every column round-trips.
    let anonymous = sample_job(None);
    let anonymous_created = store.create(&anonymous).await.unwrap();
    let started = store.start(anonymous.id).await.unwrap().unwrap();
    assert!(micros_precision(started.started_at.unwrap()));
    let outputs = vec![output("default"), output("small")];
    assert!(
        store
            .finish(anonymous.id, 1, &Outcome::Success(outputs.clone()))
            .await
            .unwrap()
    );
    let done = store.get(anonymous.id).await.unwrap().unwrap();
    assert_eq!(done.owner, None);
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.outputs, outputs);
    assert_eq!(done.error, None);
    assert_eq!(done.attempts, 1);
    assert_eq!(done.started_at, started.started_at);
    assert!(micros_precision(done.finished_at.unwrap()));
    assert!(done.finished_at.unwrap() >= done.started_at.unwrap());
    // Every write bumps the row's own version: created < started < finished.
    assert!(
        started.version > anonymous_created.version,
        "start did not bump the version: {} -> {}",
        anonymous_created.version,
        started.version
    );
    assert!(
        done.version > started.version,
        "finish did not bump the version: {} -> {}",
        started.version,
        done.version
    );
    assert_eq!(store.get(anonymous.id).await.unwrap(), Some(done));

    // Ids are unique.
    assert!(store.create(&job).await.is_err(), "a second job with the same id");
}

fn output(name: &str) -> JobOutput {
    JobOutput {
        name: name.to_owned(),
        bucket: "thumbnails".into(),
        key: format!("images/thumbnail/{}-{name}.webp", Uuid::new_v4()),
        width: 100,
        height: 75,
        bytes: 4321,
        content_type: "image/webp".into(),
        sha256: "ab".repeat(32),
        // Placeholders are kept with the output in both backends.
        thumbhash: Some("3OcRJYB4d3h/iIeHeEh3eIhw+j2w".into()),
        blurhash: Some("LEHV6nWB2yk8pyo0adR*.7kCMdnj".into()),
    }
}

/// Create `n` jobs, one after the other, the owners taking turns; returns them oldest first.
async fn create_jobs(store: &TestJobStore, n: usize, owners: &[Option<&str>]) -> Vec<JobRecord> {
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        jobs.push(store.create(&sample_job(owners[i % owners.len()])).await.unwrap());
    }
    jobs
}

fn ids(jobs: &[JobRecord]) -> Vec<Uuid> {
    jobs.iter().map(|j| j.id).collect()
}

/// The expected order: newest first, ties broken by id, descending (as the stores promise).
fn newest_first(mut jobs: Vec<JobRecord>) -> Vec<JobRecord> {
    jobs.sort_by_key(|j| std::cmp::Reverse((j.created_at, j.id)));
    jobs
}

async fn list_is_newest_first_with_limit_and_filters(store: TestJobStore) {
    let jobs = create_jobs(&store, 12, &[Some("alice"), Some("bob"), None]).await;
    // Distinct timestamps, so that the expected order does not depend on ids.
    let base = Utc::now() - ChronoDuration::hours(1);
    for (i, job) in jobs.iter().enumerate() {
        store
            .set_created_at(job.id, base + ChronoDuration::seconds(i as i64))
            .await;
    }
    let jobs: Vec<JobRecord> = {
        let mut all = Vec::new();
        for j in &jobs {
            all.push(store.get(j.id).await.unwrap().unwrap());
        }
        all
    };
    let all = store.list(&ListQuery::default()).await.unwrap();
    assert_eq!(ids(&all), ids(&newest_first(jobs.clone())));
    assert_eq!(all.first().unwrap().id, jobs.last().unwrap().id);

    let first5 = store
        .list(&ListQuery {
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&first5), ids(&all[..5]));
    let none = store
        .list(&ListQuery {
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());

    // Statuses: start 3 of them, finish 2 of those (one success, one failure).
    store.start(jobs[0].id).await.unwrap().unwrap();
    store.start(jobs[4].id).await.unwrap().unwrap();
    store.start(jobs[7].id).await.unwrap().unwrap();
    assert!(
        store
            .finish(jobs[4].id, 1, &Outcome::Success(vec![output("default")]))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(jobs[7].id, 1, &Outcome::Failure(failure()))
            .await
            .unwrap()
    );
    let by_status = |status| ListQuery {
        status: Some(status),
        ..Default::default()
    };
    assert_eq!(
        ids(&store.list(&by_status(JobStatus::Started)).await.unwrap()),
        vec![jobs[0].id]
    );
    assert_eq!(
        ids(&store.list(&by_status(JobStatus::Success)).await.unwrap()),
        vec![jobs[4].id]
    );
    assert_eq!(
        ids(&store.list(&by_status(JobStatus::Failure)).await.unwrap()),
        vec![jobs[7].id]
    );
    let pending = store.list(&by_status(JobStatus::Pending)).await.unwrap();
    assert_eq!(pending.len(), 9);
    assert!(pending.iter().all(|j| j.status == JobStatus::Pending));
    assert_eq!(
        ids(&pending),
        ids(&newest_first(
            jobs.iter()
                .filter(|j| ![0, 4, 7].iter().any(|&i| jobs[i].id == j.id))
                .cloned()
                .collect()
        ))
    );

    // Owners.
    let alice = store
        .list(&ListQuery {
            owner: Some("alice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        ids(&alice),
        ids(&newest_first(
            jobs.iter()
                .filter(|j| j.owner.as_deref() == Some("alice"))
                .cloned()
                .collect()
        ))
    );
    assert_eq!(alice.len(), 4);
    let nobody = store
        .list(&ListQuery {
            owner: Some("carol".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(nobody.is_empty());
    // Owner and status together.
    let alice_pending = store
        .list(&ListQuery {
            owner: Some("alice".into()),
            status: Some(JobStatus::Pending),
            limit: 2,
            after: None,
        })
        .await
        .unwrap();
    assert_eq!(alice_pending.len(), 2);
    assert!(
        alice_pending
            .iter()
            .all(|j| j.owner.as_deref() == Some("alice") && j.status == JobStatus::Pending)
    );
}

fn failure() -> JobError {
    JobError {
        reason: "DecodeFailed".into(),
        message: "the image could not be decoded: truncated JPEG".into(),
    }
}

/// Page through `query` with pages of `page` until a short page, checking the cursor as a text
/// round trip (as the API hands it out).
async fn page_through(store: &TestJobStore, query: ListQuery, page: u32) -> (Vec<Uuid>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after: Option<ListCursor> = None;
    loop {
        let items = store
            .list(&ListQuery {
                limit: page,
                after,
                ..query.clone()
            })
            .await
            .unwrap();
        pages += 1;
        assert!(items.len() <= page as usize);
        seen.extend(ids(&items));
        if items.len() < page as usize {
            return (seen, pages);
        }
        let cursor = ListCursor::after(items.last().unwrap());
        after = Some(ListCursor::decode(&cursor.encode()).expect("cursor text round trip"));
        assert!(pages < 100, "paging does not end");
    }
}

async fn cursor_pages_have_no_duplicates_or_gaps_even_with_equal_timestamps(store: TestJobStore) {
    let jobs = create_jobs(&store, 25, &[Some("alice"), Some("bob")]).await;
    // Force identical timestamps: jobs 5..15 share one created_at (ties straddle page borders),
    // and 20..25 another.
    let shared = Utc::now() - ChronoDuration::minutes(5);
    let shared = DateTime::from_timestamp_micros(shared.timestamp_micros()).unwrap();
    for job in &jobs[5..15] {
        store.set_created_at(job.id, shared).await;
    }
    let later = shared + ChronoDuration::microseconds(1);
    for job in &jobs[20..25] {
        store.set_created_at(job.id, later).await;
    }
    let mut current = Vec::new();
    for j in &jobs {
        current.push(store.get(j.id).await.unwrap().unwrap());
    }
    let expected = ids(&newest_first(current.clone()));

    let (seen, pages) = page_through(&store, ListQuery::default(), 10).await;
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        25,
        "duplicates across pages"
    );
    assert_eq!(seen, expected, "pages in newest-first order without gaps");

    // Pages of 1 and 7 give the same sequence.
    assert_eq!(page_through(&store, ListQuery::default(), 1).await.0, expected);
    assert_eq!(page_through(&store, ListQuery::default(), 7).await.0, expected);

    // Paging within a filter.
    let alice_expected: Vec<Uuid> = newest_first(current.clone())
        .into_iter()
        .filter(|j| j.owner.as_deref() == Some("alice"))
        .map(|j| j.id)
        .collect();
    let alice = ListQuery {
        owner: Some("alice".into()),
        ..Default::default()
    };
    assert_eq!(page_through(&store, alice, 4).await.0, alice_expected);
    let pending = ListQuery {
        status: Some(JobStatus::Pending),
        ..Default::default()
    };
    assert_eq!(page_through(&store, pending, 6).await.0, expected);

    // A job inserted after the first page was read (newer than everything) does not shift the
    // following pages.
    let first = store
        .list(&ListQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    store.create(&sample_job(Some("alice"))).await.unwrap();
    let second = store
        .list(&ListQuery {
            limit: 10,
            after: Some(ListCursor::after(first.last().unwrap())),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&second), expected[10..20].to_vec());
}

async fn start_counts_attempts_and_refuses_finished_jobs(store: TestJobStore) {
    let job = store.create(&sample_job(None)).await.unwrap();
    let first = store.start(job.id).await.unwrap().expect("a pending job starts");
    assert_eq!(first.status, JobStatus::Started);
    assert_eq!(first.attempts, 1);
    assert!(first.version > job.version);
    let started_at = first.started_at.expect("started_at is set");
    // A restart of a STARTED job (after a crash) is another attempt; started_at stays the first.
    let second = store
        .start(job.id)
        .await
        .unwrap()
        .expect("a started job starts again");
    assert_eq!(second.attempts, 2);
    assert_eq!(second.started_at, Some(started_at));
    assert!(second.version > first.version);

    assert!(
        store
            .finish(job.id, 2, &Outcome::Success(vec![output("default")]))
            .await
            .unwrap()
    );
    assert_eq!(
        store.start(job.id).await.unwrap(),
        None,
        "a finished job never starts again"
    );
    let done = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.attempts, 2);

    let failed = store.create(&sample_job(None)).await.unwrap();
    store.start(failed.id).await.unwrap().unwrap();
    assert!(
        store
            .finish(failed.id, 1, &Outcome::Failure(failure()))
            .await
            .unwrap()
    );
    assert_eq!(store.start(failed.id).await.unwrap(), None);
    assert_eq!(
        store.get(failed.id).await.unwrap().unwrap().status,
        JobStatus::Failure
    );

    assert_eq!(store.start(Uuid::new_v4()).await.unwrap(), None, "unknown job");
}

async fn finish_is_conditional_on_the_attempt(store: TestJobStore) {
    let job = store.create(&sample_job(None)).await.unwrap();
    store.start(job.id).await.unwrap().unwrap(); // attempt 1: a worker that will turn out stale
    store.start(job.id).await.unwrap().unwrap(); // attempt 2: the current one
    // The stale attempt's result does not land, in either direction.
    assert!(
        !store
            .finish(job.id, 1, &Outcome::Success(vec![output("stale")]))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish(job.id, 1, &Outcome::Failure(failure()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish(job.id, 3, &Outcome::Failure(failure()))
            .await
            .unwrap(),
        "future attempt"
    );
    let still = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(still.status, JobStatus::Started);
    assert!(still.outputs.is_empty() && still.error.is_none() && still.finished_at.is_none());

    let outputs = vec![output("default")];
    assert!(
        store
            .finish(job.id, 2, &Outcome::Success(outputs.clone()))
            .await
            .unwrap()
    );
    let done = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.outputs, outputs);
    // A finished job never goes back to STARTED, and its result stays.
    assert_eq!(store.start(job.id).await.unwrap(), None);
    assert!(
        !store
            .finish(job.id, 2, &Outcome::Success(vec![output("again")]))
            .await
            .unwrap()
    );
    assert_eq!(store.get(job.id).await.unwrap().unwrap(), done);
    assert!(
        !store
            .finish(Uuid::new_v4(), 1, &Outcome::Failure(failure()))
            .await
            .unwrap()
    );
}

async fn failure_round_trips_and_duplicate_writers_do_not_overwrite(store: TestJobStore) {
    let job = store.create(&sample_job(None)).await.unwrap();
    store.start(job.id).await.unwrap().unwrap();
    // Two writers of the same attempt (a duplicated worker): SUCCESS lands, FAILURE does not.
    let outputs = vec![output("default")];
    assert!(
        store
            .finish(job.id, 1, &Outcome::Success(outputs.clone()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish(job.id, 1, &Outcome::Failure(failure()))
            .await
            .unwrap()
    );
    let done = store.get(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Success);
    assert_eq!(done.outputs, outputs);
    assert_eq!(done.error, None);

    // And the other way round.
    let other = store.create(&sample_job(None)).await.unwrap();
    store.start(other.id).await.unwrap().unwrap();
    assert!(
        store
            .finish(other.id, 1, &Outcome::Failure(failure()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish(other.id, 1, &Outcome::Success(outputs))
            .await
            .unwrap()
    );
    let failed = store.get(other.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failure);
    assert_eq!(failed.error, Some(failure()));
    assert!(failed.outputs.is_empty());
    assert!(failed.finished_at.is_some());
}

async fn unfinished_returns_pending_and_started_oldest_first(store: TestJobStore) {
    let jobs = create_jobs(&store, 6, &[None]).await;
    let base = Utc::now() - ChronoDuration::hours(2);
    for (i, job) in jobs.iter().enumerate() {
        store
            .set_created_at(job.id, base + ChronoDuration::seconds(i as i64))
            .await;
    }
    store.start(jobs[1].id).await.unwrap().unwrap();
    store.start(jobs[2].id).await.unwrap().unwrap();
    store.start(jobs[3].id).await.unwrap().unwrap();
    assert!(
        store
            .finish(jobs[2].id, 1, &Outcome::Success(vec![]))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(jobs[3].id, 1, &Outcome::Failure(failure()))
            .await
            .unwrap()
    );
    let expected = vec![jobs[0].id, jobs[1].id, jobs[4].id, jobs[5].id];
    assert_eq!(store.unfinished(100).await.unwrap(), expected);
    assert_eq!(store.unfinished(u32::MAX).await.unwrap(), expected);
    assert_eq!(store.unfinished(2).await.unwrap(), expected[..2].to_vec());
}

async fn delete_removes_the_row(store: TestJobStore) {
    let job = store.create(&sample_job(Some("alice"))).await.unwrap();
    let kept = store.create(&sample_job(Some("alice"))).await.unwrap();
    assert!(store.delete(job.id).await.unwrap());
    assert_eq!(store.get(job.id).await.unwrap(), None);
    assert!(!store.delete(job.id).await.unwrap(), "deleting twice");
    assert!(!store.delete(Uuid::new_v4()).await.unwrap());
    assert_eq!(
        ids(&store.list(&ListQuery::default()).await.unwrap()),
        vec![kept.id]
    );
    assert_eq!(store.unfinished(10).await.unwrap(), vec![kept.id]);
    // The id can be used again.
    let mut again = sample_job(None);
    again.id = job.id;
    store.create(&again).await.unwrap();
}

async fn count_by_status_counts_every_status(store: TestJobStore) {
    assert!(store.count_by_status().await.unwrap().is_empty());
    let jobs = create_jobs(&store, 7, &[None]).await;
    for job in &jobs[..4] {
        store.start(job.id).await.unwrap().unwrap();
    }
    assert!(
        store
            .finish(jobs[0].id, 1, &Outcome::Success(vec![]))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(jobs[1].id, 1, &Outcome::Success(vec![]))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(jobs[2].id, 1, &Outcome::Failure(failure()))
            .await
            .unwrap()
    );
    let mut counts = store.count_by_status().await.unwrap();
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(
        counts,
        vec![
            (JobStatus::Failure, 1),
            (JobStatus::Pending, 3),
            (JobStatus::Started, 1),
            (JobStatus::Success, 2),
        ]
    );
}

async fn concurrent_starts_get_distinct_attempts(store: TestJobStore) {
    let job = store.create(&sample_job(None)).await.unwrap();
    let tasks = 16;
    let mut set = tokio::task::JoinSet::new();
    // Through two store instances (two pools), as two replicas would.
    let other = store.reconnect().await;
    for i in 0..tasks {
        let s = if i % 2 == 0 {
            store.store.clone()
        } else {
            other.clone()
        };
        set.spawn(async move { s.start(job.id).await.unwrap().unwrap().attempts });
    }
    let mut attempts = Vec::new();
    while let Some(a) = set.join_next().await {
        attempts.push(a.unwrap());
    }
    attempts.sort_unstable();
    assert_eq!(attempts, (1..=tasks).collect::<Vec<u32>>());
    // Only the latest attempt's result lands, whatever order the workers finish in.
    let mut set = tokio::task::JoinSet::new();
    for attempt in 1..=tasks {
        let s = store.store.clone();
        set.spawn(async move {
            let landed = s
                .finish(job.id, attempt, &Outcome::Success(vec![]))
                .await
                .unwrap();
            (attempt, landed)
        });
    }
    let mut landed = Vec::new();
    while let Some(r) = set.join_next().await {
        let (attempt, ok) = r.unwrap();
        if ok {
            landed.push(attempt);
        }
    }
    assert_eq!(landed, vec![tasks]);
}

async fn migrations_apply_twice(store: TestJobStore) {
    let job = store.create(&sample_job(None)).await.unwrap();
    // Connecting again runs the migrator again: nothing changes, nothing fails.
    let again = store.reconnect().await;
    assert_eq!(again.get(job.id).await.unwrap().unwrap(), job);
    let third = store.reconnect().await;
    third.ping().await.unwrap();
    assert_eq!(third.backend(), store.backend());
    if store.backend == Backend::Server {
        PostgresJobStore::migrate(&store.url).await.unwrap();
        // Two processes starting at once (API and operator) migrate without conflict.
        let url = thumbnail_core::testsupport::fresh_postgres_url().await;
        let (a, b) = tokio::join!(
            PostgresJobStore::connect(&url, 2),
            PostgresJobStore::connect(&url, 2)
        );
        a.unwrap().ping().await.unwrap();
        b.unwrap().ping().await.unwrap();
    }
}

#[tokio::test]
async fn the_store_url_picks_the_backend() {
    let sqlite = TestJobStore::sqlite().await;
    assert_eq!(sqlite.backend(), "sqlite");
    assert_eq!(sqlite.reconnect().await.backend(), "sqlite");
    let postgres = TestJobStore::postgres().await;
    assert_eq!(postgres.backend(), "postgres");
    let url = postgres.url.replacen("postgres://", "postgresql://", 1);
    assert_eq!(
        thumbnail_core::jobstore::connect(&url, 1)
            .await
            .unwrap()
            .backend(),
        "postgres"
    );
    assert!(matches!(
        thumbnail_core::jobstore::connect("mysql://x", 1).await,
        Err(CoreError::Config(_))
    ));
}

#[tokio::test]
async fn unreachable_postgres_is_a_transient_job_store_error_and_fails_fast() {
    let port = closed_port();
    let url = format!("postgres://postgres:secret@127.0.0.1:{port}/postgres");
    let started = Instant::now();
    let err = match PostgresJobStore::connect(&url, 2).await {
        Err(e) => e,
        Ok(_) => panic!("connected to a closed port"),
    };
    assert!(matches!(err, CoreError::JobStore(_)), "{err:?}");
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(err.dependency(), Some("job store (database)"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn database_errors_that_are_not_transient() {
    let store = TestJobStore::postgres().await;
    let job = sample_job(None);
    store.create(&job).await.unwrap();
    let duplicate = store.create(&job).await.unwrap_err();
    assert!(matches!(duplicate, CoreError::JobStore(_)));
    assert!(
        !duplicate.is_transient(),
        "a unique violation is not worth retrying: {duplicate:?}"
    );
    // A database that does not exist is a configuration mistake, reported quickly.
    let mut url = url::Url::parse(&store.url).unwrap();
    url.set_path("/no_such_database");
    let err = match PostgresJobStore::connect(url.as_str(), 1).await {
        Err(e) => e,
        Ok(_) => panic!("connected to a missing database"),
    };
    assert!(!err.is_transient(), "{err:?}");
}

/// A loopback port that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

/// The list queries of the PostgreSQL store must be answered from its indexes, not a scan of
/// the whole table: checked with `EXPLAIN` of the store's own query (`explain_list`), on a table
/// with a few thousand rows distributed as in production (mostly SUCCESS, few unfinished), with
/// sequential scans and sorts discouraged.
#[tokio::test]
async fn postgres_list_queries_use_the_indexes() {
    let store = TestJobStore::postgres().await;
    store
        .execute(
            "INSERT INTO jobs (id, status, owner, source_bucket, source_key, source_format, \
             source_width, source_height, source_bytes, outputs_requested, created_at) \
             SELECT gen_random_uuid(), CASE WHEN i % 100 = 0 THEN 'STARTED' WHEN i % 100 = 1 \
             THEN 'PENDING' WHEN i % 100 < 5 THEN 'FAILURE' ELSE 'SUCCESS' END, \
             'owner' || (i % 50), 'b', 'k' || i, 'jpeg', 10, 10, 100, '[]'::jsonb, \
             now() - (i || ' seconds')::interval FROM generate_series(1, 5000) AS i",
        )
        .await;
    store.execute("ANALYZE jobs").await;
    let database = url::Url::parse(&store.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    store
        .execute(&format!("ALTER DATABASE \"{database}\" SET enable_seqscan = off"))
        .await;
    store
        .execute(&format!("ALTER DATABASE \"{database}\" SET enable_sort = off"))
        .await;
    // New connections get the settings.
    let pg = PostgresJobStore::connect(&store.url, 1).await.unwrap();

    let some = store.list(&ListQuery::default()).await.unwrap();
    let cursor = Some(ListCursor::after(&some[40]));
    let cases = [
        ("plain", ListQuery::default(), "jobs_by_created"),
        (
            "by status",
            ListQuery {
                status: Some(JobStatus::Started),
                ..Default::default()
            },
            "jobs_by_status_created",
        ),
        // Most jobs succeed: walking the newest-first index and skipping the few others is as good.
        (
            "by a common status",
            ListQuery {
                status: Some(JobStatus::Success),
                ..Default::default()
            },
            "jobs_by_",
        ),
        (
            "by owner",
            ListQuery {
                owner: Some("owner7".into()),
                ..Default::default()
            },
            "jobs_by_owner_created",
        ),
        (
            "plain with cursor",
            ListQuery {
                after: cursor,
                ..Default::default()
            },
            "jobs_by_created",
        ),
        (
            "by status with cursor",
            ListQuery {
                status: Some(JobStatus::Started),
                after: cursor,
                ..Default::default()
            },
            "jobs_by_status_created",
        ),
        (
            "by owner with cursor",
            ListQuery {
                owner: Some("owner3".into()),
                after: cursor,
                ..Default::default()
            },
            "jobs_by_owner_created",
        ),
    ];
    for (name, query, index) in cases {
        let plan = pg.explain_list(&query).await.unwrap();
        assert!(
            plan.contains(&format!("Index Scan using {index}")),
            "{name}: expected an index scan on {index}:\n{plan}"
        );
        assert!(
            !plan.contains("Sort"),
            "{name}: the index gives the order, no sort:\n{plan}"
        );
        assert!(!plan.contains("Seq Scan"), "{name}:\n{plan}");
        if query.after.is_some() {
            assert!(
                plan.contains("Index Cond") && plan.contains("ROW(created_at, id) <"),
                "{name}: the cursor is an index condition, not a filter:\n{plan}"
            );
        }
        // And the query itself answers correctly.
        let page = pg.list(&query).await.unwrap();
        assert!(!page.is_empty(), "{name}");
        assert!(page.iter().all(|j| query.status.is_none_or(|s| j.status == s)));
        assert!(
            page.iter()
                .all(|j| query.owner.is_none() || j.owner == query.owner)
        );
    }
}

/// Every landed `finish` notifies its id on PostgreSQL (for long-polling readers in other
/// processes); one that does not land notifies nothing. Notifications arrive in commit order, so
/// the second landed finish being the next one received shows the stale one sent nothing.
#[tokio::test]
async fn landed_finishes_notify_their_job_id_on_postgres() {
    let store = TestJobStore::postgres().await;
    let mut listener = sqlx::postgres::PgListener::connect(&store.url).await.unwrap();
    listener.listen(FINISHED_CHANNEL).await.unwrap();
    let failure = Outcome::Failure(JobError {
        reason: "Test".into(),
        message: "finished".into(),
    });
    let first = store.create(&sample_job(None)).await.unwrap();
    let second = store.create(&sample_job(None)).await.unwrap();
    for job in [&first, &second] {
        store.start(job.id).await.unwrap();
    }
    assert!(store.finish(first.id, 1, &failure).await.unwrap());
    assert!(
        !store.finish(first.id, 1, &failure).await.unwrap(),
        "already finished"
    );
    assert!(store.finish(second.id, 1, &failure).await.unwrap());
    for want in [first.id, second.id] {
        let n = tokio::time::timeout(Duration::from_secs(30), listener.recv()).await;
        let payload = n.expect("a notification").unwrap().payload().to_owned();
        assert_eq!(payload, want.to_string());
    }
}
