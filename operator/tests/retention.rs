//! Retention in Kubernetes mode, on the real control plane, PostgreSQL and S3 of
//! `scripts/test.sh`: an expiring job loses its ThumbnailJob and render Job too, not only its
//! objects and row, whether the API's sweeper, the operator's (an operator-only deployment) or
//! an owner's `DELETE` expires it; the finalizer's cleanup neither blocks nor undoes that.
mod common;

use common::*;
use kube::ResourceExt;
use reqwest::StatusCode;
use std::time::Duration;
use thumbnail_api::config::ApiConfig;
use thumbnail_core::objects::ObjectStore;
use thumbnail_crds::{Executor, Phase};
use thumbnail_operator::reconcile::REASON_RETENTION_EXPIRED;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(90);

/// The API in Kubernetes mode (as the chart's API ServiceAccount) on this world.
fn api_config(world: &World, data_dir: &std::path::Path) -> ApiConfig {
    let mut config = world.api_config(data_dir);
    // ttlSecondsAfterFinished must not be what removes the resources here.
    config.kube_ttl_seconds_after_finished = 0;
    config
}

/// What a finished job stored in S3: its original and its thumbnails.
async fn stored_keys(world: &World, id: Uuid) -> Vec<String> {
    let row = world.row_finished(id).await;
    let mut keys: Vec<String> = row.outputs.iter().map(|o| o.key.clone()).collect();
    keys.push(row.source_key.clone());
    for key in &keys {
        assert!(world.objects.exists(key).await.unwrap(), "{key} stored");
    }
    keys
}

async fn none_exist(world: &World, keys: &[String]) -> bool {
    for key in keys {
        if world.objects.exists(key).await.unwrap() {
            return false;
        }
    }
    true
}

/// (a) The API's sweeper: a job rendered in a render Job expires after its `retention_seconds`:
/// 410 with everything deleted (original, thumbnails, ThumbnailJob, render Job), then 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_api_job_loses_its_thumbnailjob_and_render_job_too() {
    let world = World::new().await;
    let kubelet = world.kubelet();
    // `auto` renders images above 1000 pixels in a Job; this operator does not sweep (the API's
    // sweeper is under test).
    let operator = world
        .operator_with(|c| {
            c.job_pixel_threshold = 1000;
            c.retention.retention_sweep_seconds = 3600;
        })
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_config(&world, dir.path());
    config.retention.retention_sweep_seconds = 1;
    config.retention.retention_gone_seconds = 3;
    let api = RunningApi::start(&world, config).await;

    let id = api.upload(&[("retention_seconds", "3")]).await;
    let name = format!("tj-{id}");
    let job = api.until_success(id, WAIT).await;
    assert!(job["expires_at"].is_string(), "{job}");
    let tj = world.finished(&name, WAIT).await;
    let status = tj.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert_eq!(
        status.executor,
        Some(Executor::Job),
        "render stderr: {}",
        kubelet.stderr_of(&format!("render-{}", tj.uid().unwrap()))
    );
    let render_job = status.kubernetes_job.clone().expect("a render Job");
    let keys = stored_keys(&world, id).await;
    assert!(keys.len() >= 2, "{keys:?}");

    let gone = api.until_status(id, StatusCode::GONE, WAIT).await;
    assert!(gone["detail"].is_string(), "{gone}");
    // 410 from the expiry on; the next sweep deletes the objects, then marks the row.
    eventually("the sweep to mark the job purged", WAIT, || async {
        let row = world.jobs.get(id).await.unwrap().expect("the tombstone");
        row.purged_at.is_some().then_some(())
    })
    .await;
    assert!(
        none_exist(&world, &keys).await,
        "objects of a purged job: {keys:?}"
    );
    eventually("the ThumbnailJob and its render Job to be gone", WAIT, || async {
        let tj_gone = world.tj(&name).await.is_none();
        let job_gone = world.render_jobs().get_opt(&render_job).await.unwrap().is_none();
        (tj_gone && job_gone).then_some(())
    })
    .await;
    assert!(world.events_after(&name, REASON_RETENTION_EXPIRED).await >= 1);
    api.until_status(id, StatusCode::NOT_FOUND, WAIT).await;
    assert!(world.jobs.get(id).await.unwrap().is_none(), "the row is gone");

    api.stop().await;
    operator.shutdown().await;
}

