//! The reconciler of `ThumbnailJob`s: a pipeline of the pure steps in [`crate::plan`] with the I/O
//! at its edges:
//!
//! 1. **validate** the spec (a broken one fails at once, reason `InvalidSpec`);
//! 2. **read and probe** the source's header (bad input fails at once with the engine's reason);
//! 3. **decide and build**: executor (inline or batch/v1 Job), output keys, the Job manifest;
//! 4. **apply**: claim the attempt (status `Running`, written with the resourceVersion read just
//!    before, so that two writers can never both claim it), then render inline on the bounded pool
//!    or create the Job;
//! 5. **update status** (server-side apply, field manager `thumbnail-operator`, guarded by the
//!    attempt number) and **mirror** it to the job store, so that the REST API sees it.
//!
//! Every decision that starts work is made on a fresh read of the resource, never on the cache,
//! so a stale cache cannot start a job twice. A reconcile that finds an inline attempt `Running`
//! knows that the process running it stopped (the controller never runs two reconciles of one
//! object at once, and the render happens inside the reconcile), and starts the next attempt;
//! interrupted attempts count against `backoffLimit`, so an image that crashes the operator
//! cannot loop for ever.
//!
//! Errors are named after the step that failed; the error policy retries them with a per-object
//! exponential backoff. Bad input is not an error: the resource ends `Failed` with its reason.
use crate::metrics::Metrics;
use crate::plan::{self, ExecutorPolicy, MANAGER, RenderJobSettings, RenderPlan, RenderResult, Validated};
use crate::render::{self, RenderError};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thumbnail_core::jobstore::{self, DynJobStore, JobMirror, Outcome};
use thumbnail_core::keys::KeyLayout;
use thumbnail_core::metrics::{OutcomeLabels, ReasonLabels};
use thumbnail_core::model::JobStatus;
use thumbnail_core::objects::{DynObjectStore, S3ObjectStore};
use thumbnail_core::runner::retry_delay;
use thumbnail_core::worker::CpuPool;
use thumbnail_core::{CoreError, model::NewJob};
use thumbnail_crds::status::{REASON_BACKOFF, REASON_BACKOFF_LIMIT_EXCEEDED, REASON_DEADLINE_EXCEEDED};
use thumbnail_crds::{API_VERSION, Executor, FINALIZER, KIND, Phase, ThumbnailJob, ThumbnailJobStatus};
use thumbnail_engine::{Limits, ProbeInfo};
use tracing::{info, warn};

