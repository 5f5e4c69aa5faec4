//! The pure steps of a reconcile: validate the resource, decide where it runs, plan the outputs,
//! build the render Job, and turn results into status. No I/O here; `reconcile` does the I/O at
//! the edges and calls these in between, so that every decision can be tested on its own.
use k8s_openapi::api::batch::v1::{Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement};
use k8s_openapi::api::batch::v1::{PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext,
};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use thumbnail_core::keys::KeyLayout;
use thumbnail_core::model::{JobError, JobOutput, JobStatus, NewJob, OutputSpec as CoreOutputSpec};
use thumbnail_crds::{
    ANNOTATION_THUMBNAILJOB, Execution, Executor, Gravity as CrdGravity, ImageFormat as CrdFormat,
    LABEL_JOB_ID, LABEL_THUMBNAILJOB, LABEL_THUMBNAILJOB_UID, OutputSpec, OutputStatus, Phase, ThumbnailJob,
};
use thumbnail_engine::{Fit, Gravity, ImageFormat, OutputFormat, ProbeInfo, ThumbnailOptions};
use uuid::Uuid;

/// Field manager of every write the operator makes (server-side apply of the status).
pub const MANAGER: &str = "thumbnail-operator";
/// Name of the render container (the podFailurePolicy refers to it).
pub const RENDER_CONTAINER: &str = "render";
/// Exit code of `thumbnail-operator render` for input that can never succeed.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Failure reason: the spec breaks a rule the CRD schema should have enforced.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Failure reason: the source object does not exist.
pub const REASON_SOURCE_NOT_FOUND: &str = "SourceNotFound";
/// Failure reason: a render Job completed but its outputs are not all in the bucket.
pub const REASON_OUTPUTS_MISSING: &str = "OutputsMissing";
/// Failure reason of the job row when its ThumbnailJob is deleted before finishing.
pub const REASON_DELETED: &str = "Deleted";
/// Failure reason: `spec.source.bucket` is not one the operator may read (SOURCE_BUCKETS).
pub const REASON_BUCKET_NOT_ALLOWED: &str = "SourceBucketNotAllowed";
/// Failure reason: `spec.jobId` names a job that belongs to another ThumbnailJob.
pub const REASON_JOB_ID_CONFLICT: &str = "JobIdConflict";
/// Failure reason: the render Job's pod could not be created or did not start in time, when no
/// more specific cause (a pod's waiting reason, the Job controller's event reason) is known.
pub const REASON_RENDER_NOT_STARTED: &str = "RenderJobNotStarted";
/// Event reason: `execution: inline` for an image over the pixel threshold runs in a Job.
pub const REASON_INLINE_TOO_LARGE: &str = "InlineTooLarge";

/// A resource that passed validation: its job id and everything derived from the spec alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub id: Uuid,
    pub namespace: String,
    pub name: String,
}

/// Step 1: validate. `Err` carries the message of a terminal `InvalidSpec` failure.
pub fn validate(tj: &ThumbnailJob) -> Result<Validated, String> {
    if let Err(errors) = tj.spec.validate() {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        return Err(text.join("; "));
    }
    let raw = tj
        .job_id()
        .ok_or("the resource has neither spec.jobId nor metadata.uid")?;
    let id = Uuid::parse_str(raw).map_err(|_| format!("job id {raw:?} is not a UUID"))?;
    Ok(Validated {
        id,
        namespace: tj.namespace().unwrap_or_default(),
        name: tj.name_any(),
    })
}

/// The engine's options for one requested output.
pub fn engine_options(output: &OutputSpec) -> ThumbnailOptions {
    ThumbnailOptions {
        width: output.width,
        height: output.height,
        fit: match output.fit {
            thumbnail_crds::Fit::Cover => Fit::Cover,
            thumbnail_crds::Fit::Contain => Fit::Contain,
            thumbnail_crds::Fit::Fill => Fit::Fill,
        },
        format: output.format.map(|f| match f {
            CrdFormat::Jpeg => OutputFormat::Jpeg,
            CrdFormat::Png => OutputFormat::Png,
            CrdFormat::Webp => OutputFormat::Webp,
            CrdFormat::Avif => OutputFormat::Avif,
            CrdFormat::Gif => OutputFormat::Gif,
        }),
        quality: output.quality,
        upscale: output.upscale,
        gravity: match output.gravity {
            CrdGravity::Centre => Gravity::Centre,
            CrdGravity::North => Gravity::North,
            CrdGravity::South => Gravity::South,
            CrdGravity::East => Gravity::East,
            CrdGravity::West => Gravity::West,
            CrdGravity::Northeast => Gravity::Northeast,
            CrdGravity::Northwest => Gravity::Northwest,
            CrdGravity::Southeast => Gravity::Southeast,
            CrdGravity::Southwest => Gravity::Southwest,
            CrdGravity::Smart => Gravity::Smart,
        },
        animated: output.animated,
    }
}

