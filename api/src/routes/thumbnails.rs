//! The upload: validate everything that can be validated before anything is stored, then store
//! the original, record the job and hand it on. A failure at any step undoes the earlier ones.
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Query;
use crate::idempotent;
use crate::limits::{ClientAddr, RateKey};
use crate::metrics::BufferLabels;
use crate::pacing::{Pace, pace_uploads, too_slow};
use crate::state::SharedState;
use crate::views::JobAccepted;
use axum::Json;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use thumbnail_core::apikeys::{Scope, validate_owner};
use thumbnail_core::model::{NewJob, OutputSpec};
use thumbnail_engine::{
    EngineError, Fit, FormatChoice, Gravity, Limits, ProbeInfo, ThumbnailOptions, negotiate_format,
};
use tokio::io::AsyncWriteExt;
use tracing::{info, instrument, warn};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Bytes of a spooled upload kept in memory for the header probe; the rest is only on disk.
const HEAD_BYTES: usize = 256 * 1024;
/// Longest accepted text form field (options are short); longer ones are refused while they
/// stream in, after this many bytes.
pub const MAX_TEXT_FIELD: usize = 1024;
/// Most form fields in one upload, the file included: each known field once.
pub const MAX_FIELDS: usize = FIELDS.len();
/// What a request may carry besides the file: the other fields and the multipart framing.
pub const FORM_OVERHEAD_BYTES: u64 = 256 * 1024;

pub fn router(pace: Pace) -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/api/v1/thumbnails/", post(create_thumbnail))
        .route("/api/v1/thumbnails", post(create_thumbnail))
        // The size cap is enforced while streaming (413 with a `detail`), not by axum's default
        // 2 MB body limit; the body must keep arriving.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(pace, pace_uploads))
}

/// Thumbnail options, as query parameters or form fields (a form field wins).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OptionParams {
    /// Box width in pixels, 1–4096 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 4096)]
    pub width: Option<String>,
    /// Box height in pixels, 1–4096 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 4096)]
    pub height: Option<String>,
    /// cover (default: fill the box, centre-crop), contain (fit inside) or fill (stretch).
    #[param(value_type = Option<FitName>)]
    pub fit: Option<String>,
    /// jpeg, png, webp, avif, gif, or auto: AVIF or WebP when the request's `Accept` header
    /// lists `image/avif` or `image/webp`, else JPEG (PNG with transparency). Default: the
    /// input's format where it is written (JPEG, PNG, WebP, AVIF), PNG for GIF, TIFF, BMP, ICO
    /// and SVG, JPEG for HEIC and JPEG XL.
    #[param(value_type = Option<FormatName>)]
    pub format: Option<String>,
    /// Encoder quality 1–100 (default 80).
    #[param(value_type = Option<u8>, minimum = 1, maximum = 100)]
    pub quality: Option<String>,
    /// Allow enlarging images smaller than the box: true or false (default false).
    #[param(value_type = Option<bool>)]
    pub upscale: Option<String>,
    /// What `cover` keeps when it crops: centre (default), a side (north, south, east, west), a
    /// corner (northeast, northwest, southeast, southwest) or smart (the most interesting part,
    /// by an attention measure: edges, skin tones, saturated colour).
    #[param(value_type = Option<GravityName>)]
    pub gravity: Option<String>,
    /// Keep the animation of an animated GIF or WebP (output GIF or WebP): true or false
    /// (default false: the first frame as a still image).
    #[param(value_type = Option<bool>)]
    pub animated: Option<String>,
    /// The job's owner. Without authentication (AUTH_MODE=none) free-form; with it, the caller
    /// is the owner and only admins may name someone else. 1-253 printable ASCII characters.
    #[param(pattern = "^[!-~]{1,253}$")]
    pub owner: Option<String>,
    /// Seconds to keep the job (its original, thumbnails and record) before it is deleted,
    /// 1 to MAX_RETENTION_SECONDS (30 days unless configured; default RETENTION_SECONDS).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 2592000)]
    pub retention_seconds: Option<String>,
    /// Where to POST the signed completion event when the job ends (Standard Webhooks; see
    /// GET /api/v1/jobs/{job_id}/deliveries): an http or https URL without credentials, at most
    /// 1024 characters. Needs WEBHOOK_SECRET on the server.
    #[param(max_length = 1024)]
    pub webhook_url: Option<String>,
}

