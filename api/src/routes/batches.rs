//! Batches: `POST /api/v1/batches/` takes many images (repeated `image` fields) with one set of
//! options and answers with one entry per image, in order: its job, or why that image was
//! refused. Each image is checked on its own (a corrupt file fails its own entry only) and
//! counts against the owner's rate and quotas like a single upload. `GET /api/v1/batches/{id}`
//! shows `N/M` progress and the jobs; `/events` streams their changes.
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Query};
use crate::limits::{ClientAddr, RateKey, WaitSlot};
use crate::metrics::BufferLabels;
use crate::pacing::{Pace, pace_uploads};
use crate::routes::events::keep_alive_every;
use crate::routes::thumbnails::{
    Choices, Lifecycle, OptionParams, Upload, choices, limit, multipart_error, probe_upload, query_fields,
    read_text, receive, store_and_launch, with_headers,
};
use crate::state::SharedState;
use crate::views::JobView;
use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;
use thumbnail_core::apikeys::Scope;
use thumbnail_core::batches::{BatchEntry, BatchRecord, NewBatch, Progress, progress};
use thumbnail_core::model::{BatchSlot, JobRecord, JobStatus};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, instrument, warn};
use utoipa::ToSchema;
use uuid::Uuid;

/// Images stored and launched at once: bounds the load one batch puts on the object store, the
/// database and, in Kubernetes mode, the API server (one ThumbnailJob per image).
const LAUNCH_CONCURRENCY: usize = 4;
/// Longest file name kept for an entry (it is only shown).
const MAX_FILENAME: usize = 255;

/// The upload route (paced and with its own body cap, like single uploads).
pub fn upload_router(pace: Pace) -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/api/v1/batches/", post(create_batch))
        .route("/api/v1/batches", post(create_batch))
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(pace, pace_uploads))
}

pub fn router() -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/api/v1/batches/{batch_id}", get(get_batch))
        .route("/api/v1/batches/{batch_id}/events", get(batch_events))
}

/// The batch form: repeated `image` fields and the options of a single upload (also as query
/// parameters), applied to every image.
#[derive(ToSchema, Deserialize)]
#[allow(dead_code)]
pub struct BatchForm {
    /// The images, one file per `image` field (up to MAX_BATCH_IMAGES), each at most
    /// MAX_UPLOAD_BYTES and all together at most MAX_BATCH_BYTES.
    #[schema(value_type = Vec<String>, format = Binary)]
    image: Vec<String>,
    #[schema(minimum = 1, maximum = 4096, required = false)]
    width: u32,
    #[schema(minimum = 1, maximum = 4096, required = false)]
    height: u32,
    #[schema(required = false)]
    fit: crate::routes::thumbnails::FitName,
    #[schema(required = false)]
    format: crate::routes::thumbnails::FormatName,
    #[schema(minimum = 1, maximum = 100, required = false)]
    quality: u8,
    #[schema(required = false)]
    upscale: bool,
    #[schema(required = false)]
    gravity: crate::routes::thumbnails::GravityName,
    #[schema(required = false)]
    animated: bool,
    #[schema(pattern = "^[!-~]{1,253}$", required = false)]
    owner: String,
    #[schema(minimum = 1, maximum = 2592000, required = false)]
    retention_seconds: u64,
    /// Where to POST one signed `thumbnail.batch.completed` event when every job of the batch has
    /// finished (the jobs send none of their own).
    #[schema(max_length = 1024, required = false)]
    webhook_url: String,
}

/// One image of a batch as the upload answered it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct BatchEntryView {
    /// Position in the upload, from 0.
    pub index: u32,
    /// The part's file name, as sent.
    pub filename: Option<String>,
    /// The image's job; absent when the image was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    /// For a refused image: the status a single upload of it would have answered (413, 415,
    /// 422, 429, 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For a refused image: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<&BatchEntry> for BatchEntryView {
    fn from(e: &BatchEntry) -> Self {
        BatchEntryView {
            index: e.index,
            filename: e.filename.clone(),
            job_id: e.job_id,
            status: e.status,
            detail: e.detail.clone(),
        }
    }
}

/// The answer to a batch upload.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct BatchAccepted {
    pub batch_id: Uuid,
    /// Images that became jobs.
    pub accepted: u32,
    /// Images refused (their entries say why).
    pub refused: u32,
    /// One entry per image, in upload order.
    pub entries: Vec<BatchEntryView>,
}

