//! The upload: validate everything that can be validated before anything is stored, then store
//! the original, record the job and hand it on. A failure at any step undoes the earlier ones.
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::metrics::BufferLabels;
use crate::state::SharedState;
use crate::views::JobAccepted;
use axum::Json;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use std::collections::HashMap;
use thumbnail_core::model::{NewJob, OutputSpec};
use thumbnail_engine::{EngineError, Fit, Limits, OutputFormat, ProbeInfo, ThumbnailOptions};
use tokio::io::AsyncWriteExt;
use tracing::{info, instrument, warn};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Bytes of a spooled upload kept in memory for the header probe; the rest is only on disk.
const HEAD_BYTES: usize = 256 * 1024;
/// Longest accepted text form field (options are short).
const MAX_TEXT_FIELD: usize = 1024;

pub fn router() -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/api/v1/thumbnails/", post(create_thumbnail))
        .route("/api/v1/thumbnails", post(create_thumbnail))
        // The size cap is enforced while streaming (413 with a `detail`), not by axum's default
        // 2 MB body limit.
        .layer(DefaultBodyLimit::disable())
}

/// Thumbnail options, as query parameters or form fields (a form field wins).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OptionParams {
    /// Box width in pixels, 1–4096 (default 100).
    pub width: Option<String>,
    /// Box height in pixels, 1–4096 (default 100).
    pub height: Option<String>,
    /// cover (default: fill the box, centre-crop), contain (fit inside) or fill (stretch).
    pub fit: Option<String>,
    /// jpeg, png or webp (default: the input's format; GIF becomes PNG).
    pub format: Option<String>,
    /// Encoder quality 1–100 (default 80).
    pub quality: Option<String>,
    /// Allow enlarging images smaller than the box: true or false (default false).
    pub upscale: Option<String>,
    /// Free-form owner recorded with the job; the list can be filtered by it.
    pub owner: Option<String>,
}

/// The multipart form. Only `image` is required.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The image file (JPEG, PNG, WebP or GIF; detected from the bytes).
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    image: String,
    width: Option<u32>,
    height: Option<u32>,
    fit: Option<String>,
    format: Option<String>,
    quality: Option<u8>,
    upscale: Option<bool>,
    owner: Option<String>,
}

/// Parse the options, naming the field in every error. Pure.
pub fn parse_options(fields: &HashMap<String, String>) -> ApiResult<ThumbnailOptions> {
    fn number<T: std::str::FromStr>(
        fields: &HashMap<String, String>,
        name: &'static str,
    ) -> ApiResult<Option<T>> {
        match fields.get(name).map(|s| s.trim()) {
            None | Some("") => Ok(None),
            Some(raw) => raw
                .parse::<T>()
                .map(Some)
                .map_err(|_| ApiError::Invalid(format!("{name}: must be an integer, got '{raw}'"))),
        }
    }
    let mut options = ThumbnailOptions::default();
    if let Some(w) = number::<u32>(fields, "width")? {
        options.width = w;
    }
    if let Some(h) = number::<u32>(fields, "height")? {
        options.height = h;
    }
    if let Some(q) = number::<i64>(fields, "quality")? {
        options.quality = u8::try_from(q)
            .ok()
            .filter(|q| (1..=100).contains(q))
            .ok_or_else(|| ApiError::Invalid(format!("quality: must be between 1 and 100, got {q}")))?;
    }
    if let Some(raw) = fields.get("fit").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        options.fit = raw
            .parse::<Fit>()
            .map_err(|e| ApiError::Invalid(format!("fit: {e}")))?;
    }
    if let Some(raw) = fields.get("format").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        options.format = Some(
            raw.parse::<OutputFormat>()
                .map_err(|e| ApiError::Invalid(format!("format: {e}")))?,
        );
    }
    if let Some(raw) = fields.get("upscale").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        options.upscale = match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(ApiError::Invalid(format!(
                    "upscale: must be true or false, got '{raw}'"
                )));
            }
        };
    }
    options.validate().map_err(|e| ApiError::Invalid(e.to_string()))?;
    Ok(options)
}

/// The uploaded file: in memory (small requests) or spooled to a temporary file with its first
/// bytes in memory.
enum Upload {
    Memory(Bytes),
    Spooled {
        file: tempfile::NamedTempFile,
        head: Vec<u8>,
        size: u64,
    },
}

impl Upload {
    fn size(&self) -> u64 {
        match self {
            Upload::Memory(b) => b.len() as u64,
            Upload::Spooled { size, .. } => *size,
        }
    }
}

