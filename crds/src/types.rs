//! The `ThumbnailJob` custom resource: spec and status types.
//!
//! The schema generated from these types (see [`crate::crd`]) is what the API server validates
//! against, so every constraint here is enforced at `kubectl apply` time for hand-written
//! (GitOps) manifests too. [`ThumbnailJobSpec::validate`] repeats the same rules in Rust for callers
//! that want to refuse a spec before sending it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most outputs one job may ask for.
pub const MAX_OUTPUTS: usize = 16;
/// Largest width or height of one output, in pixels.
pub const MAX_DIMENSION: u32 = 4096;
/// Default JPEG/WebP quality.
pub const DEFAULT_QUALITY: u8 = 80;
/// Default number of retries after a failed attempt.
pub const DEFAULT_BACKOFF_LIMIT: i32 = 3;
/// Largest accepted `backoffLimit`.
pub const MAX_BACKOFF_LIMIT: i32 = 10;
/// Name of the output that a spec without `outputs` gets.
pub const DEFAULT_OUTPUT_NAME: &str = "default";
/// Size of the default output (the original service's 100x100 thumbnail).
pub const DEFAULT_OUTPUT_SIZE: u32 = 100;

/// What to make of one image: a `ThumbnailJob` reads `source` from the object store and writes one
/// object per entry of `outputs`.
// Each `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "thumbnailer.dev",
    version = "v1alpha1",
    kind = "ThumbnailJob",
    plural = "thumbnailjobs",
    singular = "thumbnailjob",
    namespaced,
    shortname = "tj",
    category = "thumbnails",
    status = "ThumbnailJobStatus",
    derive = "PartialEq",
    doc = "A request to make thumbnails of one image held in the object store. Created by the \
           thumbnail API for uploads, or written by hand (GitOps) for objects already in the bucket.",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Running, Succeeded or Failed"
    ),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.source.key",
        description = "Object key of the original image"
    ),
    printcolumn(
        name = "Outputs",
        type_ = "string",
        json_path = ".spec.outputs[*].name",
        description = "Names of the requested thumbnails"
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".status.duration",
        description = "Time from the start of the first attempt to completion, as measured by the operator"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Executor",
        type_ = "string",
        json_path = ".status.executor",
        priority = 1,
        description = "inline (operator process) or job (batch/v1 Job)"
    ),
    printcolumn(
        name = "Attempts",
        type_ = "integer",
        json_path = ".status.attempts",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.failureReason",
        priority = 1
    ),
    selectable = ".spec.owner",
    selectable = ".status.phase"
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.jobId) || (has(self.jobId) && self.jobId == oldSelf.jobId)"
).message("jobId cannot be changed or removed once set"))]
#[serde(rename_all = "camelCase")]
pub struct ThumbnailJobSpec {
    /// The original image. Immutable.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("source is immutable; create a new ThumbnailJob"))]
    pub source: SourceRef,

    /// Thumbnails to make, each written as its own object. Names must be unique. Immutable.
    /// Default: one 100x100 `cover` output named `default`.
    #[serde(default = "default_outputs")]
    #[schemars(length(min = 1, max = 16))]
    #[x_kube(
        merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]),
        validation = kube::core::Rule::new("self == oldSelf").message("outputs are immutable; create a new ThumbnailJob")
    )]
    pub outputs: Vec<OutputSpec>,

    /// Where the work runs: `inline` in the operator's bounded worker pool, `job` in a
    /// batch/v1 Job (isolation for large or untrusted images), `auto` lets the operator decide by
    /// image size.
    #[serde(default)]
    pub execution: Execution,

    /// Seconds after completion (success or failure) after which the operator deletes this
    /// ThumbnailJob. Unset: kept until deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Retries after a failed attempt before the job is marked Failed.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,

    /// Seconds the job may run, counted from its first start, before it is failed with reason
    /// `DeadlineExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Free-form owner (user, tenant or client) recorded with the job; selectable with
    /// `kubectl get tj --field-selector spec.owner=NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub owner: Option<String>,

    /// The job's id in the REST API and job store (a UUID). Set by the API; hand-written
    /// manifests leave it out and the operator uses `metadata.uid`. Cannot change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub job_id: Option<String>,
}

/// The original image in the object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRef {
    /// Bucket holding the image. Unset: the operator's configured bucket (`S3_BUCKET_NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 63), regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$"))]
    pub bucket: Option<String>,
    /// Object key of the image, e.g. `images/original/example.jpg`.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
}

