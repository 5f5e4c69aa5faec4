//! The worker: turns one job into thumbnails. Used by the embedded runner and by the operator's
//! inline mode; the `render` subcommands call the same engine directly.
//!
//! Steps: claim (conditional `start`) → read the original → render every requested output on the
//! CPU pool → store the thumbnails → finish (conditional on the attempt). Bad input ends the job at
//! once as FAILURE with its reason; a dependency error is returned for the caller to retry.
use crate::handoff::OriginalHandoff;
use crate::jobstore::{DynJobStore, Outcome};
use crate::keys::KeyLayout;
use crate::metrics::{JobMetrics, OutcomeLabels, ReasonLabels, SourceLabels};
use crate::model::{JobError, JobOutput, JobRecord, OutputSpec};
use crate::objects::DynObjectStore;
use crate::{CoreError, Result};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Instant;
use thumbnail_engine::{EngineError, Limits, Thumbnail};
use tokio::sync::Semaphore;
use tracing::{info, instrument, warn};
use uuid::Uuid;

/// A bounded pool for CPU-bound work: at most `size` renders at once, each on a blocking thread,
/// never on the async workers.
#[derive(Clone, Debug)]
pub struct CpuPool {
    permits: Arc<Semaphore>,
    size: usize,
}

impl CpuPool {
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        CpuPool {
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// One slot per CPU.
    pub fn sized_to_cpus() -> Self {
        Self::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| CoreError::Internal(format!("render task: {e}")))
    }
}

/// What happened to a job this call was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    Succeeded(Vec<JobOutput>),
    Failed(JobError),
    /// The job was already finished (or is unknown): nothing was done.
    AlreadyFinished,
    /// Another attempt finished the job first; this attempt's result was discarded.
    Superseded,
}

pub struct Worker {
    pub jobs: DynJobStore,
    pub objects: DynObjectStore,
    /// Originals left by this process's uploads (see [`OriginalHandoff`]); others are read from
    /// `objects`.
    pub handoff: Option<Arc<OriginalHandoff>>,
    pub keys: KeyLayout,
    pub limits: Limits,
    pub cpu: CpuPool,
    pub metrics: Arc<JobMetrics>,
}

/// The thumbnails to make, with the key each is stored under. Pure.
pub fn planned_outputs(job: &JobRecord, keys: &KeyLayout) -> Vec<(OutputSpec, String)> {
    job.outputs_requested
        .iter()
        .map(|spec| {
            let format = spec
                .options
                .format
                .unwrap_or_else(|| job.source_format.default_output());
            let key = keys.thumbnail(job.id, &spec.name, format.extension());
            (spec.clone(), key)
        })
        .collect()
}

/// The failure recorded for an engine error.
pub fn job_error(err: &EngineError) -> JobError {
    JobError {
        reason: err.reason().to_owned(),
        message: err.to_string(),
    }
}

impl Worker {
    /// Run one job to its end. `Err` only for transient dependency errors: the job stays
    /// unfinished and the caller retries it later.
    #[instrument(skip(self), fields(job_id = %id))]
    pub async fn run(&self, id: Uuid) -> Result<RunOutcome> {
        let Some(job) = self.jobs.start(id).await? else {
            return Ok(RunOutcome::AlreadyFinished);
        };
        let started = Instant::now();
        let attempt = job.attempts;
        let outcome = match self.produce(&job).await {
            Ok(outputs) => Outcome::Success(outputs),
            Err(CoreError::Engine(err)) if err.is_bad_input() => Outcome::Failure(job_error(&err)),
            Err(CoreError::ObjectNotFound(key)) => Outcome::Failure(JobError {
                reason: "SourceNotFound".into(),
                message: format!("the original image {key} does not exist in the object store"),
            }),
            Err(err) => {
                warn!(error = %err, attempt, "job attempt failed; it will be retried");
                self.metrics.retries.inc();
                return Err(err);
            }
        };
        let landed = self.jobs.finish(id, attempt, &outcome).await?;
        let elapsed = started.elapsed().as_secs_f64();
        if !landed {
            return Ok(RunOutcome::Superseded);
        }
        Ok(match outcome {
            Outcome::Success(outputs) => {
                self.metrics
                    .duration
                    .get_or_create(&OutcomeLabels {
                        outcome: "success".into(),
                    })
                    .observe(elapsed);
                info!(elapsed_ms = elapsed * 1000.0, "job succeeded");
                RunOutcome::Succeeded(outputs)
            }
            Outcome::Failure(error) => {
                self.metrics
                    .duration
                    .get_or_create(&OutcomeLabels {
                        outcome: "failure".into(),
                    })
                    .observe(elapsed);
                self.metrics
                    .failures
                    .get_or_create(&ReasonLabels {
                        reason: error.reason.clone(),
                    })
                    .inc();
                info!(reason = %error.reason, message = %error.message, "job failed");
                RunOutcome::Failed(error)
            }
        })
    }

    async fn produce(&self, job: &JobRecord) -> Result<Vec<JobOutput>> {
        let (original, source) = match self.handoff.as_ref().and_then(|h| h.take(job.id)) {
            Some(bytes) => (bytes, "handoff"),
            None => (self.objects.get(&job.source_key).await?, "store"),
        };
        self.metrics
            .originals
            .get_or_create(&SourceLabels { source })
            .inc();
        let mut outputs = Vec::new();
        for (spec, key) in planned_outputs(job, &self.keys) {
            let thumbnail = self.render(original.clone(), spec.options).await?;
            let sha256 = hex::encode(Sha256::digest(&thumbnail.bytes));
            let bytes = thumbnail.bytes.len() as u64;
            let content_type = thumbnail.format.content_type();
            self.objects
                .put_bytes(&key, Bytes::from(thumbnail.bytes), content_type)
                .await?;
            outputs.push(JobOutput {
                name: spec.name,
                bucket: self.objects.bucket().to_owned(),
                key,
                width: thumbnail.width,
                height: thumbnail.height,
                bytes,
                content_type: content_type.to_owned(),
                sha256,
            });
        }
        Ok(outputs)
    }

    async fn render(
        &self,
        original: Bytes,
        options: thumbnail_engine::ThumbnailOptions,
    ) -> Result<Thumbnail> {
        let limits = self.limits;
        let rendered = self
            .cpu
            .run(move || thumbnail_engine::render(&original, &options, &limits))
            .await?;
        Ok(rendered?)
    }
}