/// The resource's outputs for a ThumbnailJob spec, from the engine's options (what the API asks).
pub fn crd_output(name: &str, options: &ThumbnailOptions) -> OutputSpec {
    OutputSpec {
        name: name.to_owned(),
        width: options.width,
        height: options.height,
        fit: match options.fit {
            Fit::Cover => thumbnail_crds::Fit::Cover,
            Fit::Contain => thumbnail_crds::Fit::Contain,
            Fit::Fill => thumbnail_crds::Fit::Fill,
        },
        format: options.format.map(|f| match f {
            OutputFormat::Jpeg => CrdFormat::Jpeg,
            OutputFormat::Png => CrdFormat::Png,
            OutputFormat::Webp => CrdFormat::Webp,
            OutputFormat::Avif => CrdFormat::Avif,
            OutputFormat::Gif => CrdFormat::Gif,
        }),
        quality: options.quality,
        upscale: options.upscale,
        gravity: match options.gravity {
            Gravity::Centre => CrdGravity::Centre,
            Gravity::North => CrdGravity::North,
            Gravity::South => CrdGravity::South,
            Gravity::East => CrdGravity::East,
            Gravity::West => CrdGravity::West,
            Gravity::Northeast => CrdGravity::Northeast,
            Gravity::Northwest => CrdGravity::Northwest,
            Gravity::Southeast => CrdGravity::Southeast,
            Gravity::Southwest => CrdGravity::Southwest,
            Gravity::Smart => CrdGravity::Smart,
        },
        animated: options.animated,
    }
}

/// One output to render and the key it is written under.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PlannedOutput {
    pub name: String,
    pub key: String,
    pub options: ThumbnailOptions,
}

/// Everything a render needs, computed by the operator and passed to `thumbnail-operator render`
/// as JSON (the render Job has no Kubernetes access).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RenderPlan {
    pub job_id: Uuid,
    /// Bucket of the source; `None`: `S3_BUCKET_NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bucket: Option<String>,
    pub source_key: String,
    pub outputs: Vec<PlannedOutput>,
    /// Where the render writes its [`RenderResult`].
    pub result_key: String,
}

/// What a render Job leaves in the bucket for the operator: the outputs written, or why the
/// input was refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RenderResult {
    pub job_id: Uuid,
    #[serde(default)]
    pub outputs: Vec<OutputStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
}

/// The key of a job's render result: next to its thumbnails.
pub fn result_key(keys: &KeyLayout, id: Uuid) -> String {
    keys.thumbnail(id, thumbnail_core::model::DEFAULT_OUTPUT, "result.json")
}

/// Step 2: the outputs and their keys, once the source format is known.
pub fn plan(tj: &ThumbnailJob, id: Uuid, source_format: ImageFormat, keys: &KeyLayout) -> RenderPlan {
    let outputs = tj
        .spec
        .outputs
        .iter()
        .map(|output| {
            let options = engine_options(output);
            let format = options.format.unwrap_or_else(|| source_format.default_output());
            PlannedOutput {
                name: output.name.clone(),
                key: keys.thumbnail(id, &output.name, format.extension()),
                options,
            }
        })
        .collect();
    RenderPlan {
        job_id: id,
        source_bucket: tj.spec.source.bucket.clone(),
        source_key: tj.spec.source.key.clone(),
        outputs,
        result_key: result_key(keys, id),
    }
}

/// Every key a job may have written, whatever the source format was: what the finalizer deletes.
pub fn possible_keys(tj: &ThumbnailJob, id: Uuid, keys: &KeyLayout) -> Vec<String> {
    let mut all: Vec<String> = tj
        .status
        .iter()
        .flat_map(|s| s.outputs.iter().map(|o| o.key.clone()))
        .collect();
    for output in &tj.spec.outputs {
        match output.format {
            Some(f) => all.push(keys.thumbnail(id, &output.name, f.extension())),
            None => {
                for ext in ["jpg", "png", "webp"] {
                    all.push(keys.thumbnail(id, &output.name, ext));
                }
            }
        }
    }
    all.push(result_key(keys, id));
    all.sort();
    all.dedup();
    all
}

