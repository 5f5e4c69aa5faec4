//! Sends the outbox: claims due deliveries, signs and POSTs each, records the attempt and where
//! the delivery goes next ([`decide`], pure). Wakes when a job finishes (in this process, or in
//! another one on PostgreSQL through the finished-job relay) and at least every poll interval.
use super::schedule::RetrySchedule;
use super::signature::Secrets;
use super::ssrf::{self, AllowList, GuardedResolver, Refused};
use super::{Attempt, Claimed, DynDeliveryStore, Next};
use crate::jobstore::JobEvents;
use crate::model::now;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Deliveries claimed per round, and attempted at once.
const BATCH: u32 = 32;
const CONCURRENCY: usize = 8;

/// What the dispatcher needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub secrets: Secrets,
    pub schedule: RetrySchedule,
    /// Per attempt (WEBHOOK_TIMEOUT_SECONDS).
    pub timeout: Duration,
    pub allow: AllowList,
    /// Re-read the outbox at least this often (retries come due without a wake-up).
    pub poll: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Debug)]
pub struct WebhookMetrics {
    /// Deliveries that reached a final state, by state (delivered, failed, disabled).
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// Attempts by outcome (delivered, gone, redirect, http_error, timeout, ...).
    pub attempts: Family<OutcomeLabel, Counter>,
    /// Pending deliveries (the backlog), re-read every round.
    pub pending: Gauge,
    /// Seconds per attempt.
    pub latency: Family<OutcomeLabel, Histogram, fn() -> Histogram>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    pub fn new() -> Self {
        WebhookMetrics {
            deliveries: Family::default(),
            attempts: Family::default(),
            pending: Gauge::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "thumbnail_webhook_deliveries",
            "Webhook deliveries that reached a final state, by outcome (delivered, failed, disabled)",
            self.deliveries.clone(),
        );
        registry.register(
            "thumbnail_webhook_attempts",
            "Webhook delivery attempts by outcome",
            self.attempts.clone(),
        );
        registry.register(
            "thumbnail_webhook_pending",
            "Webhook deliveries not yet delivered, failed or disabled",
            self.pending.clone(),
        );
        registry.register(
            "thumbnail_webhook_attempt_duration_seconds",
            "Time per webhook delivery attempt, by outcome",
            self.latency.clone(),
        );
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx answer.
    Delivered(u16),
    /// 410 Gone: the receiver wants no more.
    Gone,
    /// Any other answer: 3xx (redirects are not followed), 4xx, 5xx.
    Status(u16),
    Timeout,
    /// The SSRF rule refused the target.
    Refused(String),
    /// No answer: connection refused or reset, DNS failure, TLS error.
    Unreachable(String),
}

impl AttemptResult {
    pub fn outcome(&self) -> &'static str {
        match self {
            AttemptResult::Delivered(_) => "delivered",
            AttemptResult::Gone => "gone",
            AttemptResult::Status(code) if (300..400).contains(code) => "redirect",
            AttemptResult::Status(_) => "http_error",
            AttemptResult::Timeout => "timeout",
            AttemptResult::Refused(_) => "refused",
            AttemptResult::Unreachable(_) => "connect_error",
        }
    }

    pub fn status_code(&self) -> Option<u16> {
        match self {
            AttemptResult::Delivered(code) | AttemptResult::Status(code) => Some(*code),
            AttemptResult::Gone => Some(410),
            _ => None,
        }
    }

    /// What the attempt's record says went wrong, `None` for a delivery.
    pub fn error(&self, timeout: Duration) -> Option<String> {
        match self {
            AttemptResult::Delivered(_) => None,
            AttemptResult::Gone => Some("410 Gone: the target is disabled, no more attempts".into()),
            AttemptResult::Status(code) if (300..400).contains(code) => Some(format!(
                "HTTP {code}: redirects are not followed; answer 2xx at this URL"
            )),
            AttemptResult::Status(code) => Some(format!("HTTP {code}")),
            AttemptResult::Timeout => Some(format!("no answer within {} s", timeout.as_secs_f64())),
            AttemptResult::Refused(why) | AttemptResult::Unreachable(why) => Some(why.clone()),
        }
    }
}

/// Where a delivery goes after attempt number `made` (1 for the first) ended with `result`;
/// `unit` in [0, 1) draws the jitter. Pure.
pub fn decide(
    result: &AttemptResult,
    made: u32,
    schedule: &RetrySchedule,
    unit: f64,
    now: DateTime<Utc>,
) -> Next {
    match result {
        AttemptResult::Delivered(_) => Next::Delivered,
        AttemptResult::Gone => Next::Disabled,
        // A policy answer: retrying cannot change it.
        AttemptResult::Refused(_) => Next::Failed,
        _ => match schedule.next_delay(made, unit) {
            Some(delay) => {
                Next::Retry(now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(7)))
            }
            None => Next::Failed,
        },
    }
}

