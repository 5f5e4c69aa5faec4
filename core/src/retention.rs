//! Retention: jobs expire (`expires_at`), and a sweeper deletes what they stored, in an order
//! that survives being killed at any point:
//!
//! 1. rows written without an expiry get the default (`created_at + RETENTION_SECONDS`);
//! 2. for each expired finished job: delete what it has outside the stores (in Kubernetes mode its
//!    ThumbnailJob, whose finalizer removes its render Job: a [`ResourceReaper`]), then its
//!    thumbnails and its original (deletes of things already gone succeed), then mark the row
//!    purged (a tombstone, answered 410 Gone);
//! 3. tombstones older than the grace period are deleted (then 404);
//! 4. expired idempotency keys are deleted;
//! 5. every `orphan_scan_every`, objects under the service's own key prefixes whose job has no
//!    row (a crash between storing the original and inserting its row, or a row removed by
//!    hand) and that are older than `orphan_grace` are deleted ([`Sweeper::scan_orphans`]).
//!
//! A sweeper killed between 2's deletes and its mark finds the job again next time and deletes
//! what is left; one killed after the mark has nothing left to delete. A job whose deletes fail
//! (the Kubernetes API or S3 down) stays unmarked for the next sweep; the others go on. Several sweepers (API
//! replicas) may run at once: every step is idempotent and the mark is conditional.
use crate::Result;
use crate::idempotency::DynIdempotencyStore;
use crate::jobstore::DynJobStore;
use crate::keys::KeyLayout;
use crate::model::JobRecord;
use crate::objects::DynObjectStore;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Jobs read per round of a sweep.
const BATCH: u32 = 100;

/// How long things are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// A job's lifetime unless its upload asked for another (RETENTION_SECONDS).
    pub default: Duration,
    /// The longest an upload may ask for (MAX_RETENTION_SECONDS).
    pub max: Duration,
    /// How long a purged job answers 410 Gone before it is forgotten (404).
    pub gone_grace: Duration,
    /// Time between sweeps (RETENTION_SWEEP_SECONDS).
    pub sweep_every: Duration,
    /// Time between orphan scans (ORPHAN_SCAN_SECONDS), which list every object the service
    /// stored, so run less often than sweeps.
    pub orphan_scan_every: Duration,
    /// How old an object without a row must be before it counts as an orphan
    /// (ORPHAN_GRACE_SECONDS): longer than any upload or render takes to write its row.
    pub orphan_grace: Duration,
}

impl RetentionPolicy {
    /// The expiry of a job created at `created` asking for `requested` (None: the default).
    /// Pure; `requested` must be within `max` (the API checks it and says so).
    pub fn expiry(&self, created: DateTime<Utc>, requested: Option<Duration>) -> DateTime<Utc> {
        let lifetime = requested.unwrap_or(self.default).min(self.max);
        created + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX)
    }
}

/// What the sweeper did, for metrics and `/metrics`.
#[derive(Debug, Default)]
pub struct RetentionMetrics {
    pub objects_deleted: Counter,
    pub bytes_deleted: Counter,
    pub jobs_purged: Counter,
    pub rows_deleted: Counter,
    pub orphans_deleted: Counter,
    /// Expired jobs still to purge after the last sweep.
    pub backlog: Gauge,
    pub sweep_seconds: SweepHistogram,
}

/// Seconds per sweep.
#[derive(Debug)]
pub struct SweepHistogram(pub Histogram);

impl Default for SweepHistogram {
    fn default() -> Self {
        // 1 ms .. ~30 s
        SweepHistogram(Histogram::new(exponential_buckets(0.001, 2.0, 16)))
    }
}

