//! Signed completion webhooks (the Standard Webhooks specification).
//!
//! An upload may name a `webhook_url` (kept on the job row). The job store's `finish` writes the
//! event into an outbox (`webhook_deliveries`) in the same statement that marks the job
//! terminal, whichever process finishes it, so that a finished job with a URL always has its
//! delivery on record before anything is sent. [`dispatcher::Dispatcher`]s claim due deliveries
//! with a lease (one replica at a time), sign and POST them, record every attempt, and retry on
//! [`schedule::RetrySchedule`] until one is answered 2xx, the target answers 410 Gone, the SSRF
//! rule ([`ssrf`]) refuses it, or the schedule is used up. Delivery is at least once: a receiver
//! dedupes by `webhook-id`.
mod postgres;
mod sqlite;

pub mod dispatcher;
pub mod schedule;
pub mod signature;
pub mod ssrf;

use crate::Result;
use crate::jobstore::Outcome;
use crate::model::JobStatus;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

pub use postgres::PostgresDeliveryStore;
pub use sqlite::SqliteDeliveryStore;

/// Longest accepted `webhook_url` (the upload form's text field cap).
pub const MAX_URL_LEN: usize = 1024;

pub const EVENT_SUCCEEDED: &str = "thumbnail.job.succeeded";
pub const EVENT_FAILED: &str = "thumbnail.job.failed";

/// Check an upload's `webhook_url`: absolute http(s), a host, at most [`MAX_URL_LEN`]
/// characters, no credentials in it (they would be stored and shown; put a token in the path or
/// query instead). Returns the URL as it will be called. Pure.
pub fn validate_url(raw: &str) -> std::result::Result<String, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("at most {MAX_URL_LEN} characters, got {}", raw.len()));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not an absolute URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "the scheme must be http or https, got '{}'",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL (user:password@) are not accepted; the payload is \
                    signed with WEBHOOK_SECRET, verify that instead"
                .into(),
        );
    }
    if url.fragment().is_some() {
        return Err("a fragment (#...) is never sent to a server; remove it".into());
    }
    Ok(url.to_string())
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet; the next attempt is at `next_attempt_at`.
    Pending,
    /// A 2xx answer came.
    Delivered,
    /// Every attempt of the schedule failed, or the SSRF rule refused the target.
    Failed,
    /// The target answered 410 Gone: no more attempts.
    Disabled,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            "disabled" => DeliveryState::Disabled,
            other => {
                return Err(crate::CoreError::Corrupt(format!(
                    "webhook delivery state in the database: '{other}'"
                )));
            }
        })
    }
}

/// The outbox row `finish` writes: what will be sent (the same bytes on every attempt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The `webhook-id`: `msg_` and a UUID.
    pub id: String,
    pub event_type: &'static str,
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize)]
struct EventBody<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: EventData<'a>,
}

#[derive(Serialize)]
struct EventData<'a> {
    job_id: Uuid,
    status: JobStatus,
    result: Option<EventResult<'a>>,
    error: Option<&'a crate::model::JobError>,
}

#[derive(Serialize)]
struct EventResult<'a> {
    thumbnails: Vec<EventThumbnail<'a>>,
}

#[derive(Serialize)]
struct EventThumbnail<'a> {
    name: &'a str,
    bucket: &'a str,
    key: &'a str,
    width: u32,
    height: u32,
    bytes: u64,
    content_type: &'a str,
    sha256: &'a str,
}

/// The event of job `job_id` ending with `outcome` at `at`. Pure.
pub fn event_for(job_id: Uuid, outcome: &Outcome, at: DateTime<Utc>) -> OutboxEvent {
    let (event_type, status, result, error) = match outcome {
        Outcome::Success(outputs) => (
            EVENT_SUCCEEDED,
            JobStatus::Success,
            Some(EventResult {
                thumbnails: outputs
                    .iter()
                    .map(|o| EventThumbnail {
                        name: &o.name,
                        bucket: &o.bucket,
                        key: &o.key,
                        width: o.width,
                        height: o.height,
                        bytes: o.bytes,
                        content_type: &o.content_type,
                        sha256: &o.sha256,
                    })
                    .collect(),
            }),
            None,
        ),
        Outcome::Failure(err) => (EVENT_FAILED, JobStatus::Failure, None, Some(err)),
    };
    let body = EventBody {
        event_type,
        timestamp: at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        data: EventData {
            job_id,
            status,
            result,
            error,
        },
    };
    OutboxEvent {
        id: format!("msg_{}", Uuid::now_v7().simple()),
        event_type,
        payload: serde_json::to_string(&body).expect("the event serialises"),
        created_at: at,
    }
}

/// One attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The HTTP status of the answer; `None` when none came (timeout, refused, connection error).
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// `delivered`, `gone`, `redirect`, `http_error`, `timeout`, `connect_error` or `refused`.
    pub outcome: String,
    pub error: Option<String>,
}

/// A delivery claimed by a dispatcher: its lease `token` must match to record the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: String,
    pub job_id: Uuid,
    pub url: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    pub token: Uuid,
}

/// Where a delivery goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Retry(DateTime<Utc>),
    Delivered,
    Failed,
    Disabled,
}

/// The state, next attempt time and finish time a delivery has after an attempt at `at`. Pure.
pub(crate) fn columns_of(
    next: Next,
    at: DateTime<Utc>,
) -> (DeliveryState, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    match next {
        Next::Retry(when) => (DeliveryState::Pending, Some(when), None),
        Next::Delivered => (DeliveryState::Delivered, None, Some(at)),
        Next::Failed => (DeliveryState::Failed, None, Some(at)),
        Next::Disabled => (DeliveryState::Disabled, None, Some(at)),
    }
}

