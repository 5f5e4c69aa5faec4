//! The operator for real: `kube::Client` and `kube_runtime::Controller` (watches included) against
//! a real Kubernetes API server (1.20, with real RBAC: every component runs with the token of the
//! chart's ServiceAccount), with the real PostgreSQL and S3 servers that `scripts/test.sh` starts.
//! The inline executor and the API's Kubernetes mode; render Jobs are in `render_jobs.rs`,
//! replicas and restarts in `leadership.rs`, `kubectl` in `kubectl.rs`.
mod common;

use common::*;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use thumbnail_api::Application;
use thumbnail_core::jobstore::{Binding, ResourceRef};
use thumbnail_core::model::JobStatus;
use thumbnail_core::objects::ObjectStore;
use thumbnail_crds::{Execution, Executor, Fit, Phase, ThumbnailJob, ThumbnailJobSpec};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn spec(key: &str) -> ThumbnailJobSpec {
    ThumbnailJobSpec::for_key(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_through_the_api_ends_as_a_thumbnail_in_s3() {
    let world = World::new().await;
    let operator = world.operator().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = world.api_config(dir.path());
    config.kube_ttl_seconds_after_finished = 7200;
    config.kube_active_deadline_seconds = 600;
    let api = RunningApi::start(&world, config).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let form = Form::new()
        .part("image", Part::bytes(fixture("photo.jpg")).file_name("photo.jpg"))
        .text("width", "64")
        .text("height", "48")
        .text("fit", "contain")
        .text("owner", "alice");
    let response = api.upload_form(form).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(body["message"], "Started to generate thumbnail");

    // The resource exists before the 202, where the operator watches: name, label, job id,
    // owner, outputs from the options, a TTL and a deadline.
    let name = format!("tj-{id}");
    let tj = world.tj(&name).await.expect("the API created the ThumbnailJob");
    assert_eq!(tj.labels()[thumbnail_crds::LABEL_JOB_ID], id.to_string());
    assert_eq!(tj.spec.job_id.as_deref(), Some(id.to_string().as_str()));
    assert_eq!(tj.spec.owner.as_deref(), Some("alice"));
    assert_eq!(tj.spec.ttl_seconds_after_finished, Some(7200));
    assert_eq!(tj.spec.active_deadline_seconds, Some(600));
    assert_eq!(
        (
            tj.spec.outputs[0].width,
            tj.spec.outputs[0].height,
            tj.spec.outputs[0].fit
        ),
        (64, 48, Fit::Contain)
    );
    // The row is bound to it: another resource naming this job id would be refused.
    let intruder = ResourceRef {
        namespace: world.ns.clone(),
        name: "intruder".into(),
        uid: Uuid::new_v4().to_string(),
    };
    assert!(matches!(
        world.jobs.bind_resource(id, &intruder).await.unwrap(),
        Binding::BoundElsewhere(owner) if owner.name == name && Some(&owner.uid) == tj.metadata.uid.as_ref()
    ));

    // The REST API answers from PostgreSQL, which the operator updates.
    let job = eventually("the job to succeed in the REST API", WAIT, || async {
        let v: Value = http
            .get(format!("{}/api/v1/jobs/{id}", api.base))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        assert_ne!(v["status"], "FAILURE", "{v}");
        (v["status"] == "SUCCESS").then_some(v)
    })
    .await;

    let tj = world.finished(&name, WAIT).await;
    let status = tj.status.clone().unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded));
    assert!(status.is_condition_true("Succeeded"));
    assert_eq!(status.executor, Some(Executor::Inline));
    assert_eq!(status.attempts, Some(1));
    assert!(status.claimed_by.is_some());
    assert!(tj.finalizers().contains(&thumbnail_crds::FINALIZER.to_string()));
    let output = &status.outputs[0];
    assert_eq!(output.key, format!("images/thumbnail/{id}.jpg"));
    assert_eq!(job["result"]["key"], output.key.as_str());
    assert_eq!(job["result"]["bucket"], world.s3.s3_bucket_name.as_str());

    let row = world.jobs.get(id).await.unwrap().expect("the row");
    assert_eq!(row.status, JobStatus::Success);
    assert_eq!(row.outputs.len(), 1);
    assert_eq!(row.outputs[0].sha256, output.sha256);
    assert_eq!(row.outputs[0].key, output.key);

    // The presigned URL downloads exactly that image.
    let link: Value = http
        .get(format!("{}/api/v1/jobs/{id}/thumbnail", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = link["thumbnail_url"].as_str().unwrap();
    let bytes = http.get(url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&bytes), output.sha256);
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (output.width, output.height));
    assert!(img.width() <= 64 && img.height() <= 48 && (img.width() == 64 || img.height() == 48));
    assert_eq!(
        image::guess_format(&bytes).unwrap(),
        image::ImageFormat::Jpeg,
        "the input's format"
    );

    // Events on the transitions, and metrics.
    assert_eq!(world.events_after(&name, "Started").await, 1);
    assert_eq!(world.events_after(&name, "Completed").await, 1);
    let metrics = http
        .get(format!("http://127.0.0.1:{}/metrics", operator.port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("thumbnail_operator_reconciles_total{result=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thumbnail_operator_jobs{phase=\"Succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("thumbnail_operator_attempts_total{executor=\"inline\"} 1"),
        "{metrics}"
    );
    let ready = http
        .get(format!("http://127.0.0.1:{}/readyz", operator.port))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    api.stop().await;
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);
}

/// A ResourceQuota that allows no ThumbnailJobs: the API's create is refused by the real server,
/// and the upload is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_is_undone_when_the_resource_cannot_be_created() {
    let world = World::new().await;
    let quotas: Api<ResourceQuota> = Api::namespaced(world.admin.clone(), &world.ns);
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "no-thumbnailjobs"},
        "spec": {"hard": {"count/thumbnailjobs.thumbnailer.dev": "0"}},
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The quota controller must have counted the namespace before admission enforces it.
    eventually("the quota to be counted", WAIT, || async {
        let q = quotas.get("no-thumbnailjobs").await.ok()?;
        q.status?
            .hard?
            .contains_key("count/thumbnailjobs.thumbnailer.dev")
            .then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let api = RunningApi::start(&world, world.api_config(dir.path())).await;

    let form = Form::new().part("image", Part::bytes(fixture("photo.png")).file_name("a.png"));
    let response = api.upload_form(form).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("Kubernetes"), "{body}");
    // Nothing half-done: no row, no original, no resource.
    assert!(world.jobs.list(&Default::default()).await.unwrap().is_empty());
    assert!(
        world
            .tjs()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let listed = world
        .objects
        .client()
        .list_objects_v2()
        .bucket(&world.s3.s3_bucket_name)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "the original was removed");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_inputs_fail_with_their_reason_and_the_operator_keeps_going() {
    let world = World::new().await;
    let operator = world.operator().await;
    let (jpeg, png) = (fixture("photo.jpg"), fixture("photo.png"));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bomb", png_header(50_000, 50_000), "TooManyPixels"),
        // The header passes the probe; decoding fails.
        ("truncated", png[..png.len() / 3].to_vec(), "CorruptImage"),
        // Cut inside the header segments: refused by the probe.
        ("truncated-jpeg", jpeg[..600].to_vec(), "CorruptImage"),
        (
            "text",
            b"this is not an image, just text\n".to_vec(),
            "UnsupportedFormat",
        ),
        // Over MAX_UPLOAD_BYTES: refused from its size, without reading it.
        ("huge", vec![0u8; 25 * 1024 * 1024 + 1], "FileTooLarge"),
        ("missing", Vec::new(), "SourceNotFound"),
    ];
    for (name, bytes, _) in &cases {
        let key = format!("images/original/{name}.bin");
        if *name != "missing" {
            world.put(&key, bytes).await;
        }
        let mut s = spec(&key);
        s.execution = Execution::Inline;
        world.create_tj(name, s).await;
    }
    for (name, _, reason) in &cases {
        let tj = world.finished(name, WAIT).await;
        let status = tj.status.unwrap();
        assert_eq!(status.phase, Some(Phase::Failed), "{name}");
        assert_eq!(
            status.failure_reason.as_deref(),
            Some(*reason),
            "{name}: {status:?}"
        );
        assert!(status.is_condition_true("Failed"));
        assert!(
            status.attempts.unwrap_or(0) <= 1,
            "{name}: bad input is not retried"
        );
        assert!(!status.failure_message.unwrap_or_default().is_empty());
        assert_eq!(
            world.events_after(name, reason).await,
            1,
            "{name}: one Warning event"
        );
    }
    // The truncated PNG passed the header probe: it failed while rendering, with a row.
    let truncated = world.tj("truncated").await.unwrap();
    let row = world
        .row_finished(truncated.metadata.uid.unwrap().parse().unwrap())
        .await;
    assert_eq!(row.status, JobStatus::Failure);
    assert_eq!(row.error.unwrap().reason, "CorruptImage");

    // Still working.
    world.put("images/original/fine.png", &fixture("photo.png")).await;
    world.create_tj("fine", spec("images/original/fine.png")).await;
    let fine = world.finished("fine", WAIT).await;
    assert_eq!(fine.phase(), Phase::Succeeded);
    assert_eq!(fine.status.unwrap().outputs[0].content_type, "image/png");
    operator.shutdown().await;
}