/// One thumbnail to make.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.animated) || !self.animated || !has(self.format) || self.format in ['gif', 'webp']",
    "message": "animated thumbnails are written as gif or webp"
}]))]
pub struct OutputSpec {
    /// Name of this output, unique within the job (lowercase letters, digits and `-`).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Width in pixels.
    #[schemars(range(min = 1, max = 4096), extend("format" = "int32"))]
    pub width: u32,
    /// Height in pixels.
    #[schemars(range(min = 1, max = 4096), extend("format" = "int32"))]
    pub height: u32,
    /// How the image is fitted into width x height.
    #[serde(default)]
    pub fit: Fit,
    /// Output format. Unset: the input's format where it can be written, else JPEG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
    /// Encoder quality for lossy formats (JPEG, WebP).
    #[serde(default = "default_quality")]
    #[schemars(range(min = 1, max = 100), extend("format" = "int32"))]
    pub quality: u8,
    /// Allow the thumbnail to be larger than the original (off: a 16x16 icon stays 16x16).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upscale: bool,
    /// What `cover` keeps when it crops: a side, a corner, the centre, or `smart` (the most
    /// interesting part, by an attention measure). Ignored by `contain` and `fill`.
    #[serde(default, skip_serializing_if = "Gravity::is_centre")]
    pub gravity: Gravity,
    /// Keep the animation of an animated GIF or WebP (as GIF or WebP; `format` must be one of
    /// them or unset). Off: the first frame, as a still image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub animated: bool,
}

/// How an image is fitted into the requested box.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Scale to fill the box and centre-crop the overflow (the original service's behaviour).
    #[default]
    Cover,
    /// Scale to fit inside the box, keeping the aspect ratio; the result may be smaller.
    Contain,
    /// Stretch to exactly the box, ignoring the aspect ratio.
    Fill,
}

/// Which part of the image `cover` keeps when it crops (in the displayed orientation).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Gravity {
    /// The middle (the original service's behaviour).
    #[default]
    Centre,
    /// The top edge.
    North,
    /// The bottom edge.
    South,
    /// The right edge.
    East,
    /// The left edge.
    West,
    /// The top right corner.
    Northeast,
    /// The top left corner.
    Northwest,
    /// The bottom right corner.
    Southeast,
    /// The bottom left corner.
    Southwest,
    /// The most interesting part: edges, skin tones and saturated colour (libvips' `attention`).
    Smart,
}

impl Gravity {
    fn is_centre(&self) -> bool {
        *self == Gravity::Centre
    }
}

/// Output image format.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// JPEG (`image/jpeg`).
    Jpeg,
    /// PNG (`image/png`).
    Png,
    /// WebP (`image/webp`).
    Webp,
    /// AVIF (`image/avif`).
    Avif,
    /// GIF (`image/gif`), e.g. for animated thumbnails of GIFs.
    Gif,
}

impl ImageFormat {
    /// The MIME type of the format.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "image/jpeg",
            ImageFormat::Png => "image/png",
            ImageFormat::Webp => "image/webp",
            ImageFormat::Avif => "image/avif",
            ImageFormat::Gif => "image/gif",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpg",
            ImageFormat::Png => "png",
            ImageFormat::Webp => "webp",
            ImageFormat::Avif => "avif",
            ImageFormat::Gif => "gif",
        }
    }
}

/// Where a job is asked to run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    /// The operator decides (by pixel count, `JOB_PIXEL_THRESHOLD`).
    #[default]
    Auto,
    /// In the operator's own bounded worker pool.
    Inline,
    /// In a batch/v1 Job running `thumbnail-operator render`.
    Job,
}

/// Where a job did run (`status.executor`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Executor {
    /// In the operator's own worker pool.
    Inline,
    /// In a batch/v1 Job (`status.kubernetesJob` names it).
    Job,
}

/// Lifecycle phase (`status.phase`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Accepted, not started yet (or waiting to retry).
    #[default]
    Pending,
    /// An attempt is under way.
    Running,
    /// All outputs were written.
    Succeeded,
    /// Failed for good (bad input, retries exhausted or deadline exceeded).
    Failed,
}