impl RetentionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "thumbnail_retention_objects_deleted",
            "Objects (originals and thumbnails) deleted by retention or an early delete",
            self.objects_deleted.clone(),
        );
        registry.register(
            "thumbnail_retention_bytes_deleted",
            "Bytes of the objects deleted by retention or an early delete",
            self.bytes_deleted.clone(),
        );
        registry.register(
            "thumbnail_retention_jobs_purged",
            "Jobs whose images were deleted (their rows answer 410 Gone for the grace period)",
            self.jobs_purged.clone(),
        );
        registry.register(
            "thumbnail_retention_rows_deleted",
            "Job rows removed after the grace period",
            self.rows_deleted.clone(),
        );
        registry.register(
            "thumbnail_retention_orphans_deleted",
            "Objects deleted because no job row knows them (also counted in objects_deleted)",
            self.orphans_deleted.clone(),
        );
        registry.register(
            "thumbnail_retention_backlog",
            "Expired jobs not yet purged, after the last sweep",
            self.backlog.clone(),
        );
        registry.register(
            "thumbnail_retention_sweep_duration_seconds",
            "Time one retention sweep took",
            self.sweep_seconds.0.clone(),
        );
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub defaulted: u64,
    pub jobs_purged: u64,
    pub objects_deleted: u64,
    pub bytes_deleted: u64,
    pub rows_deleted: u64,
    pub keys_deleted: u64,
    /// Expired jobs left for the next sweep (a failure part-way, or more than one sweep takes).
    pub backlog: u64,
    /// Jobs whose purge failed in this sweep (logged; retried by the next one).
    pub failed: u64,
}

/// Deletes what a job has outside the job store and the object store: in Kubernetes mode its
/// ThumbnailJob (and so, through the operator's finalizer, its render Job). Called by
/// [`Sweeper::purge`] before the job's objects are deleted and its row becomes a tombstone, so
/// that a job whose resources could not be deleted is found again by the next sweep.
#[async_trait]
pub trait ResourceReaper: Send + Sync {
    /// Delete the resources of `job`. Idempotent: what is gone already counts as deleted (a
    /// sweeper killed half-way repeats it). An error leaves the job for the next sweep.
    async fn reap(&self, job: &JobRecord) -> Result<()>;
}

pub type DynReaper = Arc<dyn ResourceReaper>;

pub struct Sweeper {
    pub jobs: DynJobStore,
    pub objects: DynObjectStore,
    pub keys: KeyLayout,
    pub idempotency: Option<DynIdempotencyStore>,
    pub policy: RetentionPolicy,
    pub metrics: Arc<RetentionMetrics>,
    /// Deletes each purged job's external resources first (Kubernetes mode); `None` when jobs
    /// have none (the embedded runner).
    pub reaper: Option<DynReaper>,
}

/// What one orphan scan did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OrphanReport {
    /// Objects looked at under the service's prefixes.
    pub scanned: u64,
    pub deleted: u64,
    pub bytes_deleted: u64,
}

/// The job an object of the service's layout belongs to: its file name starts with the job id,
/// followed by `.` (the default output, the original) or `-` (a named output). Other names under
/// the prefixes are not the service's and are left alone. Pure.
pub fn job_of_key(key: &str) -> Option<uuid::Uuid> {
    let name = key.rsplit('/').next()?;
    let (id, rest) = (name.get(..36)?, name.get(36..)?);
    if !(rest.starts_with('.') || rest.starts_with('-')) {
        return None;
    }
    uuid::Uuid::parse_str(id).ok()
}

/// Objects listed per page of an orphan scan (S3's largest page).
const LIST_PAGE: u32 = 1000;

/// The objects a job stored, with their sizes: its thumbnails, and its original when the service
/// stored it (a GitOps ThumbnailJob's source, named by its author, is theirs to keep). Pure.
pub fn objects_of(job: &JobRecord, keys: &KeyLayout, bucket: &str) -> Vec<(String, u64)> {
    let mut objects: Vec<(String, u64)> = job
        .outputs
        .iter()
        .filter(|o| o.bucket == bucket)
        .map(|o| (o.key.clone(), o.bytes))
        .collect();
    if job.source_bucket == bucket && job.source_key == keys.original(job.id, job.source_format.extension()) {
        objects.push((job.source_key.clone(), job.source_bytes));
    }
    objects
}

impl Sweeper {
    /// Delete the job's resources (the reaper's) and objects, then mark its row purged. Safe to
    /// repeat and to run after a crash half-way. Returns the objects and bytes deleted by this
    /// call.
    pub async fn purge(&self, job: &JobRecord, now: DateTime<Utc>) -> Result<(u64, u64)> {
        if let Some(reaper) = &self.reaper {
            reaper.reap(job).await?;
        }
        let objects = objects_of(job, &self.keys, self.objects.bucket());
        let (mut count, mut bytes) = (0, 0);
        for (key, size) in &objects {
            self.objects.delete(key).await?;
            count += 1;
            bytes += size;
        }
        if self.jobs.mark_purged(job.id, now).await? {
            self.metrics.jobs_purged.inc();
            self.metrics.objects_deleted.inc_by(count);
            self.metrics.bytes_deleted.inc_by(bytes);
            Ok((count, bytes))
        } else {
            // Another sweeper purged it meanwhile; it counted the objects.
            Ok((0, 0))
        }
    }