/// Deleting a finished ThumbnailJob removes its thumbnails (finalizer) and keeps its history; the
/// TTL removes the resource but keeps thumbnails and history. (Deleting an unfinished one: see
/// `render_jobs.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_removes_thumbnails_and_ttl_removes_the_resource_but_keeps_history() {
    let world = World::new().await;
    let operator = world.operator().await;
    world.put("images/original/a.jpg", &fixture("photo.jpg")).await;
    let mut keep = spec("images/original/a.jpg");
    keep.job_id = Some(Uuid::new_v4().to_string());
    world.create_tj("deleted", keep.clone()).await;
    let mut ttl = spec("images/original/a.jpg");
    ttl.job_id = Some(Uuid::new_v4().to_string());
    ttl.ttl_seconds_after_finished = Some(1);
    world.create_tj("expiring", ttl.clone()).await;

    let done = world.finished("deleted", WAIT).await;
    let key = done.status.unwrap().outputs[0].key.clone();
    assert!(world.objects.exists(&key).await.unwrap());
    world
        .tjs()
        .delete("deleted", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted resource to be gone", WAIT, || async {
        world.tj("deleted").await.is_none().then_some(())
    })
    .await;
    assert!(
        !world.objects.exists(&key).await.unwrap(),
        "the finalizer removed the thumbnail"
    );
    let id: Uuid = keep.job_id.unwrap().parse().unwrap();
    assert_eq!(world.row_finished(id).await.status, JobStatus::Success);

    // TTL: the resource goes by itself; thumbnails and history stay.
    eventually("the TTL to delete the resource", WAIT, || async {
        match world.tj("expiring").await {
            Some(t) => {
                assert!(t.phase() != Phase::Failed, "{:?}", t.status);
                None
            }
            None => Some(()),
        }
    })
    .await;
    let id: Uuid = ttl.job_id.unwrap().parse().unwrap();
    let row = world.jobs.get(id).await.unwrap().expect("history kept");
    assert_eq!(row.status, JobStatus::Success);
    assert!(
        world.objects.exists(&row.outputs[0].key).await.unwrap(),
        "thumbnails kept"
    );

    operator.shutdown().await;
}

