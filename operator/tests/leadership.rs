//! Replicas, restarts and leader election on a real control plane: operators killed mid-render,
//! stopped gracefully, two replicas electing a leader with a real Lease, and a leader whose Lease
//! renewals hang (a fault-injecting proxy in front of the real API server holds them).
mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use thumbnail_core::model::JobStatus;
use thumbnail_core::objects::ObjectStore;
use thumbnail_crds::{Execution, Fit, ImageFormat, OutputSpec, Phase, ThumbnailJob, ThumbnailJobSpec};
use thumbnail_operator::Stopped;
use thumbnail_operator::config::OperatorConfig;

const WAIT: Duration = Duration::from_secs(120);

/// An inline job slow enough to be caught mid-render (a large PNG output).
fn slow_spec() -> ThumbnailJobSpec {
    let mut s = ThumbnailJobSpec::for_key("images/original/photo.png");
    s.execution = Execution::Inline;
    s.outputs = vec![OutputSpec {
        name: "large".into(),
        width: 2400,
        height: 2400,
        fit: Fit::Fill,
        format: Some(ImageFormat::Png),
        upscale: true,
        ..OutputSpec::default()
    }];
    s
}

async fn slow_jobs(world: &World, prefix: &str, count: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..count {
        let name = format!("{prefix}-{i:02}");
        world.create_tj(&name, slow_spec()).await;
        names.push(name);
    }
    names
}

async fn phases(world: &World, names: &[String]) -> Vec<(String, Option<ThumbnailJob>)> {
    let mut out = Vec::new();
    for name in names {
        out.push((name.clone(), world.tj(name).await));
    }
    out
}

async fn count_phase(world: &World, names: &[String], phase: Phase) -> usize {
    phases(world, names)
        .await
        .iter()
        .filter(|(_, t)| t.as_ref().is_some_and(|t| t.phase() == phase))
        .count()
}

async fn running(world: &World, names: &[String]) -> Vec<String> {
    phases(world, names)
        .await
        .into_iter()
        .filter(|(_, t)| t.as_ref().is_some_and(|t| t.phase() == Phase::Running))
        .map(|(n, _)| n)
        .collect()
}

/// Every job succeeded exactly once: it entered Succeeded once and never left it, its output is in
/// the bucket, its row says SUCCESS with the same bytes.
async fn assert_all_succeeded_once(world: &World, log: &PhaseLog, names: &[String]) {
    for name in names {
        let tj = world.finished(name, WAIT).await;
        let status = tj.status.clone().unwrap();
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:?}");
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
        // A killed operator may not have published its event: at most one.
        assert!(
            world.event_count(name, "Completed").await <= 1,
            "{name} completed once"
        );
        let output = &status.outputs[0];
        let bytes = world.objects.get(&output.key).await.unwrap();
        assert_eq!(
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
            output.sha256
        );
        let row = world
            .row_finished(tj.metadata.uid.as_deref().unwrap().parse().unwrap())
            .await;
        assert_eq!(row.status, JobStatus::Success, "{name}");
        assert_eq!(row.outputs[0].sha256, output.sha256, "{name}");
    }
}

