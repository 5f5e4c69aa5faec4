//! The worker's source of originals: the in-process handoff when the upload left the bytes
//! there, the object store otherwise.
use bytes::Bytes;
use std::sync::Arc;
use thumbnail_core::handoff::OriginalHandoff;
use thumbnail_core::keys::KeyLayout;
use thumbnail_core::metrics::JobMetrics;
use thumbnail_core::testsupport::{TestJobStore, TestObjectStore, sample_job};
use thumbnail_core::worker::{AttemptPolicy, CpuPool, RunOutcome, Worker};
use thumbnail_engine::Limits;

fn photo() -> Bytes {
    let path = format!("{}/../api/tests/fixtures/photo.jpg", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(path).expect("fixture"))
}

fn worker(jobs: &TestJobStore, objects: &TestObjectStore, handoff: Option<Arc<OriginalHandoff>>) -> Worker {
    Worker {
        jobs: jobs.store.clone(),
        objects: objects.store.clone(),
        handoff,
        keys: KeyLayout::new(""),
        limits: Limits::default(),
        cpu: CpuPool::new(1),
        metrics: Arc::new(JobMetrics::new()),
        attempts: AttemptPolicy::default(),
        render: thumbnail_engine::render,
    }
}

/// The original is deliberately missing from the object store: only the handoff has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_off_original_is_rendered_without_reading_the_store() {
    let (jobs, objects) = (TestJobStore::sqlite().await, TestObjectStore::local());
    let job = jobs.create(&sample_job(None)).await.unwrap();
    let handoff = Arc::new(OriginalHandoff::new(16 << 20));
    handoff.put(job.id, photo());

    let outcome = worker(&jobs, &objects, Some(handoff.clone()))
        .run(job.id)
        .await
        .unwrap();
    let RunOutcome::Succeeded(outputs) = outcome else {
        panic!("expected success, got {outcome:?}");
    };
    assert!(objects.exists(&outputs[0].key).await.unwrap(), "thumbnail stored");
    assert_eq!(handoff.held(), 0, "taken, not copied");
    // The first output carries the placeholders of the thumbnail (the engine's preview of the
    // very pixels it encoded: the same render again gives the same), and they are stored.
    let stored = objects.get(&outputs[0].key).await.unwrap();
    let again = thumbnail_core::engine::render(
        &photo(),
        &sample_job(None).outputs[0].options,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(again.bytes, stored, "the same thumbnail");
    let expected = thumbnail_core::placeholder::of_preview(&again.preview).unwrap();
    assert_eq!(outputs[0].thumbhash.as_deref(), Some(expected.thumbhash.as_str()));
    assert_eq!(outputs[0].blurhash.as_deref(), Some(expected.blurhash.as_str()));
    assert_eq!(jobs.get(job.id).await.unwrap().unwrap().outputs, outputs);
}

/// Without the bytes at hand (a restart, another process, a retry) the store is read as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_handoff_the_original_is_read_from_the_store() {
    let (jobs, objects) = (TestJobStore::sqlite().await, TestObjectStore::local());
    let new_job = sample_job(None);
    let missing = jobs.create(&new_job).await.unwrap();
    let outcome = worker(&jobs, &objects, Some(Arc::new(OriginalHandoff::new(16 << 20))))
        .run(missing.id)
        .await
        .unwrap();
    let RunOutcome::Failed(error) = outcome else {
        panic!("expected failure, got {outcome:?}");
    };
    assert_eq!(error.reason, "SourceNotFound");

    let stored = jobs.create(&sample_job(None)).await.unwrap();
    objects
        .put_bytes(&stored.source_key, photo(), "image/jpeg")
        .await
        .unwrap();
    let outcome = worker(&jobs, &objects, None).run(stored.id).await.unwrap();
    assert!(matches!(outcome, RunOutcome::Succeeded(_)), "{outcome:?}");
}
