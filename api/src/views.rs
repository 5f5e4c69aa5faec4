//! The JSON shapes of the REST contract. Field names and the `status` values are the original
//! service's; every addition is a new field, never a changed one.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thumbnail_core::model::{JobRecord, JobStatus};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Started,
    Success,
    Failure,
}

impl From<JobStatus> for Status {
    fn from(s: JobStatus) -> Self {
        match s {
            JobStatus::Pending => Status::Pending,
            JobStatus::Started => Status::Started,
            JobStatus::Success => Status::Success,
            JobStatus::Failure => Status::Failure,
        }
    }
}

/// Answer to an accepted upload (202).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobAccepted {
    pub job_id: Uuid,
    #[schema(example = "Started to generate thumbnail")]
    pub message: String,
}

/// Where the thumbnail is: the original service's `result`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct JobResult {
    pub job_id: Uuid,
    /// The object store's endpoint (for the embedded default, this API's public URL).
    pub endpoint_url: String,
    pub bucket: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct JobFailure {
    /// Stable machine-readable reason, e.g. `CorruptImage`, `TooManyPixels`.
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct OutputView {
    pub name: String,
    pub bucket: String,
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct SourceView {
    pub bucket: String,
    pub key: String,
    /// Detected from the bytes: jpeg, png, webp or gif.
    pub format: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// cover, contain or fill.
    pub fit: String,
    /// jpeg, png or webp; absent means the input's format.
    pub format: Option<String>,
    pub quality: u8,
}

/// A job: the original's three fields, then additions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct JobView {
    pub job_id: Uuid,
    pub status: Status,
    /// Set on SUCCESS: where the thumbnail is. `null` otherwise.
    pub result: Option<JobResult>,
    /// Set on FAILURE: why.
    pub error: Option<JobFailure>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Times processing started (more than 1 after a restart or a transient error).
    pub attempts: u32,
    pub owner: Option<String>,
    pub source: SourceView,
    pub requested: Vec<RequestedOutput>,
    pub outputs: Vec<OutputView>,
}

impl JobView {
    pub fn new(job: &JobRecord, endpoint_url: &str) -> Self {
        let result = (job.status == JobStatus::Success)
            .then(|| job.outputs.first())
            .flatten()
            .map(|o| JobResult {
                job_id: job.id,
                endpoint_url: endpoint_url.to_owned(),
                bucket: o.bucket.clone(),
                key: o.key.clone(),
            });
        JobView {
            job_id: job.id,
            status: job.status.into(),
            result,
            error: job.error.as_ref().map(|e| JobFailure {
                reason: e.reason.clone(),
                message: e.message.clone(),
            }),
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            attempts: job.attempts,
            owner: job.owner.clone(),
            source: SourceView {
                bucket: job.source_bucket.clone(),
                key: job.source_key.clone(),
                format: job.source_format.as_str().to_owned(),
                width: job.source_width,
                height: job.source_height,
                bytes: job.source_bytes,
            },
            requested: job
                .outputs_requested
                .iter()
                .map(|o| RequestedOutput {
                    name: o.name.clone(),
                    width: o.options.width,
                    height: o.options.height,
                    fit: o.options.fit.as_str().to_owned(),
                    format: o.options.format.map(|f| f.as_str().to_owned()),
                    quality: o.options.quality,
                })
                .collect(),
            outputs: job
                .outputs
                .iter()
                .map(|o| OutputView {
                    name: o.name.clone(),
                    bucket: o.bucket.clone(),
                    key: o.key.clone(),
                    width: o.width,
                    height: o.height,
                    bytes: o.bytes,
                    content_type: o.content_type.clone(),
                    sha256: o.sha256.clone(),
                })
                .collect(),
        }
    }
}

/// A download link for a finished job's thumbnail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ThumbnailUrl {
    pub job_id: Uuid,
    /// Presigned (S3) or signed (embedded) URL; no credentials needed until it expires.
    pub thumbnail_url: String,
    pub expires_at: DateTime<Utc>,
    /// Which output the link is for.
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    #[schema(example = "healthy")]
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    pub status: String,
    /// Per dependency: `ok` or what failed.
    pub checks: std::collections::BTreeMap<String, String>,
    /// Set when not ready: which dependency is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
