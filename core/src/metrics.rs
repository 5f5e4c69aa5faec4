//! Job metrics shared by the embedded runner and the operator (Prometheus text format).
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `handoff` (bytes left in memory by this process's upload) or `store` (read back).
    pub source: &'static str,
}

type HistogramFamily = Family<OutcomeLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 5 ms .. ~80 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

#[derive(Debug)]
pub struct JobMetrics {
    /// Seconds from start of processing to the final state, by outcome.
    pub duration: HistogramFamily,
    /// Failed jobs by reason.
    pub failures: Family<ReasonLabels, Counter>,
    /// Attempts that hit a transient error and were retried.
    pub retries: Counter,
    /// Where each attempt got its original from.
    pub originals: Family<SourceLabels, Counter>,
}

impl JobMetrics {
    pub fn new() -> Self {
        JobMetrics {
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            failures: Family::default(),
            retries: Counter::default(),
            originals: Family::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "thumbnail_job_duration_seconds",
            "Time to process a job, by outcome",
            self.duration.clone(),
        );
        registry.register(
            "thumbnail_job_failures",
            "Failed jobs by reason",
            self.failures.clone(),
        );
        registry.register(
            "thumbnail_job_retries",
            "Job attempts retried after a transient error",
            self.retries.clone(),
        );
        registry.register(
            "thumbnail_job_originals",
            "Originals a job attempt used, by where they came from (handoff: kept in memory from \
             this process's upload; store: read from the object store)",
            self.originals.clone(),
        );
    }
}

impl Default for JobMetrics {
    fn default() -> Self {
        Self::new()
    }
}
