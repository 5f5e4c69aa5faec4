//! Render Jobs on a real control plane: the operator creates batch/v1 Jobs in its own namespace,
//! the real Job controller creates their pods, the kubelet stand-in runs them with the real
//! `thumbnail-operator render` binary, and the real Job controller decides how each Job ends.
mod common;

use common::*;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use sha2::{Digest, Sha256};
use std::time::Duration;
use thumbnail_core::model::JobStatus;
use thumbnail_core::objects::ObjectStore;
use thumbnail_crds::{Execution, Executor, ImageFormat, OutputSpec, Phase, ThumbnailJobSpec};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(90);

fn job_spec(key: &str) -> ThumbnailJobSpec {
    let mut s = ThumbnailJobSpec::for_key(key);
    s.execution = Execution::Job;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn job_mode_runs_the_render_binary_in_a_job() {
    let world = World::new().await;
    let kubelet = world.kubelet();
    // `auto` sends images above 1000 pixels to a Job.
    let operator = world.operator_with(|c| c.job_pixel_threshold = 1000).await;
    let (jpeg, png) = (fixture("photo.jpg"), fixture("photo.png"));
    world.put("images/original/big.jpg", &jpeg).await;
    world
        .put("images/original/broken.jpg", &png[..png.len() / 3])
        .await;
    let mut good = ThumbnailJobSpec::for_key("images/original/big.jpg");
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
    world.create_tj("big", good).await;
    let mut bad = job_spec("images/original/broken.jpg");
    bad.backoff_limit = 3;
    world.create_tj("broken", bad).await;

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
    assert_eq!(kubelet.runs_of(&job_name), vec![0], "one pod, run once");
    assert_eq!(status.outputs.len(), 2);
    for output in &status.outputs {
        let bytes = world.objects.get(&output.key).await.unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            output.sha256,
            "{}",
            output.key
        );
    }
    let row = world.row_finished(uid).await;
    assert_eq!(row.status, JobStatus::Success);
    assert_eq!(row.outputs.len(), 2);

    // Bad input in a Job: exit code 2, and the operator fails it at once from the result the pod
    // left and stops the Job (this 1.20 server drops the Job's podFailurePolicy, which would fail
    // it at once; its Job controller starts the next pod in the same sync that counts the
    // failure, so at most that one more pod starts, and is stopped).
    let broken = world.finished("broken", WAIT).await;
    let uid = broken.metadata.uid.as_deref().unwrap();
    let status = broken.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("CorruptImage"),
        "{status:?}"
    );
    let runs = kubelet.runs_of(&format!("render-{uid}"));
    assert_eq!(runs.first(), Some(&2), "{runs:?}");
    assert!(runs.len() <= 2, "not retried up to backoffLimit: {runs:?}");
    assert!(status.attempts.unwrap() <= 2, "{status:?}");

    // Read, the render Jobs are deleted (their pods with them, by the garbage collector).
    eventually("the render Jobs and their pods to be gone", WAIT, || async {
        let jobs = world.render_jobs().list(&ListParams::default()).await.ok()?.items;
        let pods: Api<Pod> = Api::namespaced(world.admin.clone(), &world.tenant.op_ns);
        let pods = pods.list(&ListParams::default()).await.ok()?.items;
        (jobs.is_empty() && pods.is_empty()).then_some(())
    })
    .await;
    operator.shutdown().await;
}

