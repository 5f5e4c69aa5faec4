//! Liveness (`/health`, the original's), readiness (`/ready`: each dependency checked) and
//! Prometheus metrics (`/metrics`).
use crate::state::SharedState;
use crate::views::{Health, Readiness};
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::collections::BTreeMap;
use std::time::Duration;
use thumbnail_core::model::JobStatus;
use tracing::instrument;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `/health` and `/ready`, which never need credentials.
pub fn router() -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// `/metrics` (behind admin credentials with METRICS_AUTH).
pub fn metrics_router(auth: crate::auth::SharedAuth) -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::require_admin,
        ))
}

/// Liveness: answers as long as the process serves requests; touches no dependency, so that a
/// stalled database or S3 never gets the pod restarted.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy".into(),
    })
}

/// A dependency's check: `ok`, or what clients may be told (`unavailable`, `timeout`); the
/// dependency's own error text goes to the log only.
async fn check<F: std::future::Future<Output = thumbnail_core::Result<()>>>(
    name: &str,
    f: F,
) -> Result<(), &'static str> {
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
            Err("unavailable")
        }
        Err(_) => {
            tracing::warn!(
                dependency = name,
                timeout_s = CHECK_TIMEOUT.as_secs(),
                "readiness check timed out"
            );
            Err("timeout")
        }
    }
}

/// Readiness: the job store and the object store both answer.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", body = Readiness),
        (status = 503, description = "A dependency is down; `detail` names it (its error is in the log)", body = Readiness),
    ))]
#[instrument(skip(state))]
pub async fn ready(State(state): State<SharedState>) -> impl IntoResponse {
    let (db, objects) = tokio::join!(
        check("database", state.jobs.ping()),
        check("object store", state.objects.ping())
    );
    let mut checks = BTreeMap::new();
    let mut down = Vec::new();
    for (name, label, result) in [
        ("database", format!("database ({})", state.jobs.backend()), db),
        (
            "object_store",
            format!("object store ({})", state.objects.backend()),
            objects,
        ),
    ] {
        match result {
            Ok(()) => {
                checks.insert(name.to_owned(), "ok".to_owned());
            }
            Err(e) => {
                checks.insert(name.to_owned(), e.to_owned());
                down.push(format!("{label} {e}"));
            }
        }
    }
    if down.is_empty() {
        (
            StatusCode::OK,
            Json(Readiness {
                status: "ready".into(),
                checks,
                detail: None,
            }),
        )
    } else {
        let detail = Some(down.join("; "));
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status: "unavailable".into(),
                checks,
                detail,
            }),
        )
    }
}

/// Prometheus metrics (OpenMetrics text format). With METRICS_AUTH, admin credentials are
/// needed.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics", body = String,
               content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    // Jobs by status come from the store at scrape time; a store outage leaves the last values.
    if let Ok(Ok(counts)) = tokio::time::timeout(CHECK_TIMEOUT, state.jobs.count_by_status()).await {
        for status in JobStatus::ALL {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            state
                .metrics
                .jobs
                .get_or_create(&crate::metrics::StatusLabels {
                    status: status.as_str().into(),
                })
                .set(n as i64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