/// How the operator picks the executor for `execution: auto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorPolicy {
    pub job_pixel_threshold: u64,
    pub risky_formats: Vec<ImageFormat>,
}

/// Step 2: where the job runs. Images over the pixel threshold always go to a Job, also with
/// `execution: inline`: the operator's memory is sized for INLINE_CONCURRENCY renders at the
/// threshold, and one manifest must not be able to run it out of memory.
pub fn choose_executor(execution: Execution, probe: &ProbeInfo, policy: &ExecutorPolicy) -> Executor {
    let pixels = probe.pixels().saturating_mul(probe.frames.max(1));
    let too_large = pixels > policy.job_pixel_threshold;
    match execution {
        Execution::Job => Executor::Job,
        _ if too_large => Executor::Job,
        Execution::Inline => Executor::Inline,
        Execution::Auto if policy.risky_formats.contains(&probe.format) => Executor::Job,
        Execution::Auto => Executor::Inline,
    }
}

/// Whether `spec.source.bucket` (`None`: the configured bucket) may be read. Pure.
pub fn source_bucket_allowed(bucket: Option<&str>, allowed: &[String]) -> bool {
    bucket.is_none_or(|b| allowed.iter().any(|a| a == b))
}

/// The row a job gets in the job store when it has none yet (manifests applied by hand).
pub fn new_job(
    tj: &ThumbnailJob,
    id: Uuid,
    probe: &ProbeInfo,
    source_bytes: u64,
    default_bucket: &str,
) -> NewJob {
    NewJob {
        expires_at: None,
        webhook_url: None,
        id,
        owner: tj.spec.owner.clone(),
        source_bucket: tj.spec.source_bucket(default_bucket).to_owned(),
        source_key: tj.spec.source.key.clone(),
        source_format: probe.format,
        source_width: probe.width,
        source_height: probe.height,
        source_bytes,
        outputs: tj
            .spec
            .outputs
            .iter()
            .map(|o| CoreOutputSpec {
                name: o.name.clone(),
                options: engine_options(o),
            })
            .collect(),
        batch: None,
    }
}

/// The API's status for a phase.
pub fn job_status(phase: Phase) -> JobStatus {
    match phase {
        Phase::Pending => JobStatus::Pending,
        Phase::Running => JobStatus::Started,
        Phase::Succeeded => JobStatus::Success,
        Phase::Failed => JobStatus::Failure,
    }
}

pub fn to_job_output(o: &OutputStatus) -> JobOutput {
    JobOutput {
        name: o.name.clone(),
        bucket: o.bucket.clone(),
        key: o.key.clone(),
        width: o.width,
        height: o.height,
        bytes: o.bytes,
        content_type: o.content_type.clone(),
        sha256: o.sha256.clone(),
        thumbhash: o.thumbhash.clone(),
        blurhash: o.blurhash.clone(),
    }
}

/// Whether another attempt may start after `attempts` have (`backoffLimit` counts retries).
pub fn may_retry(attempts: i32, backoff_limit: i32) -> bool {
    attempts <= backoff_limit
}

/// When the deadline (`activeDeadlineSeconds` from the first start) has passed, the message.
pub fn deadline_exceeded(tj: &ThumbnailJob, now: Timestamp) -> Option<String> {
    let deadline = tj.spec.active_deadline_seconds?;
    let start = tj.status.as_ref()?.start_time.as_ref()?.0;
    let elapsed = now.duration_since(start).as_secs();
    (elapsed >= deadline)
        .then(|| format!("the job ran for {elapsed}s, longer than activeDeadlineSeconds ({deadline}s)"))
}

/// Time left until `activeDeadlineSeconds` passes (zero when it has); `None` without a deadline
/// or before the first start.
pub fn deadline_remaining(tj: &ThumbnailJob, now: Timestamp) -> Option<Duration> {
    let deadline = tj.spec.active_deadline_seconds?;
    let start = tj.status.as_ref()?.start_time.as_ref()?.0;
    let due = start
        .as_millisecond()
        .saturating_add(deadline.saturating_mul(1000));
    Some(Duration::from_millis(
        due.saturating_sub(now.as_millisecond()).max(0) as u64,
    ))
}

