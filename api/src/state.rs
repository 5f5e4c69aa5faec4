//! The one shared state of the API (no globals), and who runs accepted jobs.
use crate::auth::SharedAuth;
use crate::error::ApiResult;
use crate::limits::{Quotas, UploadRate, Waiters};
use crate::metrics::ApiMetrics;
use async_trait::async_trait;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use thumbnail_core::apikeys::DynKeyStore;
use thumbnail_core::handoff::OriginalHandoff;
use thumbnail_core::idempotency::DynIdempotencyStore;
use thumbnail_core::jobstore::{DynJobStore, JobEvents};
use thumbnail_core::keys::KeyLayout;
use thumbnail_core::model::JobRecord;
use thumbnail_core::objects::{DynObjectStore, LocalObjectStore};
use thumbnail_core::retention::Sweeper;
use thumbnail_core::runner::RunnerHandle;
use thumbnail_engine::Limits;

/// Hands an accepted job to whoever processes it.
#[async_trait]
pub trait JobLauncher: Send + Sync + 'static {
    /// Called after the original is stored and the row exists. An error undoes the upload.
    /// `original`: the stored bytes, when the upload kept them in memory (small uploads), for a
    /// launcher whose worker can use them instead of reading the object store.
    async fn launch(&self, job: &JobRecord, original: Option<Bytes>) -> ApiResult<()>;
    fn name(&self) -> &'static str;
}

/// The embedded default: queue the job on this process's runner, leaving its original (when
/// at hand) for the worker.
pub struct EmbeddedLauncher {
    pub runner: RunnerHandle,
    /// None when HANDOFF_BUDGET_BYTES is 0.
    pub handoff: Option<Arc<OriginalHandoff>>,
}

#[async_trait]
impl JobLauncher for EmbeddedLauncher {
    async fn launch(&self, job: &JobRecord, original: Option<Bytes>) -> ApiResult<()> {
        if let (Some(handoff), Some(bytes)) = (&self.handoff, original) {
            handoff.put(job.id, bytes);
        }
        // A stopped runner (shutdown in progress) is fine: the job is stored and resumes at the
        // next start.
        if !self.runner.enqueue(job.id) {
            tracing::info!(job_id = %job.id, "runner stopping; job will resume at the next start");
        }
        Ok(())
    }
    fn name(&self) -> &'static str {
        "embedded"
    }
}

pub struct AppState {
    pub jobs: DynJobStore,
    /// Jobs finished in this process, for `GET /api/v1/jobs/{id}?wait=`.
    pub job_events: JobEvents,
    /// How often a waiting `?wait=` re-reads its job anyway (LONG_POLL_RECHECK_MILLISECONDS).
    pub long_poll_recheck: Duration,
    pub objects: DynObjectStore,
    /// Set in the embedded object mode: serves the signed `/files/...` links.
    pub local_objects: Option<Arc<LocalObjectStore>>,
    pub keys: KeyLayout,
    pub limits: Limits,
    pub launcher: Arc<dyn JobLauncher>,
    pub url_expiry: Duration,
    pub spool_dir: PathBuf,
    /// Uploads up to this `Content-Length` are read into memory (IN_MEMORY_UPLOAD_BYTES).
    pub in_memory_upload_bytes: u64,
    pub metrics: Arc<ApiMetrics>,
    /// API keys (in the job store's database).
    pub key_store: DynKeyStore,
    /// Who is calling (AUTH_MODE) and what needs credentials.
    pub auth: SharedAuth,
    /// Uploads per owner (or client address) per minute.
    pub rate: UploadRate,
    /// Unfinished jobs and bytes per owner, queued jobs in all.
    pub quotas: Quotas,
    /// Long-polls in progress per owner (or client address).
    pub waiters: Waiters,
    /// Idempotency keys of uploads (in the job store's database).
    pub idempotency: DynIdempotencyStore,
    /// How long an idempotency key is kept (IDEMPOTENCY_KEY_TTL_SECONDS).
    pub idempotency_ttl: chrono::Duration,
    /// Deletes expired jobs (also used by `DELETE /api/v1/jobs/{id}`).
    pub sweeper: Arc<Sweeper>,
    /// Cancelled when the server stops accepting requests: event streams end then.
    pub stopping: tokio_util::sync::CancellationToken,
    /// KEEP_ALIVE_TIMEOUT_SECONDS: event streams write more often than this.
    pub keep_alive_timeout: Duration,
    /// TRUSTED_PROXY_HOPS: how the client address is found.
    pub trusted_proxy_hops: usize,
    /// Webhook deliveries and their attempts (in the job store's database).
    pub deliveries: thumbnail_core::webhooks::DynDeliveryStore,
    /// Whether WEBHOOK_SECRET is set: uploads may name a `webhook_url` only then.
    pub webhooks_enabled: bool,
    /// MAX_BATCH_IMAGES and MAX_BATCH_BYTES.
    pub batches: BatchLimits,
}

/// What one batch upload may carry.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_images: usize,
    pub max_bytes: u64,
}

pub type SharedState = Arc<AppState>;
