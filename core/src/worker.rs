//! The worker: turns one job into thumbnails. Used by the embedded runner and by the operator's
//! inline mode; the `render` subcommands call the same engine directly.
//!
//! Steps: claim (conditional `start`) → read the original → render every requested output on the
//! CPU pool → store the thumbnails → finish (conditional on the attempt). Bad input ends the job at
//! once as FAILURE with its reason; a dependency error is returned for the caller to retry.
//!
//! Every attempt is counted in the job store when it starts, so the caps hold across restarts:
//! a job whose attempts crash the process, panic or fail internally is retried until
//! [`AttemptPolicy::max_attempts`] attempts have started, then ends as FAILURE; a render longer
//! than [`AttemptPolicy::render_timeout`] ends it at once (the same input would hang again).
//! Attempts that end because a dependency is unavailable do not count against the cap, but a
//! job whose dependencies stay unavailable for [`MAX_DEPENDENCY_RETRIES`] attempts (about an hour
//! of backoff) ends as FAILURE too: no job is retried for ever.
use crate::handoff::OriginalHandoff;
use crate::jobstore::{DynJobStore, Outcome};
use crate::keys::KeyLayout;
use crate::metrics::{JobMetrics, OutcomeLabels, ReasonLabels, SourceLabels};
use crate::model::{JobError, JobOutput, JobRecord, OutputSpec};
use crate::objects::DynObjectStore;
use crate::placeholder::{self, Placeholders};
use crate::{CoreError, Result};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thumbnail_engine::{EngineError, Limits, Thumbnail, ThumbnailOptions};
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
        self.run_for(None, work).await
    }

    /// Like [`CpuPool::run`], but give up waiting for `work` after `limit` once it has started
    /// (the wait for a free slot does not count): [`CoreError::RenderTimeout`]. A thread cannot
    /// be killed, so work that overran keeps its slot until it ends by itself: the pool never
    /// runs more than `size` renders at once. A panic in `work` is [`CoreError::RenderPanicked`].
    pub async fn run_for<T: Send + 'static>(
        &self,
        limit: Option<Duration>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let task = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        });
        let joined = match limit {
            Some(limit) => tokio::time::timeout(limit, task)
                .await
                .map_err(|_| CoreError::RenderTimeout(limit))?,
            None => task.await,
        };
        joined.map_err(|e| {
            if e.is_panic() {
                let payload = e.into_panic();
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                CoreError::RenderPanicked(what)
            } else {
                CoreError::Internal(format!("render task: {e}"))
            }
        })
    }
}

/// The render a worker calls: [`thumbnail_engine::render`], or a fault-injecting stand-in in
/// tests (a panic, a hang) where the real engine cannot be made to misbehave on demand.
pub type RenderFn = fn(&[u8], &ThumbnailOptions, &Limits) -> std::result::Result<Thumbnail, EngineError>;

/// Attempts that end because a dependency is unavailable before a job fails anyway: with the
/// runner's backoff (capped at 30 s), about an hour.
pub const MAX_DEPENDENCY_RETRIES: u32 = 120;

/// How long and how often a job may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptPolicy {
    /// Attempts that may start (and crash, panic or fail internally) before the job fails
    /// (`MAX_ATTEMPTS`); at least 1.
    pub max_attempts: u32,
    /// Longest render of one job, all its outputs together (`RENDER_TIMEOUT_SECONDS`); `None`:
    /// no limit.
    pub render_timeout: Option<Duration>,
}