/// Why a render Job's pod is not running, from its pods and the Job's events: a pod's container
/// waiting reason other than the normal ones (`CreateContainerConfigError`: a missing Secret or
/// key; `ErrImagePull`), a pod that cannot be scheduled, or the Job controller's newest
/// `FailedCreate` event (a missing ServiceAccount, a quota, an admission webhook). `None` when
/// nothing says so. Pure.
pub fn start_problem(pods: &[Pod], events: &[CoreEvent]) -> Option<(String, String)> {
    const NORMAL: [&str; 2] = ["ContainerCreating", "PodInitializing"];
    for pod in pods {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let waiting = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
            .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
            .find(|w| w.reason.as_deref().is_some_and(|r| !NORMAL.contains(&r)));
        if let Some(w) = waiting {
            let reason = w.reason.clone().unwrap_or_default();
            let message = w.message.clone().unwrap_or_else(|| reason.clone());
            return Some((reason, message));
        }
        let unschedulable = status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        });
        if let Some(c) = unschedulable {
            let message = c
                .message
                .clone()
                .unwrap_or_else(|| "the pod cannot be scheduled".into());
            return Some(("Unschedulable".into(), message));
        }
    }
    events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreate"))
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .or(e.first_timestamp.as_ref())
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0)
        })
        .map(|e| {
            (
                "FailedCreate".to_owned(),
                e.message
                    .clone()
                    .unwrap_or_else(|| "the Job controller could not create the pod".into()),
            )
        })
}

/// Whether any pod of a render Job is running or has finished (it started, whatever happens
/// next). Pure.
pub fn any_pod_started(pods: &[Pod]) -> bool {
    pods.iter().any(|p| {
        matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running" | "Succeeded" | "Failed")
        )
    })
}

/// For a finished resource with `ttlSecondsAfterFinished`: how long until it is deleted (zero when
/// due). `None`: kept.
pub fn ttl_remaining(tj: &ThumbnailJob, now: Timestamp) -> Option<Duration> {
    let ttl = tj.spec.ttl_seconds_after_finished?;
    let status = tj.status.as_ref().filter(|s| s.is_finished())?;
    let done = status.completion_time.as_ref()?.0;
    let due = done.as_millisecond().saturating_add(i64::from(ttl.max(0)) * 1000);
    let left = due.saturating_sub(now.as_millisecond());
    Some(Duration::from_millis(left.max(0) as u64))
}

/// Name of the render Job of a job id (stable, so that creating it again is idempotent).
pub fn render_job_name(id: Uuid) -> String {
    format!("render-{id}")
}

/// Memory a render Job is given: decoded pixels (8 bytes each at most, what the engine budgets),
/// a resize buffer, the source bytes twice (download and decoder input) and a fixed overhead,
/// rounded up to MiB.
pub fn render_memory_bytes(probe: &ProbeInfo, source_bytes: u64, overhead: u64) -> u64 {
    let pixels = probe.pixels();
    let need = pixels
        .saturating_mul(8)
        .saturating_add(pixels.saturating_mul(4))
        .saturating_add(source_bytes.saturating_mul(2))
        .saturating_add(overhead);
    need.div_ceil(1 << 20) << 20
}

/// What the render Job gets from the operator's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderJobSettings {
    /// Where render Jobs run: the operator's own namespace, which holds their ServiceAccount and
    /// the credentials Secret, whichever namespace the ThumbnailJob is in.
    pub namespace: String,
    /// `ttlSecondsAfterFinished` of render Jobs.
    pub ttl_seconds_after_finished: i32,
    pub image: String,
    pub service_account: String,
    /// Secret with the S3 keys (never optional: a missing one keeps the pod from starting, which
    /// fails the ThumbnailJob with the cause); empty: ambient credentials.
    pub credentials_secret: String,
    pub cpu_request: String,
    pub memory_overhead_bytes: u64,
    /// Environment of the render container (S3 settings, limits, logging).
    pub env: Vec<(String, String)>,
}

