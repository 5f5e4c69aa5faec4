//! `thumbnail-operator`: the kube-runtime controller that reconciles `ThumbnailJob`s, and the
//! `render` command its batch/v1 Jobs run.
//!
//! - [`Operator::build`] connects the job store, the object store and the Kubernetes client;
//!   [`Operator::run`] serves `/healthz`, `/readyz`, `/metrics`, waits for the leader Lease (when
//!   leader election is on) and runs the controller until shutdown or until the Lease is lost.
//! - [`reconcile`]: the reconciler; [`plan`]: its pure steps; [`render`]: rendering a plan;
//!   [`leader`]: the Lease-based leader election; [`reaper`]: retention (the leader sweeps
//!   expired jobs and deletes their ThumbnailJobs).
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod reaper;
pub mod reconcile;
pub mod render;

use crate::config::OperatorConfig;
use crate::leader::{LeaderElector, LeaseSettings};
use crate::metrics::{Metrics, PhaseLabels};
use crate::plan::{ExecutorPolicy, MANAGER, RenderJobSettings};
use crate::reconcile::{Context, LeaseRef, ReconcileSettings, Sources};
use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thumbnail_core::jobstore::{self, DynJobStore};
use thumbnail_core::keys::KeyLayout;
use thumbnail_core::objects::{DynObjectStore, S3ObjectStore};
use thumbnail_core::retention::Sweeper;
use thumbnail_crds::{Phase, ThumbnailJob};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Installs rustls' `ring` provider as the process default (kube and the AWS SDK bring different
/// ones, and rustls refuses to guess), unless one is installed already.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// How [`Operator::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future resolved; running reconciles (inline renders) finished first.
    Shutdown,
    /// Another replica took the Lease (or it could not be renewed): this one stopped working.
    LeaseLost,
}

/// What the health server reads.
struct Shared {
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    store: Mutex<Option<Store<ThumbnailJob>>>,
    /// Checked by `/readyz`.
    jobs: DynJobStore,
    objects: DynObjectStore,
}

pub struct Operator {
    config: OperatorConfig,
    client: kube::Client,
    ctx: Arc<Context>,
    shared: Arc<Shared>,
    listener: TcpListener,
    port: u16,
}

