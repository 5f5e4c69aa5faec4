//! The harness of the operator's tests: the in-repository Kubernetes API server, a fresh
//! PostgreSQL database and S3 bucket per test (servers from `scripts/test.sh`), operators started
//! in-process, and a "kubelet" that runs render Jobs with the real `thumbnail-operator` binary.
//!
//! (The database and proxy helpers are `thumbnail_core::testsupport`'s.)
#![allow(dead_code)]

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube_test_apiserver::TestApiServer;
use serde_json::json;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thumbnail_core::jobstore::{self, DynJobStore};
use thumbnail_core::objects::{ObjectStore, S3ObjectStore};
use thumbnail_crds::{Phase, ThumbnailJob, ThumbnailJobSpec};
use thumbnail_operator::config::{OperatorConfig, S3Args};
use thumbnail_operator::metrics::Metrics;
use thumbnail_operator::{Operator, Stopped};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const HOW_TO_RUN: &str = "run the tests with `scripts/test.sh` (it starts PostgreSQL and an S3 server), or \
     `scripts/dev-services.sh start` and `eval \"$(scripts/dev-services.sh env)\"` first";

fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: this test needs real servers; {HOW_TO_RUN}"),
    }
}

pub const NS: &str = "default";

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../api/tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A fresh database on the test server; its URL.
pub async fn fresh_database() -> String {
    thumbnail_core::testsupport::fresh_postgres_url().await
}

/// S3 settings for a fresh bucket on the test server (created).
pub async fn fresh_bucket() -> S3Args {
    let s3 = S3Args {
        s3_endpoint_url: Some(env("TEST_S3_ENDPOINT")),
        s3_public_endpoint_url: None,
        s3_region: env("TEST_S3_REGION"),
        s3_bucket_name: format!("op-{}", &Uuid::new_v4().simple().to_string()[..16]),
        s3_key_prefix: String::new(),
        aws_access_key_id: Some(env("TEST_S3_ACCESS_KEY")),
        aws_secret_access_key: Some(env("TEST_S3_SECRET_KEY")),
        s3_credentials_file: None,
    };
    let mut config = s3.s3_config(None);
    config.create_bucket = true;
    let store = S3ObjectStore::new(&config).await.expect("S3 client");
    store.ensure_bucket(true).await.expect("create the bucket");
    s3
}

/// Poll `check` until it returns `Some`, or panic with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One test's world: API server, database, bucket.
pub struct World {
    pub server: TestApiServer,
    pub client: kube::Client,
    pub database_url: String,
    pub s3: S3Args,
    pub objects: Arc<S3ObjectStore>,
    pub jobs: DynJobStore,
}

impl World {
    pub async fn new() -> World {
        thumbnail_operator::install_crypto_provider();
        let server = TestApiServer::start().await;
        let client = server.client();
        let database_url = fresh_database().await;
        let s3 = fresh_bucket().await;
        let objects = Arc::new(S3ObjectStore::new(&s3.s3_config(None)).await.unwrap());
        // Connecting applies the migrations, as the API's start-up does.
        let jobs = jobstore::connect(&database_url, 4).await.expect("job store");
        World {
            server,
            client,
            database_url,
            s3,
            objects,
            jobs,
        }
    }

    pub fn config(&self) -> OperatorConfig {
        let mut c = OperatorConfig::for_tests(&self.database_url, self.s3.clone());
        c.kube_api_url = Some(self.server.url());
        c.log.log_level = "warn,thumbnail_operator=info".into();
        c
    }

    pub async fn operator(&self) -> RunningOperator {
        self.operator_with(|_| {}).await
    }

    pub async fn operator_with(&self, tweak: impl FnOnce(&mut OperatorConfig)) -> RunningOperator {
        let mut config = self.config();
        tweak(&mut config);
        RunningOperator::start(config, self.client.clone()).await
    }

    pub async fn put(&self, key: &str, bytes: &[u8]) {
        self.objects
            .put_bytes(
                key,
                bytes::Bytes::copy_from_slice(bytes),
                "application/octet-stream",
            )
            .await
            .expect("put the source object");
    }

    pub fn tj(&self, name: &str) -> Option<ThumbnailJob> {
        self.server.store().get_as::<ThumbnailJob>(NS, name)
    }

    pub fn create_tj(&self, name: &str, spec: ThumbnailJobSpec) -> ThumbnailJob {
        let mut tj = ThumbnailJob::new(name, spec);
        tj.metadata.namespace = Some(NS.into());
        self.server
            .store()
            .create_as(&tj)
            .expect("create the ThumbnailJob")
    }

