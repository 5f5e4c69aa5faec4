//! The job as every component sees it: the row in the job store and the object the API returns.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thumbnail_engine::{ImageFormat, ThumbnailOptions};
use uuid::Uuid;

/// The API's job states, exactly the original service's (Celery's) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    Pending,
    Started,
    Success,
    Failure,
}

impl JobStatus {
    pub const ALL: [JobStatus; 4] = [
        JobStatus::Pending,
        JobStatus::Started,
        JobStatus::Success,
        JobStatus::Failure,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Started => "STARTED",
            JobStatus::Success => "SUCCESS",
            JobStatus::Failure => "FAILURE",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Success | JobStatus::Failure)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PENDING" => Ok(JobStatus::Pending),
            "STARTED" => Ok(JobStatus::Started),
            "SUCCESS" => Ok(JobStatus::Success),
            "FAILURE" => Ok(JobStatus::Failure),
            other => Err(format!(
                "'{other}' is not one of PENDING, STARTED, SUCCESS, FAILURE"
            )),
        }
    }
}

/// One thumbnail a job produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    /// The output's name within the job ("default" for the original single thumbnail).
    pub name: String,
    pub bucket: String,
    pub key: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub content_type: String,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// ThumbHash (base64) of this output: set on a job's first output (see
    /// [`crate::placeholder`]); absent on the others and on jobs finished before placeholders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbhash: Option<String>,
    /// BlurHash of this output, like `thumbhash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blurhash: Option<String>,
}

/// Why a job failed: a stable machine-readable reason and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub reason: String,
    pub message: String,
}

/// A named output request (the API makes one, named "default"; a ThumbnailJob may ask for several).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    pub name: String,
    #[serde(flatten)]
    pub options: ThumbnailOptions,
}

impl OutputSpec {
    pub fn default_output(options: ThumbnailOptions) -> Self {
        OutputSpec {
            name: DEFAULT_OUTPUT.to_owned(),
            options,
        }
    }
}

pub const DEFAULT_OUTPUT: &str = "default";

/// What the API knows when it accepts an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    pub id: Uuid,
    pub owner: Option<String>,
    pub source_bucket: String,
    pub source_key: String,
    pub source_format: ImageFormat,
    pub source_width: u32,
    pub source_height: u32,
    pub source_bytes: u64,
    pub outputs: Vec<OutputSpec>,
    /// When the job's original, thumbnails and row are deleted; `None`: the retention default,
    /// applied by the next sweep (see `thumbnail_core::retention`).
    pub expires_at: Option<DateTime<Utc>>,
    /// Where to POST the signed completion event (see `thumbnail_core::webhooks`); checked by
    /// the API ([`crate::webhooks::validate_url`]).
    pub webhook_url: Option<String>,
    /// The batch it was uploaded in, and its place there (see `crate::batches`).
    pub batch: Option<BatchSlot>,
}

/// A job's place in its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSlot {
    pub batch_id: Uuid,
    /// The image's position in the upload, from 0.
    pub index: u32,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: Uuid,
    pub status: JobStatus,
    pub owner: Option<String>,
    pub source_bucket: String,
    pub source_key: String,
    pub source_format: ImageFormat,
    pub source_width: u32,
    pub source_height: u32,
    pub source_bytes: u64,
    pub outputs_requested: Vec<OutputSpec>,
    pub outputs: Vec<JobOutput>,
    pub error: Option<JobError>,
    /// How many times processing started (1 on the first run; more after crashes or retries).
    pub attempts: u32,
    /// How many of those attempts ended because a dependency (object store, database) was
    /// unavailable; the others count against the embedded runner's attempt cap.
    pub dependency_retries: u32,
    /// Bumped on every write; conditional updates compare it.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the job expires (its images and row are deleted); `None` until the next sweep gives
    /// a row written without one the default.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the sweeper deleted its images: the row is then a tombstone, answered 410 Gone.
    pub purged_at: Option<DateTime<Utc>>,
    /// The batch it was uploaded in, if any.
    #[serde(default)]
    pub batch_id: Option<Uuid>,
}

impl JobRecord {
    /// Expired: deleted or due for deletion at `now` (only finished jobs expire).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.purged_at.is_some() || (self.status.is_finished() && self.expires_at.is_some_and(|at| at <= now))
    }
}

/// Position in the newest-first list: the last item of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl ListCursor {
    pub fn after(job: &JobRecord) -> Self {
        ListCursor {
            created_at: job.created_at,
            id: job.id,
        }
    }

    /// Opaque text form: `{microseconds since epoch}_{uuid}`, URL-safe.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at.timestamp_micros(), self.id.simple())
    }

    pub fn decode(s: &str) -> Option<Self> {
        let (micros, id) = s.split_once('_')?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        Some(ListCursor {
            created_at,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// A page request for the list endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub status: Option<JobStatus>,
    pub owner: Option<String>,
    pub after: Option<ListCursor>,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            limit: 100,
            status: None,
            owner: None,
            after: None,
        }
    }
}

/// Timestamps are kept at microsecond precision so that every store round-trips them exactly.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = ListCursor {
            created_at: now(),
            id: Uuid::new_v4(),
        };
        assert_eq!(ListCursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(ListCursor::decode("nonsense"), None);
        assert_eq!(ListCursor::decode("12_notauuid"), None);
    }

    #[test]
    fn status_names_are_the_originals() {
        assert_eq!(serde_json::to_string(&JobStatus::Success).unwrap(), "\"SUCCESS\"");
        assert_eq!("started".parse::<JobStatus>().unwrap(), JobStatus::Started);
        assert!("DONE".parse::<JobStatus>().is_err());
    }
}