/// Step 2 (job executor): the batch/v1 Job that runs `thumbnail-operator render` for `plan`.
pub fn render_job(
    tj: &ThumbnailJob,
    plan: &RenderPlan,
    probe: &ProbeInfo,
    source_bytes: u64,
    settings: &RenderJobSettings,
    now: Timestamp,
) -> Job {
    let name = render_job_name(plan.job_id);
    let mut labels = BTreeMap::from([
        (LABEL_JOB_ID.to_owned(), plan.job_id.to_string()),
        ("app.kubernetes.io/name".to_owned(), "thumbnail".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "render".to_owned()),
        ("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned()),
    ]);
    if let Some(uid) = tj.metadata.uid.clone() {
        labels.insert(LABEL_THUMBNAILJOB_UID.to_owned(), uid);
    }
    let tj_name = tj.name_any();
    if tj_name.len() <= 63 {
        labels.insert(LABEL_THUMBNAILJOB.to_owned(), tj_name);
    }
    let memory =
        Quantity(render_memory_bytes(probe, source_bytes, settings.memory_overhead_bytes).to_string());
    // Credentials only ever come from the Secret, whatever `env` holds.
    let mut env: Vec<EnvVar> = settings
        .env
        .iter()
        .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY")
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..EnvVar::default()
        })
        .collect();
    if !settings.credentials_secret.is_empty() {
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            env.push(EnvVar {
                name: key.to_owned(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: settings.credentials_secret.clone(),
                        key: key.to_owned(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    // The deadline counts from the first start, also across operator restarts.
    let deadline = tj.spec.active_deadline_seconds.map(|d| {
        let started = tj
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| now.duration_since(t.0).as_secs())
            .unwrap_or(0);
        (d - started).max(1)
    });
    let plan_json = serde_json::to_string(plan).expect("a render plan serializes");
    Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_THUMBNAILJOB.to_owned(),
                format!("{}/{}", tj.namespace().unwrap_or_default(), tj.name_any()),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(tj.spec.backoff_limit),
            ttl_seconds_after_finished: Some(settings.ttl_seconds_after_finished.max(0)),
            active_deadline_seconds: deadline,
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![
                    PodFailurePolicyRule {
                        action: "FailJob".into(),
                        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                            container_name: Some(RENDER_CONTAINER.into()),
                            operator: "In".into(),
                            values: vec![EXIT_BAD_INPUT],
                        }),
                        on_pod_conditions: None,
                    },
                    PodFailurePolicyRule {
                        action: "Ignore".into(),
                        on_exit_codes: None,
                        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                            type_: "DisruptionTarget".into(),
                            status: "True".into(),
                        }]),
                    },
                ],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(settings.service_account.clone()).filter(|s| !s.is_empty()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        run_as_group: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![Container {
                        name: RENDER_CONTAINER.into(),
                        image: Some(settings.image.clone()),
                        command: Some(vec!["thumbnail-operator".into()]),
                        args: Some(vec!["render".into(), "--plan".into(), plan_json]),
                        env: Some(env),
                        resources: Some(ResourceRequirements {
                            requests: Some(BTreeMap::from([
                                ("cpu".to_owned(), Quantity(settings.cpu_request.clone())),
                                ("memory".to_owned(), memory.clone()),
                            ])),
                            limits: Some(BTreeMap::from([("memory".to_owned(), memory)])),
                            ..ResourceRequirements::default()
                        }),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            run_as_non_root: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".into()]),
                                ..Capabilities::default()
                            }),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// The ThumbnailJob (`namespace`, `name`) a render Job works for, from its annotation. Pure.
pub fn thumbnailjob_of(job: &Job) -> Option<(String, String)> {
    let value = job.annotations().get(ANNOTATION_THUMBNAILJOB)?;
    let (namespace, name) = value.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| (namespace.to_owned(), name.to_owned()))
}

/// Whether a render Job works for `tj` (same uid: a ThumbnailJob deleted and created again under
/// the same name is another resource). Pure.
pub fn job_belongs_to(job: &Job, tj: &ThumbnailJob) -> bool {
    tj.metadata.uid.is_some() && job.labels().get(LABEL_THUMBNAILJOB_UID) == tj.metadata.uid.as_ref()
}

/// How a render Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Complete,
    /// Failed for good, with the Job's condition reason (`PodFailurePolicy`,
    /// `BackoffLimitExceeded`, `DeadlineExceeded`, ...) and message.
    Failed {
        reason: String,
        message: String,
    },
}

