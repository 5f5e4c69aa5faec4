//! Batches: many images uploaded in one request with one set of options. Each accepted image is
//! an ordinary job carrying its batch id and position (`model::BatchSlot`); the batch row keeps
//! the upload's answer for every entry in order (a job id, or why that image was refused), so
//! that `GET /api/v1/batches/{id}` can say `N/M` from the jobs' own rows. A batch with a webhook
//! URL gets one `thumbnail.batch.completed` event when its last job finishes
//! ([`batch_event`], enqueued by the webhook dispatcher).
use crate::model::{JobRecord, JobStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const EVENT_BATCH_COMPLETED: &str = "thumbnail.batch.completed";

/// One image of a batch as the upload answered it: a job, or a refusal with its HTTP status and
/// reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// Position in the upload, from 0.
    pub index: u32,
    /// The file name the client sent, if any (shown, never used as a path).
    pub filename: Option<String>,
    pub job_id: Option<Uuid>,
    /// For a refused image: the status a single upload of it would have answered.
    pub status: Option<u16>,
    pub detail: Option<String>,
}

impl BatchEntry {
    pub fn accepted(index: u32, filename: Option<String>, job_id: Uuid) -> Self {
        BatchEntry {
            index,
            filename,
            job_id: Some(job_id),
            status: None,
            detail: None,
        }
    }

    pub fn refused(index: u32, filename: Option<String>, status: u16, detail: String) -> Self {
        BatchEntry {
            index,
            filename,
            job_id: None,
            status: Some(status),
            detail: Some(detail),
        }
    }
}

/// What the upload stores once every entry is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBatch {
    pub id: Uuid,
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub entries: Vec<BatchEntry>,
    pub webhook_url: Option<String>,
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: Uuid,
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub entries: Vec<BatchEntry>,
    pub webhook_url: Option<String>,
    /// When its completion event was written to the outbox.
    pub notified_at: Option<DateTime<Utc>>,
}

/// Counts of a batch's images by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Images in the upload.
    pub total: u32,
    /// Images that became jobs.
    pub accepted: u32,
    /// Images refused at upload (their entry says why).
    pub refused: u32,
    pub pending: u32,
    pub started: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Jobs whose row is gone or purged (expired or deleted early).
    pub expired: u32,
}

impl Progress {
    /// Finished jobs (succeeded, failed or expired).
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed + self.expired
    }

    /// Every job of the batch is finished.
    pub fn is_done(&self) -> bool {
        self.finished() == self.accepted
    }
}

/// The batch's progress from its entries and its jobs' rows (`jobs`: those still in the store).
/// Pure.
pub fn progress(entries: &[BatchEntry], jobs: &[JobRecord]) -> Progress {
    let mut p = Progress {
        total: entries.len() as u32,
        ..Progress::default()
    };
    for entry in entries {
        let Some(id) = entry.job_id else {
            p.refused += 1;
            continue;
        };
        p.accepted += 1;
        match jobs.iter().find(|j| j.id == id) {
            None => p.expired += 1,
            Some(job) if job.purged_at.is_some() => p.expired += 1,
            Some(job) => match job.status {
                JobStatus::Pending => p.pending += 1,
                JobStatus::Started => p.started += 1,
                JobStatus::Success => p.succeeded += 1,
                JobStatus::Failure => p.failed += 1,
            },
        }
    }
    p
}

#[derive(Serialize)]
struct BatchEventBody<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: BatchEventData<'a>,
}

#[derive(Serialize)]
struct BatchEventData<'a> {
    batch_id: Uuid,
    progress: Progress,
    jobs: Vec<BatchEventJob<'a>>,
}

#[derive(Serialize)]
struct BatchEventJob<'a> {
    index: u32,
    filename: Option<&'a str>,
    job_id: Option<Uuid>,
    /// The job's status, or REFUSED for an image refused at upload, or EXPIRED.
    status: &'a str,
    error: Option<&'a str>,
}