pub struct Dispatcher {
    store: DynDeliveryStore,
    /// Where batches are read, to write their completion events ([`Dispatcher::with_batches`]).
    jobs: Option<crate::jobstore::DynJobStore>,
    /// Told of every recorded attempt ([`Dispatcher::with_observer`]).
    observer: Option<Arc<dyn super::DeliveryObserver>>,
    client: reqwest::Client,
    settings: Settings,
    metrics: Arc<WebhookMetrics>,
}

/// The messages of an error and its sources, for the attempt's record.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

/// The `type` of an event payload (the outbox keeps it in the body the signature covers).
fn event_type_of(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl Dispatcher {
    pub fn new(
        store: DynDeliveryStore,
        settings: Settings,
        metrics: Arc<WebhookMetrics>,
    ) -> crate::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: Arc::new(settings.allow.clone()),
            }))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect on our behalf, past the address check.
            .no_proxy()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("thumbnail-service-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::CoreError::Config(format!("webhook HTTP client: {e}")))?;
        Ok(Dispatcher {
            store,
            jobs: None,
            observer: None,
            client,
            settings,
            metrics,
        })
    }

    /// Also write the completion event of every batch with a webhook URL once its last job
    /// finishes (read from `jobs`), before each round.
    pub fn with_batches(mut self, jobs: crate::jobstore::DynJobStore) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Tell `observer` of every attempt once it is recorded.
    pub fn with_observer(mut self, observer: Arc<dyn super::DeliveryObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Write the events of batches that completed since the last round. At most once per
    /// batch, whichever replica gets there first; a failure is retried at the next round.
    async fn enqueue_batch_events(&self, jobs: &crate::jobstore::DynJobStore) -> crate::Result<()> {
        for id in self.store.batches_to_notify(BATCH).await? {
            let Some(batch) = jobs.get_batch(id).await? else {
                continue;
            };
            let members = jobs.batch_jobs(id).await?;
            // Deliveries belong to a job: one still in the store (the first, usually).
            let (Some(url), Some(anchor)) = (batch.webhook_url.as_deref(), members.first().map(|j| j.id))
            else {
                continue;
            };
            let event = crate::batches::batch_event(&batch, &members, now());
            if self.store.enqueue_batch_event(id, anchor, url, &event).await? {
                info!(batch_id = %id, delivery = %event.id, "batch completed; its webhook is queued");
            }
        }
        Ok(())
    }

    /// Deliver until `stop` is cancelled. Attempts under way when it is finish (each within the
    /// timeout) and are recorded; claimed ones not started yet are given back. A dispatcher
    /// killed mid-attempt leaves its claims to run out their lease, then be attempted again.
    pub async fn run(self: Arc<Self>, events: JobEvents, stop: CancellationToken) {
        let mut finished = events.subscribe();
        info!(
            attempts = self.settings.schedule.attempts(),
            timeout_s = self.settings.timeout.as_secs_f64(),
            "webhook dispatcher started"
        );
        loop {
            if stop.is_cancelled() {
                return;
            }
            let claimed = self.round(&stop).await;
            if claimed == BATCH as usize {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.settings.poll) => {}
                // Lagged means "look now"; closed (no more announcements) falls back to polling.
                received = finished.recv() => {
                    if matches!(received, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        tokio::time::sleep(self.settings.poll).await;
                    }
                }
            }
        }
    }

    /// One round: claim what is due and attempt it. Returns how many were claimed.
    async fn round(&self, stop: &CancellationToken) -> usize {
        if let Some(jobs) = &self.jobs
            && let Err(error) = self.enqueue_batch_events(jobs).await
        {
            warn!(%error, "cannot queue the webhooks of completed batches; retrying at the next round");
        }
        // Long enough for every attempt of the round (a batch, CONCURRENCY at a time, each at
        // most the timeout) and its record; a dispatcher that died lets go after it.
        let waves = BATCH.div_ceil(CONCURRENCY as u32);
        let lease = self.settings.timeout * waves + Duration::from_secs(5);
        let claimed = match self.store.claim_due(now(), lease, BATCH).await {
            Ok(claimed) => claimed,
            Err(error) => {
                warn!(%error, "cannot read the webhook outbox; retrying at the next round");
                return 0;
            }
        };
        let n = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(CONCURRENCY, |c| async move {
                if !stop.is_cancelled() {
                    self.deliver(c).await;
                } else if let Err(error) = self.store.release(&c).await {
                    warn!(delivery = %c.id, %error, "cannot give back a webhook claim; its lease runs out");
                }
            })
            .await;
        if let Ok(pending) = self.store.pending().await {
            self.metrics.pending.set(pending.min(i64::MAX as u64) as i64);
        }
        n
    }

    async fn deliver(&self, claimed: Claimed) {
        let at = now();
        let started = Instant::now();
        let result = self.attempt(&claimed).await;
        let latency = started.elapsed();
        let made = claimed.attempts + 1;
        let next = decide(
            &result,
            made,
            &self.settings.schedule,
            rand::random::<f64>(),
            now(),
        );
        let error = result.error(self.settings.timeout);
        let attempt = Attempt {
            attempt: made,
            at,
            status_code: result.status_code(),
            latency_ms: latency.as_millis().min(u64::MAX as u128) as u64,
            outcome: result.outcome().to_owned(),
            error: error.clone(),
        };
        let outcome = result.outcome();
        self.metrics
            .attempts
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        self.metrics
            .latency
            .get_or_create(&OutcomeLabel { outcome })
            .observe(latency.as_secs_f64());
        match self
            .store
            .record(&claimed, &attempt, next, error.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                warn!(delivery = %claimed.id, "webhook delivery lease lost before its attempt was recorded");
                return;
            }
            Err(e) => {
                // The lease runs out and the delivery is attempted again: at least once.
                warn!(delivery = %claimed.id, error = %e, "cannot record a webhook attempt");
                return;
            }
        }
        let final_state = match next {
            Next::Retry(_) => None,
            Next::Delivered => Some("delivered"),
            Next::Failed => Some("failed"),
            Next::Disabled => Some("disabled"),
        };
        if let Some(state) = final_state {
            self.metrics
                .deliveries
                .get_or_create(&OutcomeLabel { outcome: state })
                .inc();
        }
        info!(
            delivery = %claimed.id, job_id = %claimed.job_id, attempt = made, outcome,
            status = attempt.status_code, latency_ms = attempt.latency_ms, final_state,
            "webhook attempt"
        );
        if let Some(observer) = &self.observer {
            let (state, next_attempt_at, _) = super::columns_of(next, at);
            let report = super::DeliveryReport {
                job_id: claimed.job_id,
                delivery_id: claimed.id.clone(),
                event_type: event_type_of(&claimed.payload),
                state,
                attempts: made,
                next_attempt_at,
                last_attempt: attempt,
            };
            observer.attempted(&report).await;
        }
    }

    async fn attempt(&self, claimed: &Claimed) -> AttemptResult {
        let url = match url::Url::parse(&claimed.url) {
            Ok(url) => url,
            Err(e) => return AttemptResult::Refused(format!("invalid URL: {e}")),
        };
        // IP-literal hosts are connected to without asking the resolver: check them here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && let Err(refused) = ssrf::check(url.host_str().unwrap_or_default(), ip, &self.settings.allow)
        {
            return AttemptResult::Refused(refused.to_string());
        }
        let timestamp = now().timestamp();
        let signature = self
            .settings
            .secrets
            .sign(&claimed.id, timestamp, claimed.payload.as_bytes());
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &claimed.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(claimed.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let code = response.status().as_u16();
                match code {
                    200..=299 => AttemptResult::Delivered(code),
                    410 => AttemptResult::Gone,
                    _ => AttemptResult::Status(code),
                }
            }
            Err(e) => {
                if let Some(refused) = refusal_in(&e) {
                    AttemptResult::Refused(refused.to_string())
                } else if e.is_timeout() {
                    AttemptResult::Timeout
                } else {
                    AttemptResult::Unreachable(chain(&e))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn outcomes_decide_the_next_step() {
        let schedule = RetrySchedule::parse("0s,5s,5m").unwrap();
        assert_eq!(
            decide(&AttemptResult::Delivered(204), 1, &schedule, 0.5, at()),
            Next::Delivered
        );
        assert_eq!(
            decide(&AttemptResult::Gone, 1, &schedule, 0.5, at()),
            Next::Disabled
        );
        assert_eq!(
            decide(&AttemptResult::Refused("no".into()), 1, &schedule, 0.5, at()),
            Next::Failed
        );
        // After the first attempt, the second comes 5 s later; after the second, 5 min.
        for result in [
            AttemptResult::Status(500),
            AttemptResult::Status(302),
            AttemptResult::Timeout,
            AttemptResult::Unreachable("reset".into()),
        ] {
            assert_eq!(
                decide(&result, 1, &schedule, 0.5, at()),
                Next::Retry(at() + chrono::Duration::seconds(5)),
                "{result:?}"
            );
        }
        assert_eq!(
            decide(&AttemptResult::Status(503), 2, &schedule, 0.5, at()),
            Next::Retry(at() + chrono::Duration::minutes(5))
        );
        // The schedule used up: the delivery fails.
        assert_eq!(
            decide(&AttemptResult::Status(500), 3, &schedule, 0.5, at()),
            Next::Failed
        );
    }

    #[test]
    fn records_say_what_happened() {
        let timeout = Duration::from_secs(2);
        assert_eq!(AttemptResult::Status(302).outcome(), "redirect");
        assert!(
            AttemptResult::Status(302)
                .error(timeout)
                .unwrap()
                .contains("not followed")
        );
        assert_eq!(AttemptResult::Status(500).outcome(), "http_error");
        assert_eq!(
            AttemptResult::Timeout.error(timeout).unwrap(),
            "no answer within 2 s"
        );
        assert_eq!(AttemptResult::Gone.status_code(), Some(410));
        assert_eq!(AttemptResult::Timeout.status_code(), None);
        assert_eq!(AttemptResult::Delivered(200).error(timeout), None);
    }
}
