//! Wiring: build every part from the configuration, then serve until told to stop.
//! `Application::build` on port 0 is what the tests use.
use crate::auth::{self, AuthState, Authenticator};
use crate::config::{ApiConfig, AuthMode, JobRunnerKind};
use crate::error::ApiError;
use crate::kube_launcher::{KubernetesLauncher, ThumbnailJobReaper};
use crate::limits::{Quotas, UploadRate};
use crate::metrics::{ApiMetrics, track};
use crate::pacing::Pace;
use crate::routes;
use crate::server::{self, EdgeLimits};
use crate::state::{AppState, EmbeddedLauncher, JobLauncher, SharedState};
use axum::Json;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thumbnail_core::apikeys;
use thumbnail_core::handoff::OriginalHandoff;
use thumbnail_core::jobstore::{self, DynJobStore, JobEvents, NotifyingJobStore};
use thumbnail_core::keys::KeyLayout;
use thumbnail_core::objects::{DynObjectStore, LocalObjectStore, S3ObjectStore};
use thumbnail_core::retention::{DynReaper, Sweeper};
use thumbnail_core::runner::Runner;
use thumbnail_core::signing::LinkSigner;
use thumbnail_core::webhooks::{self, dispatcher::Dispatcher};
use thumbnail_core::worker::{AttemptPolicy, CpuPool, Worker};
use thumbnail_core::{CoreError, Result};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::{info, warn};
use utoipa_swagger_ui::SwaggerUi;

/// Largest body of a request other than an upload.
const SMALL_BODY_BYTES: u64 = 64 * 1024;

/// In Kubernetes mode, refuse to start, naming each missing rule, when the ServiceAccount lacks a
/// permission of the API's RBAC table (`thumbnail_crds::rbac`, which the chart's Role is built
/// from): uploads would otherwise be accepted into the store and then fail with 403s. An API
/// server that cannot answer `SelfSubjectAccessReview`s is logged and does not stop start-up.
async fn check_permissions(client: &kube::Client, namespace: &str) -> Result<(), CoreError> {
    use thumbnail_crds::rbac::{self, Component};
    let missing = match rbac::missing_for(client, Component::Api, Some(namespace), None).await {
        Ok(missing) => missing,
        Err(e) => {
            warn!(error = %e, "could not check the API's Kubernetes permissions (SelfSubjectAccessReview)");
            return Ok(());
        }
    };
    if missing.is_empty() {
        return Ok(());
    }
    Err(CoreError::Config(format!(
        "the API's ServiceAccount lacks these permissions (the chart's RBAC grants them; see \
         helm-charts/files/rbac-table.json): {}",
        missing.join(", ")
    )))
}

/// Whether `host` only listens on the loopback interface.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    runner: Option<Runner>,
    /// Stops the PostgreSQL finished-job relay when the application ends (or is dropped).
    _relay: Option<DropGuard>,
    /// Stops the rate limiter's pruning.
    _prune: DropGuard,
    /// Stops the webhook dispatcher (when WEBHOOK_SECRET is set).
    _webhooks: Option<DropGuard>,
    port: u16,
    public_url: String,
    grace: Duration,
    edge: EdgeLimits,
    state: SharedState,
}

