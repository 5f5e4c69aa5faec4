//! The harness of the operator's tests: a real Kubernetes control plane (see [`cluster`]), a
//! fresh PostgreSQL database and S3 bucket per test (servers from `scripts/test.sh`), operators
//! started in-process with the chart's ServiceAccount tokens, and a kubelet stand-in
//! ([`kubelet`]) that runs the pods of render Jobs with the real `thumbnail-operator` binary.
//!
//! (The database and proxy helpers are `thumbnail_core::testsupport`'s.)
#![allow(dead_code)]

pub mod api;
pub mod cluster;
pub mod kubelet;

#[allow(unused_imports)]
pub use cluster::{Cluster, Tenant, cluster, env, kubectl_with, repo};
pub use kubelet::Kubelet;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use std::collections::HashMap;
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

// Not every test binary starts the API.
#[allow(unused_imports)]
pub use api::RunningApi;

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

/// S3 settings for a bucket on the test server (created when missing).
pub async fn bucket(name: &str) -> S3Args {
    let s3 = S3Args {
        s3_endpoint_url: Some(env("TEST_S3_ENDPOINT")),
        s3_public_endpoint_url: None,
        s3_region: env("TEST_S3_REGION"),
        s3_bucket_name: name.to_owned(),
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

/// S3 settings for a fresh bucket.
pub async fn fresh_bucket() -> S3Args {
    bucket(&format!("op-{}", &Uuid::new_v4().simple().to_string()[..16])).await
}

pub use thumbnail_core::testsupport::eventually;

/// One test's world: its tenant of the cluster, a database, a bucket.
pub struct World {
    pub cluster: &'static Cluster,
    pub tenant: Tenant,
    /// The admin's client (test set-up and assertions, never the components').
    pub admin: kube::Client,
    /// Where ThumbnailJobs live.
    pub ns: String,
    pub database_url: String,
    pub s3: S3Args,
    pub objects: Arc<S3ObjectStore>,
    pub jobs: DynJobStore,
}

impl World {
    /// The API in Kubernetes mode against this world's API server (as the chart's API
    /// ServiceAccount), database and bucket, creating ThumbnailJobs where the operator watches.
    pub fn api_config(&self, data_dir: &std::path::Path) -> thumbnail_api::config::ApiConfig {
        let mut config = thumbnail_api::config::ApiConfig::for_tests(data_dir);
        config.store.database_url = Some(self.database_url.clone());
        config.store.s3_endpoint_url = self.s3.s3_endpoint_url.clone();
        config.store.s3_region = self.s3.s3_region.clone();
        config.store.s3_bucket_name = Some(self.s3.s3_bucket_name.clone());
        config.store.aws_access_key_id = self.s3.aws_access_key_id.clone();
        config.store.aws_secret_access_key = self.s3.aws_secret_access_key.clone();
        config.job_runner = thumbnail_api::config::JobRunnerKind::Kubernetes;
        config.kube_namespace = self.ns.clone();
        config
    }

    pub async fn new() -> World {
        World::with_bucket(fresh_bucket().await).await
    }

    pub async fn with_bucket(s3: S3Args) -> World {
        thumbnail_operator::install_crypto_provider();
        let cluster = cluster().await;
        let tenant = Tenant::new(cluster, &env("TEST_S3_ACCESS_KEY"), &env("TEST_S3_SECRET_KEY")).await;
        let database_url = fresh_database().await;
        let objects = Arc::new(S3ObjectStore::new(&s3.s3_config(None)).await.unwrap());
        // Connecting applies the migrations, as the API's start-up does.
        let jobs = jobstore::connect(&database_url, 4).await.expect("job store");
        World {
            cluster,
            admin: cluster.admin(),
            ns: tenant.ns.clone(),
            tenant,
            database_url,
            s3,
            objects,
            jobs,
        }
    }

    /// The operator's client: its chart ServiceAccount's token.
    pub fn operator_client(&self) -> kube::Client {
        self.cluster.client(&self.tenant.operator_token)
    }

    pub fn api_client(&self) -> kube::Client {
        self.cluster.client(&self.tenant.api_token)
    }

    /// The operator's configuration as the chart sets it for this tenant.
    pub fn config(&self) -> OperatorConfig {
        let mut c = OperatorConfig::for_tests(&self.database_url, self.s3.clone());
        c.watch_namespace = self.ns.clone();
        c.pod_namespace = self.tenant.op_ns.clone();
        c.render_service_account = self.tenant.render_service_account.clone();
        c.render_credentials_secret = self.tenant.credentials_secret.clone();
        c.log.log_level = "warn,thumbnail_operator=info".into();
        c
    }

    pub async fn operator(&self) -> RunningOperator {
        self.operator_with(|_| {}).await
    }

    pub async fn operator_with(&self, tweak: impl FnOnce(&mut OperatorConfig)) -> RunningOperator {
        let mut config = self.config();
        tweak(&mut config);
        RunningOperator::start(config, self.operator_client()).await
    }

    /// The kubelet stand-in for this tenant's render Jobs.
    pub fn kubelet(&self) -> Kubelet {
        Kubelet::start(
            self.admin.clone(),
            &self.tenant.op_ns,
            env!("CARGO_BIN_EXE_thumbnail-operator"),
        )
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

    pub fn tjs(&self) -> Api<ThumbnailJob> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// Render Jobs (in the operator's namespace).
    pub fn render_jobs(&self) -> Api<Job> {
        Api::namespaced(self.admin.clone(), &self.tenant.op_ns)
    }

    pub async fn tj(&self, name: &str) -> Option<ThumbnailJob> {
        self.tjs().get_opt(name).await.expect("reading a ThumbnailJob")
    }

    pub async fn create_tj(&self, name: &str, spec: ThumbnailJobSpec) -> ThumbnailJob {
        let tj = ThumbnailJob::new(name, spec);
        self.tjs()
            .create(&PostParams::default(), &tj)
            .await
            .expect("create the ThumbnailJob")
    }

    /// Wait until the resource `name` is Succeeded or Failed; returns it.
    pub async fn finished(&self, name: &str, timeout: Duration) -> ThumbnailJob {
        eventually(&format!("ThumbnailJob {name} to finish"), timeout, || async {
            self.tj(name).await.filter(|t| t.is_finished())
        })
        .await
    }

    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.admin.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .expect("listing events")
            .items
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
                let n = self.event_count(name, reason).await;
                (n > 0).then_some(n)
            },
        )
        .await
    }

    /// Events for `name` with `reason`, counting repeats of one event (`series.count`).
    pub async fn event_count(&self, name: &str, reason: &str) -> i32 {
        self.events_for(name)
            .await
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .map(|e| e.series.as_ref().map(|s| s.count).unwrap_or(1))
            .sum()
    }

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

    /// Records every phase each ThumbnailJob goes through, and how many are `Running` inline at
    /// once, from a watch (as `kubectl get -w` would see them).
    pub fn record_phases(&self) -> PhaseLog {
        let api = self.tjs();
        let log: Arc<Mutex<PhaseState>> = Arc::default();
        let sink = log.clone();
        let task = tokio::spawn(async move {
            use futures::StreamExt;
            use kube::runtime::WatchStreamExt;
            // Backoff: see the kubelet's watch.
            let mut events = kube::runtime::watcher(api, kube::runtime::watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let object = match event {
                    Ok(kube::runtime::watcher::Event::Apply(o))
                    | Ok(kube::runtime::watcher::Event::InitApply(o)) => o,
                    _ => continue,
                };
                let mut state = sink.lock().unwrap();
                let inline_running = object.status.as_ref().is_some_and(|s| {
                    s.phase() == Phase::Running && s.executor == Some(thumbnail_crds::Executor::Inline)
                });
                state.running_inline.insert(object.name_any(), inline_running);
                let now = state.running_inline.values().filter(|r| **r).count();
                state.max_running_inline = state.max_running_inline.max(now);
                let phases = state.phases.entry(object.name_any()).or_default();
                let phase = object.phase();
                if phases.last() != Some(&phase) {
                    phases.push(phase);
                }
            }
        });
        PhaseLog { log, task }
    }
}

#[derive(Default)]
pub struct PhaseState {
    phases: HashMap<String, Vec<Phase>>,
    running_inline: HashMap<String, bool>,
    max_running_inline: usize,
}

/// The phases seen per resource, in order (consecutive repeats collapsed).
pub struct PhaseLog {
    log: Arc<Mutex<PhaseState>>,
    task: JoinHandle<()>,
}

impl PhaseLog {
    pub fn phases(&self, name: &str) -> Vec<Phase> {
        self.log
            .lock()
            .unwrap()
            .phases
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// How many times `name` entered `phase`.
    pub fn entered(&self, name: &str, phase: Phase) -> usize {
        self.phases(name).iter().filter(|p| **p == phase).count()
    }

    /// The most ThumbnailJobs seen `Running` inline at the same time.
    pub fn max_running_inline(&self) -> usize {
        self.log.lock().unwrap().max_running_inline
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
        self.stopped().await
    }

    /// Waits for the operator to stop by itself (a lost Lease).
    pub async fn stopped(self) -> Stopped {
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
