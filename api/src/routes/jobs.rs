//! Job queries: one job, the list (newest first, cursor-paged), and the thumbnail's download link.
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::SharedState;
use crate::views::{JobView, ThumbnailUrl};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use std::time::Duration;
use thumbnail_core::model::{DEFAULT_OUTPUT, JobRecord, JobStatus, ListCursor, ListQuery};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::instrument;
use utoipa::IntoParams;
use uuid::Uuid;

pub const MAX_LIST_LIMIT: u32 = 1000;
pub const DEFAULT_LIST_LIMIT: u32 = 100;

pub fn router() -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/api/v1/jobs/", get(list_jobs))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{job_id}", get(get_job))
        .route("/api/v1/jobs/{job_id}/thumbnail", get(get_thumbnail))
}

fn parse_job_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("job '{raw}' not found")))
}

async fn load(state: &SharedState, raw: &str) -> ApiResult<JobRecord> {
    let id = parse_job_id(raw)?;
    state
        .jobs
        .get(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job '{id}' not found")))
}

/// The longest `wait` a request may ask for, in seconds.
pub const MAX_WAIT_SECONDS: f64 = 60.0;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetJobParams {
    /// Long-poll: if the job is not finished yet, answer as soon as it is, or after this many
    /// seconds (0 to 60, fractions allowed) with its state then. Without it, answer at once.
    pub wait: Option<String>,
}

impl GetJobParams {
    fn wait(&self) -> ApiResult<Option<Duration>> {
        match self.wait.as_deref() {
            None | Some("") => Ok(None),
            Some(raw) => match raw.parse::<f64>() {
                Ok(s) if (0.0..=MAX_WAIT_SECONDS).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
                _ => Err(ApiError::Invalid(format!(
                    "wait: must be a number of seconds between 0 and {MAX_WAIT_SECONDS}, got '{raw}'"
                ))),
            },
        }
    }
}

/// One job's status and, once finished, where its thumbnail is. With `wait`, a long-poll: the
/// answer comes when the job finishes (or the wait is over), so clients need not poll.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The id returned by the upload"), GetJobParams),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 422, description = "Invalid `wait`", body = ErrorBody),
        (status = 503, description = "The job store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state))]
pub async fn get_job(
    State(state): State<SharedState>,
    Path(job_id): Path<String>,
    Query(params): Query<GetJobParams>,
) -> ApiResult<Json<JobView>> {
    let wait = params.wait()?;
    // Subscribed before the first read, so a finish right after it is not missed.
    let mut finished = wait.map(|_| state.job_events.subscribe());
    let mut job = load(&state, &job_id).await?;
    if let (Some(wait), Some(finished)) = (wait, finished.as_mut()) {
        let deadline = Instant::now() + wait;
        while !job.status.is_finished() && Instant::now() < deadline {
            // Re-read now and then anyway (`AppState::long_poll_recheck`): on SQLite jobs finished
            // by another process are not announced to this one, and on PostgreSQL a notification
            // can be lost while the relay reconnects (`thumbnail_core::jobstore::relay_finished_jobs`).
            let recheck = (Instant::now() + state.long_poll_recheck).min(deadline);
            // Until this job is announced (or the channel lagged), or it is time to re-read.
            let _ = tokio::time::timeout_at(recheck, async {
                loop {
                    match finished.recv().await {
                        Ok(id) if id != job.id => continue,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                        Ok(_) | Err(RecvError::Lagged(_)) => return,
                    }
                }
            })
            .await;
            job = load(&state, &job_id).await?;
        }
    }
    Ok(Json(JobView::new(&job, state.objects.endpoint_url())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<String>,
    /// Only jobs in this status.
    pub status: Option<String>,
    /// Only jobs of this owner.
    pub owner: Option<String>,
    /// Opaque cursor from the previous page's `Link: <…>; rel="next"` header.
    pub cursor: Option<String>,
}

impl ListParams {
    fn query(&self) -> ApiResult<ListQuery> {
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_LIST_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::Invalid(format!(
                        "limit: must be an integer between 1 and {MAX_LIST_LIMIT}, got '{raw}'"
                    )));
                }
            },
        };
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(
                raw.parse::<JobStatus>()
                    .map_err(|e| ApiError::Invalid(format!("status: {e}")))?,
            ),
        };
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(ListCursor::decode(raw).ok_or_else(|| {
                ApiError::Invalid(format!("cursor: '{raw}' is not a cursor this API issued"))
            })?),
        };
        Ok(ListQuery {
            limit,
            status,
            owner: self.owner.clone().filter(|o| !o.is_empty()),
            after,
        })
    }
}