/// Retry `connect` until it succeeds or `timeout` passes: a dependency that starts after us (a
/// database pod still booting) must not make us crash in a loop.
pub async fn with_startup_retries<T, F, Fut>(what: &str, timeout: Duration, mut connect: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                warn!(dependency = what, error = %e, retry_in_ms = delay.as_millis() as u64, "dependency not ready; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// 413 for a request whose declared length is over `max` before any of it is read (the upload
/// route also counts while streaming).
async fn refuse_oversized(max: u64, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > max => ApiError::PayloadTooLarge(format!(
            "request body too large: {length} bytes, at most {max} are accepted here"
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

fn body_limit(router: axum::Router<SharedState>, max: u64) -> axum::Router<SharedState> {
    router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        refuse_oversized(max, request, next)
    }))
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        Json(crate::error::ErrorBody {
            detail: "Not Found".into(),
        }),
    )
}

/// How jobs run: the launcher, the embedded runner (if any), and what deletes an expiring job's
/// resources outside the stores (Kubernetes mode).
type Launch = (Arc<dyn JobLauncher>, Option<Runner>, Option<DynReaper>);

impl Application {
    pub async fn build(config: ApiConfig) -> Result<Self> {
        Self::build_with_kube_client(config, None).await
    }

    /// [`Application::build`], with the Kubernetes client given (tests give one authenticated
    /// as the chart's API ServiceAccount) instead of built from the configuration.
    pub async fn build_with_kube_client(
        config: ApiConfig,
        kube_client: Option<kube::Client>,
    ) -> Result<Self> {
        crate::cli::install_crypto_provider();
        let data_dir = config.store.data_dir.clone();
        std::fs::create_dir_all(&data_dir)?;
        let listener = TcpListener::bind((config.host.as_str(), config.port)).await?;
        let port = listener.local_addr()?.port();
        let public_url = config
            .public_url
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("http://localhost:{port}"))
            .trim_end_matches('/')
            .to_owned();
        let startup = Duration::from_secs(config.startup_timeout_seconds);

        let db_url = config.store.database_url();
        let max_conn = config.store.database_max_connections;
        let jobs: DynJobStore =
            with_startup_retries("database", startup, || jobstore::connect(&db_url, max_conn)).await?;
        let key_store = apikeys::connect(&db_url, max_conn.clamp(1, 4)).await?;
        let idempotency = thumbnail_core::idempotency::connect(&db_url, max_conn.clamp(1, 4)).await?;
        let deliveries = webhooks::connect(&db_url, max_conn.clamp(1, 4)).await?;
        let webhook_settings = config.webhooks.settings().map_err(CoreError::Config)?;
        let job_events = JobEvents::new();
        let jobs = NotifyingJobStore::wrap(jobs, job_events.clone());
        // On PostgreSQL, jobs finished by other processes (the operator, other replicas) wake
        // long-polling readers too.
        let relay = (jobs.backend() == "postgres").then(|| {
            let stop = CancellationToken::new();
            tokio::spawn(jobstore::relay_finished_jobs(
                db_url.clone(),
                job_events.clone(),
                stop.clone(),
            ));
            stop.drop_guard()
        });

        let (objects, local_objects): (DynObjectStore, Option<Arc<LocalObjectStore>>) =
            match config.store.s3_config() {
                Some(s3) => {
                    let store = S3ObjectStore::new(&s3).await?;
                    with_startup_retries("object store", startup, || store.ensure_bucket(s3.create_bucket))
                        .await?;
                    (Arc::new(store), None)
                }
                None => {
                    let signer = LinkSigner::load_or_create(config.signing_key.as_deref(), &data_dir)?;
                    let local = Arc::new(LocalObjectStore::new(
                        data_dir.join("objects"),
                        &public_url,
                        signer,
                    )?);
                    (local.clone(), Some(local))
                }
            };

        let metrics = Arc::new(ApiMetrics::new());
        let limits = config.limits.limits();
        let keys = KeyLayout::new(&config.store.s3_key_prefix);
        // Kubernetes mode also shows each webhook attempt on the job's ThumbnailJob.
        let mut delivery_observer: Option<Arc<dyn thumbnail_core::webhooks::DeliveryObserver>> = None;
        // In Kubernetes mode an expiring job's ThumbnailJob goes too (see the sweeper below).
        let (launcher, runner, reaper): Launch = match config.job_runner {
            JobRunnerKind::Embedded => {
                let workers = config.worker_count();
                // A few seconds of uploads at full speed by default; beyond that, jobs read the
                // object store.
                let handoff = (config.handoff_budget_bytes > 0)
                    .then(|| Arc::new(OriginalHandoff::new(config.handoff_budget_bytes)));
                let worker = Arc::new(Worker {
                    jobs: jobs.clone(),
                    objects: objects.clone(),
                    handoff: handoff.clone(),
                    keys: keys.clone(),
                    limits,
                    cpu: CpuPool::new(workers),
                    metrics: metrics.job.clone(),
                    attempts: AttemptPolicy {
                        max_attempts: config.edge.max_attempts.max(1),
                        render_timeout: (config.edge.render_timeout_seconds > 0)
                            .then(|| Duration::from_secs(config.edge.render_timeout_seconds)),
                    },
                    render: thumbnail_engine::render,
                });
                let (runner, handle) = Runner::start(worker, workers).await?;
                let launcher = EmbeddedLauncher {
                    runner: handle,
                    handoff,
                };
                (Arc::new(launcher), Some(runner), None)
            }
            JobRunnerKind::Kubernetes => {
                // The operator reads the originals and writes the thumbnails: they must be in S3.
                if local_objects.is_some() {
                    return Err(CoreError::Config(
                        "JOB_RUNNER=kubernetes needs S3 (S3_BUCKET_NAME): the operator cannot read \
                         this process's local object directory"
                            .into(),
                    ));
                }
                let client = match kube_client {
                    Some(client) => client,
                    None => crate::kube_launcher::client(config.kube_url.as_deref())
                        .await
                        .map_err(CoreError::Config)?,
                };
                check_permissions(&client, &config.kube_namespace).await?;
                let settings = crate::kube_launcher::ResourceSettings {
                    ttl_seconds_after_finished: (config.kube_ttl_seconds_after_finished > 0)
                        .then(|| config.kube_ttl_seconds_after_finished.min(i32::MAX as u32) as i32),
                    active_deadline_seconds: Some(i64::from(config.kube_active_deadline_seconds.max(1))),
                };
                delivery_observer = Some(Arc::new(crate::webhook_status::WebhookStatusWriter::new(
                    client.clone(),
                    &config.kube_namespace,
                )));
                let reaper = ThumbnailJobReaper::new(client.clone(), &config.kube_namespace, jobs.clone());
                let launcher =
                    KubernetesLauncher::new(client, &config.kube_namespace, settings, jobs.clone());
                (Arc::new(launcher), None, Some(Arc::new(reaper)))
            }
        };

        let auth_mode = config.auth.auth_mode;
        let authenticator = Authenticator::new(&config.auth, key_store.clone()).await?;
        let auth = Arc::new(AuthState {
            authenticator,
            metrics_auth: config.auth.metrics_auth,
            docs_auth: config.auth.docs_auth,
        });
        if auth_mode == AuthMode::None && !is_loopback(&config.host) {
            warn!(
                host = %config.host,
                "AUTH_MODE=none on a non-loopback address: anyone who can reach this port can upload, \
                 read every job and claim any owner; set AUTH_MODE=api-key or jwt on shared networks"
            );
        }
        let rate = UploadRate::new(config.quotas.uploads_per_minute, config.quotas.upload_burst);
        let quotas = Quotas::new(&config.quotas, auth_mode != AuthMode::None);
        let sweeper = Arc::new(Sweeper {
            jobs: jobs.clone(),
            objects: objects.clone(),
            keys: keys.clone(),
            idempotency: Some(idempotency.clone()),
            policy: config.retention_policy(),
            metrics: metrics.retention.clone(),
            reaper,
        });
        let state: SharedState = Arc::new(AppState {
            jobs,
            job_events,
            long_poll_recheck: config.long_poll_recheck(),
            objects,
            local_objects,
            keys,
            limits,
            launcher,
            url_expiry: config.url_expiry(),
            spool_dir: data_dir.join("spool"),
            in_memory_upload_bytes: config.in_memory_upload_bytes,
            batches: crate::state::BatchLimits {
                max_images: config.max_batch_images as usize,
                max_bytes: config.max_batch_bytes,
            },
            metrics: metrics.clone(),
            key_store,
            auth,
            rate,
            quotas,
            waiters: Default::default(),
            idempotency,
            sweeper: sweeper.clone(),
            stopping: CancellationToken::new(),
            keep_alive_timeout: Duration::from_secs(config.edge.keep_alive_timeout_seconds.max(1)),
            idempotency_ttl: chrono::Duration::seconds(i64::from(config.idempotency_key_ttl_seconds)),
            trusted_proxy_hops: config.quotas.trusted_proxy_hops,
            deliveries: deliveries.clone(),
            webhooks_enabled: webhook_settings.is_some(),
        });
        let pace = Pace {
            deadline: Duration::from_secs(config.edge.upload_timeout_seconds.max(1)),
            min_rate: config.edge.upload_min_bytes_per_second,
        };
        let router = Self::router(state.clone(), pace);
        // Forget the rate buckets of clients that have gone quiet, every minute.
        let prune = CancellationToken::new();
        {
            let (state, stop) = (state.clone(), prune.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => state.rate.prune(),
                    }
                }
            });
        }
        tokio::spawn(sweeper.run(prune.clone()));
        // Deliveries are sent by every replica that has the secret (one at a time each, by
        // lease), also those of jobs the operator finished.
        let webhooks = match webhook_settings {
            Some(settings) => {
                let dispatcher = Dispatcher::new(deliveries, settings, metrics.webhooks.clone())?
                    .with_batches(state.jobs.clone());
                let dispatcher = Arc::new(match delivery_observer {
                    Some(observer) => dispatcher.with_observer(observer),
                    None => dispatcher,
                });
                let stop = CancellationToken::new();
                tokio::spawn(dispatcher.run(state.job_events.clone(), stop.clone()));
                Some(stop.drop_guard())
            }
            None => None,
        };
        info!(
            port,
            public_url = %public_url,
            job_store = state.jobs.backend(),
            object_store = state.objects.backend(),
            runner = state.launcher.name(),
            auth = auth_mode.as_str(),
            "thumbnail API ready"
        );
        Ok(Application {
            listener,
            router,
            runner,
            _relay: relay,
            _prune: prune.drop_guard(),
            _webhooks: webhooks,
            port,
            public_url,
            grace: config.shutdown_grace(),
            edge: EdgeLimits {
                max_connections: config.edge.max_connections,
                header_read_timeout: Duration::from_secs(config.edge.header_read_timeout_seconds.max(1)),
                keep_alive_timeout: Duration::from_secs(config.edge.keep_alive_timeout_seconds.max(1)),
            },
            state,
        })
    }

    /// The routes: uploads, jobs and keys behind authentication; the upload page, health,
    /// readiness and signed downloads open; metrics and docs behind credentials when configured.
    pub fn router(state: SharedState, pace: Pace) -> axum::Router {
        let metrics = state.metrics.clone();
        let auth = state.auth.clone();
        let upload_max = state
            .limits
            .max_input_bytes
            .saturating_add(routes::thumbnails::FORM_OVERHEAD_BYTES);
        let mode = auth.authenticator.mode();
        // A batch's body: its images, and the framing and options of each part.
        let batch_max = state.batches.max_bytes.saturating_add(
            (state.batches.max_images as u64 + 1).saturating_mul(routes::thumbnails::FORM_OVERHEAD_BYTES),
        );
        let mut small = routes::jobs::router()
            .merge(routes::batches::router())
            .merge(routes::events::router())
            .merge(routes::deliveries::router());
        if mode == AuthMode::ApiKey {
            small = small.merge(routes::keys::router());
        }
        let protected = axum::Router::new()
            .merge(body_limit(routes::thumbnails::router(pace), upload_max))
            .merge(body_limit(routes::batches::upload_router(pace), batch_max))
            .merge(body_limit(small, SMALL_BODY_BYTES))
            .layer(axum::middleware::from_fn_with_state(
                auth.clone(),
                auth::authenticate,
            ));
        let open = body_limit(
            routes::files::router()
                .merge(routes::page::router(state.objects.endpoint_url()))
                .merge(routes::health::router())
                .merge(routes::health::metrics_router(auth.clone())),
            SMALL_BODY_BYTES,
        );
        let document = crate::openapi::document(mode, auth.metrics_auth);
        let docs = axum::Router::new()
            .merge(SwaggerUi::new("/docs").url("/openapi.json", document))
            .layer(axum::middleware::from_fn_with_state(
                auth,
                auth::require_credentials,
            ));
        let api = protected.merge(open).fallback(not_found).with_state(state);
        axum::Router::new()
            .merge(docs)
            .merge(api)
            .layer(axum::middleware::from_fn_with_state(metrics, track))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id)
            }))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(CatchPanicLayer::custom(|_| {
                ApiError::Internal("handler panicked".into()).into_response()
            }))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// Serve until `shutdown` resolves; then stop accepting, finish in-flight requests, give
    /// running jobs the grace period, and return.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.state.stopping.clone();
        let shutdown = async move {
            shutdown.await;
            stopping.cancel();
        };
        let served = server::serve(self.listener, self.router, self.edge, self.grace, shutdown).await;
        info!("stopped accepting requests");
        if let Some(runner) = self.runner {
            runner.shutdown(self.grace).await;
        }
        info!("shutdown complete");
        served
    }
}