/// Why a reconcile failed, named after the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the ThumbnailJob: {0}")]
    ReadResource(#[source] kube::Error),
    #[error("reading the source image: {0}")]
    ReadSource(#[source] CoreError),
    #[error("recording the job in the job store: {0}")]
    MirrorJob(#[source] CoreError),
    #[error("writing the status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("the ThumbnailJob changed while its status was written; retrying")]
    StatusConflict,
    #[error("rendering: {0}")]
    Render(#[source] CoreError),
    #[error("creating the render Job: {0}")]
    CreateJob(#[source] kube::Error),
    #[error("reading the render Job: {0}")]
    ReadJob(#[source] kube::Error),
    #[error("reading the render result: {0}")]
    ReadResult(#[source] CoreError),
    #[error("deleting the thumbnails: {0}")]
    Cleanup(#[source] CoreError),
    #[error("deleting the render Job: {0}")]
    DeleteJob(#[source] kube::Error),
    #[error("deleting the expired ThumbnailJob: {0}")]
    Expire(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// The failing step, for metrics and logs.
    pub fn step(&self) -> &'static str {
        match self {
            Error::ReadResource(_) => "read_resource",
            Error::ReadSource(_) => "read_source",
            Error::MirrorJob(_) => "mirror_job",
            Error::WriteStatus(_) | Error::StatusConflict => "write_status",
            Error::Render(_) => "render",
            Error::CreateJob(_) => "create_job",
            Error::ReadJob(_) => "read_job",
            Error::ReadResult(_) => "read_result",
            Error::Cleanup(_) => "cleanup",
            Error::DeleteJob(_) => "delete_job",
            Error::Expire(_) => "expire",
            Error::Finalizer(e) => match &**e {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => inner.step(),
                finalizer::Error::AddFinalizer(_) | finalizer::Error::RemoveFinalizer(_) => "finalizer",
                _ => "finalizer",
            },
        }
    }
}

/// Object stores by bucket: the configured one, and others named by `spec.source.bucket`.
pub struct Sources {
    pub s3: crate::config::S3Args,
    pub default: DynObjectStore,
    others: tokio::sync::Mutex<HashMap<String, DynObjectStore>>,
}

impl Sources {
    pub fn new(s3: crate::config::S3Args, default: DynObjectStore) -> Self {
        Sources {
            s3,
            default,
            others: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, bucket: Option<&str>) -> Result<DynObjectStore, CoreError> {
        let Some(bucket) = bucket.filter(|b| *b != self.default.bucket()) else {
            return Ok(self.default.clone());
        };
        let mut others = self.others.lock().await;
        if let Some(store) = others.get(bucket) {
            return Ok(store.clone());
        }
        let store: DynObjectStore = Arc::new(S3ObjectStore::new(&self.s3.s3_config(Some(bucket))).await?);
        others.insert(bucket.to_owned(), store.clone());
        Ok(store)
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub jobs: DynJobStore,
    /// Where thumbnails are written (`S3_BUCKET_NAME`).
    pub objects: DynObjectStore,
    pub sources: Sources,
    pub keys: KeyLayout,
    pub limits: Limits,
    /// The inline executor's bounded pool (`INLINE_CONCURRENCY`).
    pub cpu: CpuPool,
    pub policy: ExecutorPolicy,
    pub render: RenderJobSettings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failed reconciles per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        jobs: DynJobStore,
        sources: Sources,
        keys: KeyLayout,
        limits: Limits,
        cpu: CpuPool,
        policy: ExecutorPolicy,
        render: RenderJobSettings,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        Context {
            client,
            jobs,
            objects: sources.default.clone(),
            sources,
            keys,
            limits,
            cpu,
            policy,
            render,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn object_key(tj: &ThumbnailJob) -> String {
        format!("{}/{}", tj.namespace().unwrap_or_default(), tj.name_any())
    }

    /// Count one more failure of `tj`; the number of consecutive failures.
    fn failed(&self, tj: &ThumbnailJob) -> u32 {
        let mut failures = self.failures.lock().expect("failures lock");
        let n = failures.entry(Self::object_key(tj)).or_insert(0);
        *n += 1;
        *n
    }

    fn succeeded(&self, tj: &ThumbnailJob) {
        self.failures
            .lock()
            .expect("failures lock")
            .remove(&Self::object_key(tj));
    }

    async fn event(&self, tj: &ThumbnailJob, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &tj.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish an event");
        }
    }
}

/// The controller's reconcile function.
pub async fn reconcile(tj: Arc<ThumbnailJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let api: Api<ThumbnailJob> = Api::namespaced(ctx.client.clone(), &tj.namespace().unwrap_or_default());
    let obj = tj.clone();
    let result = finalizer::finalizer(&api, FINALIZER, tj, |event| async {
        match event {
            FinalizerEvent::Apply(tj) => apply(&api, tj, &ctx).await,
            FinalizerEvent::Cleanup(tj) => cleanup(&tj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::ResultLabels { result: label.into() })
        .inc();
    if result.is_ok() {
        ctx.succeeded(&obj);
    }
    result
}

/// The controller's error policy: per-object exponential backoff (250 ms doubling, up to 30 s).
pub fn error_policy(tj: Arc<ThumbnailJob>, err: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx.failed(&tj);
    let delay = retry_delay(n);
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::StepLabels {
            step: err.step().into(),
        })
        .inc();
    warn!(
        name = %tj.name_any(), namespace = %tj.namespace().unwrap_or_default(), step = err.step(),
        error = %err, failures = n, retry_in_ms = delay.as_millis() as u64,
        "reconcile failed; retrying"
    );
    Action::requeue(delay)
}

/// Write the whole status with server-side apply. With `resource_version`, the write only lands
/// if the object is still at that version ([`Error::StatusConflict`] otherwise).
async fn apply_status(
    api: &Api<ThumbnailJob>,
    name: &str,
    resource_version: Option<String>,
    status: &ThumbnailJobStatus,
) -> Result<ThumbnailJob, Error> {
    let mut metadata = json!({ "name": name });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    let patch = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.is_conflict() => Error::StatusConflict,
            other => Error::WriteStatus(other),
        })
}

/// Change the status of attempt `attempt`, if it is still the current, running one; re-reads and
/// retries on conflicts. `None` when the attempt was superseded (or the resource is gone).
async fn update_attempt(
    api: &Api<ThumbnailJob>,
    name: &str,
    attempt: i32,
    change: impl Fn(&mut ThumbnailJobStatus),
) -> Result<Option<ThumbnailJob>, Error> {
    for _ in 0..8 {
        let Some(current) = api.get_opt(name).await.map_err(Error::ReadResource)? else {
            return Ok(None);
        };
        let mut status = current.status.clone().unwrap_or_default();
        if status.phase() != Phase::Running || status.attempts.unwrap_or(0) != attempt {
            return Ok(None);
        }
        change(&mut status);
        match apply_status(api, name, current.resource_version(), &status).await {
            Ok(updated) => return Ok(Some(updated)),
            Err(Error::StatusConflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::StatusConflict)
}

/// The state of the job row for a status.
fn mirror_state(id: uuid::Uuid, status: &ThumbnailJobStatus) -> JobMirror {
    let phase = status.phase();
    let outcome = match phase {
        Phase::Succeeded => Some(Outcome::Success(
            status.outputs.iter().map(plan::to_job_output).collect(),
        )),
        Phase::Failed => Some(Outcome::Failure(plan::job_error(
            status.failure_reason.as_deref().unwrap_or("Failed"),
            status.failure_message.as_deref().unwrap_or_default(),
        ))),
        _ => None,
    };
    JobMirror {
        id,
        status: plan::job_status(phase),
        attempts: status.attempts.unwrap_or(0).max(0) as u32,
        outcome,
    }
}

async fn mirror(ctx: &Context, new: Option<&NewJob>, state: &JobMirror) -> Result<(), Error> {
    jobstore::mirror(ctx.jobs.as_ref(), new, state)
        .await
        .map_err(Error::MirrorJob)?;
    Ok(())
}

fn executor_name(e: Executor) -> &'static str {
    match e {
        Executor::Inline => "inline",
        Executor::Job => "job",
    }
}

async fn apply(api: &Api<ThumbnailJob>, cached: Arc<ThumbnailJob>, ctx: &Context) -> Result<Action, Error> {
    if cached.is_finished() {
        return finished(api, &cached, ctx).await;
    }
    // Decisions that start work rest on a fresh read, never on the (possibly stale) cache.
    let Some(tj) = api
        .get_opt(&cached.name_any())
        .await
        .map_err(Error::ReadResource)?
    else {
        return Ok(Action::await_change());
    };
    if tj.is_finished() {
        return finished(api, &tj, ctx).await;
    }
    if tj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let v = match plan::validate(&tj) {
        Ok(v) => v,
        Err(message) => return fail(api, ctx, &tj, None, plan::REASON_INVALID_SPEC, &message).await,
    };
    let status = tj.status.clone().unwrap_or_default();
    match (status.phase(), status.executor) {
        (Phase::Running, Some(Executor::Job)) => watch_job(api, ctx, &tj, &v).await,
        (Phase::Running, _) => {
            let attempt = status.attempts.unwrap_or(1);
            warn!(name = %v.name, attempt, "an inline attempt was interrupted (operator restart); starting the next");
            ctx.metrics.job.retries.inc();
            let note = format!("attempt {attempt} was interrupted before it finished");
            start(api, ctx, tj, v, Some(note)).await
        }
        _ => start(api, ctx, tj, v, None).await,
    }
}

/// A resource that has not started, waits for a retry, or whose attempt was interrupted.
async fn start(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    tj: ThumbnailJob,
    v: Validated,
    interrupted: Option<String>,
) -> Result<Action, Error> {
    let now = Timestamp::now();
    let generation = tj.metadata.generation;
    let mut status = tj
        .status
        .clone()
        .unwrap_or_else(|| ThumbnailJobStatus::pending(generation, now));
    let attempts = status.attempts.unwrap_or(0);
    if let Some(message) = plan::deadline_exceeded(&tj, now) {
        return fail(api, ctx, &tj, Some(&v), REASON_DEADLINE_EXCEEDED, &message).await;
    }
    if attempts > 0 && !plan::may_retry(attempts, tj.spec.backoff_limit) {
        let last = interrupted
            .or_else(|| status.condition("Running").map(|c| c.message.clone()))
            .unwrap_or_default();
        let message = format!("{attempts} attempts failed; the last: {last}");
        return fail(api, ctx, &tj, Some(&v), REASON_BACKOFF_LIMIT_EXCEEDED, &message).await;
    }
    if interrupted.is_none()
        && let Some(wait) = backoff_remaining(&status, now)
    {
        return Ok(Action::requeue(wait));
    }

    // Read and probe the source (header only).
    let sources = ctx
        .sources
        .get(tj.spec.source.bucket.as_deref())
        .await
        .map_err(Error::ReadSource)?;
    let source = match render::read_source(sources.as_ref(), &tj.spec.source.key, &ctx.limits).await {
        Ok(bytes) => bytes,
        Err(RenderError::BadInput(e)) => return fail(api, ctx, &tj, Some(&v), &e.reason, &e.message).await,
        Err(RenderError::Dependency(e)) => return Err(Error::ReadSource(e)),
    };
    let probe = match thumbnail_engine::probe(&source, &ctx.limits) {
        Ok(p) => p,
        Err(e) => return fail(api, ctx, &tj, Some(&v), e.reason(), &e.to_string()).await,
    };
    let new_job = plan::new_job(&tj, v.id, &probe, source.len() as u64, ctx.objects.bucket());
    mirror(ctx, Some(&new_job), &mirror_state(v.id, &status)).await?;

    // Decide, then claim the attempt (guarded by the version just read).
    let render_plan = plan::plan(&tj, v.id, probe.format, &ctx.keys);
    let executor = plan::choose_executor(tj.spec.execution, &probe, &ctx.policy);
    let job_name = (executor == Executor::Job).then(|| plan::render_job_name(v.id));
    status.start_attempt(executor, job_name.clone(), generation, now);
    let attempt = status.attempts.unwrap_or(1);
    let claimed = apply_status(api, &v.name, tj.resource_version(), &status).await?;
    ctx.metrics.attempt(executor_name(executor));
    let running_message = claimed
        .status
        .as_ref()
        .and_then(|s| s.condition("Running"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    info!(name = %v.name, job_id = %v.id, executor = executor_name(executor), attempt, "attempt started");
    ctx.event(&claimed, EventType::Normal, "Started", running_message)
        .await;
    if let Err(e) = mirror(ctx, None, &mirror_state(v.id, &status)).await {
        // The final state is mirrored again on every reconcile of a finished resource.
        warn!(job_id = %v.id, error = %e, "could not mirror the start to the job store");
    }

    match executor {
        Executor::Inline => run_inline(api, ctx, &claimed, &v, &render_plan, source, attempt).await,
        Executor::Job => {
            create_render_job(ctx, &claimed, &render_plan, &probe, source.len() as u64).await?;
            Ok(Action::requeue(Duration::from_secs(300)))
        }
    }
}

/// While a failed attempt waits for its retry: how long is left.
fn backoff_remaining(status: &ThumbnailJobStatus, now: Timestamp) -> Option<Duration> {
    if status.phase() != Phase::Pending {
        return None;
    }
    let running = status.condition("Running")?;
    if running.reason != REASON_BACKOFF {
        return None;
    }
    let waited = now.duration_since(running.last_transition_time.0);
    let delay = retry_delay(status.attempts.unwrap_or(1).max(1) as u32);
    let waited = Duration::try_from(waited).unwrap_or(Duration::ZERO);
    (waited < delay).then(|| delay - waited)
}

async fn run_inline(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    tj: &ThumbnailJob,
    v: &Validated,
    plan: &RenderPlan,
    source: bytes::Bytes,
    attempt: i32,
) -> Result<Action, Error> {
    let started = Instant::now();
    let generation = tj.metadata.generation;
    match render::render_outputs(plan, source, ctx.objects.as_ref(), ctx.limits, &ctx.cpu).await {
        Ok(outputs) => {
            let done = update_attempt(api, &v.name, attempt, |s| {
                s.succeed(outputs.clone(), generation, Timestamp::now())
            })
            .await?;
            succeeded(api, ctx, v, done, started).await
        }
        Err(RenderError::BadInput(e)) => fail_attempt(api, ctx, v, attempt, &e.reason, &e.message).await,
        Err(RenderError::Dependency(e)) => {
            if plan::may_retry(attempt, tj.spec.backoff_limit) {
                let message = format!("attempt {attempt} failed: {e}");
                if let Some(tj) = update_attempt(api, &v.name, attempt, |s| {
                    s.set_pending(REASON_BACKOFF, &message, generation, Timestamp::now())
                })
                .await?
                {
                    ctx.event(&tj, EventType::Warning, REASON_BACKOFF, message.clone())
                        .await;
                }
                ctx.metrics.job.retries.inc();
                Err(Error::Render(e))
            } else {
                let message = format!("{attempt} attempts failed; the last: {e}");
                fail_attempt(api, ctx, v, attempt, REASON_BACKOFF_LIMIT_EXCEEDED, &message).await
            }
        }
    }
}

async fn succeeded(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    v: &Validated,
    done: Option<ThumbnailJob>,
    started: Instant,
) -> Result<Action, Error> {
    let Some(tj) = done else {
        info!(name = %v.name, "attempt superseded; its result was discarded");
        return Ok(Action::await_change());
    };
    ctx.metrics
        .job
        .duration
        .get_or_create(&OutcomeLabels {
            outcome: "success".into(),
        })
        .observe(started.elapsed().as_secs_f64());
    let note = tj
        .status
        .as_ref()
        .and_then(|s| s.condition("Succeeded"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    info!(name = %v.name, job_id = %v.id, "succeeded");
    ctx.event(&tj, EventType::Normal, "Completed", note).await;
    finished(api, &tj, ctx).await
}

async fn failed(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    tj: ThumbnailJob,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    ctx.metrics
        .job
        .failures
        .get_or_create(&ReasonLabels {
            reason: reason.into(),
        })
        .inc();
    info!(name = %tj.name_any(), reason, message, "failed");
    ctx.event(&tj, EventType::Warning, reason, message.to_owned())
        .await;
    finished(api, &tj, ctx).await
}

/// Fail the resource outside an attempt (invalid spec, bad source, deadline, retries used up).
async fn fail(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    tj: &ThumbnailJob,
    v: Option<&Validated>,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    let now = Timestamp::now();
    let generation = tj.metadata.generation;
    let mut status = tj
        .status
        .clone()
        .unwrap_or_else(|| ThumbnailJobStatus::pending(generation, now));
    status.fail(reason, message, generation, now);
    let name = v.map(|v| v.name.clone()).unwrap_or_else(|| tj.name_any());
    let updated = apply_status(api, &name, tj.resource_version(), &status).await?;
    failed(api, ctx, updated, reason, message).await
}

/// Fail the current attempt for good.
async fn fail_attempt(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    v: &Validated,
    attempt: i32,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    match update_attempt(api, &v.name, attempt, |s| {
        let generation = s.observed_generation;
        s.fail(reason, message, generation, Timestamp::now())
    })
    .await?
    {
        Some(tj) => failed(api, ctx, tj, reason, message).await,
        None => Ok(Action::await_change()),
    }
}

/// A finished resource: mirror its final state (idempotent), then delete it once its TTL passed.
async fn finished(api: &Api<ThumbnailJob>, tj: &ThumbnailJob, ctx: &Context) -> Result<Action, Error> {
    if let (Ok(v), Some(status)) = (plan::validate(tj), tj.status.as_ref()) {
        mirror(ctx, None, &mirror_state(v.id, status)).await?;
    }
    match plan::ttl_remaining(tj, Timestamp::now()) {
        None => Ok(Action::await_change()),
        Some(left) if !left.is_zero() => Ok(Action::requeue(left)),
        Some(_) => expire(api, tj, ctx).await,
    }
}

/// Delete a finished resource whose `ttlSecondsAfterFinished` passed. Its thumbnails stay (the
/// job store's history points at them): the finalizer is taken off first, so the deletion does
/// not run the cleanup.
async fn expire(api: &Api<ThumbnailJob>, tj: &ThumbnailJob, ctx: &Context) -> Result<Action, Error> {
    let name = tj.name_any();
    ctx.event(
        tj,
        EventType::Normal,
        "Expired",
        "ttlSecondsAfterFinished passed; deleting the ThumbnailJob (its thumbnails and job history stay)"
            .into(),
    )
    .await;
    if let Some(i) = tj.finalizers().iter().position(|f| f == FINALIZER) {
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
        ]))
        .expect("a valid JSON patch");
        match api
            .patch(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
            Err(e) => return Err(Error::Expire(e)),
        }
    }
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_not_found() => {}
        Err(e) => return Err(Error::Expire(e)),
    }
    info!(name, "expired ThumbnailJob deleted");
    Ok(Action::await_change())
}

/// Create the render Job (creating it again is harmless: same name).
async fn create_render_job(
    ctx: &Context,
    tj: &ThumbnailJob,
    plan: &RenderPlan,
    probe: &ProbeInfo,
    source_bytes: u64,
) -> Result<(), Error> {
    let job = plan::render_job(tj, plan, probe, source_bytes, &ctx.render, Timestamp::now());
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &tj.namespace().unwrap_or_default());
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(e) => Err(Error::CreateJob(e)),
    }
}

/// An attempt running in a render Job: wait for the Job to finish, then read its result.
async fn watch_job(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    tj: &ThumbnailJob,
    v: &Validated,
) -> Result<Action, Error> {
    let status = tj.status.clone().unwrap_or_default();
    let attempt = status.attempts.unwrap_or(1);
    let name = status
        .kubernetes_job
        .clone()
        .unwrap_or_else(|| plan::render_job_name(v.id));
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let job = jobs.get_opt(&name).await.map_err(Error::ReadJob)?;
    let owned = |job: &Job| {
        job.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == tj.metadata.uid.as_ref())
    };
    let Some(job) = job.filter(owned) else {
        // Claimed, but the Job is missing (the operator stopped before creating it, or someone
        // deleted it): create it.
        let sources = ctx
            .sources
            .get(tj.spec.source.bucket.as_deref())
            .await
            .map_err(Error::ReadSource)?;
        let source = match render::read_source(sources.as_ref(), &tj.spec.source.key, &ctx.limits).await {
            Ok(bytes) => bytes,
            Err(RenderError::BadInput(e)) => {
                return fail_attempt(api, ctx, v, attempt, &e.reason, &e.message).await;
            }
            Err(RenderError::Dependency(e)) => return Err(Error::ReadSource(e)),
        };
        let probe = match thumbnail_engine::probe(&source, &ctx.limits) {
            Ok(p) => p,
            Err(e) => return fail_attempt(api, ctx, v, attempt, e.reason(), &e.to_string()).await,
        };
        let render_plan = plan::plan(tj, v.id, probe.format, &ctx.keys);
        create_render_job(ctx, tj, &render_plan, &probe, source.len() as u64).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    let state = plan::job_state(&job);
    if state == plan::JobState::Running {
        // The owned-Job watch wakes us when it changes; this is only a safety net.
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let result_key = plan::result_key(&ctx.keys, v.id);
    let result: Option<RenderResult> = match ctx.objects.get(&result_key).await {
        Ok(bytes) => serde_json::from_slice::<RenderResult>(&bytes)
            .ok()
            .filter(|r| r.job_id == v.id),
        Err(CoreError::ObjectNotFound(_)) => None,
        Err(e) => return Err(Error::ReadResult(e)),
    };
    let pods = plan::job_attempts(&job);
    let started = Instant::now();
    match plan::job_outcome(&state, result.as_ref()) {
        None => Ok(Action::requeue(Duration::from_secs(300))),
        Some(Ok(outputs)) => {
            // Trust, but verify: every output the result names must be in the bucket.
            for output in &outputs {
                let store = ctx
                    .sources
                    .get(Some(&output.bucket))
                    .await
                    .map_err(Error::ReadResult)?;
                if !store.exists(&output.key).await.map_err(Error::ReadResult)? {
                    let message = format!(
                        "the render Job reported {} but it is not in the bucket",
                        output.key
                    );
                    return fail_attempt(api, ctx, v, attempt, plan::REASON_OUTPUTS_MISSING, &message).await;
                }
            }
            let done = update_attempt(api, &v.name, attempt, |s| {
                let generation = s.observed_generation;
                s.succeed(outputs.clone(), generation, Timestamp::now());
                s.attempts = Some(pods);
            })
            .await?;
            succeeded(api, ctx, v, done, started).await
        }
        Some(Err((reason, message))) => {
            match update_attempt(api, &v.name, attempt, |s| {
                let generation = s.observed_generation;
                s.fail(&reason, &message, generation, Timestamp::now());
                s.attempts = Some(pods);
            })
            .await?
            {
                Some(tj) => failed(api, ctx, tj, &reason, &message).await,
                None => Ok(Action::await_change()),
            }
        }
    }
}

/// The resource is being deleted: remove its thumbnails and render result, stop its Job, and
/// record an unfinished job as failed in the job store (its history stays there).
async fn cleanup(tj: &ThumbnailJob, ctx: &Context) -> Result<Action, Error> {
    let namespace = tj.namespace().unwrap_or_default();
    let v = plan::validate(tj).ok();
    let keys: Vec<String> = match &v {
        Some(v) => plan::possible_keys(tj, v.id, &ctx.keys),
        None => tj
            .status
            .iter()
            .flat_map(|s| s.outputs.iter().map(|o| o.key.clone()))
            .collect(),
    };
    for key in &keys {
        ctx.objects.delete(key).await.map_err(Error::Cleanup)?;
    }
    if let Some(v) = &v {
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        match jobs
            .delete(&plan::render_job_name(v.id), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => return Err(Error::DeleteJob(e)),
        }
        if !tj.is_finished() {
            let state = JobMirror {
                id: v.id,
                status: JobStatus::Failure,
                attempts: tj.status.as_ref().and_then(|s| s.attempts).unwrap_or(0).max(0) as u32,
                outcome: Some(Outcome::Failure(plan::job_error(
                    plan::REASON_DELETED,
                    "the ThumbnailJob was deleted before it finished",
                ))),
            };
            mirror(ctx, None, &state).await?;
        }
    }
    info!(name = %tj.name_any(), namespace, objects = keys.len(), "cleaned up");
    Ok(Action::await_change())
}