/// Killed (SIGKILL) mid-render: the interrupted attempts are started again by the next operator
/// (and counted); stopped gracefully (SIGTERM): running renders finish first. Every job ends
/// Succeeded exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_and_restarted_operators_finish_every_job_exactly_once() {
    let world = World::new().await;
    world
        .put("images/original/photo.png", &fixture("photo.png"))
        .await;
    let log = world.record_phases();
    let names = slow_jobs(&world, "job", 12).await;

    let first = world.operator_with(|c| c.inline_concurrency = 1).await;
    eventually("a job to finish and the next to be mid-render", WAIT, || async {
        let done = count_phase(&world, &names, Phase::Succeeded).await;
        (done >= 1 && !running(&world, &names).await.is_empty()).then_some(())
    })
    .await;
    first.kill().await;
    let interrupted = running(&world, &names).await;
    assert!(
        !interrupted.is_empty(),
        "the kill came too late to catch a render"
    );

    let second = world.operator_with(|c| c.inline_concurrency = 1).await;
    // The interrupted attempts are retried: their next attempt is counted.
    for name in &interrupted {
        eventually("the interrupted job to be retried", WAIT, || async {
            let tj = world.tj(name).await?;
            (tj.status?.attempts? >= 2).then_some(())
        })
        .await;
    }
    eventually("a render under way after the restart", WAIT, || async {
        let left = names.len() - count_phase(&world, &names, Phase::Succeeded).await;
        assert!(left > 0, "every job finished before the SIGTERM could catch one");
        (!running(&world, &names).await.is_empty()).then_some(())
    })
    .await;
    // SIGTERM with a render in flight: it finishes before the operator stops.
    assert_eq!(second.shutdown().await, Stopped::Shutdown);
    assert!(
        running(&world, &names).await.is_empty(),
        "a graceful stop lets running renders finish"
    );

    let third = world.operator().await;
    assert_all_succeeded_once(&world, &log, &names).await;
    for name in &interrupted {
        let attempts = world.tj(name).await.unwrap().status.unwrap().attempts.unwrap();
        assert!(
            attempts >= 2,
            "{name}: interrupted, then done again ({attempts} attempts)"
        );
    }
    third.shutdown().await;
}

/// An interrupted attempt counts against `backoffLimit`: with no retries allowed, an operator
/// killed mid-render leaves a job that the next one fails with `BackoffLimitExceeded`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interrupted_attempts_count_against_the_backoff_limit() {
    let world = World::new().await;
    world
        .put("images/original/photo.png", &fixture("photo.png"))
        .await;
    let mut s = slow_spec();
    s.backoff_limit = 0;
    world.create_tj("no-retries", s).await;
    let first = world.operator().await;
    eventually("the render to start", WAIT, || async {
        (world.tj("no-retries").await?.phase() == Phase::Running).then_some(())
    })
    .await;
    first.kill().await;
    let second = world.operator().await;
    let tj = world.finished("no-retries", WAIT).await;
    let status = tj.status.unwrap();
    assert_eq!(
        status.failure_reason.as_deref(),
        Some("BackoffLimitExceeded"),
        "{status:?}"
    );
    assert!(status.failure_message.unwrap().contains("interrupted"));
    assert_eq!(world.events_after("no-retries", "BackoffLimitExceeded").await, 1);
    second.shutdown().await;
}

/// SIGTERM with renders still running after SHUTDOWN_GRACE_SECONDS: they are stopped and their
/// attempts handed back (not counted), so the next operator does them as the same attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attempts_still_running_after_the_grace_are_handed_back() {
    let world = World::new().await;
    world
        .put("images/original/photo.png", &fixture("photo.png"))
        .await;
    world.create_tj("handed", slow_spec()).await;
    let first = world.operator_with(|c| c.shutdown_grace_seconds = 0).await;
    eventually("the render to start", WAIT, || async {
        (world.tj("handed").await?.phase() == Phase::Running).then_some(())
    })
    .await;
    assert_eq!(first.shutdown().await, Stopped::Shutdown);
    let tj = world.tj("handed").await.unwrap();
    let status = tj.status.unwrap();
    assert_eq!(status.phase, Some(Phase::Pending), "{status:?}");
    assert_eq!(status.attempts, Some(0));
    assert_eq!(status.condition("Running").unwrap().reason, "HandedBack");
    assert_eq!(world.events_after("handed", "HandedBack").await, 1);

    let second = world.operator().await;
    let tj = world.finished("handed", WAIT).await;
    assert_eq!(tj.phase(), Phase::Succeeded);
    assert_eq!(
        tj.status.unwrap().attempts,
        Some(1),
        "the handed-back attempt did not count"
    );
    second.shutdown().await;
}

fn elect(id: &'static str) -> impl FnOnce(&mut OperatorConfig) {
    move |c: &mut OperatorConfig| {
        c.leader_election = true;
        c.pod_name = id.into();
        c.lease_name = "thumbnail-operator".into();
        c.inline_concurrency = 1;
        // A stepping-down leader has a third of this to hand its attempts back.
        c.lease_duration_seconds = 6.0;
        c.lease_renew_seconds = 0.25;
    }
}

