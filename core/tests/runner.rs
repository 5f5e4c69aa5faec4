//! The embedded runner's caps, with the real job stores: a job whose render panics, hangs or
//! kills the process ends FAILURE with a reason after its last attempt, also across restarts, and
//! is never run again. The panicking and hanging renders are fault-injecting stand-ins for the
//! engine (`Worker::render`), which cannot be made to misbehave on demand.
use std::sync::Arc;
use std::time::{Duration, Instant};
use thumbnail_core::jobstore::DynJobStore;
use thumbnail_core::keys::KeyLayout;
use thumbnail_core::metrics::JobMetrics;
use thumbnail_core::model::{JobRecord, JobStatus};
use thumbnail_core::runner::Runner;
use thumbnail_core::testsupport::{Backend, TestJobStore, TestObjectStore, sample_job};
use thumbnail_core::worker::{AttemptPolicy, CpuPool, RenderFn, Worker};
use thumbnail_engine::{EngineError, Limits, Thumbnail, ThumbnailOptions};
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

fn fault_injecting_panic(_: &[u8], _: &ThumbnailOptions, _: &Limits) -> Result<Thumbnail, EngineError> {
    panic!("injected fault: the decoder crashed");
}

fn fault_injecting_hang(_: &[u8], _: &ThumbnailOptions, _: &Limits) -> Result<Thumbnail, EngineError> {
    std::thread::sleep(Duration::from_secs(3));
    Err(EngineError::Internal("the hang ended".into()))
}

fn worker(
    jobs: DynJobStore,
    objects: &TestObjectStore,
    render: RenderFn,
    policy: AttemptPolicy,
) -> Arc<Worker> {
    Arc::new(Worker {
        jobs,
        objects: objects.store.clone(),
        handoff: None,
        keys: KeyLayout::new(""),
        limits: Limits::default(),
        cpu: CpuPool::new(2),
        metrics: Arc::new(JobMetrics::new()),
        attempts: policy,
        render,
    })
}

/// A job whose original is in the object store.
async fn stored_job(jobs: &DynJobStore, objects: &TestObjectStore) -> Uuid {
    let job = sample_job(Some("alice"));
    let photo = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../api/tests/fixtures/photo.jpg"
    ))
    .unwrap();
    objects
        .put_bytes(&job.source_key, photo.into(), "image/jpeg")
        .await
        .unwrap();
    jobs.create(&job).await.unwrap().id
}

async fn finished(jobs: &DynJobStore, id: Uuid) -> JobRecord {
    let until = Instant::now() + DEADLINE;
    loop {
        let job = jobs.get(id).await.unwrap().unwrap();
        if job.status.is_finished() {
            return job;
        }
        assert!(
            Instant::now() < until,
            "job still {} after {DEADLINE:?}",
            job.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_panicking_render_fails_after_the_last_attempt(backend: Backend) {
    let (jobs, objects) = (TestJobStore::new(backend).await, TestObjectStore::local());
    let id = stored_job(&jobs, &objects).await;
    let policy = AttemptPolicy {
        max_attempts: 3,
        render_timeout: None,
    };
    let (runner, _handle) = Runner::start(
        worker(jobs.store.clone(), &objects, fault_injecting_panic, policy),
        1,
    )
    .await
    .unwrap();
    let job = finished(&jobs, id).await;
    assert_eq!(job.status, JobStatus::Failure);
    let error = job.error.unwrap();
    assert_eq!(error.reason, "RenderPanicked");
    assert!(
        !error.message.contains("injected"),
        "no internal text: {}",
        error.message
    );
    assert_eq!(job.attempts, 3);
    runner.shutdown(Duration::from_secs(5)).await;
    // A restart does not run it again.
    let (runner, _handle) = Runner::start(
        worker(jobs.reconnect().await, &objects, thumbnail_engine::render, policy),
        1,
    )
    .await
    .unwrap();
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(jobs.get(id).await.unwrap().unwrap().attempts, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_render_fails_after_the_last_attempt_on_sqlite() {
    a_panicking_render_fails_after_the_last_attempt(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_render_fails_after_the_last_attempt_on_postgres() {
    a_panicking_render_fails_after_the_last_attempt(Backend::Server).await;
}

/// A render over RENDER_TIMEOUT_SECONDS ends the job at once: the same input would hang again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_render_times_out() {
    let (jobs, objects) = (TestJobStore::sqlite().await, TestObjectStore::local());
    let id = stored_job(&jobs, &objects).await;
    let policy = AttemptPolicy {
        max_attempts: 5,
        render_timeout: Some(Duration::from_millis(300)),
    };
    let (runner, _handle) = Runner::start(
        worker(jobs.store.clone(), &objects, fault_injecting_hang, policy),
        1,
    )
    .await
    .unwrap();
    let job = finished(&jobs, id).await;
    let error = job.error.unwrap();
    assert_eq!(error.reason, "RenderTimeout");
    assert!(
        error.message.contains("RENDER_TIMEOUT_SECONDS"),
        "{}",
        error.message
    );
    assert_eq!(job.attempts, 1);
    runner.shutdown(Duration::from_secs(5)).await;
}

/// Attempts that started and never finished (the process was killed during each) count: at the
/// next start after the last one, the job fails instead of running again.
async fn a_job_that_keeps_killing_the_process_fails_at_the_next_start(backend: Backend) {
    let (jobs, objects) = (TestJobStore::new(backend).await, TestObjectStore::local());
    let id = stored_job(&jobs, &objects).await;
    // What three crashed processes leave behind: three starts, no finish.
    for _ in 0..3 {
        jobs.start(id).await.unwrap().unwrap();
    }
    let policy = AttemptPolicy {
        max_attempts: 3,
        render_timeout: None,
    };
    let (runner, _handle) = Runner::start(
        worker(jobs.reconnect().await, &objects, thumbnail_engine::render, policy),
        1,
    )
    .await
    .unwrap();
    let job = finished(&jobs, id).await;
    let error = job.error.unwrap();
    assert_eq!(error.reason, "AttemptsExhausted");
    assert!(error.message.contains("3 attempts"), "{}", error.message);
    runner.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_the_process_fails_at_the_next_start_on_sqlite() {
    a_job_that_keeps_killing_the_process_fails_at_the_next_start(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_the_process_fails_at_the_next_start_on_postgres() {
    a_job_that_keeps_killing_the_process_fails_at_the_next_start(Backend::Server).await;
}

/// Below the cap a crashed attempt is simply retried, and the job succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_attempt_below_the_cap_is_retried() {
    let (jobs, objects) = (TestJobStore::sqlite().await, TestObjectStore::local());
    let id = stored_job(&jobs, &objects).await;
    jobs.start(id).await.unwrap().unwrap();
    let policy = AttemptPolicy::default();
    let (runner, _handle) = Runner::start(
        worker(jobs.store.clone(), &objects, thumbnail_engine::render, policy),
        1,
    )
    .await
    .unwrap();
    let job = finished(&jobs, id).await;
    assert_eq!(job.status, JobStatus::Success, "{:?}", job.error);
    assert_eq!(job.attempts, 2);
    runner.shutdown(Duration::from_secs(5)).await;
}