/// Counts of a batch's images.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct ProgressView {
    pub total: u32,
    pub accepted: u32,
    pub refused: u32,
    pub pending: u32,
    pub started: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Jobs expired or deleted meanwhile.
    pub expired: u32,
    /// Finished jobs: succeeded + failed + expired.
    pub finished: u32,
    /// `finished/accepted`, e.g. `3/5`.
    pub summary: String,
    /// Every job has finished.
    pub done: bool,
}

impl From<Progress> for ProgressView {
    fn from(p: Progress) -> Self {
        ProgressView {
            total: p.total,
            accepted: p.accepted,
            refused: p.refused,
            pending: p.pending,
            started: p.started,
            succeeded: p.succeeded,
            failed: p.failed,
            expired: p.expired,
            finished: p.finished(),
            summary: format!("{}/{}", p.finished(), p.accepted),
            done: p.is_done(),
        }
    }
}

/// A batch entry with its job as `GET /api/v1/jobs/{job_id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct BatchJobView {
    #[serde(flatten)]
    pub entry: BatchEntryView,
    /// The job; absent for a refused image or one whose job expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobView>,
}

/// A batch and its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct BatchView {
    pub batch_id: Uuid,
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When the batch and its jobs expire (410 Gone after it, then 404).
    pub expires_at: DateTime<Utc>,
    pub progress: ProgressView,
    /// Set when the batch has a webhook URL and its completion event was queued (see the first
    /// job's `/deliveries` for the attempts).
    pub notified_at: Option<DateTime<Utc>>,
    pub entries: Vec<BatchJobView>,
}

impl BatchView {
    fn new(batch: &BatchRecord, jobs: &[JobRecord], endpoint_url: &str) -> Self {
        let entries = batch
            .entries
            .iter()
            .map(|entry| BatchJobView {
                entry: entry.into(),
                job: entry
                    .job_id
                    .and_then(|id| jobs.iter().find(|j| j.id == id && j.purged_at.is_none()))
                    .map(|job| JobView::new(job, endpoint_url)),
            })
            .collect();
        BatchView {
            batch_id: batch.id,
            owner: batch.owner.clone(),
            created_at: batch.created_at,
            expires_at: batch.expires_at,
            progress: progress(&batch.entries, jobs).into(),
            notified_at: batch.notified_at,
            entries,
        }
    }
}

/// One image as received: its bytes (in memory or spooled), or why it was refused already.
struct ReceivedImage {
    filename: Option<String>,
    upload: ApiResult<Upload>,
}

/// What the form held.
struct BatchUpload {
    fields: HashMap<String, String>,
    images: Vec<ReceivedImage>,
    bytes: u64,
}

/// The part's file name, kept for display only: control characters removed, bounded. Pure.
fn display_name(raw: Option<&str>) -> Option<String> {
    let name: String = raw?.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some(name.chars().take(MAX_FILENAME).collect())
}