/// Reads a Job's conditions (set by the job controller).
pub fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let is_true = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if is_true("Complete").is_some() {
        return JobState::Complete;
    }
    if let Some(c) = is_true("Failed") {
        return JobState::Failed {
            reason: c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
            message: c
                .message
                .clone()
                .unwrap_or_else(|| "the render Job failed".into()),
        };
    }
    JobState::Running
}

/// Pods the Job has run so far (its attempts).
pub fn job_attempts(job: &Job) -> i32 {
    job.status
        .as_ref()
        .map(|s| s.failed.unwrap_or(0) + s.succeeded.unwrap_or(0) + s.active.unwrap_or(0))
        .unwrap_or(0)
        .max(1)
}

/// Step 4 (job executor): what a finished Job means for the resource. `Ok(outputs)` to succeed,
/// `Err((reason, message))` to fail.
pub fn job_outcome(
    state: &JobState,
    result: Option<&RenderResult>,
) -> Option<Result<Vec<OutputStatus>, (String, String)>> {
    match state {
        JobState::Running => None,
        JobState::Complete => Some(match result {
            Some(RenderResult { error: Some(e), .. }) => Err((e.reason.clone(), e.message.clone())),
            Some(r) if !r.outputs.is_empty() => Ok(r.outputs.clone()),
            _ => Err((
                REASON_OUTPUTS_MISSING.into(),
                "the render Job completed without writing its result".into(),
            )),
        }),
        JobState::Failed { reason, message } => Some(Err(match result.and_then(|r| r.error.clone()) {
            // The render refused the input (exit code 2): its own reason says why.
            Some(e) => (e.reason, e.message),
            None => (reason.clone(), message.clone()),
        })),
    }
}

