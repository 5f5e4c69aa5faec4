//! Prometheus metrics of the operator (`/metrics`).
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use thumbnail_core::metrics::JobMetrics;
use thumbnail_core::retention::RetentionMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExecutorLabels {
    pub executor: String,
}

pub struct Metrics {
    /// Reconciles by result (`ok`, `error`).
    pub reconciles: Family<ResultLabels, Counter>,
    /// Failed reconciles by the step that failed.
    pub reconcile_errors: Family<StepLabels, Counter>,
    /// Reconcile durations.
    pub reconcile_duration: Histogram,
    /// Attempts started, by executor (inline renders and render Jobs created).
    pub attempts: Family<ExecutorLabels, Counter>,
    /// ThumbnailJobs by phase in the controller's cache (set at scrape time).
    pub jobs_by_phase: Family<PhaseLabels, Gauge>,
    /// 1 while this replica holds the lease (or runs without leader election).
    pub leader: Gauge,
    /// Durations and failures by reason, shared with the embedded runner.
    pub job: Arc<JobMetrics>,
    /// What the leader's retention sweeps deleted (the API's `thumbnail_retention_*`).
    pub retention: Arc<RetentionMetrics>,
    registry: Mutex<Registry>,
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Metrics {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 18)),
            attempts: Family::default(),
            jobs_by_phase: Family::default(),
            leader: Gauge::default(),
            job: Arc::new(JobMetrics::new()),
            retention: Arc::new(RetentionMetrics::default()),
            registry: Mutex::new(Registry::default()),
        };
        {
            let mut r = metrics.registry.lock().expect("registry lock");
            r.register(
                "thumbnail_operator_reconciles",
                "Reconciles of ThumbnailJobs, by result",
                metrics.reconciles.clone(),
            );
            r.register(
                "thumbnail_operator_reconcile_errors",
                "Failed reconciles, by the step that failed",
                metrics.reconcile_errors.clone(),
            );
            r.register(
                "thumbnail_operator_reconcile_duration_seconds",
                "Time spent in one reconcile",
                metrics.reconcile_duration.clone(),
            );
            r.register(
                "thumbnail_operator_attempts",
                "Render attempts started, by executor",
                metrics.attempts.clone(),
            );
            r.register(
                "thumbnail_operator_jobs",
                "ThumbnailJobs by phase",
                metrics.jobs_by_phase.clone(),
            );
            r.register(
                "thumbnail_operator_leader",
                "1 while this replica is the active one",
                metrics.leader.clone(),
            );
            metrics.job.register(&mut r);
            metrics.retention.register(&mut r);
        }
        metrics
    }

    pub fn attempt(&self, executor: &str) {
        self.attempts
            .get_or_create(&ExecutorLabels {
                executor: executor.into(),
            })
            .inc();
    }

    /// Attempts started so far by `executor`.
    pub fn attempts_started(&self, executor: &str) -> u64 {
        self.attempts
            .get_or_create(&ExecutorLabels {
                executor: executor.into(),
            })
            .get()
    }

    /// The Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("registry lock");
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