impl Default for AttemptPolicy {
    fn default() -> Self {
        AttemptPolicy {
            max_attempts: 5,
            render_timeout: Some(Duration::from_secs(60)),
        }
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
    pub attempts: AttemptPolicy,
    /// `thumbnail_engine::render` outside fault-injection tests.
    pub render: RenderFn,
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

/// Placeholders of a rendered thumbnail, from the engine's preview of it (on the CPU pool). If
/// one ever could not be made, the job still succeeds, without placeholders.
pub fn placeholders_of(thumbnail: &Thumbnail) -> Option<Placeholders> {
    placeholder::of_preview(&thumbnail.preview)
        .map_err(|e| warn!(error = %e, "no placeholders for the thumbnail"))
        .ok()
}

/// The failure recorded for an engine error.
pub fn job_error(err: &EngineError) -> JobError {
    JobError {
        reason: err.reason().to_owned(),
        message: err.to_string(),
    }
}

impl Worker {
    /// Run one job to its end. `Err` only when the attempt should be retried later (a
    /// dependency is unavailable, or the render failed unexpectedly and attempts remain): the job
    /// stays unfinished and the caller retries it.
    #[instrument(skip(self), fields(job_id = %id))]
    pub async fn run(&self, id: Uuid) -> Result<RunOutcome> {
        let Some(job) = self.jobs.start(id).await? else {
            return Ok(RunOutcome::AlreadyFinished);
        };
        let started = Instant::now();
        let attempt = job.attempts;
        // Attempts that started and did not end for want of a dependency, this one included.
        let counted = attempt.saturating_sub(job.dependency_retries);
        let max = self.attempts.max_attempts.max(1);
        let outcome = if counted > max {
            Outcome::Failure(JobError {
                reason: "AttemptsExhausted".into(),
                message: format!(
                    "gave up after {} attempts that ended without a result (the process stopped or \
                     crashed while running them)",
                    counted - 1
                ),
            })
        } else {
            match self.produce(&job).await {
                Ok(outputs) => Outcome::Success(outputs),
                Err(err) => Outcome::Failure(self.failure_of(&job, err, counted >= max).await?),
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

    /// What an attempt's error means for the job: the failure to record now, or the error back
    /// to retry the job later. Client-visible messages never carry a dependency's own error text
    /// (that goes to the log).
    async fn failure_of(&self, job: &JobRecord, err: CoreError, last_attempt: bool) -> Result<JobError> {
        let attempt = job.attempts;
        Ok(match err {
            CoreError::Engine(err) if err.is_bad_input() => job_error(&err),
            CoreError::ObjectNotFound(key) => JobError {
                reason: "SourceNotFound".into(),
                message: format!("the original image {key} does not exist in the object store"),
            },
            CoreError::RenderTimeout(limit) => {
                warn!(attempt, limit_s = limit.as_secs_f64(), "render timed out");
                JobError {
                    reason: "RenderTimeout".into(),
                    message: format!(
                        "making the thumbnail took longer than the {} s allowed (RENDER_TIMEOUT_SECONDS)",
                        limit.as_secs_f64()
                    ),
                }
            }
            err if err.is_transient() => {
                let dependency = err.dependency().unwrap_or("a dependency");
                if job.dependency_retries + 1 >= MAX_DEPENDENCY_RETRIES {
                    warn!(error = %err, attempt, "dependency still unavailable; giving up");
                    JobError {
                        reason: "DependencyUnavailable".into(),
                        message: format!(
                            "the {dependency} was unavailable for {} attempts in a row; upload the image again later",
                            job.dependency_retries + 1
                        ),
                    }
                } else {
                    warn!(error = %err, attempt, "dependency unavailable; the job will be retried");
                    self.metrics.retries.inc();
                    // Not counted against the attempt cap. If even this write fails, the
                    // attempt counts: the cap errs on the side of ending.
                    if let Err(e) = self.jobs.count_dependency_retry(job.id, attempt).await {
                        warn!(error = %e, "could not record the dependency retry");
                    }
                    return Err(err);
                }
            }
            err => {
                let (reason, message) = match &err {
                    CoreError::RenderPanicked(_) => ("RenderPanicked", "the renderer crashed on this image"),
                    _ => ("InternalError", "an internal error stopped every attempt"),
                };
                if !last_attempt {
                    warn!(error = %err, attempt, "job attempt failed; it will be retried");
                    self.metrics.retries.inc();
                    return Err(err);
                }
                warn!(error = %err, attempt, "job attempt failed; no attempts left");
                JobError {
                    reason: reason.into(),
                    message: format!("{message} ({attempt} attempts)"),
                }
            }
        })
    }

    async fn produce(&self, job: &JobRecord) -> Result<Vec<JobOutput>> {
        // One time budget for all the job's renders.
        let deadline = self.attempts.render_timeout.map(|t| (Instant::now() + t, t));
        let (original, source) = match self.handoff.as_ref().and_then(|h| h.take(job.id)) {
            Some(bytes) => (bytes, "handoff"),
            None => (self.objects.get(&job.source_key).await?, "store"),
        };
        self.metrics
            .originals
            .get_or_create(&SourceLabels { source })
            .inc();
        let mut outputs = Vec::new();
        for (index, (spec, key)) in planned_outputs(job, &self.keys).into_iter().enumerate() {
            // Placeholders of the first output only: what a client shows while it loads.
            let (thumbnail, placeholders) = self
                .render(original.clone(), spec.options, deadline, index == 0)
                .await?;
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
                thumbhash: placeholders.as_ref().map(|p| p.thumbhash.clone()),
                blurhash: placeholders.map(|p| p.blurhash),
            });
        }
        Ok(outputs)
    }

    async fn render(
        &self,
        original: Bytes,
        options: ThumbnailOptions,
        deadline: Option<(Instant, Duration)>,
        with_placeholders: bool,
    ) -> Result<(Thumbnail, Option<Placeholders>)> {
        let (limits, render) = (self.limits, self.render);
        // What is left of the job's budget; an error names the whole budget.
        let left = deadline.map(|(at, _)| at.saturating_duration_since(Instant::now()));
        let rendered = self
            .cpu
            .run_for(left, move || {
                render(&original, &options, &limits).map(|thumbnail| {
                    let placeholders = with_placeholders.then(|| placeholders_of(&thumbnail)).flatten();
                    (thumbnail, placeholders)
                })
            })
            .await
            .map_err(|e| match (e, deadline) {
                (CoreError::RenderTimeout(_), Some((_, budget))) => CoreError::RenderTimeout(budget),
                (e, _) => e,
            })?;
        Ok(rendered?)
    }
}