/// `spec.source.bucket` names only buckets the operator may read (SOURCE_BUCKETS; default the
/// configured one): a namespace editor cannot make it read any bucket its credentials reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_buckets_outside_the_allow_list_are_refused() {
    let world = World::new().await;
    let other = fresh_bucket().await;
    let store = thumbnail_core::objects::S3ObjectStore::new(&other.s3_config(None))
        .await
        .unwrap();
    store
        .put_bytes(
            "private/photo.jpg",
            bytes::Bytes::from(fixture("photo.jpg")),
            "image/jpeg",
        )
        .await
        .unwrap();
    let operator = world.operator().await;
    let mut s = spec("private/photo.jpg");
    s.source.bucket = Some(other.s3_bucket_name.clone());
    world.create_tj("other-bucket", s.clone()).await;
    let tj = world.finished("other-bucket", WAIT).await;
    let status = tj.status.unwrap();
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("SourceBucketNotAllowed"),
        "{status:?}"
    );
    assert!(status.failure_message.unwrap().contains(&other.s3_bucket_name));
    assert_eq!(
        world.events_after("other-bucket", "SourceBucketNotAllowed").await,
        1
    );
    operator.shutdown().await;

    // Allowed by SOURCE_BUCKETS: read from there, written to the configured bucket.
    let allowed = other.s3_bucket_name.clone();
    let operator = world.operator_with(|c| c.source_buckets = vec![allowed]).await;
    world.create_tj("allowed-bucket", s).await;
    let tj = world.finished("allowed-bucket", WAIT).await;
    let status = tj.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.outputs[0].bucket, world.s3.s3_bucket_name);
    operator.shutdown().await;
}