/// Samples how many replicas lead at once, every 5 ms, until dropped.
struct LeaderSampler {
    most: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderSampler {
    fn start(gauges: Vec<Arc<thumbnail_operator::metrics::Metrics>>) -> LeaderSampler {
        let most = Arc::new(AtomicI64::new(0));
        let sink = most.clone();
        let task = tokio::spawn(async move {
            loop {
                let now: i64 = gauges.iter().map(|m| m.leader.get()).sum();
                sink.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        LeaderSampler { most, task }
    }

    fn most(&self) -> i64 {
        self.most.load(Ordering::SeqCst)
    }
}

impl Drop for LeaderSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Two replicas elect one leader with a real Lease; never two lead at once (sampled throughout);
/// the leader's SIGTERM releases the Lease and the standby takes over within a second or two;
/// every job is rendered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_with_leader_election_process_each_job_once() {
    let world = World::new().await;
    world
        .put("images/original/photo.jpg", &fixture("photo.jpg"))
        .await;
    let log = world.record_phases();
    let mut names = Vec::new();
    for i in 0..30 {
        let name = format!("le-{i:02}");
        world
            .create_tj(&name, ThumbnailJobSpec::for_key("images/original/photo.jpg"))
            .await;
        names.push(name);
    }
    let a = world.operator_with(elect("replica-a")).await;
    let b = world.operator_with(elect("replica-b")).await;
    let sampler = LeaderSampler::start(vec![a.metrics.clone(), b.metrics.clone()]);
    let leaders = || a.metrics.leader.get() + b.metrics.leader.get();
    eventually("a leader", WAIT, || async { (leaders() == 1).then_some(()) }).await;
    eventually("some progress", WAIT, || async {
        (count_phase(&world, &names, Phase::Succeeded).await >= 5).then_some(())
    })
    .await;
    let (leader, standby) = if a.metrics.leader.get() == 1 {
        (a, b)
    } else {
        (b, a)
    };
    let leader_metrics = leader.metrics.clone();
    let stepping_down = Instant::now();
    assert_eq!(leader.shutdown().await, Stopped::Shutdown);
    eventually("the standby to lead", WAIT, || async {
        (standby.metrics.leader.get() == 1).then_some(())
    })
    .await;
    let takeover = stepping_down.elapsed();
    // Released on shutdown: the standby takes it at its next try (every 0.25 s), not after the
    // 6 s Lease duration (the drain of the one running render comes first).
    assert!(takeover < Duration::from_secs(5), "takeover took {takeover:?}");
    for name in &names {
        let tj = world.finished(name, WAIT).await;
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
    assert_eq!(sampler.most(), 1, "never two leaders");
    let total = leader_metrics.attempts_started("inline") + standby.attempts();
    assert_eq!(total, 30, "30 jobs, 30 renders");
    assert!(standby.attempts() > 0 && leader_metrics.attempts_started("inline") > 0);
    standby.shutdown().await;
}

/// The leader's Lease renewals hang (held by a proxy in front of the real API server; kube's
/// client sets no read timeout): each renewal is bounded by the renew deadline, so it steps down
/// in time, stops its in-flight render instead of draining it and hands the attempt back; the
/// standby takes over once the Lease is stale. Every job ends Succeeded with `attempts == 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_renewals_hang_steps_down_and_every_job_runs_once() {
    let world = World::new().await;
    world
        .put("images/original/photo.png", &fixture("photo.png"))
        .await;
    let log = world.record_phases();
    let mut names = slow_jobs(&world, "hang", 3).await;
    let faults = kube_fault_proxy::FaultProxy::start(&world.cluster.url, &world.cluster.ca_pem).await;
    let via_proxy = world
        .cluster
        .client_at(&faults.url(), &world.tenant.operator_token);
    let mut config = world.config();
    elect("replica-a")(&mut config);
    let a = RunningOperator::start(config, via_proxy).await;
    eventually("replica-a to lead", WAIT, || async {
        (a.metrics.leader.get() == 1).then_some(())
    })
    .await;
    let b = world.operator_with(elect("replica-b")).await;
    let sampler = LeaderSampler::start(vec![a.metrics.clone(), b.metrics.clone()]);
    eventually("replica-a to finish the first jobs", WAIT, || async {
        (count_phase(&world, &names, Phase::Succeeded).await == names.len()).then_some(())
    })
    .await;
    // The Lease's renewal (an update) hangs from now on, and replica-a gets a render that takes
    // longer than what is left of its renew deadline (two thirds of 6 s; this render takes 8 s
    // or more here): it is mid-render when it steps down.
    faults.hang("PUT", "/leases/");
    let mut long = slow_spec();
    long.outputs = ["a", "b", "c"]
        .into_iter()
        .map(|name| OutputSpec {
            name: name.into(),
            width: 4096,
            height: 4096,
            ..long.outputs[0].clone()
        })
        .collect();
    world.create_tj("hang-long", long).await;
    names.push("hang-long".into());
    assert_eq!(
        a.stopped().await,
        Stopped::LeaseLost,
        "replica-a steps down by itself"
    );
    names.extend(slow_jobs(&world, "hang-after", 3).await);
    eventually("replica-b to lead", WAIT, || async {
        (b.metrics.leader.get() == 1).then_some(())
    })
    .await;
    faults.clear();
    for name in &names {
        let tj = world.finished(name, WAIT).await;
        let status = tj.status.clone().unwrap();
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:?}");
        assert_eq!(status.attempts, Some(1), "{name}: {:?}", log.phases(name));
    }
    assert_eq!(sampler.most(), 1, "never two leaders");
    // The render replica-a had under way was handed back, not counted as interrupted.
    let events: Vec<_> = world
        .events_for("hang-long")
        .await
        .into_iter()
        .map(|e| (e.reason, e.note, e.series.map(|s| s.count)))
        .collect();
    assert_eq!(
        world.event_count("hang-long", "HandedBack").await,
        1,
        "replica-a stopped the long render and handed it back: {events:?}"
    );
    assert_all_succeeded_once(&world, &log, &names).await;
    b.shutdown().await;
}

/// The `thumbnail-operator` binary exits with code 3 when it cannot renew its Lease (the pod
/// restarts and queues again), here through a proxy that holds the renewals.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_cannot_renew_exits_with_code_3() {
    let world = World::new().await;
    let faults = kube_fault_proxy::FaultProxy::start(&world.cluster.url, &world.cluster.ca_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &world.cluster.ca_pem).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n\
             users:\n- name: operator\n  user:\n    token: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    \
             user: operator\ncurrent-context: c\n",
            faults.url(),
            world.tenant.operator_token
        ),
    )
    .unwrap();
    let s3 = &world.s3;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_thumbnail-operator"))
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .env("DATABASE_URL", &world.database_url)
        .env("S3_ENDPOINT_URL", s3.s3_endpoint_url.as_deref().unwrap())
        .env("S3_REGION", &s3.s3_region)
        .env("S3_BUCKET_NAME", &s3.s3_bucket_name)
        .env("AWS_ACCESS_KEY_ID", s3.aws_access_key_id.as_deref().unwrap())
        .env(
            "AWS_SECRET_ACCESS_KEY",
            s3.aws_secret_access_key.as_deref().unwrap(),
        )
        .env("RENDER_CREDENTIALS_SECRET", &world.tenant.credentials_secret)
        .env("WATCH_NAMESPACE", &world.ns)
        .env("POD_NAMESPACE", &world.tenant.op_ns)
        .env("POD_NAME", "replica-binary")
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("LEASE_DURATION_SECONDS", "3")
        .env("LEASE_RENEW_SECONDS", "0.25")
        .env("LOG_LEVEL", "info")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(world.admin.clone(), &world.tenant.op_ns);
    eventually("the binary to take the Lease", WAIT, || async {
        let lease = leases.get_opt("thumbnail-operator").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some("replica-binary")).then_some(())
    })
    .await;
    faults.hang("PUT", "/leases/");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("it exits within the renew deadline and its stop")
        .unwrap();
    assert_eq!(status.code(), Some(3), "{status:?}");
}