/// Step "receive": the options (query first, a form field wins) and every image, each capped at
/// MAX_UPLOAD_BYTES while it streams and all together at MAX_BATCH_BYTES. An image over its cap
/// fails its own entry (its remaining bytes are read and dropped, within the batch's cap).
async fn receive_batch(
    state: &SharedState,
    query: &OptionParams,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<BatchUpload> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::Invalid(format!(
            "image: the body must be multipart/form-data with one or more file fields 'image' ({})",
            e.body_text()
        ))
    })?;
    let mut fields = query_fields(state, query)?;
    // Small sized requests are read into memory, as single uploads are.
    let in_memory = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .filter(|&len| len <= state.in_memory_upload_bytes);
    let max_images = state.batches.max_images;
    let max_bytes = state.batches.max_bytes;
    let mut images = Vec::new();
    let mut form_fields: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "image" {
            if images.len() >= max_images {
                return Err(ApiError::PayloadTooLarge(format!(
                    "image: at most {max_images} images per batch (MAX_BATCH_IMAGES); send the rest in another batch"
                )));
            }
            let filename = display_name(field.file_name());
            let left = max_bytes.saturating_sub(bytes);
            let cap = state.limits.max_input_bytes.min(left);
            let upload = match receive(state, field, cap, in_memory, None).await {
                Ok(upload) if upload.size() == 0 => Err(ApiError::Invalid("image: the file is empty".into())),
                Ok(upload) => {
                    bytes += upload.size();
                    Ok(upload)
                }
                // Over the batch's cap: the request is too large, whichever image crossed it.
                Err(ApiError::PayloadTooLarge(_)) if left < state.limits.max_input_bytes => {
                    return Err(ApiError::PayloadTooLarge(format!(
                        "the batch's images are larger than {max_bytes} bytes in all (MAX_BATCH_BYTES); \
                         send fewer per batch"
                    )));
                }
                // Over MAX_UPLOAD_BYTES: that image's failure (the parser skips its remaining bytes).
                Err(err @ ApiError::PayloadTooLarge(_)) => Err(err),
                // A body that arrives too slowly or cannot be read: the whole request's.
                Err(err) => return Err(err),
            };
            images.push(ReceivedImage { filename, upload });
        } else if field.file_name().is_some() {
            return Err(ApiError::Invalid(format!(
                "{name:?}: this field holds a file, but images must be sent in fields named 'image' \
                 (e.g. curl -F image=@a.jpg -F image=@b.jpg)"
            )));
        } else if !crate::routes::thumbnails::FIELDS.contains(&name.as_str()) {
            return Err(ApiError::Invalid(format!(
                "{name:?}: unknown field; the form's fields are image (repeated), {}",
                crate::routes::thumbnails::FIELDS[1..].join(", ")
            )));
        } else {
            let text = read_text(field, &name).await?;
            if form_fields.contains(&name) {
                return Err(ApiError::Invalid(format!(
                    "{name}: the field was sent more than once"
                )));
            }
            form_fields.push(name.clone());
            fields.insert(name, text);
        }
    }
    if images.is_empty() {
        return Err(ApiError::Invalid(
            "image: field required (one or more files in multipart fields 'image')".into(),
        ));
    }
    Ok(BatchUpload {
        fields,
        images,
        bytes,
    })
}

/// Step "store and launch" for one image: probe, then store and launch as a single upload
/// does. Its failure is its entry's.
async fn launch_one(
    state: &SharedState,
    job: &ImageJob,
    index: u32,
    image: &ReceivedImage,
    rate_refusal: Option<ApiError>,
) -> BatchEntry {
    let result = async {
        let upload = image.upload.as_ref().map_err(clone_error)?;
        if let Some(refusal) = rate_refusal {
            return Err(refusal);
        }
        let probe = probe_upload(upload, &state.limits).await?;
        let options = job.requested.for_input(job.accept.as_deref(), &probe);
        let lifecycle = Lifecycle {
            retention: job.retention,
            webhook_url: None,
            batch: Some(BatchSlot {
                batch_id: job.batch_id,
                index,
            }),
        };
        let id = store_and_launch(
            state,
            job.owner.clone(),
            options,
            lifecycle,
            upload,
            &probe,
            &HeaderMap::new(),
        )
        .await?;
        state.metrics.upload_bytes.inc_by(upload.size());
        let buffered = match upload {
            Upload::Memory(_) => "memory",
            Upload::Spooled { .. } => "spool",
        };
        state
            .metrics
            .uploads
            .get_or_create(&BufferLabels { buffered })
            .inc();
        ApiResult::Ok(id)
    }
    .await;
    match result {
        Ok(id) => BatchEntry::accepted(index, image.filename.clone(), id),
        Err(err) => {
            let status = err.status();
            if status.is_server_error() {
                warn!(batch_id = %job.batch_id, index, error = ?err, "a batch image could not be stored");
            }
            BatchEntry::refused(index, image.filename.clone(), status.as_u16(), err.to_string())
        }
    }
}

/// An image's stored failure, answered again (errors are not `Clone`).
fn clone_error(err: &ApiError) -> ApiError {
    match err {
        ApiError::PayloadTooLarge(d) => ApiError::PayloadTooLarge(d.clone()),
        ApiError::UnsupportedMediaType(d) => ApiError::UnsupportedMediaType(d.clone()),
        ApiError::Invalid(d) => ApiError::Invalid(d.clone()),
        other => ApiError::Internal(other.to_string()),
    }
}

/// What every image of the batch shares.
struct ImageJob {
    batch_id: Uuid,
    owner: Option<String>,
    requested: crate::routes::thumbnails::RequestedOptions,
    retention: Option<Duration>,
    accept: Option<String>,
}

