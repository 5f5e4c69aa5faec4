//! Job queries: one job, the list (newest first, cursor-paged), and the thumbnail's download link.
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Query};
use crate::limits::{ClientAddr, RateKey};
use crate::state::SharedState;
use crate::views::{JobView, ThumbnailUrl};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use std::time::Duration;
use thumbnail_core::apikeys::{Scope, validate_owner};
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
        .route("/api/v1/jobs/{job_id}", get(get_job).delete(delete_job))
        .route("/api/v1/jobs/{job_id}/thumbnail", get(get_thumbnail))
}

fn parse_job_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("job '{raw}' not found")))
}

/// The job, if it exists and the caller may see it: another owner's job answers exactly like
/// one that does not exist.
/// An expired job answers 410 Gone (for RETENTION_GONE_SECONDS, then it is forgotten: 404).
pub(crate) async fn load(state: &SharedState, principal: &Principal, raw: &str) -> ApiResult<JobRecord> {
    let job = load_any(state, principal, raw).await?;
    if job.is_expired(thumbnail_core::model::now()) {
        return Err(gone(&job));
    }
    Ok(job)
}

/// The job as [`load`] finds it, also when it expired.
async fn load_any(state: &SharedState, principal: &Principal, raw: &str) -> ApiResult<JobRecord> {
    let id = parse_job_id(raw)?;
    state
        .jobs
        .get(id)
        .await?
        .filter(|job| principal.may_see(job.owner.as_deref()))
        .ok_or_else(|| ApiError::NotFound(format!("job '{id}' not found")))
}

fn gone(job: &JobRecord) -> ApiError {
    let when = job
        .purged_at
        .or(job.expires_at)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    ApiError::Gone(format!(
        "job '{}' expired at {when}; its images and links are deleted",
        job.id
    ))
}

/// Delete a finished job now, before its expiry: its original, thumbnails and links go at once,
/// and the job answers 410 Gone (for RETENTION_GONE_SECONDS), then 404.
#[utoipa::path(
    delete, path = "/api/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "The id returned by the upload")),
    responses(
        (status = 204, description = "Deleted: its images are gone"),
        (status = 404, description = "No such job (or another owner's)", body = ErrorBody),
        (status = 409, description = "The job is not finished yet; delete it once it is", body = ErrorBody),
        (status = 410, description = "The job was deleted or expired already", body = ErrorBody),
        (status = 503, description = "The job store or the object store is unavailable (what was deleted stays deleted; repeat the request)", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal))]