impl Phase {
    /// Whether the phase is final.
    pub fn is_finished(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    /// The phase as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// Observed state of a `ThumbnailJob`, written by the operator (status subresource); the API
/// writes `webhook` only, with its own field manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThumbnailJobStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Standard conditions: `Running`, `Succeeded`, `Failed` (each True, False or Unknown), so
    /// that `kubectl wait --for=condition=Succeeded tj/NAME` works.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Attempts started so far (the first one included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job succeeded or failed for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// `completionTime - startTime`, human-readable (e.g. `850ms`, `12s`, `3m4s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// The objects written, one per requested output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputStatus>,
    /// Machine-readable reason of the failure (CamelCase), e.g. `UnsupportedFormat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Human-readable failure message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the job ran: `inline` or `job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<Executor>,
    /// Name of the batch/v1 Job, when the executor is `job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_job: Option<String>,
    /// Identity (leader-election Lease holder) of the operator replica that claimed the current
    /// attempt. Only that replica may finish it; another counts it as interrupted only once the
    /// claimant no longer holds the Lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<String>,
    /// The completion webhook of a job uploaded through the API with a `webhook_url`: its
    /// delivery's state and last attempt (written by the API; every attempt is listed by
    /// `GET /api/v1/jobs/{id}/deliveries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,
}

/// Where a job's completion webhook stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The `webhook-id` header of its attempts.
    pub delivery_id: String,
    /// `thumbnail.job.succeeded`, `thumbnail.job.failed` or `thumbnail.batch.completed`.
    pub event_type: String,
    /// pending, delivered, failed or disabled.
    pub state: String,
    /// Attempts made so far.
    pub attempts: i32,
    /// When the next attempt is due, while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_time: Option<Time>,
    pub last_attempt: WebhookAttemptStatus,
}

/// One webhook attempt.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttemptStatus {
    pub time: Time,
    /// The HTTP status of the answer; absent when none came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    /// delivered, gone, redirect, http_error, timeout, refused or connect_error.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One object written by a job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputStatus {
    /// The output's name from the spec.
    pub name: String,
    /// Bucket the object was written to.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Actual width in pixels.
    #[schemars(extend("format" = "int32"))]
    pub width: u32,
    /// Actual height in pixels.
    #[schemars(extend("format" = "int32"))]
    pub height: u32,
    /// Object size in bytes.
    #[schemars(extend("format" = "int64"))]
    pub bytes: u64,
    /// MIME type, e.g. `image/jpeg`.
    pub content_type: String,
    /// Lower-case hex SHA-256 of the object's bytes.
    pub sha256: String,
    /// ThumbHash (standard base64) of the first output, a tiny preview to show while it loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbhash: Option<String>,
    /// BlurHash of the first output, like `thumbhash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blurhash: Option<String>,
}

fn default_outputs() -> Vec<OutputSpec> {
    vec![OutputSpec::default()]
}

fn default_backoff_limit() -> i32 {
    DEFAULT_BACKOFF_LIMIT
}

fn default_quality() -> u8 {
    DEFAULT_QUALITY
}

impl Default for OutputSpec {
    /// The original service's thumbnail: 100x100, cover, quality 80, input format.
    fn default() -> Self {
        OutputSpec {
            name: DEFAULT_OUTPUT_NAME.to_owned(),
            width: DEFAULT_OUTPUT_SIZE,
            height: DEFAULT_OUTPUT_SIZE,
            fit: Fit::Cover,
            format: None,
            quality: DEFAULT_QUALITY,
            upscale: false,
            gravity: Gravity::Centre,
            animated: false,
        }
    }
}

impl ThumbnailJobSpec {
    /// A spec with every default (one 100x100 cover thumbnail) for `key` in the default bucket.
    pub fn for_key(key: impl Into<String>) -> Self {
        ThumbnailJobSpec {
            source: SourceRef {
                bucket: None,
                key: key.into(),
            },
            outputs: default_outputs(),
            execution: Execution::Auto,
            ttl_seconds_after_finished: None,
            backoff_limit: DEFAULT_BACKOFF_LIMIT,
            active_deadline_seconds: None,
            owner: None,
            job_id: None,
        }
    }

    /// The bucket to read from: `source.bucket`, else `default_bucket`.
    pub fn source_bucket<'a>(&'a self, default_bucket: &'a str) -> &'a str {
        self.source.bucket.as_deref().unwrap_or(default_bucket)
    }
}

impl ThumbnailJob {
    /// The job's id: `spec.jobId` when set (jobs created by the API), else `metadata.uid`
    /// (hand-written manifests). `None` only for an object not yet stored by the API server.
    pub fn job_id(&self) -> Option<&str> {
        self.spec.job_id.as_deref().or(self.metadata.uid.as_deref())
    }

    /// The status phase, `Pending` when there is no status yet.
    pub fn phase(&self) -> Phase {
        self.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
    }

    /// Whether the job has succeeded or failed for good.
    pub fn is_finished(&self) -> bool {
        self.phase().is_finished()
    }
}