/// Read the file field: into memory when the whole request is small (`in_memory`: its length,
/// which bounds the file's), else to a spool file. Either way the size cap is enforced while
/// reading.
async fn receive(
    state: &SharedState,
    mut field: Field<'_>,
    max: u64,
    in_memory: Option<u64>,
) -> ApiResult<Upload> {
    if let Some(request_length) = in_memory {
        let mut buf = BytesMut::with_capacity(request_length.min(max) as usize);
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            let size = (buf.len() + chunk.len()) as u64;
            if size > max {
                return Err(EngineError::FileTooLarge { size, max }.into());
            }
            buf.extend_from_slice(&chunk);
        }
        return Ok(Upload::Memory(buf.freeze()));
    }
    tokio::fs::create_dir_all(&state.spool_dir)
        .await
        .map_err(|e| ApiError::Internal(format!("creating the spool directory: {e}")))?;
    let file = tempfile::Builder::new()
        .prefix("upload-")
        .tempfile_in(&state.spool_dir)
        .map_err(|e| ApiError::Internal(format!("creating a spool file: {e}")))?;
    let std_file = file
        .as_file()
        .try_clone()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut out = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(std_file));
    let mut head = Vec::with_capacity(HEAD_BYTES.min(64 * 1024));
    let mut size = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        size += chunk.len() as u64;
        if size > max {
            return Err(EngineError::FileTooLarge { size, max }.into());
        }
        if head.len() < HEAD_BYTES {
            let take = (HEAD_BYTES - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        out.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(format!("spooling the upload: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| ApiError::Internal(format!("spooling the upload: {e}")))?;
    Ok(Upload::Spooled { file, head, size })
}

fn multipart_error(err: axum::extract::multipart::MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge(format!("request body too large: {}", err.body_text()));
    }
    ApiError::Invalid(format!(
        "image: the multipart body could not be read: {}",
        err.body_text()
    ))
}

/// Probe the header from the bytes kept in memory; when the header is longer than those (huge
/// EXIF or ICC segments before the frame header), read the whole spooled file, which the size cap
/// bounds.
async fn probe_upload(upload: &Upload, limits: &Limits) -> ApiResult<ProbeInfo> {
    // The size was checked while streaming; the probe only sees a prefix.
    let probe_limits = Limits {
        max_input_bytes: u64::MAX,
        ..*limits
    };
    let (file, head, size) = match upload {
        Upload::Memory(bytes) => return Ok(thumbnail_engine::probe(bytes, &probe_limits)?),
        Upload::Spooled { file, head, size } => (file, head, *size),
    };
    match thumbnail_engine::probe(head, &probe_limits) {
        Err(EngineError::Corrupt { .. }) if (head.len() as u64) < size => {
            let bytes = tokio::fs::read(file.path())
                .await
                .map_err(|e| ApiError::Internal(format!("reading the spooled upload: {e}")))?;
            tokio::task::spawn_blocking(move || thumbnail_engine::probe(&bytes, &probe_limits))
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?
                .map_err(Into::into)
        }
        other => other.map_err(Into::into),
    }
}

/// Upload an image and start making its thumbnail.
///
/// The format is detected from the bytes (JPEG, PNG, WebP, GIF). The answer is 202 with the job
/// id and a `Location` header pointing at the job.
#[utoipa::path(
    post, path = "/api/v1/thumbnails/", tag = "thumbnails",
    params(OptionParams),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Accepted; poll the job", body = JobAccepted,
         headers(("Location" = String, description = "URL of the job"))),
        (status = 413, description = "The file is larger than MAX_UPLOAD_BYTES", body = ErrorBody),
        (status = 415, description = "Not a JPEG, PNG, WebP or GIF; `detail` names what it is", body = ErrorBody),
        (status = 422, description = "Missing, empty or duplicated `image`, an invalid option, too many pixels, or a corrupt header", body = ErrorBody),
        (status = 503, description = "The database or the object store is unavailable; nothing was stored", body = ErrorBody),
    )
)]
#[instrument(skip_all, fields(job_id))]
pub async fn create_thumbnail(
    State(state): State<SharedState>,
    Query(query): Query<OptionParams>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    // Small sized requests are read into memory: the bytes go to the object store from memory
    // and on to an in-process worker, which then need not read them back. Bigger (or unsized)
    // uploads stream through a spool file, so memory does not grow with upload size.
    let in_memory = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .filter(|&len| len <= state.in_memory_upload_bytes);
    let mut multipart = multipart.map_err(|e| {
        ApiError::Invalid(format!(
            "image: the body must be multipart/form-data with a file field 'image' ({})",
            e.body_text()
        ))
    })?;
    let mut fields: HashMap<String, String> = HashMap::new();
    for (name, value) in [
        ("width", &query.width),
        ("height", &query.height),
        ("fit", &query.fit),
        ("format", &query.format),
        ("quality", &query.quality),
        ("upscale", &query.upscale),
        ("owner", &query.owner),
    ] {
        if let Some(v) = value {
            fields.insert(name.to_owned(), v.clone());
        }
    }
    let mut upload: Option<Upload> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "image" {
            if upload.is_some() {
                return Err(ApiError::Invalid(
                    "image: the field was sent more than once; send one file".into(),
                ));
            }
            upload = Some(receive(&state, field, state.limits.max_input_bytes, in_memory).await?);
        } else {
            let text = field.bytes().await.map_err(multipart_error)?;
            if text.len() > MAX_TEXT_FIELD {
                return Err(ApiError::Invalid(format!("{name}: value too long")));
            }
            fields.insert(name.clone(), String::from_utf8_lossy(&text).into_owned());
        }
    }
    let upload = upload.ok_or_else(|| {
        ApiError::Invalid("image: field required (a file in multipart field 'image')".into())
    })?;
    if upload.size() == 0 {
        return Err(ApiError::Invalid("image: the file is empty".into()));
    }
    let options = parse_options(&fields)?;
    let owner = fields
        .get("owner")
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty());
    let probe = probe_upload(&upload, &state.limits).await?;

    let id = Uuid::new_v4();
    tracing::Span::current().record("job_id", tracing::field::display(id));
    let key = state.keys.original(id, probe.format.extension());
    let content_type = probe.format.content_type();
    match &upload {
        Upload::Memory(bytes) => state.objects.put_bytes(&key, bytes.clone(), content_type).await,
        Upload::Spooled { file, .. } => state.objects.put_file(&key, file.path(), content_type).await,
    }
    .inspect_err(|_| {
        // A failed put may still have left a partial object behind on some servers.
        let (objects, key) = (state.objects.clone(), key.clone());
        tokio::spawn(async move { objects.delete(&key).await });
    })?;
    let new_job = NewJob {
        id,
        owner,
        source_bucket: state.objects.bucket().to_owned(),
        source_key: key.clone(),
        source_format: probe.format,
        source_width: probe.width,
        source_height: probe.height,
        source_bytes: upload.size(),
        outputs: vec![OutputSpec::default_output(options)],
    };
    let job = match state.jobs.create(&new_job).await {
        Ok(job) => job,
        Err(err) => {
            undo(&state, id, &key, false).await;
            return Err(err.into());
        }
    };
    let original = match &upload {
        Upload::Memory(bytes) => Some(bytes.clone()),
        Upload::Spooled { .. } => None,
    };
    if let Err(err) = state.launcher.launch(&job, original).await {
        undo(&state, id, &key, true).await;
        return Err(err);
    }
    state.metrics.upload_bytes.inc_by(upload.size());
    let buffered = match &upload {
        Upload::Memory(_) => "memory",
        Upload::Spooled { .. } => "spool",
    };
    state
        .metrics
        .uploads
        .get_or_create(&BufferLabels { buffered })
        .inc();
    info!(format = %probe.format, width = probe.width, height = probe.height, bytes = upload.size(), "job accepted");
    let location = format!("/api/v1/jobs/{id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            job_id: id,
            message: "Started to generate thumbnail".into(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// Remove what a failed upload stored, so that nothing is half-written.
async fn undo(state: &SharedState, id: Uuid, key: &str, row: bool) {
    if row && let Err(e) = state.jobs.delete(id).await {
        warn!(job_id = %id, error = %e, "could not remove the job row of a failed upload");
    }
    if let Err(e) = state.objects.delete(key).await {
        warn!(job_id = %id, key, error = %e, "could not remove the original of a failed upload");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_originals() {
        assert_eq!(parse_options(&fields(&[])).unwrap(), ThumbnailOptions::default());
    }

    #[test]
    fn every_error_names_its_field() {
        for (pairs, field) in [
            (vec![("width", "0")], "width"),
            (vec![("width", "abc")], "width"),
            (vec![("height", "5000")], "height"),
            (vec![("quality", "0")], "quality"),
            (vec![("quality", "101")], "quality"),
            (vec![("fit", "stretch")], "fit"),
            (vec![("format", "tiff")], "format"),
            (vec![("upscale", "maybe")], "upscale"),
        ] {
            let err = parse_options(&fields(&pairs)).unwrap_err();
            assert!(
                matches!(&err, ApiError::Invalid(d) if d.starts_with(field)),
                "{pairs:?}: {err}"
            );
        }
    }

    #[test]
    fn accepts_valid_options() {
        let options = parse_options(&fields(&[
            ("width", "400"),
            ("height", "300"),
            ("fit", "contain"),
            ("format", "webp"),
            ("quality", "90"),
            ("upscale", "true"),
        ]))
        .unwrap();
        assert_eq!(
            options,
            ThumbnailOptions {
                width: 400,
                height: 300,
                fit: Fit::Contain,
                format: Some(OutputFormat::Webp),
                quality: 90,
                upscale: true
            }
        );
    }
}