pub async fn delete_job(
    State(state): State<SharedState>,
    principal: Principal,
    Path(job_id): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    principal.require(Scope::Submit)?;
    let job = load_any(&state, &principal, &job_id).await?;
    if job.purged_at.is_some() {
        return Err(gone(&job));
    }
    if !job.status.is_finished() {
        return Err(ApiError::Conflict(format!(
            "job '{}' is {}; it can be deleted once it is finished",
            job.id, job.status
        )));
    }
    // First the expiry, so that a failure part-way leaves the job to the sweeper.
    let now = thumbnail_core::model::now();
    state.jobs.expire_now(job.id, now).await?;
    state.sweeper.purge(&job, now).await?;
    tracing::info!(job_id = %job.id, "job deleted by its owner");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// A number as JSON (and so the OpenAPI document) writes one: `-?(0|[1-9][0-9]*)(.[0-9]+)?`
/// with an optional exponent; no `+`, spaces, `inf` or `NaN`. Pure.
fn is_json_number(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let n = digits(&mut i);
    if n == 0 || (n > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// The longest `wait` a request may ask for, in seconds.
pub const MAX_WAIT_SECONDS: f64 = 60.0;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetJobParams {
    /// Long-poll: if the job is not finished yet, answer as soon as it is, or after this many
    /// seconds (0 to 60, fractions allowed) with its state then. Without it, answer at once. A
    /// caller with 32 long-polls in progress is answered at once.
    #[param(value_type = Option<f64>, minimum = 0, maximum = 60)]
    pub wait: Option<String>,
}

impl GetJobParams {
    fn wait(&self) -> ApiResult<Option<Duration>> {
        match self.wait.as_deref() {
            None => Ok(None),
            Some(raw) => match raw.parse::<f64>().ok().filter(|_| is_json_number(raw)) {
                Some(s) if (0.0..=MAX_WAIT_SECONDS).contains(&s) => Ok(Some(Duration::from_secs_f64(s))),
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
        (status = 404, description = "No such job (or another owner's)", body = ErrorBody),
        (status = 410, description = "The job expired (or was deleted): its images are gone", body = ErrorBody),
        (status = 422, description = "Invalid `wait`", body = ErrorBody),
        (status = 503, description = "The job store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal, client))]
pub async fn get_job(
    State(state): State<SharedState>,
    principal: Principal,
    client: ClientAddr,
    Path(job_id): Path<String>,
    Query(params): Query<GetJobParams>,
) -> ApiResult<Json<JobView>> {
    principal.require(Scope::Read)?;
    // A caller already holding MAX_WAITS_PER_CALLER long-polls gets the job as it is.
    let caller = match principal.owner.as_deref() {
        Some(owner) => RateKey::Owner(owner),
        None => RateKey::Client(client.0),
    };
    let slot = params
        .wait()?
        .and_then(|wait| Some((wait, state.waiters.enter(caller)?)));
    let wait = slot.as_ref().map(|(wait, _)| *wait);
    // Subscribed before the first read, so a finish right after it is not missed.
    let mut finished = wait.map(|_| state.job_events.subscribe());
    let mut job = load(&state, &principal, &job_id).await?;
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
            job = load(&state, &principal, &job_id).await?;
        }
    }
    Ok(Json(JobView::new(&job, state.objects.endpoint_url())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// Only jobs in this status.
    #[param(value_type = Option<crate::views::Status>)]
    pub status: Option<String>,
    /// Only jobs of this owner. With authentication, non-admins may only name themselves.
    #[param(pattern = "^[!-~]{1,253}$")]
    pub owner: Option<String>,
    /// Opaque cursor from the previous page's `Link: <…>; rel="next"` header.
    #[param(pattern = "^[0-9]{1,16}_[0-9a-f]{32}$")]
    pub cursor: Option<String>,
}

impl ListParams {
    fn query(&self) -> ApiResult<ListQuery> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIST_LIMIT,
            Some(raw) => match raw
                .parse::<u32>()
                .ok()
                .filter(|_| raw.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::Invalid(format!(
                        "limit: must be an integer between 1 and {MAX_LIST_LIMIT}, got '{raw}'"
                    )));
                }
            },
        };
        let status = match self.status.as_deref() {
            None => None,
            Some(raw) => Some(
                JobStatus::ALL
                    .into_iter()
                    .find(|s| s.as_str() == raw)
                    .ok_or_else(|| {
                        ApiError::Invalid(format!(
                            "status: '{raw}' is not one of PENDING, STARTED, SUCCESS, FAILURE"
                        ))
                    })?,
            ),
        };
        let after = match self.cursor.as_deref() {
            None => None,
            Some(raw) => Some(ListCursor::decode(raw).ok_or_else(|| {
                ApiError::Invalid(format!("cursor: '{raw}' is not a cursor this API issued"))
            })?),
        };
        let owner = self.owner.clone();
        if let Some(owner) = &owner {
            validate_owner(owner).map_err(|e| ApiError::Invalid(format!("owner: {e}")))?;
        }
        Ok(ListQuery {
            limit,
            status,
            owner,
            after,
        })
    }
}

/// Jobs, newest first, as a plain JSON array: the caller's own (admins and, without
/// authentication, everyone: all jobs). When more exist, the `Link` header gives the next page's
/// URL (`rel="next"`).
#[utoipa::path(
    get, path = "/api/v1/jobs/", tag = "jobs",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = Vec<JobView>,
         headers(("Link" = String, description = "`<url>; rel=\"next\"` when there are more jobs"))),
        (status = 403, description = "`owner` names someone else and the caller is not an admin", body = ErrorBody),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
        (status = 503, description = "The job store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal))]
pub async fn list_jobs(
    State(state): State<SharedState>,
    principal: Principal,
    Query(params): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    principal.require(Scope::Read)?;
    let mut query = params.query()?;
    query.owner = principal.owner_for_list(query.owner)?;
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
    #[param(max_length = 63)]
    pub output: Option<String>,
}

/// A URL that downloads the thumbnail without credentials until it expires.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}/thumbnail", tag = "jobs",
    params(("job_id" = String, Path, description = "The id returned by the upload"), ThumbnailParams),
    responses(
        (status = 200, description = "A download link", body = ThumbnailUrl),
        (status = 400, description = "The job is not finished (or failed); `detail` gives its status", body = ErrorBody),
        (status = 404, description = "No such job (or another owner's) or output", body = ErrorBody),
        (status = 410, description = "The job expired (or was deleted): its images are gone", body = ErrorBody),
        (status = 422, description = "`output` longer than 63 characters", body = ErrorBody),
        (status = 503, description = "The job store or the object store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal))]
pub async fn get_thumbnail(
    State(state): State<SharedState>,
    principal: Principal,
    Path(job_id): Path<String>,
    Query(params): Query<ThumbnailParams>,
) -> ApiResult<Json<ThumbnailUrl>> {
    principal.require(Scope::Read)?;
    // Characters, as the OpenAPI document's maxLength counts them (not bytes).
    if let Some(n) = params
        .output
        .as_deref()
        .map(|o| o.chars().count())
        .filter(|&n| n > 63)
    {
        return Err(ApiError::Invalid(format!(
            "output: at most 63 characters, got {n}"
        )));
    }
    let job = load(&state, &principal, &job_id).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_json_writes_them() {
        for good in ["0", "5", "60", "0.5", "7.4e-119", "1E2", "-0", "12.25e+1"] {
            assert!(is_json_number(good), "{good}");
        }
        for bad in [
            "", "-", ".5", "5.", "+5", " 5", "05", "inf", "NaN", "1e", "0x10", "1_000",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }
}