/// A hand-written `spec.jobId` equal to another resource's job id is refused with a reason and
/// touches nothing of the first: not its row, not its thumbnails, also when deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_id_belongs_to_the_resource_that_used_it_first() {
    let world = World::new().await;
    let operator = world.operator().await;
    world.put("images/original/a.jpg", &fixture("photo.jpg")).await;
    world.put("images/original/b.png", &fixture("photo.png")).await;
    let id = Uuid::new_v4();
    let mut first = spec("images/original/a.jpg");
    first.job_id = Some(id.to_string());
    world.create_tj("first", first).await;
    let done = world.finished("first", WAIT).await;
    let output = done.status.clone().unwrap().outputs[0].clone();
    let row = world.row_finished(id).await;

    let mut squatter = spec("images/original/b.png");
    squatter.job_id = Some(id.to_string());
    world.create_tj("squatter", squatter).await;
    let refused = world.finished("squatter", WAIT).await;
    let status = refused.status.unwrap();
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("JobIdConflict"),
        "{status:?}"
    );
    assert!(status.failure_message.unwrap().contains("first"));
    assert_eq!(world.events_after("squatter", "JobIdConflict").await, 1);

    world
        .tjs()
        .delete("squatter", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the squatter to be gone", WAIT, || async {
        world.tj("squatter").await.is_none().then_some(())
    })
    .await;
    // The first job is as it was.
    assert_eq!(world.jobs.get(id).await.unwrap().unwrap(), row);
    let bytes = world.objects.get(&output.key).await.unwrap();
    assert_eq!(sha256(&bytes), output.sha256);
    operator.shutdown().await;
}

/// INLINE_CONCURRENCY is a hard bound, and an attempt is claimed only once it holds a slot: with
/// one slot, never more than one ThumbnailJob is `Running` inline at a time (sampled from a
/// watch), however many wait. `execution: inline` over the pixel threshold goes to a Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inline_renders_are_bounded_and_claimed_only_with_a_slot() {
    let world = World::new().await;
    world
        .put("images/original/photo.png", &fixture("photo.png"))
        .await;
    let log = world.record_phases();
    let operator = world.operator_with(|c| c.inline_concurrency = 1).await;
    let names: Vec<String> = (0..8).map(|i| format!("slot-{i}")).collect();
    for name in &names {
        let mut s = spec("images/original/photo.png");
        s.execution = Execution::Inline;
        s.outputs[0].width = 1200;
        s.outputs[0].height = 1200;
        s.outputs[0].upscale = true;
        world.create_tj(name, s).await;
    }
    for name in &names {
        let tj = world.finished(name, Duration::from_secs(120)).await;
        assert_eq!(tj.phase(), Phase::Succeeded, "{name}");
        assert_eq!(tj.status.unwrap().attempts, Some(1), "{name}");
    }
    assert_eq!(
        log.max_running_inline(),
        1,
        "one slot, one claimed attempt at a time"
    );
    operator.shutdown().await;

    // Over the threshold, `inline` is not honoured: the image goes to a render Job.
    let operator = world.operator_with(|c| c.job_pixel_threshold = 1000).await;
    let mut s = spec("images/original/photo.png");
    s.execution = Execution::Inline;
    world.create_tj("too-large-for-inline", s).await;
    eventually("a render Job", WAIT, || async {
        let tj = world.tj("too-large-for-inline").await?;
        (tj.status?.executor == Some(Executor::Job)).then_some(())
    })
    .await;
    assert_eq!(
        world.events_after("too-large-for-inline", "InlineTooLarge").await,
        1
    );
    operator.shutdown().await;
}