    /// Wait until the resource `name` is Succeeded or Failed; returns it.
    pub async fn finished(&self, name: &str, timeout: Duration) -> ThumbnailJob {
        eventually(&format!("ThumbnailJob {name} to finish"), timeout, || async {
            self.tj(name).filter(|t| t.is_finished())
        })
        .await
    }

    pub fn events_for(&self, name: &str) -> Vec<Event> {
        self.server
            .store()
            .list_as::<Event>(Some(NS))
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect()
    }

    /// Waits until at least one event `reason` about `name` exists (events are published just
    /// after the status they report), then returns how many there are.
    pub async fn events_after(&self, name: &str, reason: &str) -> i32 {
        eventually(
            &format!("a {reason} event for {name}"),
            Duration::from_secs(10),
            || async {
                let n = self.event_count(name, reason);
                (n > 0).then_some(n)
            },
        )
        .await
    }

    /// Events for `name` with `reason`, counting repeats of one event (`series.count`).
    pub fn event_count(&self, name: &str, reason: &str) -> i32 {
        self.events_for(name)
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map(|s| s.count).unwrap_or(1))
            .sum()
    }
}

impl World {
    /// Waits until the job row `id` is finished; returns it.
    pub async fn row_finished(&self, id: Uuid) -> thumbnail_core::model::JobRecord {
        eventually(
            &format!("the job row {id} to finish"),
            Duration::from_secs(30),
            || async {
                self.jobs
                    .get(id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|r| r.status.is_finished())
            },
        )
        .await
    }

    /// Records every phase each ThumbnailJob goes through, from a watch (as `kubectl get -w`).
    pub fn record_phases(&self) -> PhaseLog {
        use futures::StreamExt;
        let api: kube::Api<ThumbnailJob> = kube::Api::namespaced(self.client.clone(), NS);
        let log: Arc<Mutex<HashMap<String, Vec<Phase>>>> = Arc::default();
        let sink = log.clone();
        let task = tokio::spawn(async move {
            let mut events = kube::runtime::watcher(api, kube::runtime::watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let objects = match event {
                    Ok(kube::runtime::watcher::Event::Apply(o))
                    | Ok(kube::runtime::watcher::Event::InitApply(o)) => vec![o],
                    _ => continue,
                };
                let mut log = sink.lock().unwrap();
                for o in objects {
                    let phases = log.entry(o.name_any()).or_default();
                    let phase = o.phase();
                    if phases.last() != Some(&phase) {
                        phases.push(phase);
                    }
                }
            }
        });
        PhaseLog { log, task }
    }
}

/// The phases seen per resource, in order (consecutive repeats collapsed).
pub struct PhaseLog {
    log: Arc<Mutex<HashMap<String, Vec<Phase>>>>,
    task: JoinHandle<()>,
}

impl PhaseLog {
    pub fn phases(&self, name: &str) -> Vec<Phase> {
        self.log.lock().unwrap().get(name).cloned().unwrap_or_default()
    }

    /// How many times `name` entered `phase`.
    pub fn entered(&self, name: &str, phase: Phase) -> usize {
        self.phases(name).iter().filter(|p| **p == phase).count()
    }
}

impl Drop for PhaseLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An operator running in this process.
pub struct RunningOperator {
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<Stopped>>,
    pub metrics: Arc<Metrics>,
    pub port: u16,
}

impl RunningOperator {
    pub async fn start(config: OperatorConfig, client: kube::Client) -> RunningOperator {
        thumbnail_operator::cli::init_logging(&config.log);
        let operator = Operator::build_with_client(config, client)
            .await
            .expect("the operator starts");
        let metrics = operator.metrics();
        let port = operator.port();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(operator.run(async move { token.cancelled().await }));
        RunningOperator {
            stop,
            task,
            metrics,
            port,
        }
    }

    /// SIGTERM: graceful stop; waits for it.
    pub async fn shutdown(self) -> Stopped {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the operator stops within 60s")
            .expect("the operator task")
            .expect("the operator ran")
    }

    /// SIGKILL: the process is gone at once (nothing in flight finishes).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    pub fn attempts(&self) -> u64 {
        self.metrics.attempts_started("inline") + self.metrics.attempts_started("job")
    }
}

/// How the fake kubelet ran one Job.
#[derive(Debug, Clone, Default)]
pub struct JobRun {
    /// Exit codes of the pods, in order.
    pub exit_codes: Vec<i32>,
    /// What the last pod wrote to stderr.
    pub stderr: String,
}