/// How the image fills the box.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FitName {
    Cover,
    Contain,
    Fill,
}

/// An output format.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FormatName {
    Jpeg,
    Png,
    Webp,
    Avif,
    Gif,
    Auto,
}

/// Which part of the image `cover` keeps.
#[derive(ToSchema, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum GravityName {
    Centre,
    North,
    South,
    East,
    West,
    Northeast,
    Northwest,
    Southeast,
    Southwest,
    Smart,
}

/// The multipart form. Only `image` is required; the options may also be query parameters (a
/// form field wins). Text fields are at most 1 KiB; other fields, or one sent twice, are refused.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The image file (JPEG, PNG, WebP, GIF, HEIC, AVIF, JPEG XL, TIFF, BMP, ICO or SVG; detected
    /// from the bytes, never from the name or the part's Content-Type), at most MAX_UPLOAD_BYTES.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    image: String,
    // Optional but never null: a form field is sent or it is not.
    #[schema(minimum = 1, maximum = 4096, required = false)]
    width: u32,
    #[schema(minimum = 1, maximum = 4096, required = false)]
    height: u32,
    #[schema(required = false)]
    fit: FitName,
    #[schema(required = false)]
    format: FormatName,
    #[schema(minimum = 1, maximum = 100, required = false)]
    quality: u8,
    #[schema(required = false)]
    upscale: bool,
    #[schema(required = false)]
    gravity: GravityName,
    #[schema(required = false)]
    animated: bool,
    #[schema(pattern = "^[!-~]{1,253}$", required = false)]
    owner: String,
    #[schema(minimum = 1, maximum = 2592000, required = false)]
    retention_seconds: u64,
    /// Where to POST the signed completion event (see the query parameter).
    #[schema(max_length = 1024, required = false)]
    webhook_url: String,
}

/// The form fields a request may send (a file in `image`, text in the others).
pub const FIELDS: [&str; 12] = [
    "image",
    "width",
    "height",
    "fit",
    "format",
    "quality",
    "upscale",
    "gravity",
    "animated",
    "owner",
    "retention_seconds",
    "webhook_url",
];

/// An integer field in `range`: only an optional `-` and digits, as the OpenAPI document
/// declares (no spaces, no `+`). Pure.
fn integer(
    fields: &HashMap<String, String>,
    name: &'static str,
    range: std::ops::RangeInclusive<i64>,
) -> ApiResult<Option<i64>> {
    let Some(raw) = fields.get(name) else {
        return Ok(None);
    };
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::Invalid(format!(
            "{name}: must be an integer, got '{raw}'"
        )));
    }
    match raw.parse::<i64>() {
        Ok(n) if range.contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::Invalid(format!(
            "{name}: must be between {} and {}, got {raw}",
            range.start(),
            range.end()
        ))),
    }
}

/// The upload's `retention_seconds`, 1 to `max`; `None` when not sent. Pure.
pub fn retention(
    fields: &HashMap<String, String>,
    max: std::time::Duration,
) -> ApiResult<Option<std::time::Duration>> {
    let max = max.as_secs().min(i64::MAX as u64) as i64;
    integer(fields, "retention_seconds", 1..=max)
        .map_err(|e| ApiError::Invalid(format!("{e} (MAX_RETENTION_SECONDS)")))
        .map(|seconds| seconds.map(|s| std::time::Duration::from_secs(s as u64)))
}

