//! The reconciler of `ThumbnailJob`s: a pipeline of the pure steps in [`crate::plan`] with the I/O
//! at its edges:
//!
//! 1. **validate** the spec (a broken one fails at once, reason `InvalidSpec`; a source bucket
//!    outside SOURCE_BUCKETS, reason `SourceBucketNotAllowed`);
//! 2. **read and probe** the first bytes of the source (bad input fails at once with the engine's
//!    reason), and **bind** the job row to this resource (a `spec.jobId` that belongs to another
//!    ThumbnailJob fails with `JobIdConflict`, touching nothing of the other);
//! 3. **decide and build**: executor (inline, or a batch/v1 Job for images over the pixel
//!    threshold whatever the spec asks), output keys, the Job manifest;
//! 4. **apply**: claim the attempt (status `Running` with this replica as `claimedBy`, written
//!    with the resourceVersion read just before, so that two writers can never both claim it),
//!    then render inline (claimed only once it holds a slot of the bounded pool) or create the
//!    Job in the operator's namespace;
//! 5. **update status** (server-side apply, field manager `thumbnail-operator`, guarded by the
//!    attempt number and, inline, its claimant) and **mirror** it to the job store.
//!
//! Every decision that starts work is made on a fresh read of the resource, never on the cache,
//! so a stale cache cannot start a job twice. An inline attempt found `Running` was interrupted
//! (the controller never runs two reconciles of one object at once, and the render happens
//! inside the reconcile) once the replica that claimed it no longer holds the leader Lease; the
//! next attempt starts, and interrupted attempts count against `backoffLimit`, so an image that
//! crashes the operator cannot loop for ever. A replica that stops on purpose (SIGTERM past its
//! grace period, a lost Lease) hands its unfinished inline attempts back instead
//! ([`hand_back_attempts`]), and those do not count.
//!
//! `activeDeadlineSeconds` is enforced here, whatever a render Job does; a render Job whose pod
//! does not start within RENDER_START_TIMEOUT_SECONDS fails the resource with the cause.
//!
//! Errors are named after the step that failed; the error policy retries them with a per-object
//! exponential backoff. Bad input is not an error: the resource ends `Failed` with its reason.
use crate::metrics::Metrics;
use crate::plan::{self, ExecutorPolicy, MANAGER, RenderJobSettings, RenderPlan, RenderResult, Validated};
use crate::render::{self, RenderError};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thumbnail_core::jobstore::{self, Binding, DynJobStore, JobMirror, Outcome, ResourceRef, RowBinding};
use thumbnail_core::keys::KeyLayout;
use thumbnail_core::metrics::{OutcomeLabels, ReasonLabels};
use thumbnail_core::model::{JobError, JobStatus};
use thumbnail_core::objects::{DynObjectStore, S3ObjectStore};
use thumbnail_core::runner::retry_delay;
use thumbnail_core::worker::CpuPool;
use thumbnail_core::{CoreError, model::NewJob};
use thumbnail_crds::status::{
    REASON_BACKOFF, REASON_BACKOFF_LIMIT_EXCEEDED, REASON_DEADLINE_EXCEEDED, REASON_HANDED_BACK,
};
use thumbnail_crds::{
    API_VERSION, Execution, Executor, FINALIZER, KIND, Phase, ThumbnailJob, ThumbnailJobStatus,
};
use thumbnail_engine::{Limits, ProbeInfo};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
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
    #[error("reading the leader Lease: {0}")]
    ReadLease(#[source] kube::Error),
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
            Error::ReadLease(_) => "read_lease",
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

/// Object stores by bucket: the configured one, and the others SOURCE_BUCKETS allows.
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

    /// The store of `bucket` (`None`: the configured one). Callers check the allow list first.
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

/// Where the leader Lease is, to tell whether the replica that claimed an attempt still leads.
pub struct LeaseRef {
    pub api: Api<Lease>,
    pub name: String,
    pub duration: Duration,
}

/// What the reconciler is configured with, besides its clients and stores.
pub struct ReconcileSettings {
    pub keys: KeyLayout,
    pub limits: Limits,
    /// Inline renders at once (INLINE_CONCURRENCY).
    pub inline_concurrency: usize,
    pub policy: ExecutorPolicy,
    pub render: RenderJobSettings,
    /// This replica's identity (its Lease identity), recorded as `claimedBy` on its attempts.
    pub identity: String,
    /// The leader Lease, with leader election on.
    pub lease: Option<LeaseRef>,
    /// Buckets `spec.source.bucket` may name.
    pub allowed_buckets: Vec<String>,
    /// How long a render Job's pod may take to start.
    pub render_start_timeout: Duration,
}

/// What every reconcile shares.
pub struct Context {
    pub client: kube::Client,
    pub jobs: DynJobStore,
    /// Where thumbnails are written (`S3_BUCKET_NAME`).
    pub objects: DynObjectStore,
    pub sources: Sources,
    pub settings: ReconcileSettings,
    /// CPU for inline renders, on blocking threads.
    pub cpu: CpuPool,
    /// Slots of the inline executor: an attempt is claimed only once it holds one, so that
    /// waiting reconciles hold neither a claimed attempt nor a source image in memory.
    inline_slots: Arc<Semaphore>,
    /// Cancelled when the replica stops taking work (SIGTERM, a lost Lease): reconciles then
    /// claim no new attempt, also those still waiting for an inline slot.
    stopping: CancellationToken,
    /// Inline attempts this process claimed and has not finished: what it hands back when it
    /// stops them. An entry is removed when its render returns, which a stopped (dropped)
    /// reconcile never does; the cache alone may not show a claim made just before the stop.
    in_flight: Mutex<HashSet<(String, String)>>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive failed reconciles per object, for the error policy's backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: kube::Client,
        jobs: DynJobStore,
        sources: Sources,
        settings: ReconcileSettings,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Self {
        let slots = settings.inline_concurrency.max(1);
        Context {
            client,
            jobs,
            objects: sources.default.clone(),
            sources,
            cpu: CpuPool::new(slots),
            inline_slots: Arc::new(Semaphore::new(slots)),
            stopping: CancellationToken::new(),
            in_flight: Mutex::new(HashSet::new()),
            settings,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Claim no new attempts from now on (running ones go on).
    pub fn stop_taking_work(&self) {
        self.stopping.cancel();
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

    fn render_jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.settings.render.namespace)
    }
}

/// The event on a ThumbnailJob that retention deletes (its job expired, or its owner deleted it
/// through the API). `Expired` is the one of `ttlSecondsAfterFinished`, which keeps the job.
pub const REASON_RETENTION_EXPIRED: &str = "RetentionExpired";

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

/// Who may change an attempt's status.
#[derive(Debug, Clone, Copy)]
enum Writer<'a> {
    /// Any replica (a render Job's attempt: whoever leads watches the Job).
    Any,
    /// Only the replica that claimed it (an inline attempt runs in that process).
    Claimant(&'a str),
}

/// Change the status of attempt `attempt`, if it is still the current, running one (and, for
/// inline attempts, still claimed by this replica); re-reads and retries on conflicts. `None`
/// when the attempt was superseded or handed over (or the resource is gone).
async fn update_attempt(
    api: &Api<ThumbnailJob>,
    name: &str,
    attempt: i32,
    writer: Writer<'_>,
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
        if let Writer::Claimant(me) = writer
            && status.claimed_by.as_deref() != Some(me)
        {
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

async fn mirror(ctx: &Context, state: &JobMirror) -> Result<(), Error> {
    jobstore::mirror(ctx.jobs.as_ref(), None, state)
        .await
        .map_err(Error::MirrorJob)?;
    Ok(())
}

/// This resource as a job row's owner.
fn resource_ref(tj: &ThumbnailJob) -> ResourceRef {
    ResourceRef {
        namespace: tj.namespace().unwrap_or_default(),
        name: tj.name_any(),
        uid: tj.metadata.uid.clone().unwrap_or_default(),
    }
}

/// Step 2: make sure the job row exists (manifests get theirs here) and belongs to this resource.
async fn bind_row(ctx: &Context, tj: &ThumbnailJob, new: &NewJob) -> Result<Binding, Error> {
    if ctx.jobs.get(new.id).await.map_err(Error::MirrorJob)?.is_none()
        && let Err(e) = ctx.jobs.create(new).await
    {
        // Created concurrently by someone else: the bind below decides whose it is.
        if ctx.jobs.get(new.id).await.map_err(Error::MirrorJob)?.is_none() {
            return Err(Error::MirrorJob(e));
        }
    }
    ctx.jobs
        .bind_resource(new.id, &resource_ref(tj))
        .await
        .map_err(Error::MirrorJob)
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
        Err(message) => return fail(api, ctx, &tj, plan::REASON_INVALID_SPEC, &message).await,
    };
    if !plan::source_bucket_allowed(tj.spec.source.bucket.as_deref(), &ctx.settings.allowed_buckets) {
        let message = format!(
            "spec.source.bucket {:?} is not a bucket this operator may read (allowed: {}; set SOURCE_BUCKETS)",
            tj.spec.source.bucket.as_deref().unwrap_or_default(),
            ctx.settings.allowed_buckets.join(", ")
        );
        return fail(api, ctx, &tj, plan::REASON_BUCKET_NOT_ALLOWED, &message).await;
    }
    let status = tj.status.clone().unwrap_or_default();
    match (status.phase(), status.executor) {
        (Phase::Running, Some(Executor::Job)) => watch_job(api, ctx, &tj, &v).await,
        (Phase::Running, _) => {
            let attempt = status.attempts.unwrap_or(1);
            let claimant = status.claimed_by.clone().unwrap_or_default();
            if let Some(wait) = claimant_still_leads(ctx, &claimant).await? {
                info!(name = %v.name, attempt, claimant, "the attempt's claimant still holds the lease; waiting");
                return Ok(Action::requeue(wait));
            }
            warn!(name = %v.name, attempt, claimant, "an inline attempt was interrupted (its replica stopped); starting the next");
            ctx.metrics.job.retries.inc();
            let note = format!("attempt {attempt} was interrupted before it finished");
            start(api, ctx, tj, v, Some(note)).await
        }
        _ => start(api, ctx, tj, v, None).await,
    }
}

/// Whether the replica that claimed an inline attempt still holds the leader Lease (then the
/// attempt is not interrupted: it may still be rendering). `Some(wait)`: look again then.
async fn claimant_still_leads(ctx: &Context, claimant: &str) -> Result<Option<Duration>, Error> {
    // This replica: the reconcile that claimed it is not running (one reconcile per object at a
    // time), so it was a previous run of this replica. Without leader election only one replica
    // runs.
    if claimant.is_empty() || claimant == ctx.settings.identity {
        return Ok(None);
    }
    let Some(lease) = &ctx.settings.lease else {
        return Ok(None);
    };
    let holder = crate::leader::active_holder(&lease.api, &lease.name)
        .await
        .map_err(Error::ReadLease)?;
    Ok((holder.as_deref() == Some(claimant)).then_some(lease.duration))
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
    let status = tj
        .status
        .clone()
        .unwrap_or_else(|| ThumbnailJobStatus::pending(tj.metadata.generation, now));
    let attempts = status.attempts.unwrap_or(0);
    if let Some(message) = plan::deadline_exceeded(&tj, now) {
        return fail(api, ctx, &tj, REASON_DEADLINE_EXCEEDED, &message).await;
    }
    if attempts > 0 && !plan::may_retry(attempts, tj.spec.backoff_limit) {
        let last = interrupted
            .or_else(|| status.condition("Running").map(|c| c.message.clone()))
            .unwrap_or_default();
        let message = format!("{attempts} attempts failed; the last: {last}");
        return fail(api, ctx, &tj, REASON_BACKOFF_LIMIT_EXCEEDED, &message).await;
    }
    if interrupted.is_none()
        && let Some(wait) = backoff_remaining(&status, now)
    {
        return Ok(Action::requeue(wait));
    }

    let Probed {
        store: sources,
        size: source_bytes,
        probe,
    } = match probe(ctx, &tj).await? {
        Ok(probed) => probed,
        Err(e) => return fail(api, ctx, &tj, &e.reason, &e.message).await,
    };
    let new_job = plan::new_job(&tj, v.id, &probe, source_bytes, ctx.objects.bucket());
    if let Binding::BoundElsewhere(other) = bind_row(ctx, &tj, &new_job).await? {
        let message = format!("job id {} belongs to the ThumbnailJob {other}", v.id);
        return fail(api, ctx, &tj, plan::REASON_JOB_ID_CONFLICT, &message).await;
    }
    mirror(ctx, &mirror_state(v.id, &status)).await?;

    let render_plan = plan::plan(&tj, v.id, probe.format, &ctx.settings.keys);
    let executor = plan::choose_executor(tj.spec.execution, &probe, &ctx.settings.policy);
    match executor {
        Executor::Inline => {
            // Wait for a slot before claiming anything or reading the whole source; a replica
            // that is stopping claims nothing new (the next leader will).
            let slot = tokio::select! {
                slot = ctx.inline_slots.clone().acquire_owned() => slot.expect("the inline slots are never closed"),
                _ = ctx.stopping.cancelled() => return Ok(Action::requeue(Duration::from_secs(1))),
            };
            // The resource may have changed while this reconcile waited.
            let Some(fresh) = api.get_opt(&v.name).await.map_err(Error::ReadResource)? else {
                return Ok(Action::await_change());
            };
            if fresh.resource_version() != tj.resource_version() {
                return Ok(Action::requeue(Duration::ZERO));
            }
            let (key, limits) = (&tj.spec.source.key, ctx.settings.limits);
            let source = match render::read_source(sources.as_ref(), key, &limits).await {
                Ok(bytes) => bytes,
                Err(RenderError::BadInput(e)) => return fail(api, ctx, &tj, &e.reason, &e.message).await,
                Err(RenderError::Dependency(e)) => return Err(Error::ReadSource(e)),
            };
            let claimed = claim(api, ctx, &tj, &v, status, Executor::Inline).await?;
            let key = (v.namespace.clone(), v.name.clone());
            ctx.in_flight.lock().expect("in-flight lock").insert(key.clone());
            let outcome = run_inline(api, ctx, &claimed, &v, &render_plan, source, slot).await;
            // Not reached when the reconcile is dropped mid-render (the replica stopped it).
            ctx.in_flight.lock().expect("in-flight lock").remove(&key);
            outcome
        }
        Executor::Job => {
            if tj.spec.execution == Execution::Inline {
                let note = format!(
                    "{}x{} pixels is over JOB_PIXEL_THRESHOLD ({}); rendering in a Job instead of inline",
                    probe.width, probe.height, ctx.settings.policy.job_pixel_threshold
                );
                ctx.event(&tj, EventType::Normal, plan::REASON_INLINE_TOO_LARGE, note)
                    .await;
            }
            if ctx.stopping.is_cancelled() {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            let claimed = claim(api, ctx, &tj, &v, status, Executor::Job).await?;
            create_render_job(ctx, &claimed, &render_plan, &probe, source_bytes).await?;
            Ok(Action::requeue(job_recheck(ctx, &claimed, Timestamp::now())))
        }
    }
}

/// A source read and probed.
struct Probed {
    store: DynObjectStore,
    /// The object's size.
    size: u64,
    probe: ProbeInfo,
}

/// Step 2: read the first bytes of the source and probe its header (memory bounded whatever the
/// object is). `Ok(Err(reason))`: bad input, which can never be rendered.
async fn probe(ctx: &Context, tj: &ThumbnailJob) -> Result<Result<Probed, JobError>, Error> {
    let store = ctx
        .sources
        .get(tj.spec.source.bucket.as_deref())
        .await
        .map_err(Error::ReadSource)?;
    let limits = ctx.settings.limits;
    let key = &tj.spec.source.key;
    let probed = async {
        let head = render::read_head(store.as_ref(), key, &limits).await?;
        let probe = render::probe_source(store.as_ref(), key, &head, &limits).await?;
        Ok::<_, RenderError>((head.total_size, probe))
    };
    match probed.await {
        Ok((size, probe)) => Ok(Ok(Probed { store, size, probe })),
        Err(RenderError::BadInput(e)) => Ok(Err(e)),
        Err(RenderError::Dependency(e)) => Err(Error::ReadSource(e)),
    }
}

/// Step 4: claim the next attempt for this replica, guarded by the resourceVersion just read.
async fn claim(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    tj: &ThumbnailJob,
    v: &Validated,
    mut status: ThumbnailJobStatus,
    executor: Executor,
) -> Result<ThumbnailJob, Error> {
    let generation = tj.metadata.generation;
    let job_name = (executor == Executor::Job).then(|| plan::render_job_name(v.id));
    status.start_attempt(
        executor,
        job_name,
        &ctx.settings.identity,
        generation,
        Timestamp::now(),
    );
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
    if let Err(e) = mirror(ctx, &mirror_state(v.id, &status)).await {
        // The final state is mirrored again on every reconcile of a finished resource.
        warn!(job_id = %v.id, error = %e, "could not mirror the start to the job store");
    }
    Ok(claimed)
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
    slot: OwnedSemaphorePermit,
) -> Result<Action, Error> {
    // Held until the attempt's outcome is written: until then it is Running, and the bound is on
    // claimed attempts, not only on renders.
    let _slot = slot;
    let started = Instant::now();
    let generation = tj.metadata.generation;
    let attempt = tj.status.as_ref().and_then(|s| s.attempts).unwrap_or(1);
    let me = Writer::Claimant(&ctx.settings.identity);
    let render = render::render_outputs(plan, source, ctx.objects.as_ref(), ctx.settings.limits, &ctx.cpu);
    // The deadline holds inline too: the render is abandoned (its result discarded) when it runs out.
    let rendered = match plan::deadline_remaining(tj, Timestamp::now()) {
        Some(left) => tokio::time::timeout(left, render).await.ok(),
        None => Some(render.await),
    };
    let Some(rendered) = rendered else {
        let message = plan::deadline_exceeded(tj, Timestamp::now())
            .unwrap_or_else(|| "activeDeadlineSeconds passed during the render".into());
        return fail_attempt(api, ctx, v, attempt, me, REASON_DEADLINE_EXCEEDED, &message).await;
    };
    match rendered {
        Ok(outputs) => {
            let done = update_attempt(api, &v.name, attempt, me, |s| {
                s.succeed(outputs.clone(), generation, Timestamp::now())
            })
            .await?;
            succeeded(api, ctx, v, done, started).await
        }
        Err(RenderError::BadInput(e)) => fail_attempt(api, ctx, v, attempt, me, &e.reason, &e.message).await,
        Err(RenderError::Dependency(e)) => {
            if plan::may_retry(attempt, tj.spec.backoff_limit) {
                let message = format!("attempt {attempt} failed: {e}");
                if let Some(tj) = update_attempt(api, &v.name, attempt, me, |s| {
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
                fail_attempt(api, ctx, v, attempt, me, REASON_BACKOFF_LIMIT_EXCEEDED, &message).await
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
    let updated = apply_status(api, &tj.name_any(), tj.resource_version(), &status).await?;
    failed(api, ctx, updated, reason, message).await
}

/// Fail the current attempt for good.
async fn fail_attempt(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    v: &Validated,
    attempt: i32,
    writer: Writer<'_>,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    match update_attempt(api, &v.name, attempt, writer, |s| {
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
    let status = tj.status.as_ref();
    // A resource refused for naming another resource's job id never touches that job's row.
    let conflicting = status.and_then(|s| s.failure_reason.as_deref()) == Some(plan::REASON_JOB_ID_CONFLICT);
    if let (Ok(v), Some(status), false) = (plan::validate(tj), status, conflicting) {
        mirror(ctx, &mirror_state(v.id, status)).await?;
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
    let job = plan::render_job(
        tj,
        plan,
        probe,
        source_bytes,
        &ctx.settings.render,
        Timestamp::now(),
    );
    match ctx.render_jobs().create(&PostParams::default(), &job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(e) => Err(Error::CreateJob(e)),
    }
}

/// Delete a render Job and (in the background, by the garbage collector) its pods.
async fn delete_render_job(ctx: &Context, name: &str) -> Result<(), Error> {
    match ctx.render_jobs().delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(Error::DeleteJob(e)),
    }
}

/// When to look at a render Job again without a watch event: when the deadline passes, or when
/// its pod should have started, or after five minutes (a safety net).
fn job_recheck(ctx: &Context, tj: &ThumbnailJob, now: Timestamp) -> Duration {
    let mut next = Duration::from_secs(300).min(ctx.settings.render_start_timeout + Duration::from_secs(1));
    if let Some(left) = plan::deadline_remaining(tj, now) {
        next = next.min(left + Duration::from_millis(100));
    }
    next
}

/// The render result a Job left in the bucket, if any.
async fn read_result(ctx: &Context, v: &Validated) -> Result<Option<RenderResult>, Error> {
    let key = plan::result_key(&ctx.settings.keys, v.id);
    match ctx.objects.get(&key).await {
        Ok(bytes) => Ok(serde_json::from_slice::<RenderResult>(&bytes)
            .ok()
            .filter(|r| r.job_id == v.id)),
        Err(CoreError::ObjectNotFound(_)) => Ok(None),
        Err(e) => Err(Error::ReadResult(e)),
    }
}

/// Why a render Job's pod has not started, if something says so.
async fn render_start_problem(ctx: &Context, job: &str) -> Result<Option<(String, String)>, Error> {
    let ns = &ctx.settings.render.namespace;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pods = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .map_err(Error::ReadJob)?
        .items;
    if plan::any_pod_started(&pods) {
        return Ok(None);
    }
    let events: Api<CoreEvent> = Api::namespaced(ctx.client.clone(), ns);
    let events = events
        .list(&ListParams::default().fields(&format!("involvedObject.kind=Job,involvedObject.name={job}")))
        .await
        .map_err(Error::ReadJob)?
        .items;
    let problem = plan::start_problem(&pods, &events).unwrap_or_else(|| {
        (
            plan::REASON_RENDER_NOT_STARTED.to_owned(),
            format!("no pod of the render Job {job} started"),
        )
    });
    Ok(Some(problem))
}

/// An attempt running in a render Job: wait for the Job to finish, then read its result. The
/// deadline and the start timeout are enforced whatever the Job does.
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
    let any = Writer::Any;
    let now = Timestamp::now();
    if let Some(message) = plan::deadline_exceeded(tj, now) {
        delete_render_job(ctx, &name).await?;
        return fail_attempt(api, ctx, v, attempt, any, REASON_DEADLINE_EXCEEDED, &message).await;
    }
    let job = ctx.render_jobs().get_opt(&name).await.map_err(Error::ReadJob)?;
    let Some(job) = job.filter(|job| plan::job_belongs_to(job, tj)) else {
        // Claimed, but the Job is missing (the operator stopped before creating it, or someone
        // deleted it): create it.
        let Probed {
            size: source_bytes,
            probe,
            ..
        } = match probe(ctx, tj).await? {
            Ok(probed) => probed,
            Err(e) => return fail_attempt(api, ctx, v, attempt, any, &e.reason, &e.message).await,
        };
        let render_plan = plan::plan(tj, v.id, probe.format, &ctx.settings.keys);
        create_render_job(ctx, tj, &render_plan, &probe, source_bytes).await?;
        return Ok(Action::requeue(job_recheck(ctx, tj, now)));
    };
    let state = plan::job_state(&job);
    let pods = plan::job_attempts(&job);
    if state == plan::JobState::Running {
        let failed_pods = job.status.as_ref().and_then(|s| s.failed).unwrap_or(0);
        // A pod refused the input (exit code 2 with a result naming the error): fail now rather
        // than let the Job run the same input again (API servers before 1.26 ignore the
        // podFailurePolicy that does this).
        if failed_pods > 0
            && let Some(RenderResult { error: Some(e), .. }) = read_result(ctx, v).await?
        {
            delete_render_job(ctx, &name).await?;
            return fail_job_attempt(api, ctx, v, attempt, pods, &e.reason, &e.message).await;
        }
        let age = job
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Duration::try_from(now.duration_since(t.0)).unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::ZERO);
        if let Some((reason, message)) = render_start_problem(ctx, &name).await? {
            if age >= ctx.settings.render_start_timeout {
                let message = format!(
                    "the render Job {name} did not start within {}s: {message}",
                    ctx.settings.render_start_timeout.as_secs()
                );
                delete_render_job(ctx, &name).await?;
                return fail_job_attempt(api, ctx, v, attempt, pods, &reason, &message).await;
            }
            if reason != plan::REASON_RENDER_NOT_STARTED {
                ctx.event(
                    tj,
                    EventType::Warning,
                    &reason,
                    format!("render Job {name}: {message}"),
                )
                .await;
            }
            let left = ctx.settings.render_start_timeout.saturating_sub(age);
            return Ok(Action::requeue(
                job_recheck(ctx, tj, now).min(left + Duration::from_millis(100)),
            ));
        }
        // The watch on render Jobs wakes us when the Job changes.
        return Ok(Action::requeue(job_recheck(ctx, tj, now)));
    }
    let result = read_result(ctx, v).await?;
    let started = Instant::now();
    let outcome = plan::job_outcome(&state, result.as_ref());
    let action = match outcome {
        None => return Ok(Action::requeue(job_recheck(ctx, tj, now))),
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
                    delete_render_job(ctx, &name).await?;
                    return fail_job_attempt(
                        api,
                        ctx,
                        v,
                        attempt,
                        pods,
                        plan::REASON_OUTPUTS_MISSING,
                        &message,
                    )
                    .await;
                }
            }
            let done = update_attempt(api, &v.name, attempt, any, |s| {
                let generation = s.observed_generation;
                s.succeed(outputs.clone(), generation, Timestamp::now());
                s.attempts = Some(pods);
            })
            .await?;
            succeeded(api, ctx, v, done, started).await?
        }
        Some(Err((reason, message))) => {
            fail_job_attempt(api, ctx, v, attempt, pods, &reason, &message).await?
        }
    };
    // Its result is read: the Job (and its pods) can go now rather than at its TTL.
    delete_render_job(ctx, &name).await?;
    Ok(action)
}

/// Fail a render Job's attempt for good, recording how many pods it ran.
async fn fail_job_attempt(
    api: &Api<ThumbnailJob>,
    ctx: &Context,
    v: &Validated,
    attempt: i32,
    pods: i32,
    reason: &str,
    message: &str,
) -> Result<Action, Error> {
    match update_attempt(api, &v.name, attempt, Writer::Any, |s| {
        let generation = s.observed_generation;
        s.fail(reason, message, generation, Timestamp::now());
        s.attempts = Some(pods.max(attempt));
    })
    .await?
    {
        Some(tj) => failed(api, ctx, tj, reason, message).await,
        None => Ok(Action::await_change()),
    }
}

/// The resource is being deleted: stop its render Job and, if the job row is this resource's,
/// remove its thumbnails and render result and record an unfinished job as failed (its history
/// stays in the job store). A resource that named another resource's job id touches nothing.
async fn cleanup(tj: &ThumbnailJob, ctx: &Context) -> Result<Action, Error> {
    let namespace = tj.namespace().unwrap_or_default();
    let Ok(v) = plan::validate(tj) else {
        info!(name = %tj.name_any(), namespace, "cleaned up (invalid spec: nothing was written)");
        return Ok(Action::await_change());
    };
    // Its render Job, if it has one (the uid label tells).
    let job_name = plan::render_job_name(v.id);
    if let Some(job) = ctx
        .render_jobs()
        .get_opt(&job_name)
        .await
        .map_err(Error::ReadJob)?
        && plan::job_belongs_to(&job, tj)
    {
        delete_render_job(ctx, &job_name).await?;
    }
    let ours = match ctx.jobs.resource_binding(v.id).await.map_err(Error::MirrorJob)? {
        RowBinding::NoRow => true,
        RowBinding::BoundTo(owner) => Some(&owner.uid) == tj.metadata.uid.as_ref(),
        // An API job whose ThumbnailJob never bound it: not provably this resource's.
        RowBinding::Unbound => false,
    };
    if !ours {
        info!(name = %tj.name_any(), namespace, job_id = %v.id, "cleaned up; the job id belongs to another resource, its objects and row stay");
        return Ok(Action::await_change());
    }
    // Deleted by retention (the sweeper of the API or of this operator, or an owner's early
    // DELETE, which expires the job first): say so on the resource.
    let row = ctx.jobs.get(v.id).await.map_err(Error::MirrorJob)?;
    if let Some(expires_at) = row
        .filter(|r| r.is_expired(thumbnail_core::model::now()))
        .and_then(|r| r.expires_at)
    {
        let note = format!(
            "the job expired at {} (its retention ended, or its owner deleted it): deleting its render Job and thumbnails; the job answers 410 Gone",
            expires_at.format("%Y-%m-%dT%H:%M:%SZ")
        );
        ctx.event(tj, EventType::Normal, REASON_RETENTION_EXPIRED, note)
            .await;
    }
    let keys = plan::possible_keys(tj, v.id, &ctx.settings.keys);
    for key in &keys {
        ctx.objects.delete(key).await.map_err(Error::Cleanup)?;
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
        mirror(ctx, &state).await?;
    }
    info!(name = %tj.name_any(), namespace, objects = keys.len(), "cleaned up");
    Ok(Action::await_change())
}

/// Hand this replica's unfinished inline attempts back (status `Pending`, reason `HandedBack`,
/// the attempt not counted), when it stops before they finished: after its SIGTERM grace, or when
/// it lost the leader Lease and stopped them. The next leader starts them again as the same
/// attempt. Each write is guarded by the resourceVersion and the claimant, so an attempt another
/// replica already took over is left alone. Candidates are the attempts this process was still
/// rendering and those the controller's cache shows as its own; the number handed back is
/// returned.
pub async fn hand_back_attempts(ctx: &Context, cache: &Store<ThumbnailJob>, why: &str) -> usize {
    let me = ctx.settings.identity.as_str();
    let mine = |tj: &ThumbnailJob| {
        tj.status.as_ref().is_some_and(|s| {
            s.phase() == Phase::Running
                && s.executor != Some(Executor::Job)
                && s.claimed_by.as_deref() == Some(me)
        })
    };
    let mut candidates: HashSet<(String, String)> = ctx.in_flight.lock().expect("in-flight lock").clone();
    candidates.extend(
        cache
            .state()
            .into_iter()
            .filter(|tj| mine(tj))
            .map(|tj| (tj.namespace().unwrap_or_default(), tj.name_any())),
    );
    let mut handed = 0;
    for (namespace, name) in candidates {
        let api: Api<ThumbnailJob> = Api::namespaced(ctx.client.clone(), &namespace);
        let fresh = match api.get_opt(&name).await {
            Ok(Some(tj)) if mine(&tj) => tj,
            Ok(_) => continue,
            Err(e) => {
                warn!(name, error = %e, "could not hand an attempt back");
                continue;
            }
        };
        let mut status = fresh.status.clone().unwrap_or_default();
        let attempt = status.attempts.unwrap_or(1);
        let message = format!("attempt {attempt} was stopped by {me} ({why}); it does not count");
        status.hand_back(&message, fresh.metadata.generation, Timestamp::now());
        match apply_status(&api, &name, fresh.resource_version(), &status).await {
            Ok(updated) => {
                handed += 1;
                info!(name, attempt, "handed the attempt back");
                ctx.event(&updated, EventType::Normal, REASON_HANDED_BACK, message)
                    .await;
            }
            Err(e) => warn!(name, error = %e, "could not hand an attempt back"),
        }
    }
    handed
}