/// `/readyz` names a dependency that stops answering (PostgreSQL behind a proxy that is cut) and
/// is ready again once it answers; `/healthz` stays up throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_reports_the_database_going_away_and_coming_back() {
    use thumbnail_core::testsupport::proxy::{Proxy, socket_of, via};
    let world = World::new().await;
    let proxy = Proxy::start(socket_of(&world.database_url)).await;
    let database_url = via(&world.database_url, &proxy);
    let operator = world.operator_with(|c| c.database_url = database_url).await;
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", operator.port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let readyz = || async {
        let r = http.get(url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(readyz().await, (200, "ready".to_owned()));

    proxy.cut();
    let detail = eventually(
        "/readyz to report the database down",
        Duration::from_secs(30),
        || async {
            let (status, body) = readyz().await;
            (status == 503).then_some(body)
        },
    )
    .await;
    assert!(detail.starts_with("database (postgres) unavailable"), "{detail}");
    assert!(!detail.contains("object store"), "S3 is still up: {detail}");
    let health = http.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "liveness does not depend on the database");

    proxy.restore();
    eventually("/readyz to be ready again", Duration::from_secs(30), || async {
        (readyz().await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);
}

/// Transient errors are retried with backoff: S3 and PostgreSQL cut while jobs wait, and the API
/// server failing writes (injected 500s in front of the real server): every job still ends
/// Succeeded, and the failing steps show in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_s3_postgres_and_api_server_errors_are_retried() {
    use thumbnail_core::testsupport::proxy::{Proxy, socket_of, via};
    let world = World::new().await;
    world
        .put("images/original/photo.jpg", &fixture("photo.jpg"))
        .await;
    // S3 and PostgreSQL through proxies the test can cut.
    let s3_proxy = Proxy::start(socket_of(world.s3.s3_endpoint_url.as_deref().unwrap())).await;
    let pg_proxy = Proxy::start(socket_of(&world.database_url)).await;
    // The API server through the fault proxy.
    let faults = kube_fault_proxy::FaultProxy::start(&world.cluster.url, &world.cluster.ca_pem).await;
    let client = world
        .cluster
        .client_at(&faults.url(), &world.tenant.operator_token);
    let mut config = world.config();
    config.s3.s3_endpoint_url = Some(s3_proxy.url("http"));
    config.database_url = via(&world.database_url, &pg_proxy);
    let operator = RunningOperator::start(config, client).await;

    s3_proxy.cut();
    world
        .create_tj("during-s3-outage", spec("images/original/photo.jpg"))
        .await;
    eventually("a failed read of the source", WAIT, || async {
        (operator.metrics.encode().contains("step=\"read_source\"")).then_some(())
    })
    .await;
    s3_proxy.restore();
    let tj = world.finished("during-s3-outage", WAIT).await;
    assert_eq!(tj.phase(), Phase::Succeeded, "{:?}", tj.status);

    pg_proxy.cut();
    world
        .create_tj("during-db-outage", spec("images/original/photo.jpg"))
        .await;
    eventually("a failed write to the job store", WAIT, || async {
        (operator.metrics.encode().contains("step=\"mirror_job\"")).then_some(())
    })
    .await;
    pg_proxy.restore();
    let tj = world.finished("during-db-outage", WAIT).await;
    assert_eq!(tj.phase(), Phase::Succeeded, "{:?}", tj.status);
    let id: Uuid = tj.metadata.uid.unwrap().parse().unwrap();
    assert_eq!(world.row_finished(id).await.status, JobStatus::Success);

    faults.fail("PATCH", "/thumbnailjobs/", 500, 3);
    world
        .create_tj("during-api-errors", spec("images/original/photo.jpg"))
        .await;
    let tj = world.finished("during-api-errors", WAIT).await;
    assert_eq!(tj.phase(), Phase::Succeeded, "{:?}", tj.status);
    assert_eq!(
        faults.seen().iter().filter(|s| s.outcome == "failed").count(),
        3,
        "the injected errors were met"
    );
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);
}

/// A watch answered with 410 Gone (an etcd compaction) makes the operator relist and carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gone_watch_is_relisted() {
    let world = World::new().await;
    world
        .put("images/original/photo.jpg", &fixture("photo.jpg"))
        .await;
    let faults = kube_fault_proxy::FaultProxy::start(&world.cluster.url, &world.cluster.ca_pem).await;
    let client = world
        .cluster
        .client_at(&faults.url(), &world.tenant.operator_token);
    faults.gone_next_watch("/thumbnailjobs");
    let operator = RunningOperator::start(world.config(), client).await;
    eventually("the 410 to be served", WAIT, || async {
        faults.seen().iter().any(|s| s.outcome == "gone").then_some(())
    })
    .await;
    world
        .create_tj("after-gone", spec("images/original/photo.jpg"))
        .await;
    let tj = world.finished("after-gone", WAIT).await;
    assert_eq!(tj.phase(), Phase::Succeeded);
    let lists = faults
        .seen()
        .iter()
        .filter(|s| {
            s.method == "GET"
                && s.path_and_query.contains("/thumbnailjobs?")
                && !s.path_and_query.contains("watch=")
        })
        .count();
    assert!(lists >= 2, "listed again after the 410 ({lists} lists)");
    operator.shutdown().await;
}

