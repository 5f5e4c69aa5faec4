//! Prometheus metrics of the API: requests by route and status, upload bytes, jobs by status,
//! job durations (recorded by the worker).
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Instant;
use thumbnail_core::metrics::JobMetrics;
use thumbnail_core::retention::RetentionMetrics;
use thumbnail_core::webhooks::dispatcher::WebhookMetrics;

/// Label values come from fixed sets, so that no request can create new series: the method
/// is one of the standard ones or `other`, the route a route template or `unmatched`, the status
/// a code this server sends.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: String,
}

/// The method's label: one of a fixed set. Pure.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BufferLabels {
    /// `memory` or `spool` (see IN_MEMORY_UPLOAD_BYTES).
    pub buffered: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct ApiMetrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub upload_bytes: Counter,
    /// Accepted uploads by how they were buffered.
    pub uploads: Family<BufferLabels, Counter>,
    pub jobs: Family<StatusLabels, Gauge>,
    pub job: Arc<JobMetrics>,
    pub retention: Arc<RetentionMetrics>,
    /// Webhook deliveries, attempts and backlog (the dispatcher's).
    pub webhooks: Arc<WebhookMetrics>,
}

impl ApiMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let upload_bytes = Counter::default();
        let uploads = Family::<BufferLabels, Counter>::default();
        let jobs = Family::<StatusLabels, Gauge>::default();
        let job = Arc::new(JobMetrics::new());
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "thumbnail_upload_bytes",
            "Bytes of accepted uploads",
            upload_bytes.clone(),
        );
        registry.register(
            "thumbnail_uploads",
            "Accepted uploads by how they were buffered (memory or spool file)",
            uploads.clone(),
        );
        registry.register("thumbnail_jobs", "Jobs in the job store by status", jobs.clone());
        job.register(&mut registry);
        let retention = Arc::new(RetentionMetrics::default());
        retention.register(&mut registry);
        let webhooks = Arc::new(WebhookMetrics::new());
        webhooks.register(&mut registry);
        ApiMetrics {
            registry,
            requests,
            latency,
            upload_bytes,
            uploads,
            jobs,
            job,
            retention,
            webhooks,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: count and time every request by its route template (not the raw path, so that
/// job ids do not explode the label set).
pub async fn track(State(metrics): State<Arc<ApiMetrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route: route.clone(),
            status,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels { method, route })
        .observe(started.elapsed().as_secs_f64());
    response
}