/// Retry `connect` while it fails with a transient error, until `timeout`.
async fn with_retries<T, F, Fut>(what: &str, timeout: Duration, mut connect: F) -> thumbnail_core::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = thumbnail_core::Result<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                warn!(dependency = what, error = %e, "dependency not ready; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The Kubernetes client: `KUBE_API_URL` without authentication when set (tests), else the
/// in-cluster configuration or kubeconfig.
pub async fn kube_client(url: Option<&str>) -> anyhow::Result<kube::Client> {
    install_crypto_provider();
    match url.filter(|u| !u.is_empty()) {
        Some(url) => {
            let config = kube::Config::new(url.parse().context("KUBE_API_URL")?);
            Ok(kube::Client::try_from(config)?)
        }
        None => Ok(kube::Client::try_default()
            .await
            .context("Kubernetes client configuration")?),
    }
}

/// Fail start-up, naming every missing rule, when the ServiceAccount lacks a permission of the
/// operator's RBAC table (`thumbnail_crds::rbac`, which the chart's Roles are built from): a
/// hand-written or outdated Role otherwise shows up only as 403s deep in reconciles. An API
/// server that cannot answer `SelfSubjectAccessReview`s is logged and does not stop start-up.
async fn check_permissions(client: &kube::Client, config: &OperatorConfig) -> anyhow::Result<()> {
    use thumbnail_crds::rbac::{self, Component};
    let watch = (!config.watch_namespace.is_empty()).then_some(config.watch_namespace.as_str());
    // Render Jobs (and, with leader election, the Lease) live in the operator's own namespace.
    let own = Some(config.pod_namespace.as_str());
    let missing = match rbac::missing_for(client, Component::Operator, watch, own).await {
        Ok(missing) => missing,
        Err(e) => {
            warn!(error = %e, "could not check the operator's permissions (SelfSubjectAccessReview)");
            return Ok(());
        }
    };
    anyhow::ensure!(
        missing.is_empty(),
        "the operator's ServiceAccount lacks these permissions (the chart's RBAC grants them; see \
         helm-charts/files/rbac-table.json): {}",
        missing.join(", ")
    );
    info!("permissions checked");
    Ok(())
}

impl Operator {
    /// Connect everything; the Kubernetes client from the configuration.
    pub async fn build(config: OperatorConfig) -> anyhow::Result<Self> {
        let client = kube_client(config.kube_api_url.as_deref()).await?;
        Self::build_with_client(config, client).await
    }

    /// Connect everything, with a given Kubernetes client.
    pub async fn build_with_client(config: OperatorConfig, client: kube::Client) -> anyhow::Result<Self> {
        install_crypto_provider();
        anyhow::ensure!(
            !config.database_url.is_empty(),
            "DATABASE_URL is required: the operator mirrors every job to the job store"
        );
        anyhow::ensure!(
            !config.s3.s3_bucket_name.is_empty(),
            "S3_BUCKET_NAME is required: the operator reads originals from and writes thumbnails to S3"
        );
        anyhow::ensure!(
            !config.uses_static_keys() || !config.render_credentials_secret.is_empty(),
            "RENDER_CREDENTIALS_SECRET is required when the operator uses static S3 keys: render Jobs \
             read the keys from that Secret (in POD_NAMESPACE), they are never written into a Job spec"
        );
        check_permissions(&client, &config).await?;
        let startup = Duration::from_secs(config.startup_timeout_seconds);
        let url = config.database_url.clone();
        let max = config.database_max_connections;
        let jobs: DynJobStore = with_retries("database", startup, || jobstore::connect(&url, max))
            .await
            .context("connecting the job store")?;
        let s3 = S3ObjectStore::new(&config.s3.s3_config(None))
            .await
            .context("object store configuration")?;
        with_retries("object store", startup, || s3.ensure_bucket(false))
            .await
            .context("checking the bucket")?;
        let objects: DynObjectStore = Arc::new(s3);

        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let port = listener.local_addr()?.port();
        let metrics = Arc::new(Metrics::new());
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: Some(config.identity()),
            },
        );
        let identity = config.identity();
        let lease = config.leader_election.then(|| LeaseRef {
            api: Api::namespaced(client.clone(), &config.pod_namespace),
            name: config.lease_name.clone(),
            duration: config.lease_duration(),
        });
        let settings = ReconcileSettings {
            keys: KeyLayout::new(&config.s3.s3_key_prefix),
            limits: config.limits.limits(),
            inline_concurrency: config.inline_concurrency,
            policy: ExecutorPolicy {
                job_pixel_threshold: config.job_pixel_threshold,
                risky_formats: config.risky_formats(),
            },
            render: RenderJobSettings {
                namespace: config.pod_namespace.clone(),
                ttl_seconds_after_finished: config.render_job_ttl_seconds,
                image: config.render_image.clone(),
                service_account: config.render_service_account.clone(),
                credentials_secret: config.render_credentials_secret.clone(),
                cpu_request: config.render_cpu_request.clone(),
                memory_overhead_bytes: config.render_memory_overhead_bytes,
                env: config.render_env(),
            },
            identity,
            lease,
            allowed_buckets: config.allowed_source_buckets(),
            render_start_timeout: Duration::from_secs(config.render_start_timeout_seconds),
        };
        let ctx = Arc::new(Context::new(
            client.clone(),
            jobs,
            Sources::new(config.s3.clone(), objects),
            settings,
            recorder,
            metrics.clone(),
        ));
        let shared = Arc::new(Shared {
            metrics,
            ready: AtomicBool::new(true),
            store: Mutex::new(None),
            jobs: ctx.jobs.clone(),
            objects: ctx.objects.clone(),
        });
        Ok(Operator {
            config,
            client,
            ctx,
            shared,
            listener,
            port,
        })
    }

    /// Port of the health and metrics server.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Serve health and metrics, then (as leader) run the controller until `shutdown` resolves or
    /// leadership is lost. Reconciles in flight (inline renders) finish before this returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<Stopped> {
        let Operator {
            config,
            client,
            ctx,
            shared,
            listener,
            port,
        } = self;
        let stop = CancellationToken::new();
        {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown.await;
                stop.cancel();
            });
        }
        let http_stop = CancellationToken::new();
        let http = {
            let router = axum::Router::new()
                .route("/healthz", get(healthz))
                .route("/readyz", get(readyz))
                .route("/metrics", get(metrics_handler))
                .with_state(shared.clone());
            let http_stop = http_stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { http_stop.cancelled().await })
                    .await;
            })
        };
        info!(port, identity = %config.identity(), leader_election = config.leader_election, "operator started");

        let outcome = if config.leader_election {
            let elector = Arc::new(LeaderElector::new(
                client.clone(),
                LeaseSettings {
                    name: config.lease_name.clone(),
                    namespace: config.pod_namespace.clone(),
                    identity: config.identity(),
                    duration: config.lease_duration(),
                    renew_every: config.lease_renew(),
                },
            ));
            info!(lease = %config.lease_name, "waiting to become the leader");
            if !elector.acquire(&stop).await {
                Stopped::Shutdown
            } else {
                info!(identity = %elector.identity(), "leading");
                shared.metrics.leader.set(1);
                let lost = CancellationToken::new();
                let hold_stop = CancellationToken::new();
                let holder = {
                    let (elector, lost, hold_stop) = (elector.clone(), lost.clone(), hold_stop.clone());
                    tokio::spawn(async move {
                        if elector.hold(&hold_stop).await {
                            lost.cancel();
                        }
                    })
                };
                // Lost: stop at once (in-flight renders included) and hand their attempts back;
                // a standby may take over once the Lease is unrenewed for its duration.
                let lost_now = {
                    let lost = lost.clone();
                    async move { lost.cancelled().await }
                };
                let graceful = {
                    let stop = stop.clone();
                    async move { stop.cancelled().await }
                };
                run_controller(&config, client.clone(), ctx.clone(), &shared, graceful, lost_now).await;
                shared.metrics.leader.set(0);
                // Keep the Lease until the controller stopped; then hand it over at once.
                hold_stop.cancel();
                let _ = holder.await;
                if lost.is_cancelled() {
                    warn!("lost the leader lease; stopped");
                    Stopped::LeaseLost
                } else {
                    elector.release().await;
                    Stopped::Shutdown
                }
            }
        } else {
            shared.metrics.leader.set(1);
            let stop = stop.clone();
            run_controller(
                &config,
                client.clone(),
                ctx.clone(),
                &shared,
                async move { stop.cancelled().await },
                std::future::pending::<()>(),
            )
            .await;
            shared.metrics.leader.set(0);
            Stopped::Shutdown
        };
        http_stop.cancel();
        let _ = http.await;
        info!(?outcome, "operator stopped");
        Ok(outcome)
    }
}