/// WATCH_NAMESPACE scopes the operator: a ThumbnailJob in another namespace is never touched
/// (its RBAC would not even allow it), one in the watched namespace is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_keeps_to_its_watch_namespace() {
    let world = World::new().await;
    world
        .put("images/original/photo.jpg", &fixture("photo.jpg"))
        .await;
    let operator = world.operator().await;
    let elsewhere = world.tenant.op_ns.clone();
    let other: Api<ThumbnailJob> = Api::namespaced(world.admin.clone(), &elsewhere);
    other
        .create(
            &PostParams::default(),
            &ThumbnailJob::new("not-mine", spec("images/original/photo.jpg")),
        )
        .await
        .unwrap();
    world.create_tj("mine", spec("images/original/photo.jpg")).await;
    assert_eq!(world.finished("mine", WAIT).await.phase(), Phase::Succeeded);
    let untouched = other.get("not-mine").await.unwrap();
    assert!(untouched.status.is_none(), "{:?}", untouched.status);
    assert!(untouched.finalizers().is_empty());
    operator.shutdown().await;
}

/// Start-up asks the API server (SelfSubjectAccessReview) for every permission of the operator's
/// RBAC table and refuses to start without one, naming each that is missing: here the chart's
/// Roles with two verbs removed. With the chart's Roles as rendered it starts. Stopped right after
/// starting (before its cache synced), it stops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_permissions_stop_start_up_by_name() {
    let world = World::new().await;
    let operator = world.operator().await;
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);

    // The chart's RBAC, less `delete` on Jobs and `patch` on the status.
    let mut rbac = cluster::render_chart_rbac(
        &world.tenant.release,
        &world.tenant.op_ns,
        &serde_json::json!({"operator": {"watchNamespace": world.ns}}),
    );
    rbac = rbac.replace("  - create\n  - delete\n", "  - create\n");
    let status_rule = "  - thumbnailjobs/status\n  verbs:\n  - patch\n";
    assert!(rbac.contains(status_rule), "{rbac}");
    rbac = rbac.replace(status_rule, "  - thumbnailjobs/status\n  verbs:\n  - get\n");
    let (ok, out, err) = world.cluster.kubectl(&["apply", "-f", "-"], Some(&rbac));
    assert!(ok, "{out}{err}");
    let err = eventually("start-up to refuse", WAIT, || async {
        match thumbnail_operator::Operator::build_with_client(world.config(), world.operator_client()).await {
            Ok(_) => None,
            Err(e) => Some(format!("{e:#}")),
        }
    })
    .await;
    for missing in [
        format!("delete jobs.batch in namespace {}", world.tenant.op_ns),
        format!(
            "patch thumbnailjobs/status.thumbnailer.dev in namespace {}",
            world.ns
        ),
    ] {
        assert!(err.contains(&missing), "expected '{missing}' in: {err}");
    }
    assert!(!err.contains("create jobs.batch"), "only the missing ones: {err}");
}

/// The API in Kubernetes mode checks its own permissions the same way: without one it refuses
/// to start, naming it, rather than accept uploads it cannot hand to the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_refuses_to_start_without_its_permissions() {
    let world = World::new().await;
    // The chart's API Role, less `create`.
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(world.admin.clone(), &world.ns);
    let name = format!("{}-thumbnail-api", world.tenant.release);
    let mut role = roles.get(&name).await.unwrap();
    for rule in role.rules.iter_mut().flatten() {
        rule.verbs.retain(|v| v != "create");
    }
    role.metadata = ObjectMeta {
        name: Some(name.clone()),
        resource_version: role.metadata.resource_version.clone(),
        ..ObjectMeta::default()
    };
    roles.replace(&name, &PostParams::default(), &role).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = eventually("start-up to refuse", WAIT, || async {
        match Application::build_with_kube_client(world.api_config(dir.path()), Some(world.api_client()))
            .await
        {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        }
    })
    .await;
    assert!(
        err.contains(&format!(
            "create thumbnailjobs.thumbnailer.dev in namespace {}",
            world.ns
        )),
        "{err}"
    );
    assert!(!err.contains("get thumbnailjobs"), "only the missing one: {err}");
}