/// The upload's `webhook_url`, checked ([`thumbnail_core::webhooks::validate_url`]); `None`
/// when not sent. Refused (422, like every other option) while the server has no WEBHOOK_SECRET
/// to sign with. Pure.
pub fn webhook_url(fields: &HashMap<String, String>, enabled: bool) -> ApiResult<Option<String>> {
    let Some(raw) = fields.get("webhook_url") else {
        return Ok(None);
    };
    let url = thumbnail_core::webhooks::validate_url(raw)
        .map_err(|e| ApiError::Invalid(format!("webhook_url: {e}")))?;
    if !enabled {
        return Err(ApiError::Invalid(
            "webhook_url: this server sends no webhooks (WEBHOOK_SECRET is not set); poll the job instead"
                .into(),
        ));
    }
    Ok(Some(url))
}

/// The caller's key's default `webhook_url`, while the server sends webhooks.
pub(crate) fn default_webhook(state: &SharedState, principal: &Principal) -> Option<String> {
    principal
        .default_webhook_url
        .clone()
        .filter(|_| state.webhooks_enabled)
}

/// `true` or `false`, exactly. Pure.
fn boolean(fields: &HashMap<String, String>, name: &'static str) -> ApiResult<Option<bool>> {
    match fields.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(raw) => Err(ApiError::Invalid(format!(
            "{name}: must be true or false, got '{raw}'"
        ))),
    }
}

/// What the request asks for: the options, and whether the format is to be negotiated from
/// the `Accept` header once the input is known (`format=auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestedOptions {
    pub options: ThumbnailOptions,
    pub format: FormatChoice,
}

impl RequestedOptions {
    /// The options to render with: `format=auto` becomes the format the client accepts best for
    /// this input (see [`negotiate_format`]). Pure.
    pub fn for_input(self, accept: Option<&str>, probe: &ProbeInfo) -> ThumbnailOptions {
        match self.format {
            FormatChoice::Auto => ThumbnailOptions {
                format: Some(negotiate_format(accept, probe, &self.options)),
                ..self.options
            },
            FormatChoice::Input | FormatChoice::Exact(_) => self.options,
        }
    }
}

/// Parse the options, naming the field in every error. Values are taken exactly as the OpenAPI
/// document declares them (`contain`, not `Contain`; `true`, not `yes`). Pure.
pub fn parse_options(fields: &HashMap<String, String>) -> ApiResult<RequestedOptions> {
    // The engine's MAX_DIMENSION.
    let side = 1..=4096;
    let mut options = ThumbnailOptions::default();
    let mut format = FormatChoice::Input;
    if let Some(w) = integer(fields, "width", side.clone())? {
        options.width = w as u32;
    }
    if let Some(h) = integer(fields, "height", side)? {
        options.height = h as u32;
    }
    if let Some(q) = integer(fields, "quality", 1..=100)? {
        options.quality = q as u8;
    }
    if let Some(raw) = fields.get("fit") {
        options.fit = raw
            .parse::<Fit>()
            .ok()
            .filter(|fit| fit.as_str() == raw)
            .ok_or_else(|| ApiError::Invalid(format!("fit: '{raw}' is not one of cover, contain, fill")))?;
    }
    if let Some(raw) = fields.get("format") {
        format = raw
            .parse::<FormatChoice>()
            .ok()
            .filter(|choice| match choice {
                FormatChoice::Exact(f) => f.as_str() == raw,
                FormatChoice::Auto => raw == "auto",
                FormatChoice::Input => false,
            })
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "format: '{raw}' is not one of jpeg, png, webp, avif, gif, auto"
                ))
            })?;
        if let FormatChoice::Exact(f) = format {
            options.format = Some(f);
        }
    }
    if let Some(raw) = fields.get("gravity") {
        options.gravity = raw
            .parse::<Gravity>()
            .ok()
            .filter(|gravity| gravity.as_str() == raw)
            .ok_or_else(|| {
                let names: Vec<&str> = Gravity::ALL.iter().map(|g| g.as_str()).collect();
                ApiError::Invalid(format!("gravity: '{raw}' is not one of {}", names.join(", ")))
            })?;
    }
    if let Some(upscale) = boolean(fields, "upscale")? {
        options.upscale = upscale;
    }
    if let Some(animated) = boolean(fields, "animated")? {
        options.animated = animated;
    }
    options.validate().map_err(|e| ApiError::Invalid(e.to_string()))?;
    Ok(RequestedOptions { options, format })
}