/// What the controller's cache keeps of a ThumbnailJob: no managedFields, no kubectl
/// last-applied copy of the spec (most of an object's size; the operator never reads them).
pub fn slim_for_cache(tj: &mut ThumbnailJob) {
    tj.managed_fields_mut().clear();
    tj.annotations_mut()
        .remove("kubectl.kubernetes.io/last-applied-configuration");
}

/// Run the controller until `graceful` (SIGTERM: no new work; running inline renders get
/// SHUTDOWN_GRACE_SECONDS) or `now` (the Lease is lost: stop everything at once). Attempts still
/// running when it stops are handed back ([`reconcile::hand_back_attempts`]) before this returns,
/// so that the next leader does not count them as interrupted.
async fn run_controller(
    config: &OperatorConfig,
    client: kube::Client,
    ctx: Arc<Context>,
    shared: &Shared,
    graceful: impl Future<Output = ()> + Send + 'static,
    now: impl Future<Output = ()> + Send + 'static,
) {
    let tjs: Api<ThumbnailJob> = if config.watch_namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), &config.watch_namespace)
    };
    // Render Jobs run in the operator's own namespace; their annotation names the ThumbnailJob.
    let render_jobs: Api<Job> = Api::namespaced(client, &config.pod_namespace);
    let (cache, writer) = reflector::store();
    let trigger = watcher(tjs, watcher::Config::default())
        .default_backoff()
        .modify(slim_for_cache)
        .reflect(writer)
        .applied_objects();
    let graceful = graceful.boxed().shared();
    // `graceful_shutdown_on` wants a `Sync` future: bridge through a oneshot channel. From then
    // on no reconcile claims a new attempt (one waiting for an inline slot included).
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    {
        let (graceful, ctx) = (graceful.clone(), ctx.clone());
        tokio::spawn(async move {
            graceful.await;
            ctx.stop_taking_work();
            let _ = tx.send(());
        });
    }
    let controller = Controller::for_stream(trigger, cache.clone())
        .watches(
            render_jobs,
            watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}")),
            |job: Job| {
                plan::thumbnailjob_of(&job).map(|(namespace, name)| ObjectRef::new(&name).within(&namespace))
            },
        )
        .with_config(ControllerConfig::default().concurrency(config.max_concurrent_reconciles))
        .graceful_shutdown_on(async move {
            let _ = rx.await;
        });
    *shared.store.lock().expect("store lock") = Some(cache.clone());
    // Retention runs only where the controller does (the leader), so that the finalizer's
    // cleanup of the ThumbnailJobs it deletes runs here too. Stopped with the controller; a
    // sweep cut short is resumed by the next leader (every step is idempotent).
    let sweeper = Arc::new(Sweeper {
        jobs: ctx.jobs.clone(),
        objects: ctx.objects.clone(),
        keys: ctx.settings.keys.clone(),
        idempotency: None,
        policy: config.retention.policy(),
        metrics: shared.metrics.retention.clone(),
        reaper: Some(Arc::new(reaper::ThumbnailJobReaper {
            client: ctx.client.clone(),
            jobs: ctx.jobs.clone(),
        })),
    });
    let sweeping = AbortOnDrop(tokio::spawn(sweeper.run(CancellationToken::new())));
    let run = controller
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        });
    // kube-runtime starts its reconcile runner only once the cache has synced, and a graceful
    // shutdown waits for that runner: a stop before the first sync (SIGTERM right after start, or
    // an API server that never answers the first list) would wait for ever. Before the sync no
    // reconcile can have started, so the controller is simply dropped then.
    let stop_before_sync = {
        let (graceful, cache) = (graceful.clone(), cache.clone());
        async move {
            graceful.await;
            if cache.wait_until_ready().now_or_never().is_none() {
                return;
            }
            std::future::pending::<()>().await
        }
    };
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let grace_over = async move {
        graceful.await;
        tokio::time::sleep(grace).await;
    };
    // After a lost Lease a standby may take over within a third of the Lease duration; after the
    // grace, the pod's termination grace period has 10 s more (the chart). The hand-back's writes
    // are guarded, so a late one changes nothing it should not.
    let hand_back = tokio::select! {
        () = run => { info!("controller stopped"); None }
        () = stop_before_sync => { info!("controller stopped before its first sync"); None }
        () = grace_over => {
            warn!(grace_secs = grace.as_secs(), "inline renders still running after the shutdown grace; stopping them");
            Some(("its shutdown grace period ran out", Duration::from_secs(5)))
        }
        () = now => {
            warn!("stopping in-flight work: this replica no longer leads");
            ctx.stop_taking_work();
            Some(("it lost the leader lease", config.lease_duration() / 3))
        }
    };
    drop(sweeping);
    if let Some((why, bound)) = hand_back {
        match tokio::time::timeout(bound, reconcile::hand_back_attempts(&ctx, &cache, why)).await {
            Ok(0) => {}
            Ok(n) => info!(handed_back = n, "unfinished attempts handed back"),
            Err(_) => warn!(
                "could not hand every unfinished attempt back in time; the next leader counts them as interrupted"
            ),
        }
    }
}

