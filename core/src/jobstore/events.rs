//! In-process notice of finished jobs, so a request can wait for a job (long-poll) instead of the
//! client polling: every `finish` that lands through [`NotifyingJobStore`] is broadcast by id.
//!
//! On PostgreSQL, jobs other processes finish (the operator, another replica) arrive too, relayed
//! from `pg_notify` by `relay_finished_jobs`. Waiters still re-read the store now and then, for
//! notifications lost while that connection was down.
use super::{Binding, Caps, DynJobStore, JobStore, Outcome, OwnerUsage, Refusal, ResourceRef, RowBinding};
use crate::Result;
use crate::batches::{BatchRecord, NewBatch};
use crate::model::{JobRecord, JobStatus, ListQuery, NewJob};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Broadcast of the ids of jobs finished in this process. Cheap to clone.
#[derive(Clone)]
pub struct JobEvents {
    finished: broadcast::Sender<Uuid>,
}

impl JobEvents {
    pub fn new() -> Self {
        // A waiter that falls this far behind gets `Lagged` and simply re-reads its job.
        let (finished, _) = broadcast::channel(1024);
        JobEvents { finished }
    }

    /// Subscribe before reading the job, so a finish between the read and the wait is not missed.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.finished.subscribe()
    }

    /// How many subscribers are listening now (requests waiting in a long-poll, relays).
    pub fn waiters(&self) -> usize {
        self.finished.receiver_count()
    }

    /// Tell the waiters that job `id` finished (also used for finishes other processes report).
    pub fn publish(&self, id: Uuid) {
        // No receivers is fine: nobody is waiting.
        let _ = self.finished.send(id);
    }
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new()
    }
}

/// A job store that publishes every landed `finish` on [`JobEvents`].
pub struct NotifyingJobStore {
    inner: DynJobStore,
    events: JobEvents,
}

impl NotifyingJobStore {
    pub fn wrap(inner: DynJobStore, events: JobEvents) -> DynJobStore {
        Arc::new(NotifyingJobStore { inner, events })
    }
}

#[async_trait]
impl JobStore for NotifyingJobStore {
    async fn create(&self, job: &NewJob) -> Result<JobRecord> {
        self.inner.create(job).await
    }

    async fn admit(&self, job: &NewJob, caps: &Caps) -> Result<Result<JobRecord, Refusal>> {
        self.inner.admit(job, caps).await
    }

    async fn usage(&self, owner: &str) -> Result<OwnerUsage> {
        self.inner.usage(owner).await
    }

    async fn count_dependency_retry(&self, id: Uuid, attempt: u32) -> Result<bool> {
        self.inner.count_dependency_retry(id, attempt).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<JobRecord>> {
        self.inner.get(id).await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<JobRecord>> {
        self.inner.list(query).await
    }

    async fn start(&self, id: Uuid) -> Result<Option<JobRecord>> {
        self.inner.start(id).await
    }

    async fn finish(&self, id: Uuid, attempt: u32, outcome: &Outcome) -> Result<bool> {
        let landed = self.inner.finish(id, attempt, outcome).await?;
        if landed {
            self.events.publish(id);
        }
        Ok(landed)
    }

    async fn unfinished(&self, limit: u32) -> Result<Vec<Uuid>> {
        self.inner.unfinished(limit).await
    }

    async fn bind_resource(&self, id: Uuid, resource: &ResourceRef) -> Result<Binding> {
        self.inner.bind_resource(id, resource).await
    }

    async fn resource_binding(&self, id: Uuid) -> Result<RowBinding> {
        self.inner.resource_binding(id).await
    }

    async fn delete(&self, id: Uuid) -> Result<bool> {
        self.inner.delete(id).await
    }

    async fn known_ids(&self, ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>> {
        self.inner.known_ids(ids).await
    }

    async fn apply_default_expiry(&self, retention: std::time::Duration) -> Result<u64> {
        self.inner.apply_default_expiry(retention).await
    }

    async fn expired(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<JobRecord>> {
        self.inner.expired(now, limit).await
    }

    async fn count_expired(&self, now: DateTime<Utc>) -> Result<u64> {
        self.inner.count_expired(now).await
    }

    async fn mark_purged(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
        self.inner.mark_purged(id, now).await
    }

    async fn delete_purged(&self, before: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.inner.delete_purged(before, limit).await
    }

    async fn expire_now(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
        self.inner.expire_now(id, now).await
    }

    async fn create_batch(&self, batch: &NewBatch) -> Result<()> {
        self.inner.create_batch(batch).await
    }

    async fn get_batch(&self, id: Uuid) -> Result<Option<BatchRecord>> {
        self.inner.get_batch(id).await
    }

    async fn batch_jobs(&self, id: Uuid) -> Result<Vec<JobRecord>> {
        self.inner.batch_jobs(id).await
    }

    async fn delete_expired_batches(&self, before: DateTime<Utc>) -> Result<u64> {
        self.inner.delete_expired_batches(before).await
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>> {
        self.inner.count_by_status().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{JobError, OutputSpec};
    use thumbnail_engine::{ImageFormat, ThumbnailOptions};

    #[tokio::test]
    async fn a_landed_finish_is_published_and_a_stale_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/jobs.db?mode=rwc", dir.path().display());
        let inner = crate::jobstore::connect(&url, 1).await.unwrap();
        let events = JobEvents::new();
        let store = NotifyingJobStore::wrap(inner, events.clone());
        let mut rx = events.subscribe();
        let id = Uuid::new_v4();
        let new = NewJob {
            expires_at: None,
            webhook_url: None,
            id,
            owner: None,
            source_bucket: "uploads".into(),
            source_key: format!("images/original/{id}.jpg"),
            source_format: ImageFormat::Jpeg,
            source_width: 640,
            source_height: 480,
            source_bytes: 1234,
            outputs: vec![OutputSpec::default_output(ThumbnailOptions::default())],
            batch: None,
        };
        let job = store.create(&new).await.unwrap();
        let started = store.start(job.id).await.unwrap().unwrap();
        let failure = Outcome::Failure(JobError {
            reason: "CorruptImage".into(),
            message: "test".into(),
        });
        // A stale attempt does not land, so nothing is published.
        assert!(
            !store
                .finish(job.id, started.attempts + 1, &failure)
                .await
                .unwrap()
        );
        assert!(rx.try_recv().is_err());
        assert!(store.finish(job.id, started.attempts, &failure).await.unwrap());
        assert_eq!(rx.try_recv().unwrap(), job.id);
    }
}