    /// One sweep at `now`.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<SweepReport> {
        let started = Instant::now();
        let mut report = SweepReport {
            defaulted: self.jobs.apply_default_expiry(self.policy.default).await?,
            ..SweepReport::default()
        };
        // Bounded per sweep so that one sweep cannot run for ever behind a huge backlog.
        for _ in 0..100 {
            let batch = self.jobs.expired(now, BATCH).await?;
            let mut purged = 0;
            for job in &batch {
                // One job that cannot be purged now (its ThumbnailJob's namespace unreachable,
                // say) must not stop the others: it stays expired for the next sweep.
                match self.purge(job, now).await {
                    Ok((objects, bytes)) => {
                        purged += 1;
                        report.jobs_purged += 1;
                        report.objects_deleted += objects;
                        report.bytes_deleted += bytes;
                    }
                    Err(error) => {
                        report.failed += 1;
                        warn!(job_id = %job.id, %error, "could not purge an expired job; retrying at the next sweep");
                    }
                }
            }
            // A full batch of failures would be read again at once: leave it to the next sweep.
            if batch.len() < BATCH as usize || purged == 0 {
                break;
            }
        }
        let grace = chrono::Duration::from_std(self.policy.gone_grace).unwrap_or(chrono::Duration::MAX);
        loop {
            let removed = self.jobs.delete_purged(now - grace, 1000).await?;
            report.rows_deleted += removed;
            if removed < 1000 {
                break;
            }
        }
        // Batches answer 410 from their expiry and go with their jobs' tombstones.
        self.jobs.delete_expired_batches(now - grace).await?;
        self.metrics.rows_deleted.inc_by(report.rows_deleted);
        if let Some(keys) = &self.idempotency {
            report.keys_deleted = keys.purge_expired(now).await?;
        }
        report.backlog = self.jobs.count_expired(now).await?;
        self.metrics.backlog.set(report.backlog as i64);
        self.metrics
            .sweep_seconds
            .0
            .observe(started.elapsed().as_secs_f64());
        Ok(report)
    }

    /// Delete the objects under the service's prefixes (originals, thumbnails) that no job row
    /// knows and that were last written before `now - orphan_grace`. Objects are listed a page at
    /// a time and their jobs looked up a page at a time, so memory stays bounded whatever the
    /// bucket holds. Idempotent; several scanners at once only repeat each other's deletes.
    pub async fn scan_orphans(&self, now: DateTime<Utc>) -> Result<OrphanReport> {
        let grace = chrono::Duration::from_std(self.policy.orphan_grace).unwrap_or(chrono::Duration::MAX);
        let old_enough = now.checked_sub_signed(grace).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut report = OrphanReport::default();
        let nil = uuid::Uuid::nil();
        for prefix in [
            self.keys.original(nil, "x"),
            self.keys.thumbnail(nil, crate::model::DEFAULT_OUTPUT, "x"),
        ] {
            let prefix = &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)];
            let mut after: Option<String> = None;
            loop {
                let page = self.objects.list(prefix, after.as_deref(), LIST_PAGE).await?;
                report.scanned += page.len() as u64;
                let candidates: Vec<_> = page
                    .iter()
                    .filter(|o| o.modified < old_enough)
                    .filter_map(|o| job_of_key(&o.key).map(|id| (o, id)))
                    .collect();
                let ids: Vec<_> = candidates.iter().map(|(_, id)| *id).collect();
                let known = if ids.is_empty() {
                    Default::default()
                } else {
                    self.jobs.known_ids(&ids).await?
                };
                for (object, id) in candidates {
                    if known.contains(&id) {
                        continue;
                    }
                    self.objects.delete(&object.key).await?;
                    info!(key = %object.key, job_id = %id, bytes = object.bytes, "deleted an orphan object");
                    report.deleted += 1;
                    report.bytes_deleted += object.bytes;
                    self.metrics.orphans_deleted.inc();
                    self.metrics.objects_deleted.inc();
                    self.metrics.bytes_deleted.inc_by(object.bytes);
                }
                if page.len() < LIST_PAGE as usize {
                    break;
                }
                after = page.last().map(|o| o.key.clone());
            }
        }
        Ok(report)
    }

    /// Sweep every `policy.sweep_every` and scan for orphans every `policy.orphan_scan_every`
    /// (the first at start-up) until `stop`; a failure is logged and retried at the next tick
    /// (what it did stays done).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.policy.sweep_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_scan: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            match self.sweep(crate::model::now()).await {
                Ok(report) if report != SweepReport::default() => info!(?report, "retention sweep"),
                Ok(_) => {}
                Err(error) => warn!(%error, "retention sweep failed; retrying at the next one"),
            }
            if last_scan.is_none_or(|at| at.elapsed() >= self.policy.orphan_scan_every) {
                last_scan = Some(Instant::now());
                match self.scan_orphans(crate::model::now()).await {
                    Ok(report) if report.deleted > 0 => info!(?report, "orphan scan"),
                    Ok(_) => {}
                    Err(error) => warn!(%error, "orphan scan failed; retrying at the next one"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobOutput;
    use thumbnail_engine::ImageFormat;
    use uuid::Uuid;

    #[test]
    fn expiry_is_the_request_or_the_default_capped_by_the_max() {
        let policy = RetentionPolicy {
            default: Duration::from_secs(7 * 86_400),
            max: Duration::from_secs(30 * 86_400),
            gone_grace: Duration::from_secs(86_400),
            sweep_every: Duration::from_secs(60),
            orphan_scan_every: Duration::from_secs(3600),
            orphan_grace: Duration::from_secs(3600),
        };
        let t = crate::model::now();
        assert_eq!(policy.expiry(t, None), t + chrono::Duration::days(7));
        assert_eq!(
            policy.expiry(t, Some(Duration::from_secs(60))),
            t + chrono::Duration::seconds(60)
        );
        assert_eq!(
            policy.expiry(t, Some(Duration::from_secs(90 * 86_400))),
            t + chrono::Duration::days(30)
        );
    }

    #[test]
    fn the_job_of_a_key_is_the_id_its_file_name_starts_with() {
        let keys = KeyLayout::new("tenant");
        let id = Uuid::new_v4();
        assert_eq!(job_of_key(&keys.original(id, "jpg")), Some(id));
        assert_eq!(job_of_key(&keys.thumbnail(id, "default", "png")), Some(id));
        assert_eq!(job_of_key(&keys.thumbnail(id, "large", "webp")), Some(id));
        assert_eq!(
            job_of_key(&keys.thumbnail(id, "default", "result.json")),
            Some(id)
        );
        // Not the service's names: left alone.
        assert_eq!(job_of_key("images/original/holiday.jpg"), None);
        assert_eq!(job_of_key(&format!("images/original/{id}")), None);
        assert_eq!(job_of_key(&format!("images/original/{id}x.jpg")), None);
        assert_eq!(job_of_key("images/original/é"), None);
    }

    #[test]
    fn a_job_owns_its_thumbnails_and_the_original_the_service_stored() {
        let keys = KeyLayout::new("");
        let id = Uuid::new_v4();
        let output = |bucket: &str| JobOutput {
            name: "default".into(),
            bucket: bucket.into(),
            key: keys.thumbnail(id, "default", "jpg"),
            width: 1,
            height: 1,
            bytes: 10,
            content_type: "image/jpeg".into(),
            sha256: String::new(),
            thumbhash: None,
            blurhash: None,
        };
        let mut job = JobRecord {
            source_key: keys.original(id, "jpg"),
            outputs: vec![output("b"), output("elsewhere")],
            ..crate::testsupport::job_record(id)
        };
        assert_eq!(
            objects_of(&job, &keys, "b"),
            vec![
                (keys.thumbnail(id, "default", "jpg"), 10),
                (keys.original(id, "jpg"), 100)
            ]
        );
        // A hand-written ThumbnailJob's source is its author's.
        job.source_key = "uploads/mine.jpg".into();
        assert_eq!(objects_of(&job, &keys, "b").len(), 1);
    }

    /// A reaper that fails its first call, and records whether the row was still unpurged at
    /// each call.
    struct FlakyReaper {
        jobs: DynJobStore,
        calls: std::sync::Mutex<Vec<(Uuid, bool)>>,
    }

    #[async_trait]
    impl ResourceReaper for FlakyReaper {
        async fn reap(&self, job: &JobRecord) -> Result<()> {
            let row = self.jobs.get(job.id).await?.expect("the row");
            let mut calls = self.calls.lock().unwrap();
            calls.push((job.id, row.purged_at.is_none()));
            if calls.len() == 1 {
                return Err(crate::CoreError::Cluster("connection refused".into()));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn resources_are_reaped_before_the_tombstone_and_a_failure_is_retried() {
        use crate::jobstore::Outcome;
        use crate::model::{NewJob, OutputSpec};
        use crate::objects::LocalObjectStore;
        use bytes::Bytes;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/jobs.db?mode=rwc", dir.path().display());
        let jobs = crate::jobstore::connect(&url, 1).await.unwrap();
        let objects: DynObjectStore = Arc::new(
            LocalObjectStore::new(
                dir.path().join("objects"),
                "http://localhost:8080/",
                crate::signing::LinkSigner::new(vec![7; 32]),
            )
            .unwrap(),
        );
        let keys = KeyLayout::new("");
        let id = Uuid::new_v4();
        let new = NewJob {
            id,
            owner: None,
            source_bucket: objects.bucket().to_owned(),
            source_key: keys.original(id, "jpg"),
            source_format: ImageFormat::Jpeg,
            source_width: 1,
            source_height: 1,
            source_bytes: 3,
            outputs: vec![OutputSpec::default_output(Default::default())],
            expires_at: None,
            webhook_url: None,
            batch: None,
        };
        jobs.create(&new).await.unwrap();
        let started = jobs.start(id).await.unwrap().unwrap();
        let thumbnail = keys.thumbnail(id, "default", "jpg");
        objects
            .put_bytes(&new.source_key, Bytes::from_static(b"abc"), "image/jpeg")
            .await
            .unwrap();
        objects
            .put_bytes(&thumbnail, Bytes::from_static(b"de"), "image/jpeg")
            .await
            .unwrap();
        let output = JobOutput {
            name: "default".into(),
            bucket: objects.bucket().to_owned(),
            key: thumbnail.clone(),
            width: 1,
            height: 1,
            bytes: 2,
            content_type: "image/jpeg".into(),
            sha256: String::new(),
            thumbhash: None,
            blurhash: None,
        };
        assert!(
            jobs.finish(id, started.attempts, &Outcome::Success(vec![output]))
                .await
                .unwrap()
        );
        let now = crate::model::now();
        assert!(jobs.expire_now(id, now).await.unwrap());
        let reaper = Arc::new(FlakyReaper {
            jobs: jobs.clone(),
            calls: Default::default(),
        });
        let sweeper = Sweeper {
            jobs: jobs.clone(),
            objects: objects.clone(),
            keys,
            idempotency: None,
            policy: RetentionPolicy {
                default: Duration::from_secs(3600),
                max: Duration::from_secs(3600),
                gone_grace: Duration::from_secs(3600),
                sweep_every: Duration::from_secs(60),
                orphan_scan_every: Duration::from_secs(3600),
                orphan_grace: Duration::from_secs(3600),
            },
            metrics: Default::default(),
            reaper: Some(reaper.clone()),
        };

        // The reaper fails: nothing else is deleted, the row stays expired, not a tombstone.
        let first = sweeper.sweep(now).await.unwrap();
        assert_eq!((first.failed, first.jobs_purged, first.backlog), (1, 0, 1));
        assert!(jobs.get(id).await.unwrap().unwrap().purged_at.is_none());
        assert!(objects.exists(&thumbnail).await.unwrap());
        assert!(objects.exists(&new.source_key).await.unwrap());

        // The next sweep finishes it: reaped again (idempotent), objects gone, then the mark.
        let second = sweeper.sweep(now).await.unwrap();
        assert_eq!(
            (
                second.failed,
                second.jobs_purged,
                second.objects_deleted,
                second.bytes_deleted
            ),
            (0, 1, 2, 5)
        );
        assert_eq!(second.backlog, 0);
        assert!(jobs.get(id).await.unwrap().unwrap().purged_at.is_some());
        assert!(!objects.exists(&thumbnail).await.unwrap());
        assert!(!objects.exists(&new.source_key).await.unwrap());

        // A tombstone is not reaped again.
        assert_eq!(sweeper.sweep(now).await.unwrap(), SweepReport::default());
        assert_eq!(*reaper.calls.lock().unwrap(), vec![(id, true), (id, true)]);
    }
}