/// Upload many images with one set of options.
///
/// Each `image` field becomes a job (detected, probed and limited exactly like a single
/// upload), or fails its own entry with the status and `detail` a single upload of it would
/// have answered; the others go on. The answer lists the entries in upload order. When no
/// image is accepted, nothing is stored and the answer is the first image's error.
#[utoipa::path(
    post, path = "/api/v1/batches/", tag = "batches",
    params(OptionParams),
    request_body(content(
        (BatchForm = "multipart/form-data",
         encoding(("image" = (content_type = "image/jpeg, image/png, image/webp, image/gif, image/heic, image/avif, image/jxl, image/tiff, image/bmp, image/x-icon, image/svg+xml"))))
    )),
    responses(
        (status = 202, description = "Accepted: one entry per image (a job, or why the image was refused)", body = BatchAccepted,
         headers(("Location" = String, description = "URL of the batch"))),
        (status = 403, description = "`owner` names someone else and the caller is not an admin", body = ErrorBody),
        (status = 408, description = "The upload arrived too slowly", body = ErrorBody),
        (status = 413, description = "More than MAX_BATCH_IMAGES images, more than MAX_BATCH_BYTES in all, or (no image accepted) the first image is over MAX_UPLOAD_BYTES", body = ErrorBody),
        (status = 415, description = "No image accepted; the first is not a supported format", body = ErrorBody),
        (status = 422, description = "No `image` field, an unknown or repeated field, an invalid option; or no image accepted and the first one's header is refused", body = ErrorBody),
        (status = 429, description = "The caller's upload rate, unfinished jobs or stored bytes are at their limit (for the first image; later images fail their own entries)", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The queue is full or a dependency is unavailable and no image was accepted", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[instrument(skip_all, fields(batch_id))]
pub async fn create_batch(
    State(state): State<SharedState>,
    principal: Principal,
    client: ClientAddr,
    Query(query): Query<OptionParams>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    principal.require(Scope::Submit)?;
    let rate_headers = limit(&state, &principal, client)?;
    let form = receive_batch(&state, &query, &headers, multipart).await?;

    // Validate what every image shares.
    let Choices {
        requested,
        owner,
        retention,
        webhook_url: batch_webhook,
    } = choices(&state, &principal, &form.fields)?;
    let batch_id = Uuid::new_v4();
    tracing::Span::current().record("batch_id", tracing::field::display(batch_id));
    let created_at = thumbnail_core::model::now();
    let job = ImageJob {
        batch_id,
        owner,
        requested,
        retention,
        accept: headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let job = std::sync::Arc::new(job);

    // The request took one token of the caller's rate; each further image takes its own, and
    // one refused fails its own entry. The answer's RateLimit headers are the last token's.
    let mut rate_headers = rate_headers;
    let mut covered = false;
    let mut rate_refusals = Vec::with_capacity(form.images.len());
    for image in &form.images {
        let refusal = if image.upload.is_err() {
            None
        } else if !covered {
            covered = true;
            None
        } else {
            let key = match principal.owner.as_deref() {
                Some(owner) => RateKey::Owner(owner),
                None => RateKey::Client(client.0),
            };
            match state.rate.check(key) {
                Ok(headers) => {
                    rate_headers = headers;
                    None
                }
                Err(err) => Some(err),
            }
        };
        rate_refusals.push(refusal);
    }

    // Store and launch, a few at a time, keeping the upload's order.
    let entries: Vec<BatchEntry> =
        futures::stream::iter(form.images.into_iter().zip(rate_refusals).enumerate())
            .map(|(index, (image, refusal))| {
                let (state, job) = (state.clone(), job.clone());
                async move { launch_one(&state, &job, index as u32, &image, refusal).await }
            })
            .buffered(LAUNCH_CONCURRENCY)
            .collect()
            .await;
    let accepted = entries.iter().filter(|e| e.job_id.is_some()).count() as u32;
    if accepted == 0 {
        return Err(with_headers(entry_error(&entries[0]), &rate_headers));
    }

    // Recorded once every job exists, so that the batch is never seen complete too early.
    let batch = NewBatch {
        id: batch_id,
        owner: job.owner.clone(),
        created_at,
        expires_at: state.sweeper.policy.expiry(created_at, retention),
        entries: entries.clone(),
        webhook_url: batch_webhook,
    };
    if let Err(err) = state.jobs.create_batch(&batch).await {
        // The jobs run and are listed on their own; only the batch's grouping is lost.
        warn!(%batch_id, error = %err, "the batch's jobs were accepted but the batch could not be recorded");
        return Err(err.into());
    }
    info!(
        images = entries.len(),
        accepted,
        bytes = form.bytes,
        "batch accepted"
    );
    Ok(accepted_response(batch_id, &entries, rate_headers))
}

/// A refused entry's error, as the answer to the whole request. Pure.
fn entry_error(entry: &BatchEntry) -> ApiError {
    let detail = entry.detail.clone().unwrap_or_default();
    match entry.status.unwrap_or(500) {
        413 => ApiError::PayloadTooLarge(detail),
        415 => ApiError::UnsupportedMediaType(detail),
        422 => ApiError::Invalid(detail),
        403 => ApiError::Forbidden(detail),
        status @ (429 | 503) => ApiError::limited(
            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            detail,
            Duration::from_secs(5),
            HeaderMap::new(),
        ),
        _ => ApiError::Internal(detail),
    }
}

fn accepted_response(batch_id: Uuid, entries: &[BatchEntry], rate_headers: HeaderMap) -> Response {
    let accepted = entries.iter().filter(|e| e.job_id.is_some()).count() as u32;
    let body = BatchAccepted {
        batch_id,
        accepted,
        refused: entries.len() as u32 - accepted,
        entries: entries.iter().map(BatchEntryView::from).collect(),
    };
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/batches/{batch_id}")) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().extend(rate_headers);
    response
}

/// The batch, if the caller may see it (another owner's answers like one that does not exist);
/// 410 after its expiry.
async fn load_batch(state: &SharedState, principal: &Principal, raw: &str) -> ApiResult<BatchRecord> {
    let not_found = || ApiError::NotFound(format!("batch '{raw}' not found"));
    let id = Uuid::parse_str(raw).map_err(|_| not_found())?;
    let batch = state
        .jobs
        .get_batch(id)
        .await?
        .filter(|b| principal.may_see(b.owner.as_deref()))
        .ok_or_else(not_found)?;
    if batch.expires_at <= thumbnail_core::model::now() {
        return Err(ApiError::Gone(format!(
            "batch '{id}' expired at {}; its images and links are deleted",
            batch
                .expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )));
    }
    Ok(batch)
}

/// A batch's progress (`N/M`, counts by status) and its jobs, in upload order.
#[utoipa::path(
    get, path = "/api/v1/batches/{batch_id}", tag = "batches",
    params(("batch_id" = String, Path, description = "The id returned by the batch upload")),
    responses(
        (status = 200, description = "The batch", body = BatchView),
        (status = 404, description = "No such batch (or another owner's)", body = ErrorBody),
        (status = 410, description = "The batch expired", body = ErrorBody),
        (status = 503, description = "The job store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal))]
pub async fn get_batch(
    State(state): State<SharedState>,
    principal: Principal,
    Path(batch_id): Path<String>,
) -> ApiResult<Json<BatchView>> {
    principal.require(Scope::Read)?;
    let batch = load_batch(&state, &principal, &batch_id).await?;
    let jobs = state.jobs.batch_jobs(batch.id).await?;
    Ok(Json(BatchView::new(&batch, &jobs, state.objects.endpoint_url())))
}

/// What a batch stream still has to do.
struct FollowBatch {
    state: SharedState,
    principal: Principal,
    raw_id: String,
    batch: BatchRecord,
    /// The status last sent per job: every live job of the batch after the first read.
    sent: HashMap<Uuid, JobStatus>,
    /// Events ready to go, oldest first.
    queue: std::collections::VecDeque<Event>,
    finished: broadcast::Receiver<Uuid>,
    started: bool,
    done: bool,
    _slot: WaitSlot,
}

impl FollowBatch {
    /// Wait until one of the batch's jobs may have changed: its finish announced, or the re-read
    /// interval. Finishes of other jobs do not wake the stream.
    async fn changed(&mut self) {
        let recheck = self.state.long_poll_recheck;
        let (finished, members) = (&mut self.finished, &self.sent);
        let _ = tokio::time::timeout(recheck, async {
            loop {
                match finished.recv().await {
                    Ok(id) if !members.contains_key(&id) => continue,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                    Ok(_) | Err(RecvError::Lagged(_)) => return,
                }
            }
        })
        .await;
    }

    /// Queue a `job` event per status change since the last read, and the final `progress`
    /// event when the batch is done.
    fn diff(&mut self, jobs: &[JobRecord]) {
        let endpoint = self.state.objects.endpoint_url();
        if !self.started {
            self.started = true;
            let view = BatchView::new(&self.batch, jobs, endpoint);
            self.queue.push_back(json_event("progress", &view));
        }
        for job in jobs {
            if job.purged_at.is_none() && self.sent.get(&job.id) != Some(&job.status) {
                self.sent.insert(job.id, job.status);
                self.queue
                    .push_back(json_event("job", &JobView::new(job, endpoint)));
            }
        }
        let p = progress(&self.batch.entries, jobs);
        if p.is_done() {
            self.done = true;
            self.queue.push_back(json_event(
                "progress",
                &BatchView::new(&self.batch, jobs, endpoint),
            ));
        }
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            if self.started {
                let stopping = self.state.stopping.clone();
                tokio::select! {
                    _ = stopping.cancelled() => return None,
                    _ = self.changed() => {}
                }
                if let Err(err) = load_batch(&self.state, &self.principal, &self.raw_id).await {
                    self.done = true;
                    return Some(Event::default().event("error").data(err.to_string()));
                }
            }
            match self.state.jobs.batch_jobs(self.batch.id).await {
                Ok(jobs) => self.diff(&jobs),
                Err(error) => warn!(%error, "cannot read a batch's jobs; retrying"),
            }
        }
    }
}

fn json_event<T: Serialize>(name: &'static str, value: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(name).data("{}"))
}

/// Follow a batch live: server-sent events. `progress` (the batch, as `GET
/// /api/v1/batches/{batch_id}` shows it) first; then `job` (the job, as `GET
/// /api/v1/jobs/{job_id}` shows it) at every status change of one of its jobs; then a final
/// `progress` when every job has finished, and the stream closes.
#[utoipa::path(
    get, path = "/api/v1/batches/{batch_id}/events", tag = "batches",
    params(("batch_id" = String, Path, description = "The id returned by the batch upload")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: progress`, then `event: job` per status change, then a final `event: progress`; `event: error` when the batch expires meanwhile",
         content_type = "text/event-stream", body = crate::routes::events::StreamedEvent),
        (status = 404, description = "No such batch (or another owner's)", body = ErrorBody),
        (status = 410, description = "The batch expired", body = ErrorBody),
        (status = 429, description = "The caller has 32 event streams and long-polls open", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The job store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal, client))]
pub async fn batch_events(
    State(state): State<SharedState>,
    principal: Principal,
    client: ClientAddr,
    Path(batch_id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    principal.require(Scope::Read)?;
    let slot = crate::routes::events::stream_slot(&state, &principal, client)?;
    // Subscribed before the first read, so a finish right after it is not missed.
    let finished = state.job_events.subscribe();
    let batch = load_batch(&state, &principal, &batch_id).await?;
    let keep_alive = keep_alive_every(state.keep_alive_timeout);
    let follow = FollowBatch {
        state,
        principal,
        raw_id: batch_id,
        batch,
        sent: HashMap::new(),
        queue: Default::default(),
        finished,
        started: false,
        done: false,
        _slot: slot,
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_kept_for_display_only() {
        assert_eq!(display_name(Some("a.jpg")).as_deref(), Some("a.jpg"));
        assert_eq!(display_name(Some("  \u{7}b\n.png ")).as_deref(), Some("b.png"));
        assert_eq!(display_name(Some("   ")), None);
        assert_eq!(display_name(None), None);
        assert_eq!(display_name(Some(&"x".repeat(1000))).unwrap().len(), MAX_FILENAME);
    }

    #[test]
    fn a_refused_entry_answers_as_a_single_upload_would() {
        for (status, expected) in [
            (413, 413),
            (415, 415),
            (422, 422),
            (429, 429),
            (503, 503),
            (500, 500),
        ] {
            let entry = BatchEntry::refused(0, None, status, "why".into());
            assert_eq!(entry_error(&entry).status().as_u16(), expected);
        }
    }
}