/// Plays kubelet and job controller: for every render Job created, runs its container command
/// (the real `thumbnail-operator render` binary, with the Job's args and env) as many times as the
/// Job's backoffLimit and podFailurePolicy allow, then writes the Job's status as the job
/// controller would.
pub struct Kubelet {
    pub runs: Arc<Mutex<HashMap<String, JobRun>>>,
    /// While set, new Jobs are left pending (not run).
    pub paused: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

impl Kubelet {
    pub fn start(server: &TestApiServer) -> Kubelet {
        let store = server.store();
        let runs: Arc<Mutex<HashMap<String, JobRun>>> = Arc::default();
        let paused: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (runs2, paused2) = (runs.clone(), paused.clone());
        let task = tokio::spawn(async move {
            let mut started: std::collections::HashSet<String> = Default::default();
            loop {
                if !paused2.load(std::sync::atomic::Ordering::SeqCst) {
                    for job in store.list_as::<Job>(None) {
                        let uid = job.metadata.uid.clone().unwrap_or_default();
                        if job.status.is_some() || !started.insert(uid) {
                            continue;
                        }
                        let (store, runs) = (store.clone(), runs2.clone());
                        tokio::spawn(async move { run_job(store, runs, job).await });
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Kubelet { runs, paused, task }
    }

    pub fn stderr_of(&self, job: &str) -> String {
        self.runs
            .lock()
            .unwrap()
            .get(job)
            .map(|r| r.stderr.clone())
            .unwrap_or_default()
    }

    pub fn runs_of(&self, job: &str) -> Vec<i32> {
        self.runs
            .lock()
            .unwrap()
            .get(job)
            .map(|r| r.exit_codes.clone())
            .unwrap_or_default()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_job(store: kube_test_apiserver::Store, runs: Arc<Mutex<HashMap<String, JobRun>>>, job: Job) {
    let name = job.metadata.name.clone().unwrap_or_default();
    let ns = job.metadata.namespace.clone().unwrap_or_default();
    let spec = job.spec.clone().expect("Job spec");
    let pod = spec.template.spec.clone().expect("pod spec");
    let container = pod.containers[0].clone();
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let fail_job_codes: Vec<i32> = spec
        .pod_failure_policy
        .iter()
        .flat_map(|p| p.rules.iter())
        .filter(|r| r.action == "FailJob")
        .filter_map(|r| r.on_exit_codes.as_ref())
        .flat_map(|c| c.values.clone())
        .collect();
    let now = || k8s_openapi::jiff::Timestamp::now().to_string();
    let start = now();
    let _ = store.patch_status_as::<Job>(&ns, &name, json!({"active": 1, "startTime": start}));
    let mut failed = 0;
    loop {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_thumbnail-operator"));
        cmd.args(container.args.clone().unwrap_or_default());
        cmd.env_clear();
        for e in container.env.clone().unwrap_or_default() {
            if let Some(v) = e.value {
                cmd.env(e.name, v);
            }
        }
        let out = cmd.output().await.expect("run the render binary");
        let code = out.status.code().unwrap_or(137);
        {
            let mut runs = runs.lock().unwrap();
            let run = runs.entry(name.clone()).or_default();
            run.exit_codes.push(code);
            run.stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        let status = if code == 0 {
            json!({"active": 0, "succeeded": 1, "failed": failed, "startTime": start, "completionTime": now(),
                   "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now()}]})
        } else {
            failed += 1;
            if fail_job_codes.contains(&code) {
                json!({"active": 0, "failed": failed, "startTime": start,
                       "conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                                       "message": format!("Container render for pod {name} failed with exit code {code} matching FailJob rule at index 0"),
                                       "lastTransitionTime": now()}]})
            } else if failed > backoff_limit {
                json!({"active": 0, "failed": failed, "startTime": start,
                       "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                       "message": "Job has reached the specified backoff limit", "lastTransitionTime": now()}]})
            } else {
                continue;
            }
        };
        let _ = store.patch_status_as::<Job>(&ns, &name, status);
        return;
    }
}

/// A PNG whose header claims `width`x`height` (a decompression bomb's header): signature and IHDR
/// with a valid CRC, a tiny IDAT, then the end.
pub fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc.to_be_bytes());
    // A first (tiny) IDAT chunk: decoders read the header up to it.
    let mut idat = b"IDAT".to_vec();
    idat.extend_from_slice(&[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
    out.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    out.extend_from_slice(&idat);
    out.extend_from_slice(&crc32(&idat).to_be_bytes());
    let iend = b"IEND";
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(iend);
    out.extend_from_slice(&crc32(iend).to_be_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