/// A delivery with its attempts, for `GET /api/v1/jobs/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: String,
    pub event_type: String,
    pub url: String,
    pub state: DeliveryState,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub attempts: Vec<Attempt>,
}

#[async_trait]
pub trait DeliveryStore: Send + Sync + 'static {
    /// Claim up to `limit` pending deliveries due at `now` whose lease is free or ran out, each
    /// leased for `lease` to the returned token. Concurrent claimers never get the same row.
    async fn claim_due(&self, now: DateTime<Utc>, lease: Duration, limit: u32) -> Result<Vec<Claimed>>;

    /// Record `attempt` of `claimed` and move it to `next`, releasing the lease; false (nothing
    /// written) when the lease was lost to another dispatcher.
    async fn record(
        &self,
        claimed: &Claimed,
        attempt: &Attempt,
        next: Next,
        error: Option<&str>,
    ) -> Result<bool>;

    /// Give a claim back unattempted (the dispatcher is stopping), so that it need not wait for
    /// its lease to run out.
    async fn release(&self, claimed: &Claimed) -> Result<()>;

    /// The deliveries of a job with their attempts, oldest first.
    async fn of_job(&self, job_id: Uuid) -> Result<Vec<Delivery>>;

    /// Deliveries not delivered, failed or disabled yet (the backlog).
    async fn pending(&self) -> Result<u64>;

    /// Up to `limit` batches with a webhook URL, not notified yet, none of whose jobs is
    /// unfinished (a finished job never becomes unfinished again, so once listed a batch stays
    /// complete).
    async fn batches_to_notify(&self, limit: u32) -> Result<Vec<Uuid>>;

    /// Write batch `batch_id`'s completion `event` for `url` into the outbox, attached to
    /// `anchor_job` (one of its jobs), and mark the batch notified, in one transaction; false
    /// when another dispatcher did it first.
    async fn enqueue_batch_event(
        &self,
        batch_id: Uuid,
        anchor_job: Uuid,
        url: &str,
        event: &OutboxEvent,
    ) -> Result<bool>;
}

pub type DynDeliveryStore = Arc<dyn DeliveryStore>;

/// Where a delivery stands after an attempt, for [`DeliveryObserver`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub job_id: Uuid,
    /// The `webhook-id`.
    pub delivery_id: String,
    pub event_type: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt: Attempt,
}

/// Told of every recorded attempt (after the job store has it), e.g. to show it on the job's
/// ThumbnailJob. Best effort: the job store stays the record.
#[async_trait]
pub trait DeliveryObserver: Send + Sync + 'static {
    async fn attempted(&self, report: &DeliveryReport);
}

/// The delivery store on the job store's database (its migrations applied by the job store).
pub async fn connect(url: &str, max_connections: u32) -> Result<DynDeliveryStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteDeliveryStore::connect(url).await?))
    } else {
        Ok(Arc::new(PostgresDeliveryStore::connect(url, max_connections)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobError, JobOutput};

    #[test]
    fn urls_are_checked() {
        assert_eq!(
            validate_url("https://example.com/hook?t=1").unwrap(),
            "https://example.com/hook?t=1"
        );
        assert_eq!(validate_url("http://Example.COM").unwrap(), "http://example.com/");
        assert!(
            validate_url("ftp://example.com/")
                .unwrap_err()
                .contains("http or https, got 'ftp'")
        );
        assert!(
            validate_url("example.com/hook")
                .unwrap_err()
                .contains("not an absolute URL")
        );
        assert!(
            validate_url("https://user:pw@example.com/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(
            validate_url("https://user@example.com/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(
            validate_url("https://example.com/#x")
                .unwrap_err()
                .contains("fragment")
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(
            validate_url(&long)
                .unwrap_err()
                .contains("at most 1024 characters")
        );
    }

    #[test]
    fn events_carry_the_result_or_the_error() {
        let id = Uuid::nil();
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let output = JobOutput {
            name: "default".into(),
            bucket: "b".into(),
            key: "images/thumbnail/x.jpg".into(),
            width: 100,
            height: 80,
            bytes: 1234,
            content_type: "image/jpeg".into(),
            sha256: "ab".into(),
            thumbhash: Some("ignored".into()),
            blurhash: None,
        };
        let ok = event_for(id, &Outcome::Success(vec![output]), at);
        assert!(ok.id.starts_with("msg_"));
        assert_eq!(ok.event_type, EVENT_SUCCEEDED);
        let body: serde_json::Value = serde_json::from_str(&ok.payload).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "thumbnail.job.succeeded",
                "timestamp": "2023-11-14T22:13:20.000000Z",
                "data": {
                    "job_id": id, "status": "SUCCESS", "error": null,
                    "result": {"thumbnails": [{"name": "default", "bucket": "b",
                        "key": "images/thumbnail/x.jpg", "width": 100, "height": 80, "bytes": 1234,
                        "content_type": "image/jpeg", "sha256": "ab"}]}
                }
            })
        );
        let failed = event_for(
            id,
            &Outcome::Failure(JobError {
                reason: "corrupt".into(),
                message: "bad".into(),
            }),
            at,
        );
        assert_eq!(failed.event_type, EVENT_FAILED);
        let body: serde_json::Value = serde_json::from_str(&failed.payload).unwrap();
        assert_eq!(body["data"]["status"], "FAILURE");
        assert_eq!(body["data"]["result"], serde_json::Value::Null);
        assert_eq!(
            body["data"]["error"],
            serde_json::json!({"reason": "corrupt", "message": "bad"})
        );
        assert_ne!(ok.id, failed.id);
    }
}