/// The Job as the operator creates it, as the real API server stores it: in the operator's
/// namespace (where its ServiceAccount and the credentials Secret are), tied to the ThumbnailJob
/// by label and annotation, credentials only by reference to a required Secret, a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn render_jobs_run_beside_their_service_account_and_secret() {
    let world = World::new().await;
    let kubelet = world.kubelet();
    kubelet.pause(true);
    let operator = world.operator_with(|c| c.render_job_ttl_seconds = 120).await;
    world.put("images/original/a.jpg", &fixture("photo.jpg")).await;
    let tj = world
        .create_tj("locked-down", job_spec("images/original/a.jpg"))
        .await;
    let name = format!("render-{}", tj.uid().unwrap());
    let job = eventually("the render Job", WAIT, || async {
        world.render_jobs().get_opt(&name).await.ok()?
    })
    .await;
    assert_eq!(job.namespace().as_deref(), Some(world.tenant.op_ns.as_str()));
    assert!(
        job.owner_references().is_empty(),
        "no owner reference across namespaces"
    );
    assert_eq!(
        job.labels()[thumbnail_crds::LABEL_THUMBNAILJOB_UID],
        tj.uid().unwrap()
    );
    assert_eq!(
        job.annotations()[thumbnail_crds::ANNOTATION_THUMBNAILJOB],
        format!("{}/locked-down", world.ns)
    );
    let spec = job.spec.clone().unwrap();
    assert_eq!(
        spec.ttl_seconds_after_finished,
        Some(120),
        "the TTL-after-finished gate is on"
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(world.tenant.render_service_account.as_str())
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let env = pod.containers[0].env.clone().unwrap();
    for var in &env {
        let literal = var.value.clone().unwrap_or_default();
        assert!(
            !literal.contains(&env_var("TEST_S3_SECRET_KEY"))
                && !literal.contains(&env_var("TEST_S3_ACCESS_KEY")),
            "{} carries a credential",
            var.name
        );
    }
    let secret_ref = env
        .iter()
        .find(|v| v.name == "AWS_SECRET_ACCESS_KEY")
        .and_then(|v| v.value_from.as_ref()?.secret_key_ref.clone())
        .expect("the key comes from the Secret");
    assert_eq!(secret_ref.name, world.tenant.credentials_secret);
    assert_eq!(secret_ref.optional, Some(false));
    kubelet.pause(false);
    let done = world.finished("locked-down", WAIT).await;
    assert_eq!(done.phase(), Phase::Succeeded, "{:?}", done.status);
    operator.shutdown().await;
}

fn env_var(name: &str) -> String {
    common::env(name)
}