/// Aborts its task when dropped (whichever way `run_controller` returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// What is wrong with a dependency, if anything: its error, or no answer in time.
async fn ready_check(ping: impl Future<Output = thumbnail_core::Result<()>>) -> Option<String> {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, ping).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} s", READY_CHECK_TIMEOUT.as_secs())),
    }
}

/// How long `/readyz` waits for each dependency.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Readiness: serving, and the job store and the object store both answer; a 503 names what is
/// down (the pod shows not ready while, say, PostgreSQL is unreachable). `/healthz` touches no
/// dependency, so an outage never gets the operator restarted.
async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if !shared.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting".to_owned());
    }
    let (db, objects) = tokio::join!(
        ready_check(shared.jobs.ping()),
        ready_check(shared.objects.ping())
    );
    let down: Vec<String> = [
        ("database", shared.jobs.backend(), db),
        ("object store", shared.objects.backend(), objects),
    ]
    .into_iter()
    .filter_map(|(what, backend, error)| error.map(|e| format!("{what} ({backend}) unavailable: {e}")))
    .collect();
    if down.is_empty() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, down.join("; "))
    }
}

async fn metrics_handler(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let store = shared.store.lock().expect("store lock").clone();
    if let Some(store) = store {
        let mut counts = [0i64; 4];
        for tj in store.state() {
            counts[match tj.phase() {
                Phase::Pending => 0,
                Phase::Running => 1,
                Phase::Succeeded => 2,
                Phase::Failed => 3,
            }] += 1;
        }
        for (phase, n) in [Phase::Pending, Phase::Running, Phase::Succeeded, Phase::Failed]
            .iter()
            .zip(counts)
        {
            shared
                .metrics
                .jobs_by_phase
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().into(),
                })
                .set(n);
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn the_cache_keeps_no_managed_fields() {
        let mut tj = ThumbnailJob::new("a", thumbnail_crds::ThumbnailJobSpec::for_key("k"));
        tj.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..ManagedFieldsEntry::default()
        }]);
        tj.annotations_mut().insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            "{\"big\": true}".into(),
        );
        tj.annotations_mut().insert("keep".into(), "me".into());
        slim_for_cache(&mut tj);
        assert!(tj.managed_fields().is_empty());
        assert_eq!(tj.annotations().len(), 1);
        assert_eq!(tj.annotations()["keep"], "me");
    }
}