/// All jobs, newest first, as a plain JSON array. When more exist, the `Link` header gives the
/// next page's URL (`rel="next"`).
#[utoipa::path(
    get, path = "/api/v1/jobs/", tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = Vec<JobView>,
         headers(("Link" = String, description = "`<url>; rel=\"next\"` when there are more jobs"))),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
        (status = 503, description = "The job store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state))]
pub async fn list_jobs(
    State(state): State<SharedState>,
    Query(params): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    let query = params.query()?;
    // One extra row tells whether a next page exists.
    let mut page = state
        .jobs
        .list(&ListQuery {
            limit: query.limit + 1,
            ..query.clone()
        })
        .await?;
    let more = page.len() > query.limit as usize;
    page.truncate(query.limit as usize);
    let mut headers = HeaderMap::new();
    if more && let Some(last) = page.last() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        next.append_pair("limit", &query.limit.to_string());
        if let Some(status) = query.status {
            next.append_pair("status", status.as_str());
        }
        if let Some(owner) = &query.owner {
            next.append_pair("owner", owner);
        }
        next.append_pair("cursor", &ListCursor::after(last).encode());
        let link = format!("</api/v1/jobs/?{}>; rel=\"next\"", next.finish());
        if let Ok(value) = HeaderValue::from_str(&link) {
            headers.insert(header::LINK, value);
        }
    }
    let endpoint = state.objects.endpoint_url();
    let body: Vec<JobView> = page.iter().map(|job| JobView::new(job, endpoint)).collect();
    Ok((headers, Json(body)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThumbnailParams {
    /// Which output (for jobs with several); default the first.
    pub output: Option<String>,
}

/// A URL that downloads the thumbnail without credentials until it expires.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}/thumbnail", tag = "jobs",
    params(("job_id" = String, Path, description = "The id returned by the upload"), ThumbnailParams),
    responses(
        (status = 200, description = "A download link", body = ThumbnailUrl),
        (status = 400, description = "The job is not finished (or failed); `detail` gives its status", body = ErrorBody),
        (status = 404, description = "No such job or output", body = ErrorBody),
    )
)]
#[instrument(skip(state))]
pub async fn get_thumbnail(
    State(state): State<SharedState>,
    Path(job_id): Path<String>,
    Query(params): Query<ThumbnailParams>,
) -> ApiResult<Json<ThumbnailUrl>> {
    let job = load(&state, &job_id).await?;
    match job.status {
        JobStatus::Success => {}
        JobStatus::Failure => {
            let why = job
                .error
                .as_ref()
                .map(|e| format!(": {} ({})", e.message, e.reason))
                .unwrap_or_default();
            return Err(ApiError::BadRequest(format!(
                "Job status is {}; no thumbnail{why}",
                job.status
            )));
        }
        status => {
            return Err(ApiError::BadRequest(format!(
                "Job status is {status}; the thumbnail is not ready yet"
            )));
        }
    }
    let wanted = params.output.as_deref();
    let output = match wanted {
        None => job
            .outputs
            .iter()
            .find(|o| o.name == DEFAULT_OUTPUT)
            .or(job.outputs.first()),
        Some(name) => job.outputs.iter().find(|o| o.name == name),
    }
    .ok_or_else(|| {
        ApiError::NotFound(format!(
            "job '{}' has no output '{}'",
            job.id,
            wanted.unwrap_or(DEFAULT_OUTPUT)
        ))
    })?;
    let thumbnail_url = state.objects.presign_get(&output.key, state.url_expiry).await?;
    let expires_at = chrono::Utc::now() + state.url_expiry;
    Ok(Json(ThumbnailUrl {
        job_id: job.id,
        thumbnail_url,
        expires_at,
        output: output.name.clone(),
    }))
}
