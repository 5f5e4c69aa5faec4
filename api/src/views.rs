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
    /// ThumbHash (standard base64) of this output, to show while it loads: set on the first
    /// output of a job, `null` on the others.
    pub thumbhash: Option<String>,
    /// BlurHash of this output, like `thumbhash`.
    pub blurhash: Option<String>,
}

/// Tiny previews of a successful job's first thumbnail.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct PlaceholderView {
    /// ThumbHash, standard base64 (https://evanw.github.io/thumbhash/).
    #[schema(example = "3OcRJYB4d3h/iIeHeEh3eIhw+j2w")]
    pub thumbhash: String,
    /// BlurHash (https://blurha.sh).
    #[schema(example = "LEHV6nWB2yk8pyo0adR*.7kCMdnj")]
    pub blurhash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct SourceView {
    pub bucket: String,
    pub key: String,
    /// Detected from the bytes: jpeg, png, webp, gif, heic, avif, jxl, tiff, bmp, ico or svg.
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
    /// jpeg, png, webp, avif or gif (`format=auto` is stored as the format it chose); absent
    /// means the input's format.
    pub format: Option<String>,
    pub quality: u8,
    /// What `cover` keeps: centre, north, south, east, west, northeast, northwest, southeast,
    /// southwest or smart.
    pub gravity: String,
    /// Whether an animated input keeps its animation.
    pub animated: bool,
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
    /// Set on SUCCESS: placeholders of the first output (the one `result` names).
    pub placeholder: Option<PlaceholderView>,
    /// When the job's original, thumbnails, links and record are deleted (RETENTION_SECONDS, or
    /// the upload's `retention_seconds`); after it the job answers 410 Gone for a while, then 404.
    pub expires_at: Option<DateTime<Utc>>,
    /// The batch it was uploaded in (`POST /api/v1/batches/`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<Uuid>,
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
        let placeholder = (job.status == JobStatus::Success)
            .then(|| job.outputs.first())
            .flatten()
            .and_then(|o| match (&o.thumbhash, &o.blurhash) {
                (Some(thumbhash), Some(blurhash)) => Some(PlaceholderView {
                    thumbhash: thumbhash.clone(),
                    blurhash: blurhash.clone(),
                }),
                _ => None,
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
                    gravity: o.options.gravity.as_str().to_owned(),
                    animated: o.options.animated,
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
                    thumbhash: o.thumbhash.clone(),
                    blurhash: o.blurhash.clone(),
                })
                .collect(),
            placeholder,
            expires_at: job.expires_at,
            batch_id: job.batch_id,
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

/// An API key as listed: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct KeyView {
    /// The key's public id (the 12 characters after `thn_`), for `DELETE /api/v1/keys/{id}`.
    #[schema(example = "k3Yb0TqM7aXw")]
    pub id: String,
    pub owner: String,
    /// Of `submit`, `read`, `admin`.
    pub scopes: Vec<String>,
    pub name: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Where uploads made with this key send their completion event unless they name their own.
    pub webhook_url: Option<String>,
}

impl KeyView {
    pub fn new(key: &thumbnail_core::apikeys::ApiKeyRecord, now: DateTime<Utc>) -> Self {
        KeyView {
            id: key.id.clone(),
            owner: key.owner.clone(),
            scopes: key.scopes.names().into_iter().map(str::to_owned).collect(),
            name: key.name.clone(),
            state: key.state(now).as_str().to_owned(),
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            webhook_url: key.webhook_url.clone(),
        }
    }
}

/// A new key: the secret is in this answer and nowhere else.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKey {
    /// The key to send as `Authorization: Bearer …` or `X-API-Key: …`. Shown once.
    #[schema(example = "thn_k3Yb0TqM7aXw_…")]
    pub key: String,
    #[serde(flatten)]
    pub info: KeyView,
}

/// The scopes a key may hold.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScopeName {
    Submit,
    Read,
    Admin,
}

impl From<ScopeName> for thumbnail_core::apikeys::Scope {
    fn from(s: ScopeName) -> Self {
        match s {
            ScopeName::Submit => thumbnail_core::apikeys::Scope::Submit,
            ScopeName::Read => thumbnail_core::apikeys::Scope::Read,
            ScopeName::Admin => thumbnail_core::apikeys::Scope::Admin,
        }
    }
}

/// What `POST /api/v1/keys` makes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Who the key acts for: 1-253 printable ASCII characters without spaces.
    #[schema(pattern = "^[!-~]{1,253}$", example = "alice")]
    pub owner: String,
    /// Default: `["submit", "read"]`.
    #[schema(min_items = 1, max_items = 3)]
    pub scopes: Option<Vec<ScopeName>>,
    /// A label for people: at most 200 characters, no control characters.
    #[schema(max_length = 200, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: Option<String>,
    /// Lifetime in whole seconds (1 to 100 years); default: no expiry.
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 3_153_600_000_u64)]
    pub expires_in_seconds: Option<serde_json::Number>,
    /// Default `webhook_url` of the uploads made with the key (an upload's own wins): an http or
    /// https URL without credentials, at most 1024 characters. Needs WEBHOOK_SECRET on the server.
    #[schema(max_length = 1024)]
    pub webhook_url: Option<String>,
}