/// (b) An operator-only deployment: a ThumbnailJob written with an API client (as kubectl or
/// GitOps would) gets the default retention from the operator's sweeper and expires: its
/// ThumbnailJob and thumbnails go, the source its author put there stays, the row becomes a
/// tombstone and then goes; the operator's /metrics counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_alone_expires_thumbnailjobs_written_by_hand() {
    let world = World::new().await;
    let operator = world
        .operator_with(|c| {
            c.retention.retention_seconds = 2;
            c.retention.retention_sweep_seconds = 1;
            c.retention.retention_gone_seconds = 2;
        })
        .await;
    let source = "uploads/by-hand.jpg";
    world.put(source, &fixture("photo.jpg")).await;
    let id = Uuid::new_v4();
    let mut spec = thumbnail_crds::ThumbnailJobSpec::for_key(source);
    spec.job_id = Some(id.to_string());
    world.create_tj("by-hand", spec).await;

    let done = world.finished("by-hand", WAIT).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{:?}", done.status);
    let thumbnails: Vec<String> = done
        .status
        .unwrap()
        .outputs
        .iter()
        .map(|o| o.key.clone())
        .collect();
    assert!(!thumbnails.is_empty());

    eventually("the sweep to delete the ThumbnailJob", WAIT, || async {
        world.tj("by-hand").await.is_none().then_some(())
    })
    .await;
    assert!(world.events_after("by-hand", REASON_RETENTION_EXPIRED).await >= 1);
    assert!(
        none_exist(&world, &thumbnails).await,
        "thumbnails deleted: {thumbnails:?}"
    );
    assert!(
        world.objects.exists(source).await.unwrap(),
        "a source the service did not store is its author's"
    );
    let tombstone = world.jobs.get(id).await.unwrap();
    // The tombstone, unless the grace already ended.
    assert!(
        tombstone.as_ref().is_none_or(|r| r.purged_at.is_some()),
        "{tombstone:?}"
    );
    eventually("the row to go after the grace", WAIT, || async {
        world.jobs.get(id).await.unwrap().is_none().then_some(())
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", operator.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "thumbnail_retention_jobs_purged_total 1",
        "thumbnail_retention_rows_deleted_total 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(
        metrics.contains("thumbnail_retention_sweep_duration_seconds_count"),
        "{metrics}"
    );
    operator.shutdown().await;
}

/// (c) `DELETE /api/v1/jobs/{id}` in Kubernetes mode deletes the ThumbnailJob too. With the
/// operator down the finalizer cannot run: the DELETE does not wait for it (204, the objects
/// deleted, 410), and the resource goes once an operator is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_job_through_the_api_deletes_its_thumbnailjob() {
    let world = World::new().await;
    let operator = world.operator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = api_config(&world, dir.path());
    config.retention.retention_sweep_seconds = 3600;
    let api = RunningApi::start(&world, config).await;

    let id = api.upload(&[]).await;
    let name = format!("tj-{id}");
    api.until_success(id, WAIT).await;
    world.finished(&name, WAIT).await;
    let keys = stored_keys(&world, id).await;
    operator.shutdown().await;

    let response = api
        .http
        .delete(format!("{}/api/v1/jobs/{id}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let tj = world
        .tj(&name)
        .await
        .expect("held by the finalizer while no operator runs");
    assert!(tj.metadata.deletion_timestamp.is_some(), "being deleted");
    assert!(
        none_exist(&world, &keys).await,
        "the API deleted the objects: {keys:?}"
    );
    assert_eq!(api.get(&format!("/api/v1/jobs/{id}")).await.0, StatusCode::GONE);

    let operator = world.operator().await;
    eventually("the ThumbnailJob to be gone", WAIT, || async {
        world.tj(&name).await.is_none().then_some(())
    })
    .await;
    assert!(world.events_after(&name, REASON_RETENTION_EXPIRED).await >= 1);
    // The cleanup did not bring anything back.
    assert_eq!(api.get(&format!("/api/v1/jobs/{id}")).await.0, StatusCode::GONE);
    assert!(none_exist(&world, &keys).await);

    api.stop().await;
    operator.shutdown().await;
}