/// The uploaded file: in memory (small requests) or spooled to a temporary file with its first
/// bytes in memory.
pub(crate) enum Upload {
    Memory(Bytes),
    Spooled {
        file: tempfile::NamedTempFile,
        head: Vec<u8>,
        size: u64,
    },
}

impl Upload {
    pub(crate) fn size(&self) -> u64 {
        match self {
            Upload::Memory(b) => b.len() as u64,
            Upload::Spooled { size, .. } => *size,
        }
    }
}

/// Read the file field: into memory when the whole request is small (`in_memory`: its length,
/// which bounds the file's), else to a spool file. Either way the size cap is enforced while
/// reading.
/// `hash`: also take the file's SHA-256 while it streams (for an `Idempotency-Key`).
pub(crate) async fn receive(
    state: &SharedState,
    mut field: Field<'_>,
    max: u64,
    in_memory: Option<u64>,
    mut hash: Option<&mut Sha256>,
) -> ApiResult<Upload> {
    if let Some(request_length) = in_memory {
        let mut buf = BytesMut::with_capacity(request_length.min(max) as usize);
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            let size = (buf.len() + chunk.len()) as u64;
            if size > max {
                return Err(EngineError::FileTooLarge { size, max }.into());
            }
            if let Some(hash) = hash.as_deref_mut() {
                hash.update(&chunk);
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
        if let Some(hash) = hash.as_deref_mut() {
            hash.update(&chunk);
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

pub(crate) fn multipart_error(err: axum::extract::multipart::MultipartError) -> ApiError {
    if let Some(slow) = too_slow(&err) {
        return ApiError::Timeout(slow.to_string());
    }
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
pub(crate) async fn probe_upload(upload: &Upload, limits: &Limits) -> ApiResult<ProbeInfo> {
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

/// A text field, read while it streams and refused once it is longer than [`MAX_TEXT_FIELD`]
/// (its remaining bytes are never read).
pub(crate) async fn read_text(mut field: Field<'_>, name: &str) -> ApiResult<String> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if text.len() + chunk.len() > MAX_TEXT_FIELD {
            return Err(ApiError::Invalid(format!(
                "{name}: value too long (at most {MAX_TEXT_FIELD} bytes)"
            )));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).map_err(|_| ApiError::Invalid(format!("{name}: not UTF-8 text")))
}

/// The form's text fields (query parameters first; a form field wins) and its file.
struct Form {
    fields: HashMap<String, String>,
    upload: Upload,
    /// The file's SHA-256, when asked for.
    file_sha256: Option<[u8; 32]>,
}

/// The options sent as query parameters, each checked (also when a form field will take its
/// place).
pub(crate) fn query_fields(state: &SharedState, query: &OptionParams) -> ApiResult<HashMap<String, String>> {
    let mut fields: HashMap<String, String> = HashMap::new();
    for (name, value) in [
        ("width", &query.width),
        ("height", &query.height),
        ("fit", &query.fit),
        ("format", &query.format),
        ("quality", &query.quality),
        ("upscale", &query.upscale),
        ("gravity", &query.gravity),
        ("animated", &query.animated),
        ("owner", &query.owner),
        ("retention_seconds", &query.retention_seconds),
        ("webhook_url", &query.webhook_url),
    ] {
        if let Some(v) = value {
            fields.insert(name.to_owned(), v.clone());
        }
    }
    parse_options(&fields)?;
    retention(&fields, state.sweeper.policy.max)?;
    webhook_url(&fields, state.webhooks_enabled)?;
    if let Some(owner) = &query.owner {
        validate_owner(owner).map_err(|e| ApiError::Invalid(format!("owner: {e}")))?;
    }
    Ok(fields)
}

/// Step "receive": read the multipart body, capping every field while it streams.
async fn receive_form(
    state: &SharedState,
    query: &OptionParams,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
    hash_file: bool,
) -> ApiResult<Form> {
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
    let mut fields = query_fields(state, query)?;
    let mut upload: Option<Upload> = None;
    let mut hash = hash_file.then(Sha256::new);
    let mut form_fields: Vec<String> = Vec::new();
    let mut count = 0;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        count += 1;
        if count > MAX_FIELDS {
            return Err(ApiError::Invalid(format!(
                "the form has more than {MAX_FIELDS} fields"
            )));
        }
        let name = field.name().unwrap_or_default().to_owned();
        if name == "image" {
            if upload.is_some() {
                return Err(ApiError::Invalid(
                    "image: the field was sent more than once; send one file".into(),
                ));
            }
            upload = Some(
                receive(
                    state,
                    field,
                    state.limits.max_input_bytes,
                    in_memory,
                    hash.as_mut(),
                )
                .await?,
            );
        } else if field.file_name().is_some() {
            return Err(ApiError::Invalid(format!(
                "{name:?}: this field holds a file, but the image must be sent in the field 'image' \
                 (e.g. curl -F image=@photo.jpg)"
            )));
        } else if !FIELDS.contains(&name.as_str()) {
            return Err(ApiError::Invalid(format!(
                "{name:?}: unknown field; the form's fields are {}",
                FIELDS.join(", ")
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
    let upload = upload.ok_or_else(|| {
        ApiError::Invalid("image: field required (a file in multipart field 'image')".into())
    })?;
    if upload.size() == 0 {
        return Err(ApiError::Invalid("image: the file is empty".into()));
    }
    Ok(Form {
        fields,
        upload,
        file_sha256: hash.map(|h| h.finalize().into()),
    })
}

/// What every image of an upload shares, validated: the options, the owner (the caller, or whom
/// an admin names), the lifetime and where to send the completion event.
pub(crate) struct Choices {
    pub(crate) requested: RequestedOptions,
    pub(crate) owner: Option<String>,
    pub(crate) retention: Option<std::time::Duration>,
    pub(crate) webhook_url: Option<String>,
}

/// Step "validate" of an upload's fields (the file aside).
pub(crate) fn choices(
    state: &SharedState,
    principal: &Principal,
    fields: &HashMap<String, String>,
) -> ApiResult<Choices> {
    let requested = parse_options(fields)?;
    let requested_owner = fields.get("owner").cloned();
    if let Some(owner) = &requested_owner {
        validate_owner(owner).map_err(|e| ApiError::Invalid(format!("owner: {e}")))?;
    }
    let owner = principal.owner_for_new_job(requested_owner)?;
    let retention = retention(fields, state.sweeper.policy.max)?;
    let webhook_url =
        webhook_url(fields, state.webhooks_enabled)?.or_else(|| default_webhook(state, principal));
    Ok(Choices {
        requested,
        owner,
        retention,
        webhook_url,
    })
}

/// Step "limit": the caller's upload rate, and a quota refusal of the last second.
pub(crate) fn limit(state: &SharedState, principal: &Principal, client: ClientAddr) -> ApiResult<HeaderMap> {
    let key = match principal.owner.as_deref() {
        Some(owner) => RateKey::Owner(owner),
        None => RateKey::Client(client.0),
    };
    let headers = state.rate.check(key)?;
    if let Some(refusal) = state.quotas.recent_refusal(principal.owner.as_deref()) {
        return Err(with_headers(refusal.into(), &headers));
    }
    Ok(headers)
}

pub(crate) fn with_headers(mut err: ApiError, extra: &HeaderMap) -> ApiError {
    if let ApiError::Limited(hit) = &mut err {
        hit.headers.extend(extra.clone());
    }
    err
}

/// Upload an image and start making its thumbnail.
///
/// The format is detected from the bytes (JPEG, PNG, WebP, GIF, HEIC, AVIF, JPEG XL, TIFF, BMP,
/// ICO, SVG). With `format=auto` the output format is chosen from the request's `Accept` header.
/// The answer is 202 with the job id and a `Location` header pointing at the job.
#[utoipa::path(
    post, path = "/api/v1/thumbnails/", tag = "thumbnails",
    params(OptionParams,
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = "^[!-~]{1,255}$",
         description = "Makes a retry safe: a repeat with the same key (per owner, kept IDEMPOTENCY_KEY_TTL_SECONDS, 24 h by default) and the same request answers with the first job; see 409 and 422")),
    request_body(content(
        (UploadForm = "multipart/form-data",
         encoding(("image" = (content_type = "image/jpeg, image/png, image/webp, image/gif, image/heic, image/avif, image/jxl, image/tiff, image/bmp, image/x-icon, image/svg+xml"))))
    )),
    responses(
        (status = 202, description = "Accepted; poll the job", body = JobAccepted,
         headers(("Location" = String, description = "URL of the job"),
                 ("Idempotent-Replayed" = String, description = "`true` when this answers a repeat of an earlier request with the same Idempotency-Key (its job, nothing new stored)"),
                 ("RateLimit" = String, description = "The caller's remaining uploads: `\"uploads\";r=REMAINING;t=SECONDS`"),
                 ("RateLimit-Policy" = String, description = "`\"uploads\";q=UPLOADS_PER_MINUTE;w=60`"))),
        (status = 403, description = "`owner` names someone else and the caller is not an admin", body = ErrorBody),
        (status = 409, description = "A request with the same Idempotency-Key is still being stored; retry shortly", body = ErrorBody),
        (status = 408, description = "The upload arrived too slowly (UPLOAD_TIMEOUT_SECONDS, UPLOAD_MIN_BYTES_PER_SECOND)", body = ErrorBody),
        (status = 413, description = "The file is larger than MAX_UPLOAD_BYTES", body = ErrorBody),
        (status = 415, description = "Not a JPEG, PNG, WebP, GIF, HEIC, AVIF, JPEG XL, TIFF, BMP, ICO or SVG; `detail` names what it is", body = ErrorBody),
        (status = 422, description = "An Idempotency-Key already used for a different request, or a malformed one; missing, empty or duplicated `image`, a file in another field, an unknown or repeated field, an invalid option, a field over 1 KiB, too many pixels or frames, a corrupt header, or an SVG refused as unsafe (external references, too many elements)", body = ErrorBody),
        (status = 429, description = "The upload rate (UPLOADS_PER_MINUTE), unfinished jobs (MAX_UNFINISHED_JOBS_PER_OWNER) or bytes stored (MAX_STORED_BYTES_PER_OWNER) of the owner is at its limit; `detail` says which", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"),
                 ("RateLimit" = String, description = "Remaining uploads"),
                 ("RateLimit-Policy" = String, description = "The upload rate policy"))),
        (status = 503, description = "The service's queue is full (MAX_QUEUED_JOBS), or the database or the object store is unavailable; nothing was stored", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
#[instrument(skip_all, fields(job_id))]
pub async fn create_thumbnail(
    State(state): State<SharedState>,
    principal: Principal,
    client: ClientAddr,
    Query(query): Query<OptionParams>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    principal.require(Scope::Submit)?;
    let idempotency_key = idempotent::key_of(&headers)?;
    let rate_headers = limit(&state, &principal, client)?;
    let form = receive_form(&state, &query, &headers, multipart, idempotency_key.is_some()).await?;

    // Validate.
    let Choices {
        requested,
        owner,
        retention,
        webhook_url,
    } = choices(&state, &principal, &form.fields)?;
    let probe = probe_upload(&form.upload, &state.limits).await?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let options = requested.for_input(accept, &probe);

    // A repeat of a request already stored answers with its job.
    let held = match idempotency_key {
        None => None,
        Some(key) => {
            let files: Vec<[u8; 32]> = form.file_sha256.into_iter().collect();
            let fingerprint = idempotent::fingerprint("thumbnails", &form.fields, &files);
            match idempotent::claim(&state, &principal, key, fingerprint).await? {
                idempotent::Decision::Proceed(held) => Some(held),
                idempotent::Decision::Replay(id) => {
                    info!(job_id = %id, "idempotent repeat answered with the first job");
                    let mut response = accepted(id, rate_headers);
                    response
                        .headers_mut()
                        .insert(idempotent::REPLAYED_HEADER, HeaderValue::from_static("true"));
                    return Ok(response);
                }
            }
        }
    };

    let stored = store_and_launch(
        &state,
        owner,
        options,
        Lifecycle {
            retention,
            webhook_url,
            batch: None,
        },
        &form.upload,
        &probe,
        &rate_headers,
    )
    .await;
    match (held, &stored) {
        (Some(held), Ok(id)) => held.complete(&state, *id).await,
        (Some(held), Err(_)) => held.release(&state).await,
        (None, _) => {}
    }
    let id = stored?;
    state.metrics.upload_bytes.inc_by(form.upload.size());
    let buffered = match &form.upload {
        Upload::Memory(_) => "memory",
        Upload::Spooled { .. } => "spool",
    };
    state
        .metrics
        .uploads
        .get_or_create(&BufferLabels { buffered })
        .inc();
    info!(format = %probe.format, width = probe.width, height = probe.height, bytes = form.upload.size(), "job accepted");
    Ok(accepted(id, rate_headers))
}

/// What happens to the job after it runs: how long it is kept, whom to tell that it ended.
pub(crate) struct Lifecycle {
    pub(crate) retention: Option<std::time::Duration>,
    pub(crate) webhook_url: Option<String>,
    /// The batch the image came in, and its place there.
    pub(crate) batch: Option<thumbnail_core::model::BatchSlot>,
}

/// Steps "store" and "launch": the original, then the row (admitted under the quotas), then the
/// hand-off to whoever runs it. A failure undoes what was stored before it.
pub(crate) async fn store_and_launch(
    state: &SharedState,
    owner: Option<String>,
    options: ThumbnailOptions,
    lifecycle: Lifecycle,
    upload: &Upload,
    probe: &ProbeInfo,
    rate_headers: &HeaderMap,
) -> ApiResult<Uuid> {
    let id = Uuid::new_v4();
    tracing::Span::current().record("job_id", tracing::field::display(id));
    let key = state.keys.original(id, probe.format.extension());
    let content_type = probe.format.content_type();
    match upload {
        Upload::Memory(bytes) => state.objects.put_bytes(&key, bytes.clone(), content_type).await,
        Upload::Spooled { file, .. } => state.objects.put_file(&key, file.path(), content_type).await,
    }
    .inspect_err(|_| {
        // A failed put may still have left a partial object behind on some servers.
        let (objects, key) = (state.objects.clone(), key.clone());
        tokio::spawn(async move { objects.delete(&key).await });
    })?;
    let new_job = NewJob {
        // From now, after the original is stored: what the row's `created_at` will be, nearly.
        expires_at: Some(
            state
                .sweeper
                .policy
                .expiry(thumbnail_core::model::now(), lifecycle.retention),
        ),
        id,
        owner,
        source_bucket: state.objects.bucket().to_owned(),
        source_key: key.clone(),
        source_format: probe.format,
        source_width: probe.width,
        source_height: probe.height,
        source_bytes: upload.size(),
        outputs: vec![OutputSpec::default_output(options)],
        webhook_url: lifecycle.webhook_url,
        batch: lifecycle.batch,
    };
    let job = match state.jobs.admit(&new_job, &state.quotas.caps).await {
        Ok(Ok(job)) => job,
        Ok(Err(refusal)) => {
            undo(state, id, &key, false).await;
            state.quotas.remember(new_job.owner.as_deref(), refusal);
            info!(%refusal, "upload refused by a quota");
            return Err(with_headers(refusal.into(), rate_headers));
        }
        Err(err) => {
            undo(state, id, &key, false).await;
            return Err(err.into());
        }
    };
    let original = match upload {
        Upload::Memory(bytes) => Some(bytes.clone()),
        Upload::Spooled { .. } => None,
    };
    if let Err(err) = state.launcher.launch(&job, original).await {
        undo(state, id, &key, true).await;
        return Err(err);
    }
    Ok(id)
}

/// The 202 answer: the job's id and where to find it.
fn accepted(id: Uuid, rate_headers: HeaderMap) -> Response {
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
    response.headers_mut().extend(rate_headers);
    response
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
    use thumbnail_engine::OutputFormat;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_originals() {
        let requested = parse_options(&fields(&[])).unwrap();
        assert_eq!(requested.options, ThumbnailOptions::default());
        assert_eq!(requested.format, FormatChoice::Input);
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
            (vec![("format", "AVIF")], "format"),
            (vec![("gravity", "middle")], "gravity"),
            (vec![("gravity", "Smart")], "gravity"),
            (vec![("animated", "yes")], "animated"),
            (vec![("animated", "true"), ("format", "jpeg")], "animated"),
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
            options.options,
            ThumbnailOptions {
                width: 400,
                height: 300,
                fit: Fit::Contain,
                format: Some(OutputFormat::Webp),
                quality: 90,
                upscale: true,
                ..ThumbnailOptions::default()
            }
        );
        let options = parse_options(&fields(&[
            ("gravity", "smart"),
            ("animated", "true"),
            ("format", "gif"),
        ]))
        .unwrap()
        .options;
        assert_eq!(
            (options.gravity, options.animated, options.format),
            (Gravity::Smart, true, Some(OutputFormat::Gif))
        );
    }

    fn probe(format: thumbnail_engine::ImageFormat, frames: u64, has_alpha: bool) -> ProbeInfo {
        ProbeInfo {
            format,
            width: 800,
            height: 600,
            frames,
            orientation: 1,
            has_alpha,
        }
    }

    #[test]
    fn format_auto_follows_the_accept_header() {
        use thumbnail_engine::ImageFormat::{Gif, Heic, Png};
        let auto = parse_options(&fields(&[("format", "auto")])).unwrap();
        assert_eq!(auto.format, FormatChoice::Auto);
        let chrome = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8";
        let old_safari = "image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5";
        for (accept, input, expected) in [
            (Some(chrome), probe(Heic, 1, false), OutputFormat::Avif),
            (Some(old_safari), probe(Heic, 1, false), OutputFormat::Webp),
            (
                Some("image/avif;q=0, image/webp"),
                probe(Heic, 1, false),
                OutputFormat::Webp,
            ),
            (Some("*/*"), probe(Heic, 1, false), OutputFormat::Jpeg),
            (None, probe(Png, 1, true), OutputFormat::Png),
        ] {
            assert_eq!(
                auto.for_input(accept, &input).format,
                Some(expected),
                "{accept:?}"
            );
        }
        // An animation is never AVIF: WebP when accepted, else GIF.
        let animated = parse_options(&fields(&[("format", "auto"), ("animated", "true")])).unwrap();
        assert_eq!(
            animated.for_input(Some(chrome), &probe(Gif, 12, true)).format,
            Some(OutputFormat::Webp)
        );
        assert_eq!(
            animated
                .for_input(Some("image/avif"), &probe(Gif, 12, true))
                .format,
            Some(OutputFormat::Gif)
        );
        // An exact format ignores the header.
        let webp = parse_options(&fields(&[("format", "png")])).unwrap();
        assert_eq!(
            webp.for_input(Some(chrome), &probe(Heic, 1, false)).format,
            Some(OutputFormat::Png)
        );
    }
}