/// Render Jobs whose pod cannot be created (a missing ServiceAccount: the Job controller's
/// FailedCreate) or cannot start (a missing Secret: the kubelet's CreateContainerConfigError)
/// end their ThumbnailJob `Failed` with the cause and an event, after RENDER_START_TIMEOUT_SECONDS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn render_jobs_that_cannot_start_fail_with_the_cause() {
    let world = World::new().await;
    let _kubelet = world.kubelet();
    world.put("images/original/a.jpg", &fixture("photo.jpg")).await;

    let operator = world
        .operator_with(|c| {
            c.render_service_account = "no-such-account".into();
            c.render_start_timeout_seconds = 3;
        })
        .await;
    let mut s = job_spec("images/original/a.jpg");
    s.active_deadline_seconds = Some(300);
    world.create_tj("no-account", s).await;
    let tj = world.finished("no-account", WAIT).await;
    let status = tj.status.unwrap();
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("FailedCreate"),
        "{status:?}"
    );
    let message = status.failure_message.unwrap();
    assert!(message.contains("no-such-account"), "{message}");
    assert!(world.events_after("no-account", "FailedCreate").await >= 1);
    operator.shutdown().await;

    // The credentials Secret is gone: the pod is created but cannot start.
    let secrets: Api<Secret> = Api::namespaced(world.admin.clone(), &world.tenant.op_ns);
    secrets
        .delete(&world.tenant.credentials_secret, &DeleteParams::default())
        .await
        .unwrap();
    let operator = world.operator_with(|c| c.render_start_timeout_seconds = 3).await;
    world
        .create_tj("no-secret", job_spec("images/original/a.jpg"))
        .await;
    let tj = world.finished("no-secret", WAIT).await;
    let status = tj.status.unwrap();
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("CreateContainerConfigError"),
        "{status:?}"
    );
    let message = status.failure_message.unwrap();
    assert!(message.contains(&world.tenant.credentials_secret), "{message}");
    assert!(
        world
            .events_after("no-secret", "CreateContainerConfigError")
            .await
            >= 1
    );
    // Its Job is gone too.
    let name = format!("render-{}", tj.metadata.uid.unwrap());
    eventually("the render Job to be deleted", WAIT, || async {
        world
            .render_jobs()
            .get_opt(&name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    operator.shutdown().await;
}

/// `activeDeadlineSeconds` holds whatever the render Job does (here: its pod never runs, no node
/// takes it): `DeadlineExceeded`, with its events, and the Job is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn active_deadline_fails_a_job_whose_pod_never_runs() {
    let world = World::new().await;
    let kubelet = world.kubelet();
    kubelet.pause(true);
    world.put("images/original/a.jpg", &fixture("photo.jpg")).await;
    let operator = world.operator().await;
    let mut s = job_spec("images/original/a.jpg");
    s.active_deadline_seconds = Some(3);
    world.create_tj("stuck", s).await;
    let tj = world.finished("stuck", WAIT).await;
    let status = tj.status.clone().unwrap();
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("DeadlineExceeded"),
        "{status:?}"
    );
    assert!(status.failure_message.unwrap().contains("activeDeadlineSeconds"));
    assert_eq!(world.events_after("stuck", "Started").await, 1);
    assert_eq!(world.events_after("stuck", "DeadlineExceeded").await, 1);
    let described = world
        .cluster
        .kubectl(&["describe", "thumbnailjob", "stuck", "-n", &world.ns], None);
    assert!(described.0, "{}", described.2);
    assert!(described.1.contains("DeadlineExceeded"), "{}", described.1);
    let name = format!("render-{}", tj.metadata.uid.unwrap());
    eventually("the render Job to be deleted", WAIT, || async {
        world
            .render_jobs()
            .get_opt(&name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    operator.shutdown().await;
}

/// Deleting an unfinished ThumbnailJob stops its render Job and marks its row FAILURE/`Deleted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_an_unfinished_job_stops_its_render_job() {
    let world = World::new().await;
    let kubelet = world.kubelet();
    kubelet.pause(true);
    world.put("images/original/a.jpg", &fixture("photo.jpg")).await;
    let operator = world.operator().await;
    let tj = world.create_tj("doomed", job_spec("images/original/a.jpg")).await;
    let uid: Uuid = tj.uid().unwrap().parse().unwrap();
    let name = format!("render-{uid}");
    eventually("the render Job", WAIT, || async {
        world.render_jobs().get_opt(&name).await.ok()?
    })
    .await;
    world
        .tjs()
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ThumbnailJob and its render Job to be gone", WAIT, || async {
        let gone = world.tj("doomed").await.is_none();
        let job_gone = world.render_jobs().get_opt(&name).await.ok()?.is_none();
        (gone && job_gone).then_some(())
    })
    .await;
    let row = world.row_finished(uid).await;
    assert_eq!(row.status, JobStatus::Failure);
    assert_eq!(row.error.unwrap().reason, "Deleted");
    operator.shutdown().await;
}

/// TTLs keep etcd from growing with every upload: the API's ThumbnailJobs carry
/// `ttlSecondsAfterFinished` and render Jobs a TTL of their own; after N jobs and the TTL, the
/// counts of both are back at zero, and the REST history stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttls_bring_resource_counts_back_to_zero() {
    let world = World::new().await;
    let _kubelet = world.kubelet();
    world.put("images/original/a.jpg", &fixture("photo.jpg")).await;
    let operator = world.operator_with(|c| c.render_job_ttl_seconds = 1).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let mut s = ThumbnailJobSpec::for_key("images/original/a.jpg");
        // Half inline, half in Jobs.
        s.execution = if i % 2 == 0 {
            Execution::Inline
        } else {
            Execution::Job
        };
        s.ttl_seconds_after_finished = Some(2);
        let id = Uuid::new_v4();
        s.job_id = Some(id.to_string());
        ids.push(id);
        world.create_tj(&format!("ttl-{i}"), s).await;
    }
    for id in &ids {
        assert_eq!(world.row_finished(*id).await.status, JobStatus::Success);
    }
    eventually("no ThumbnailJobs and no render Jobs left", WAIT, || async {
        let tjs = world.tjs().list(&ListParams::default()).await.ok()?.items.len();
        let jobs: Vec<Job> = world.render_jobs().list(&ListParams::default()).await.ok()?.items;
        (tjs == 0 && jobs.is_empty()).then_some(())
    })
    .await;
    for id in &ids {
        let row = world.jobs.get(*id).await.unwrap().expect("history stays");
        assert!(world.objects.exists(&row.outputs[0].key).await.unwrap());
    }
    operator.shutdown().await;
}