/// The `thumbnail.batch.completed` event of a finished batch at `at`: its progress and every
/// entry's outcome (job id, status, reason), in upload order. Pure.
pub fn batch_event(
    batch: &BatchRecord,
    jobs: &[JobRecord],
    at: DateTime<Utc>,
) -> crate::webhooks::OutboxEvent {
    let entries: Vec<BatchEventJob> = batch
        .entries
        .iter()
        .map(|entry| {
            let job = entry.job_id.and_then(|id| jobs.iter().find(|j| j.id == id));
            let (status, error) = match (entry.job_id, job) {
                (None, _) => ("REFUSED", entry.detail.as_deref()),
                (Some(_), None) => ("EXPIRED", None),
                (Some(_), Some(job)) => (
                    job.status.as_str(),
                    job.error.as_ref().map(|e| e.message.as_str()),
                ),
            };
            BatchEventJob {
                index: entry.index,
                filename: entry.filename.as_deref(),
                job_id: entry.job_id,
                status,
                error,
            }
        })
        .collect();
    let body = BatchEventBody {
        event_type: EVENT_BATCH_COMPLETED,
        timestamp: at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        data: BatchEventData {
            batch_id: batch.id,
            progress: progress(&batch.entries, jobs),
            jobs: entries,
        },
    };
    crate::webhooks::OutboxEvent {
        id: format!("msg_{}", Uuid::now_v7().simple()),
        event_type: EVENT_BATCH_COMPLETED,
        payload: serde_json::to_string(&body).expect("the event serialises"),
        created_at: at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobError;

    fn job(id: Uuid, status: JobStatus) -> JobRecord {
        let mut job = JobRecord {
            status,
            ..crate::testsupport::job_record(id)
        };
        if status == JobStatus::Failure {
            job.error = Some(JobError {
                reason: "corrupt".into(),
                message: "truncated".into(),
            });
        }
        job
    }

    #[test]
    fn progress_counts_every_entry_once() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let entries = vec![
            BatchEntry::accepted(0, Some("a.jpg".into()), ids[0]),
            BatchEntry::refused(1, Some("b.txt".into()), 415, "not an image".into()),
            BatchEntry::accepted(2, None, ids[1]),
            BatchEntry::accepted(3, None, ids[2]),
            BatchEntry::accepted(4, None, ids[3]),
            BatchEntry::accepted(5, None, ids[4]),
        ];
        let mut purged = job(ids[4], JobStatus::Success);
        purged.purged_at = Some(crate::model::now());
        let jobs = vec![
            job(ids[0], JobStatus::Success),
            job(ids[1], JobStatus::Failure),
            job(ids[2], JobStatus::Started),
            purged,
        ];
        let p = progress(&entries, &jobs);
        assert_eq!(
            p,
            Progress {
                total: 6,
                accepted: 5,
                refused: 1,
                pending: 0,
                started: 1,
                succeeded: 1,
                failed: 1,
                expired: 2,
            }
        );
        assert_eq!(p.finished(), 4);
        assert!(!p.is_done());
        let done = progress(&entries[..2], &jobs);
        assert!(done.is_done());
    }

    #[test]
    fn the_event_lists_every_entry_in_order() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = BatchRecord {
            id: Uuid::new_v4(),
            owner: None,
            created_at: crate::model::now(),
            expires_at: crate::model::now(),
            entries: vec![
                BatchEntry::accepted(0, Some("a.jpg".into()), a),
                BatchEntry::refused(1, Some("b.txt".into()), 415, "not an image".into()),
                BatchEntry::accepted(2, Some("c.png".into()), b),
            ],
            webhook_url: Some("https://example.com/hook".into()),
            notified_at: None,
        };
        let jobs = vec![job(a, JobStatus::Success), job(b, JobStatus::Failure)];
        let event = batch_event(&batch, &jobs, crate::model::now());
        assert_eq!(event.event_type, EVENT_BATCH_COMPLETED);
        let body: serde_json::Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(body["type"], EVENT_BATCH_COMPLETED);
        assert_eq!(body["data"]["batch_id"], batch.id.to_string());
        assert_eq!(body["data"]["progress"]["succeeded"], 1);
        assert_eq!(body["data"]["progress"]["failed"], 1);
        assert_eq!(body["data"]["progress"]["refused"], 1);
        let statuses: Vec<&str> = body["data"]["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["SUCCESS", "REFUSED", "FAILURE"]);
        assert_eq!(body["data"]["jobs"][1]["error"], "not an image");
        assert_eq!(body["data"]["jobs"][2]["error"], "truncated");
    }
}