/// The job row's failure for a failed status.
pub fn job_error(reason: &str, message: &str) -> JobError {
    JobError {
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thumbnail_crds::{ThumbnailJobSpec, ThumbnailJobStatus};

    fn tj(name: &str) -> ThumbnailJob {
        let mut tj = ThumbnailJob::new(name, ThumbnailJobSpec::for_key("images/original/a.jpg"));
        tj.metadata.namespace = Some("ns".into());
        tj.metadata.uid = Some("0190f3c2-7a1b-7c3d-8e4f-5a6b7c8d9e0f".into());
        tj
    }

    fn probe(w: u32, h: u32, format: ImageFormat) -> ProbeInfo {
        ProbeInfo {
            format,
            width: w,
            height: h,
            frames: 1,
            orientation: 1,
            has_alpha: false,
        }
    }

    #[test]
    fn validate_takes_the_job_id_or_the_uid() {
        let mut t = tj("a");
        assert_eq!(
            validate(&t).unwrap().id.to_string(),
            "0190f3c2-7a1b-7c3d-8e4f-5a6b7c8d9e0f"
        );
        t.spec.job_id = Some("11111111-2222-3333-4444-555555555555".into());
        assert_eq!(
            validate(&t).unwrap().id.to_string(),
            "11111111-2222-3333-4444-555555555555"
        );
        t.spec.outputs[0].width = 0;
        assert!(validate(&t).unwrap_err().contains("width"));
        let mut t = tj("b");
        t.metadata.uid = Some("not-a-uuid".into());
        assert!(validate(&t).unwrap_err().contains("not a UUID"));
    }

    #[test]
    fn keys_follow_the_layout_and_the_source_format() {
        let t = tj("a");
        let id = validate(&t).unwrap().id;
        let keys = KeyLayout::new("p");
        let plan = plan(&t, id, ImageFormat::Gif, &keys);
        assert_eq!(plan.outputs[0].key, format!("p/images/thumbnail/{id}.png"));
        assert_eq!(plan.result_key, format!("p/images/thumbnail/{id}.result.json"));
        let all = possible_keys(&t, id, &keys);
        assert!(all.contains(&format!("p/images/thumbnail/{id}.jpg")));
        assert!(all.contains(&plan.result_key));
    }

    #[test]
    fn auto_goes_to_a_job_for_big_or_risky_images() {
        let policy = ExecutorPolicy {
            job_pixel_threshold: 1_000_000,
            risky_formats: vec![ImageFormat::Gif],
        };
        let small = probe(100, 100, ImageFormat::Jpeg);
        let big = probe(2000, 1000, ImageFormat::Jpeg);
        assert_eq!(
            choose_executor(Execution::Auto, &small, &policy),
            Executor::Inline
        );
        assert_eq!(choose_executor(Execution::Auto, &big, &policy), Executor::Job);
        assert_eq!(
            choose_executor(Execution::Auto, &probe(10, 10, ImageFormat::Gif), &policy),
            Executor::Job
        );
        // Over the threshold even `inline` goes to a Job: the operator's memory is sized for
        // renders up to it.
        assert_eq!(choose_executor(Execution::Inline, &big, &policy), Executor::Job);
        assert_eq!(
            choose_executor(Execution::Inline, &probe(10, 10, ImageFormat::Gif), &policy),
            Executor::Inline,
            "inline wins over risky formats"
        );
        assert_eq!(choose_executor(Execution::Job, &small, &policy), Executor::Job);
    }

    #[test]
    fn only_allowed_buckets_are_read() {
        let allowed = vec!["thumbnails".to_owned(), "uploads".to_owned()];
        assert!(source_bucket_allowed(None, &allowed));
        assert!(source_bucket_allowed(Some("uploads"), &allowed));
        assert!(!source_bucket_allowed(Some("payroll"), &allowed));
    }

    #[test]
    fn why_a_render_pod_does_not_start() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
        };
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let waiting = |reason: &str, message: &str| Pod {
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "render".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some(message.into()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let event = |reason: &str, message: &str, at: i64| CoreEvent {
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_timestamp: Some(Time(Timestamp::from_second(at).unwrap())),
            ..CoreEvent::default()
        };
        assert_eq!(start_problem(&[waiting("ContainerCreating", "")], &[]), None);
        assert_eq!(
            start_problem(
                &[waiting(
                    "CreateContainerConfigError",
                    "secret \"creds\" not found"
                )],
                &[]
            ),
            Some((
                "CreateContainerConfigError".into(),
                "secret \"creds\" not found".into()
            ))
        );
        let unschedulable = Pod {
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/3 nodes are available".into()),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            start_problem(&[unschedulable], &[]),
            Some(("Unschedulable".into(), "0/3 nodes are available".into()))
        );
        let events = [
            event("FailedCreate", "serviceaccount \"old\" not found", 10),
            event("SuccessfulCreate", "Created pod", 30),
            event("FailedCreate", "serviceaccount \"render\" not found", 20),
        ];
        assert_eq!(
            start_problem(&[], &events),
            Some((
                "FailedCreate".into(),
                "serviceaccount \"render\" not found".into()
            )),
            "the newest FailedCreate"
        );
        let running = Pod {
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert!(any_pod_started(&[waiting("ErrImagePull", ""), running]));
        assert!(!any_pod_started(&[waiting("ErrImagePull", "")]));
    }

    #[test]
    fn render_job_is_locked_down_and_sized() {
        let mut t = tj("a");
        t.spec.active_deadline_seconds = Some(300);
        t.spec.backoff_limit = 2;
        let id = validate(&t).unwrap().id;
        let plan = plan(&t, id, ImageFormat::Jpeg, &KeyLayout::new(""));
        let settings = RenderJobSettings {
            namespace: "thumbnail-system".into(),
            ttl_seconds_after_finished: 600,
            image: "img:1".into(),
            service_account: "render".into(),
            credentials_secret: "creds".into(),
            cpu_request: "250m".into(),
            memory_overhead_bytes: 64 << 20,
            env: vec![
                ("S3_BUCKET_NAME".into(), "b".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "secret".into()),
            ],
        };
        let job = render_job(
            &t,
            &plan,
            &probe(4000, 3000, ImageFormat::Jpeg),
            1 << 20,
            &settings,
            Timestamp::now(),
        );
        assert_eq!(
            job.metadata.name.as_deref(),
            Some(format!("render-{id}").as_str())
        );
        // In the operator's namespace, tied to the ThumbnailJob by uid label and annotation (an
        // owner reference cannot cross namespaces).
        assert_eq!(job.metadata.namespace.as_deref(), Some("thumbnail-system"));
        assert!(job.metadata.owner_references.is_none());
        assert!(job_belongs_to(&job, &t));
        assert_eq!(thumbnailjob_of(&job), Some(("ns".into(), "a".into())));
        let mut other = tj("a");
        other.metadata.uid = Some("another-uid".into());
        assert!(!job_belongs_to(&job, &other), "same name, another resource");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.ttl_seconds_after_finished, Some(600));
        assert_eq!(spec.backoff_limit, Some(2));
        assert_eq!(spec.active_deadline_seconds, Some(300));
        let rule = &spec.pod_failure_policy.as_ref().unwrap().rules[0];
        assert_eq!(rule.action, "FailJob");
        assert_eq!(rule.on_exit_codes.as_ref().unwrap().values, vec![2]);
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.read_only_root_filesystem, sc.run_as_non_root),
            (Some(true), Some(true))
        );
        let mem = &c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0;
        // 12 MP * 12 B + 2 MiB + 64 MiB
        assert_eq!(
            mem.parse::<u64>().unwrap(),
            (12_000_000u64 * 12 + (2 << 20) + (64 << 20)).div_ceil(1 << 20) << 20
        );
        let env = c.env.as_ref().unwrap();
        assert!(
            env.iter().all(|e| e.value.as_deref() != Some("secret")),
            "no literal secret"
        );
        let secret = env
            .iter()
            .find(|e| e.name == "AWS_SECRET_ACCESS_KEY")
            .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
            .expect("the secret key comes from the Secret");
        assert_eq!((secret.name.as_str(), secret.optional), ("creds", Some(false)));
        // Without a Secret, no credentials at all (ambient ones), never the literal values.
        let ambient = render_job(
            &t,
            &plan,
            &probe(4000, 3000, ImageFormat::Jpeg),
            1 << 20,
            &RenderJobSettings {
                credentials_secret: String::new(),
                ..settings.clone()
            },
            Timestamp::now(),
        );
        let env = ambient.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(env.iter().all(|e| !e.name.starts_with("AWS_")), "{env:?}");
        let args = c.args.as_ref().unwrap();
        let back: RenderPlan = serde_json::from_str(&args[2]).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn ttl_and_deadline() {
        let mut t = tj("a");
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        t.spec.ttl_seconds_after_finished = Some(60);
        let mut s = ThumbnailJobStatus::pending(Some(1), t0);
        assert_eq!(ttl_remaining(&t, t0), None, "no status: kept");
        s.start_attempt(Executor::Inline, None, "op-a", Some(1), t0);
        t.status = Some(s.clone());
        assert_eq!(ttl_remaining(&t, t0), None, "running: kept");
        t.spec.active_deadline_seconds = Some(10);
        assert!(deadline_exceeded(&t, Timestamp::from_second(1_000_009).unwrap()).is_none());
        assert!(deadline_exceeded(&t, Timestamp::from_second(1_000_010).unwrap()).is_some());
        assert_eq!(
            deadline_remaining(&t, Timestamp::from_second(1_000_004).unwrap()),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            deadline_remaining(&t, Timestamp::from_second(1_000_020).unwrap()),
            Some(Duration::ZERO)
        );
        s.succeed(vec![], Some(1), t0);
        t.status = Some(s);
        assert_eq!(
            ttl_remaining(&t, Timestamp::from_second(1_000_020).unwrap()),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            ttl_remaining(&t, Timestamp::from_second(1_000_090).unwrap()),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn job_outcomes() {
        let id = Uuid::nil();
        let ok = RenderResult {
            job_id: id,
            outputs: vec![OutputStatus {
                name: "default".into(),
                bucket: "b".into(),
                key: "k".into(),
                width: 1,
                height: 1,
                bytes: 1,
                content_type: "image/png".into(),
                sha256: "00".into(),
                thumbhash: None,
                blurhash: None,
            }],
            error: None,
        };
        assert_eq!(job_outcome(&JobState::Running, Some(&ok)), None);
        assert!(matches!(job_outcome(&JobState::Complete, Some(&ok)), Some(Ok(o)) if o.len() == 1));
        assert!(
            matches!(job_outcome(&JobState::Complete, None), Some(Err((r, _))) if r == REASON_OUTPUTS_MISSING)
        );
        let bad = RenderResult {
            job_id: id,
            outputs: vec![],
            error: Some(job_error("CorruptImage", "truncated")),
        };
        let failed = JobState::Failed {
            reason: "PodFailurePolicy".into(),
            message: "exit 2".into(),
        };
        assert_eq!(
            job_outcome(&failed, Some(&bad)),
            Some(Err(("CorruptImage".into(), "truncated".into())))
        );
        let deadline = JobState::Failed {
            reason: "DeadlineExceeded".into(),
            message: "too slow".into(),
        };
        assert_eq!(
            job_outcome(&deadline, None),
            Some(Err(("DeadlineExceeded".into(), "too slow".into())))
        );
    }
}
