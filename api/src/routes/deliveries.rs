//! `GET /api/v1/jobs/{job_id}/deliveries`: the job's completion webhook and every attempt to
//! deliver it (time, status code, latency, error), for the job's owner.
use crate::auth::Principal;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::Path;
use crate::state::SharedState;
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thumbnail_core::apikeys::Scope;
use thumbnail_core::webhooks::{Attempt, Delivery, DeliveryState};
use tracing::instrument;
use utoipa::ToSchema;
use uuid::Uuid;

pub fn router() -> axum::Router<SharedState> {
    axum::Router::new().route("/api/v1/jobs/{job_id}/deliveries", get(list_deliveries))
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStateName {
    /// Not delivered yet; attempted again at `next_attempt_at`.
    Pending,
    /// A 2xx answer came.
    Delivered,
    /// Every attempt of WEBHOOK_RETRY_SCHEDULE failed, or the target was refused (SSRF rule).
    Failed,
    /// The target answered 410 Gone: no more attempts.
    Disabled,
}

impl From<DeliveryState> for DeliveryStateName {
    fn from(state: DeliveryState) -> Self {
        match state {
            DeliveryState::Pending => DeliveryStateName::Pending,
            DeliveryState::Delivered => DeliveryStateName::Delivered,
            DeliveryState::Failed => DeliveryStateName::Failed,
            DeliveryState::Disabled => DeliveryStateName::Disabled,
        }
    }
}

/// One attempt to deliver.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; null when no answer came.
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// delivered, gone (410), redirect (3xx, not followed), http_error, timeout, connect_error
    /// (no answer: connection refused or reset, DNS, TLS) or refused (SSRF rule).
    pub outcome: String,
    pub error: Option<String>,
}

/// A webhook event of the job and its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` header of every attempt (the same on retries: dedupe by it).
    pub id: String,
    /// `thumbnail.job.succeeded`, `thumbnail.job.failed`, or (on a batch's first job)
    /// `thumbnail.batch.completed`.
    pub event_type: String,
    pub url: String,
    pub state: DeliveryStateName,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub attempts: Vec<AttemptView>,
}

/// The job's webhook deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryList {
    pub job_id: Uuid,
    pub deliveries: Vec<DeliveryView>,
}

fn attempt_view(a: Attempt) -> AttemptView {
    AttemptView {
        attempt: a.attempt,
        at: a.at,
        status_code: a.status_code,
        latency_ms: a.latency_ms,
        outcome: a.outcome,
        error: a.error,
    }
}

fn delivery_view(d: Delivery) -> DeliveryView {
    DeliveryView {
        id: d.id,
        event_type: d.event_type,
        url: d.url,
        state: d.state.into(),
        created_at: d.created_at,
        next_attempt_at: d.next_attempt_at,
        finished_at: d.finished_at,
        last_error: d.last_error,
        attempts: d.attempts.into_iter().map(attempt_view).collect(),
    }
}

/// The job's completion webhook (empty before the job ends or without `webhook_url`) and every
/// attempt to deliver it.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}/deliveries", tag = "jobs",
    params(("job_id" = String, Path, description = "The id returned by the upload")),
    responses(
        (status = 200, description = "The deliveries, oldest first", body = DeliveryList),
        (status = 404, description = "No such job (or another owner's)", body = ErrorBody),
        (status = 410, description = "The job expired; its records are deleted", body = ErrorBody),
        (status = 503, description = "The job store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal))]
pub async fn list_deliveries(
    State(state): State<SharedState>,
    principal: Principal,
    Path(job_id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    principal.require(Scope::Read)?;
    let job = crate::routes::jobs::load(&state, &principal, &job_id).await?;
    let deliveries = state.deliveries.of_job(job.id).await?;
    Ok(Json(DeliveryList {
        job_id: job.id,
        deliveries: deliveries.into_iter().map(delivery_view).collect(),
    }))
}
