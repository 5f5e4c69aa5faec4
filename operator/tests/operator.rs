//! The operator for real: `kube::Client` and `kube_runtime::Controller` (watches included) against
//! the in-repository test API server, with the real PostgreSQL and S3 servers that
//! `scripts/test.sh` starts. Render Jobs run the real `thumbnail-operator render` binary, started
//! by the test "kubelet".
mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::Duration;
use thumbnail_api::Application;
use thumbnail_api::config::{ApiConfig, JobRunnerKind};
use thumbnail_core::model::JobStatus;
use thumbnail_core::objects::ObjectStore;
use thumbnail_crds::{
    Execution, Executor, Fit, ImageFormat, OutputSpec, Phase, ThumbnailJob, ThumbnailJobSpec,
};
use tokio_util::sync::CancellationToken;
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

    // The API in Kubernetes mode, pointed at the test API server.
    let dir = tempfile::tempdir().unwrap();
    let config = api_config(&world, dir.path());
    let app = Application::build(config).await.expect("the API starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop_api = CancellationToken::new();
    let token = stop_api.clone();
    let api_task = tokio::spawn(app.run_until_stopped(async move { token.cancelled().await }));
    let http = reqwest::Client::new();

    let form = Form::new()
        .part("image", Part::bytes(fixture("photo.jpg")).file_name("photo.jpg"))
        .text("width", "64")
        .text("height", "48")
        .text("fit", "contain")
        .text("owner", "alice");
    let response = http
        .post(format!("{base}/api/v1/thumbnails/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id: Uuid = body["job_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(body["message"], "Started to generate thumbnail");

    // The resource exists before the 202: name, label, job id, owner, outputs from the options.
    let name = format!("tj-{id}");
    let tj = world.tj(&name).expect("the API created the ThumbnailJob");
    assert_eq!(tj.labels()[thumbnail_crds::LABEL_JOB_ID], id.to_string());
    assert_eq!(tj.spec.job_id.as_deref(), Some(id.to_string().as_str()));
    assert_eq!(tj.spec.owner.as_deref(), Some("alice"));
    assert_eq!(
        (
            tj.spec.outputs[0].width,
            tj.spec.outputs[0].height,
            tj.spec.outputs[0].fit
        ),
        (64, 48, Fit::Contain)
    );

    // The REST API answers from PostgreSQL, which the operator updates.
    let job = eventually("the job to succeed in the REST API", WAIT, || async {
        let v: Value = http
            .get(format!("{base}/api/v1/jobs/{id}"))
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
        .get(format!("{base}/api/v1/jobs/{id}/thumbnail"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = link["thumbnail_url"].as_str().unwrap();
    let bytes = reqwest::get(url).await.unwrap().bytes().await.unwrap();
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
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", operator.port))
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
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", operator.port))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    stop_api.cancel();
    api_task.await.unwrap().unwrap();
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_is_undone_when_the_resource_cannot_be_created() {
    let world = World::new().await;
    let dir = tempfile::tempdir().unwrap();
    let config = api_config(&world, dir.path());
    let app = Application::build(config).await.expect("the API starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let stop_api = CancellationToken::new();
    let token = stop_api.clone();
    let api_task = tokio::spawn(app.run_until_stopped(async move { token.cancelled().await }));

    world.server.fail_next("create", "thumbnailjobs", 500);
    let form = Form::new().part("image", Part::bytes(fixture("photo.png")).file_name("a.png"));
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/thumbnails/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("Kubernetes"), "{body}");
    // Nothing half-done: no row, no original, no resource.
    assert!(world.jobs.list(&Default::default()).await.unwrap().is_empty());
    assert!(world.server.store().list_as::<ThumbnailJob>(None).is_empty());
    let listed = world
        .objects
        .client()
        .list_objects_v2()
        .bucket(&world.s3.s3_bucket_name)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "the original was removed");
    stop_api.cancel();
    api_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn example_manifests_are_processed_without_the_api() {
    let world = World::new().await;
    world
        .put("images/original/example.jpg", &fixture("photo.jpg"))
        .await;
    let operator = world.operator().await;
    let api: Api<ThumbnailJob> = Api::namespaced(world.client.clone(), NS);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployment/examples");
    for (file, name) in [
        ("basic.yaml", "example-basic"),
        ("multi-output.yaml", "example-multi-output"),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut tj: ThumbnailJob = serde_yaml::from_str(&text).unwrap();
        if tj.spec.source.bucket.is_some() {
            tj.spec.source.bucket = Some(world.s3.s3_bucket_name.clone());
        }
        // As `kubectl apply --server-side` does.
        api.patch(name, &PatchParams::apply("kubectl"), &Patch::Apply(&tj))
            .await
            .unwrap();
    }

    let basic = world.finished("example-basic", WAIT).await;
    let uid: Uuid = basic.metadata.uid.as_deref().unwrap().parse().unwrap();
    let status = basic.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(status.outputs[0].key, format!("images/thumbnail/{uid}.jpg"));
    let stored = world.objects.get(&status.outputs[0].key).await.unwrap();
    assert_eq!(sha256(&stored), status.outputs[0].sha256);
    let img = image::load_from_memory(&stored).unwrap();
    assert_eq!((img.width(), img.height()), (100, 100));
    // A manifest has no row yet: the operator creates it (id = metadata.uid).
    let row = world.row_finished(uid).await;
    assert_eq!(row.status, JobStatus::Success);
    assert_eq!(row.source_key, "images/original/example.jpg");

    let multi = world.finished("example-multi-output", WAIT).await;
    let status = multi.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    let by_name = |n: &str| status.outputs.iter().find(|o| o.name == n).unwrap().clone();
    assert_eq!(status.outputs.len(), 4);
    let preview = by_name("preview");
    assert_eq!(preview.content_type, "image/webp");
    assert!(preview.key.ends_with("-preview.webp"));
    let banner = by_name("banner");
    let bytes = world.objects.get(&banner.key).await.unwrap();
    let img = image::load_from_memory(&bytes).unwrap();
    assert_eq!((img.width(), img.height()), (banner.width, banner.height));
    assert_eq!(image::guess_format(&bytes).unwrap(), image::ImageFormat::Jpeg);
    let icon = by_name("icon");
    assert_eq!(
        (icon.width, icon.height, icon.content_type.as_str()),
        (32, 32, "image/png")
    );
    let row = world
        .row_finished(multi.metadata.uid.as_deref().unwrap().parse().unwrap())
        .await;
    assert_eq!(row.owner.as_deref(), Some("gallery-team"));
    assert_eq!(row.outputs.len(), 4);
    operator.shutdown().await;
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
        ("missing", Vec::new(), "SourceNotFound"),
    ];
    for (name, bytes, _) in &cases {
        let key = format!("images/original/{name}.bin");
        if *name != "missing" {
            world.put(&key, bytes).await;
        }
        let mut s = spec(&key);
        s.execution = Execution::Inline;
        world.create_tj(name, s);
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
    let truncated = world.tj("truncated").unwrap();
    let row = world
        .row_finished(truncated.metadata.uid.unwrap().parse().unwrap())
        .await;
    assert_eq!(row.status, JobStatus::Failure);
    assert_eq!(row.error.unwrap().reason, "CorruptImage");

    // Still working.
    world.put("images/original/fine.png", &fixture("photo.png")).await;
    world.create_tj("fine", spec("images/original/fine.png"));
    let fine = world.finished("fine", WAIT).await;
    assert_eq!(fine.phase(), Phase::Succeeded);
    assert_eq!(fine.status.unwrap().outputs[0].content_type, "image/png");
    operator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_removes_thumbnails_and_ttl_removes_the_resource_but_keeps_history() {
    let world = World::new().await;
    let operator = world.operator().await;
    world.put("images/original/a.jpg", &fixture("photo.jpg")).await;
    let mut keep = spec("images/original/a.jpg");
    keep.job_id = Some(Uuid::new_v4().to_string());
    world.create_tj("deleted", keep.clone());
    let mut ttl = spec("images/original/a.jpg");
    ttl.job_id = Some(Uuid::new_v4().to_string());
    ttl.ttl_seconds_after_finished = Some(1);
    world.create_tj("expiring", ttl.clone());

    let done = world.finished("deleted", WAIT).await;
    let key = done.status.unwrap().outputs[0].key.clone();
    assert!(world.objects.exists(&key).await.unwrap());
    let api: Api<ThumbnailJob> = Api::namespaced(world.client.clone(), NS);
    api.delete("deleted", &DeleteParams::default()).await.unwrap();
    eventually("the deleted resource to be gone", WAIT, || async {
        world.tj("deleted").is_none().then_some(())
    })
    .await;
    assert!(
        !world.objects.exists(&key).await.unwrap(),
        "the finalizer removed the thumbnail"
    );
    let id: Uuid = keep.job_id.unwrap().parse().unwrap();
    assert_eq!(world.row_finished(id).await.status, JobStatus::Success);

    // TTL: the resource goes by itself; thumbnails and history stay.
    let expired = eventually("the TTL to delete the resource", WAIT, || async {
        match world.tj("expiring") {
            Some(t) => {
                assert!(t.phase() != Phase::Failed, "{:?}", t.status);
                None
            }
            None => Some(()),
        }
    })
    .await;
    let () = expired;
    let id: Uuid = ttl.job_id.unwrap().parse().unwrap();
    let row = world.jobs.get(id).await.unwrap().expect("history kept");
    assert_eq!(row.status, JobStatus::Success);
    assert!(
        world.objects.exists(&row.outputs[0].key).await.unwrap(),
        "thumbnails kept"
    );
    operator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_mode_runs_the_render_binary_in_a_job() {
    let world = World::new().await;
    let kubelet = Kubelet::start(&world.server);
    // `auto` sends images above 1000 pixels to a Job.
    let operator = world.operator_with(|c| c.job_pixel_threshold = 1000).await;
    let (jpeg, png) = (fixture("photo.jpg"), fixture("photo.png"));
    world.put("images/original/big.jpg", &jpeg).await;
    world
        .put("images/original/broken.jpg", &png[..png.len() / 3])
        .await;
    let mut good = spec("images/original/big.jpg");
    good.outputs = vec![
        OutputSpec::default(),
        OutputSpec {
            name: "small".into(),
            width: 20,
            height: 20,
            format: Some(ImageFormat::Webp),
            ..OutputSpec::default()
        },
    ];
    world.create_tj("big", good);
    let mut bad = spec("images/original/broken.jpg");
    bad.execution = Execution::Job;
    bad.backoff_limit = 3;
    world.create_tj("broken", bad);

    let big = world.finished("big", WAIT).await;
    let uid: Uuid = big.metadata.uid.as_deref().unwrap().parse().unwrap();
    let status = big.status.clone().unwrap();
    let job_name = format!("render-{uid}");
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{status:?}\nrender stderr: {}",
        kubelet.stderr_of(&job_name)
    );
    assert_eq!(status.executor, Some(Executor::Job));
    assert_eq!(status.kubernetes_job.as_deref(), Some(job_name.as_str()));
    assert_eq!(kubelet.runs_of(&job_name), vec![0]);
    assert_eq!(status.outputs.len(), 2);
    for output in &status.outputs {
        let bytes = world.objects.get(&output.key).await.unwrap();
        assert_eq!(sha256(&bytes), output.sha256, "{}", output.key);
    }
    // The Job as created by the operator.
    let job = world.server.store().get_as::<Job>(NS, &job_name).unwrap();
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.name.as_str(), owner.controller), ("big", Some(true)));
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(
        pod.containers[0]
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()["memory"]
            .0
            .parse::<u64>()
            .unwrap()
            > 128 << 20
    );
    let row = world.row_finished(uid).await;
    assert_eq!(row.status, JobStatus::Success);
    assert_eq!(row.outputs.len(), 2);

    // Bad input in a Job: exit code 2, the podFailurePolicy fails the Job at once, no retries.
    let broken = world.finished("broken", WAIT).await;
    let uid = broken.metadata.uid.as_deref().unwrap();
    let status = broken.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("CorruptImage"),
        "{status:?}"
    );
    assert_eq!(
        kubelet.runs_of(&format!("render-{uid}")),
        vec![2],
        "one pod, no retries"
    );
    assert_eq!(status.attempts, Some(1));
    operator.shutdown().await;
}

/// `count` inline jobs slow enough to be caught mid-way (large PNG outputs).
fn slow_jobs(world: &World, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let name = format!("job-{i:02}");
            let mut s = spec("images/original/photo.png");
            s.execution = Execution::Inline;
            s.outputs = vec![OutputSpec {
                name: "large".into(),
                width: 1600,
                height: 1600,
                fit: Fit::Fill,
                format: Some(ImageFormat::Png),
                upscale: true,
                ..OutputSpec::default()
            }];
            world.create_tj(&name, s);
            name
        })
        .collect()
}

async fn assert_all_succeeded_once(world: &World, log: &PhaseLog, names: &[String]) {
    for name in names {
        let tj = world.finished(name, Duration::from_secs(120)).await;
        let status = tj.status.clone().unwrap();
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:?}");
        // Exactly once: it entered Succeeded once and never left it (a killed operator may not
        // have published its event, so events are at most one).
        eventually("the watch to see it", WAIT, || async {
            (log.entered(name, Phase::Succeeded) == 1).then_some(())
        })
        .await;
        assert_eq!(
            log.phases(name).last(),
            Some(&Phase::Succeeded),
            "{name}: {:?}",
            log.phases(name)
        );
        assert!(world.event_count(name, "Completed") <= 1, "{name} completed once");
        let output = &status.outputs[0];
        let bytes = world.objects.get(&output.key).await.unwrap();
        assert_eq!(sha256(&bytes), output.sha256);
        assert_eq!((output.width, output.height), (1600, 1600));
        let row = world
            .row_finished(tj.metadata.uid.as_deref().unwrap().parse().unwrap())
            .await;
        assert_eq!(row.status, JobStatus::Success, "{name}");
        assert_eq!(row.outputs[0].sha256, output.sha256, "{name}");
    }
}

fn count_phase(world: &World, names: &[String], phase: Phase) -> usize {
    names
        .iter()
        .filter(|n| world.tj(n).is_some_and(|t| t.phase() == phase))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_restarted_operators_finish_every_job_exactly_once() {
    let world = World::new().await;
    world
        .put("images/original/photo.png", &fixture("photo.png"))
        .await;
    let log = world.record_phases();
    let names = slow_jobs(&world, 10);

    // Killed (SIGKILL) mid-way: interrupted attempts are started again by the next operator.
    let first = world.operator_with(|c| c.inline_concurrency = 1).await;
    eventually("a few jobs to finish", WAIT, || async {
        (count_phase(&world, &names, Phase::Succeeded) >= 2).then_some(())
    })
    .await;
    first.kill().await;
    let unfinished = names.len() - count_phase(&world, &names, Phase::Succeeded);
    assert!(unfinished > 0, "the kill came too late to test anything");

    // Stopped gracefully (SIGTERM) mid-way: running renders finish before it returns.
    let second = world.operator_with(|c| c.inline_concurrency = 1).await;
    let before = count_phase(&world, &names, Phase::Succeeded);
    eventually("progress after the restart", WAIT, || async {
        (count_phase(&world, &names, Phase::Succeeded) > before).then_some(())
    })
    .await;
    assert_eq!(second.shutdown().await, thumbnail_operator::Stopped::Shutdown);
    assert_eq!(
        count_phase(&world, &names, Phase::Running),
        0,
        "a graceful stop lets running renders finish"
    );

    let third = world.operator().await;
    assert_all_succeeded_once(&world, &log, &names).await;
    third.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_with_leader_election_process_each_job_once() {
    let world = World::new().await;
    world
        .put("images/original/photo.jpg", &fixture("photo.jpg"))
        .await;
    let log = world.record_phases();
    let names: Vec<String> = (0..50)
        .map(|i| {
            let name = format!("le-{i:02}");
            world.create_tj(&name, spec("images/original/photo.jpg"));
            name
        })
        .collect();
    let elect = |id: &'static str| {
        move |c: &mut thumbnail_operator::config::OperatorConfig| {
            c.leader_election = true;
            c.pod_name = id.into();
            c.lease_name = "thumbnail-operator".into();
            c.inline_concurrency = 1;
        }
    };
    let a = world.operator_with(elect("replica-a")).await;
    let b = world.operator_with(elect("replica-b")).await;
    let leaders = || a.metrics.leader.get() + b.metrics.leader.get();
    eventually("a leader", WAIT, || async { (leaders() == 1).then_some(()) }).await;
    eventually("some progress", WAIT, || async {
        (count_phase(&world, &names, Phase::Succeeded) >= 5).then_some(())
    })
    .await;
    assert_eq!(leaders(), 1, "never two leaders");
    // The leader steps down (SIGTERM); the standby takes over.
    let (leader, standby) = if a.metrics.leader.get() == 1 {
        (a, b)
    } else {
        (b, a)
    };
    let leader_attempts = leader.metrics.clone();
    leader.shutdown().await;
    eventually("the standby to lead", WAIT, || async {
        (standby.metrics.leader.get() == 1).then_some(())
    })
    .await;
    for name in &names {
        let tj = world.finished(name, Duration::from_secs(120)).await;
        assert_eq!(tj.phase(), Phase::Succeeded, "{name}");
        assert_eq!(
            tj.status.as_ref().unwrap().attempts,
            Some(1),
            "{name} rendered once"
        );
        assert_eq!(world.events_after(name, "Completed").await, 1, "{name}");
        eventually("the watch to see it", WAIT, || async {
            (log.entered(name, Phase::Succeeded) == 1).then_some(())
        })
        .await;
        assert_eq!(
            log.entered(name, Phase::Running),
            1,
            "{name}: {:?}",
            log.phases(name)
        );
    }
    let total = leader_attempts.attempts_started("inline") + standby.attempts();
    assert_eq!(total, 50, "50 jobs, 50 renders");
    assert!(standby.attempts() > 0 && leader_attempts.attempts_started("inline") > 0);
    let lease = world
        .server
        .store()
        .get_as::<k8s_openapi::api::coordination::v1::Lease>("default", "thumbnail-operator")
        .unwrap();
    assert!(lease.spec.unwrap().lease_transitions.unwrap_or(0) >= 1);
    standby.shutdown().await;
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
    let readyz = || async {
        let r = reqwest::get(url("/readyz")).await.unwrap();
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
    let health = reqwest::get(url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200, "liveness does not depend on the database");

    proxy.restore();
    eventually("/readyz to be ready again", Duration::from_secs(30), || async {
        (readyz().await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);
}

/// Start-up asks the API server (SelfSubjectAccessReview) for every permission of the operator's
/// RBAC table and refuses to start without one, naming each that is missing; with them all it
/// starts, having asked about each. Stopped right after starting (before its cache synced), it
/// stops at once: kube-runtime's graceful shutdown alone would wait for a sync for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_permissions_stop_start_up_by_name() {
    let world = World::new().await;
    world.server.deny("delete", "batch", "jobs");
    world
        .server
        .deny("patch", "thumbnailer.dev", "thumbnailjobs/status");
    let mut config = world.config();
    config.watch_namespace = NS.into();
    let err = match thumbnail_operator::Operator::build_with_client(config, world.client.clone()).await {
        Ok(_) => panic!("the operator started without the permissions it needs"),
        Err(e) => format!("{e:#}"),
    };
    for missing in [
        "delete jobs.batch in namespace default",
        "patch thumbnailjobs/status.thumbnailer.dev in namespace default",
    ] {
        assert!(err.contains(missing), "expected '{missing}' in: {err}");
    }
    assert!(!err.contains("create jobs.batch"), "only the denied ones: {err}");

    // A fresh server allows everything: the operator starts, after one review per verb of the
    // table (but the Lease's: these tests run without leader election).
    let world = World::new().await;
    let operator = world.operator().await;
    let reviews = world
        .server
        .requests()
        .iter()
        .filter(|r| r.resource == "selfsubjectaccessreviews" && r.status == 201)
        .count();
    let expected: usize = thumbnail_crds::rbac::permissions(thumbnail_crds::rbac::Component::Operator)
        .iter()
        .filter(|p| p.scope == thumbnail_crds::rbac::Scope::Workload)
        .map(|p| p.verbs.len())
        .sum();
    assert_eq!(reviews, expected);
    assert_eq!(operator.shutdown().await, thumbnail_operator::Stopped::Shutdown);
}

/// The API in Kubernetes mode checks its own permissions the same way: without one it refuses
/// to start, naming it, rather than accept uploads it cannot hand to the operator.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_refuses_to_start_without_its_permissions() {
    let world = World::new().await;
    world.server.deny("create", "thumbnailer.dev", "thumbnailjobs");
    let dir = tempfile::tempdir().unwrap();
    let config = api_config(&world, dir.path());
    let err = match Application::build(config).await {
        Ok(_) => panic!("the API started without the permission to create ThumbnailJobs"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("create thumbnailjobs.thumbnailer.dev in namespace default"),
        "{err}"
    );
    assert!(!err.contains("get thumbnailjobs"), "only the denied one: {err}");
}

/// The API in Kubernetes mode against this world's API server, database and bucket, with its
/// ThumbnailJobs in [`NS`].
fn api_config(world: &World, data_dir: &std::path::Path) -> ApiConfig {
    let mut config = ApiConfig::for_tests(data_dir);
    config.store.database_url = Some(world.database_url.clone());
    config.store.s3_endpoint_url = world.s3.s3_endpoint_url.clone();
    config.store.s3_region = world.s3.s3_region.clone();
    config.store.s3_bucket_name = Some(world.s3.s3_bucket_name.clone());
    config.store.aws_access_key_id = world.s3.aws_access_key_id.clone();
    config.store.aws_secret_access_key = world.s3.aws_secret_access_key.clone();
    config.job_runner = JobRunnerKind::Kubernetes;
    config.kube_url = Some(world.server.url());
    config.kube_namespace = NS.into();
    config
}
