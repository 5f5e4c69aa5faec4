//! The API's one error type and its mapping to HTTP, in one place. User errors carry a precise
//! `detail`; internal errors are logged and answered with an opaque one.
use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;
use thumbnail_core::CoreError;
use thumbnail_core::jobstore::Refusal;
use thumbnail_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is missing or out of range (422), `detail` names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is well-formed but not possible now (e.g. the job is not finished).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Forbidden(String),
    /// Missing or bad credentials (401); `challenge` is the `WWW-Authenticate` value.
    #[error("{detail}")]
    Unauthorized { detail: String, challenge: String },
    /// A limit was hit: 429 (or 503 for the service-wide queue) with `Retry-After`.
    #[error("{}", .0.detail)]
    Limited(Box<LimitHit>),
    /// The request body did not arrive in time (408).
    #[error("{0}")]
    Timeout(String),
    /// A dependency (database, object store, Kubernetes API) is down: 503, retry later.
    #[error("{dependency} is unavailable, try again later")]
    Unavailable {
        dependency: &'static str,
        source: Option<CoreError>,
    },
    #[error("internal error")]
    Internal(String),
}

/// Which limit refused a request, and how to answer.
#[derive(Debug)]
pub struct LimitHit {
    pub status: StatusCode,
    pub detail: String,
    pub retry_after: Duration,
    /// The limit's `RateLimit` headers, when it has them.
    pub headers: HeaderMap,
}

impl ApiError {
    pub fn limited(status: StatusCode, detail: String, retry_after: Duration, headers: HeaderMap) -> Self {
        ApiError::Limited(Box::new(LimitHit {
            status,
            detail,
            retry_after,
            headers,
        }))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, in words.
    pub detail: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Limited(hit) => hit.status,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The setting that bounds each refusal, for `detail`.
fn refusal_setting(refusal: &Refusal) -> &'static str {
    match refusal {
        Refusal::QueueFull { .. } => "MAX_QUEUED_JOBS",
        Refusal::TooManyUnfinished { .. } => "MAX_UNFINISHED_JOBS_PER_OWNER",
        Refusal::StorageFull { .. } => "MAX_STORED_BYTES_PER_OWNER",
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let (status, retry_after) = match refusal {
            // The backlog drains at the workers' pace; unfinished jobs finish in seconds.
            Refusal::QueueFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(5)),
            Refusal::TooManyUnfinished { .. } => (StatusCode::TOO_MANY_REQUESTS, Duration::from_secs(5)),
            // Space comes back only when jobs are deleted.
            Refusal::StorageFull { .. } => (StatusCode::TOO_MANY_REQUESTS, Duration::from_secs(3600)),
        };
        ApiError::limited(
            status,
            format!("{} ({})", refusal, refusal_setting(&refusal)),
            retry_after,
            HeaderMap::new(),
        )
    }
}

impl From<CoreError> for ApiError {
    fn from(err: CoreError) -> Self {
        if let Some(dependency) = err.dependency().filter(|_| err.is_transient()) {
            return ApiError::Unavailable {
                dependency,
                source: Some(err),
            };
        }
        match err {
            CoreError::Engine(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Upload-time engine errors: the image is refused before anything is stored.
impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::UnsupportedFormat { .. } => ApiError::UnsupportedMediaType(err.to_string()),
            EngineError::FileTooLarge { .. } => ApiError::PayloadTooLarge(err.to_string()),
            EngineError::Internal(msg) => ApiError::Internal(msg),
            other => ApiError::Invalid(format!("image: {other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                "internal server error".to_owned()
            }
            ApiError::Unavailable { dependency, source } => {
                tracing::warn!(dependency, error = ?source.as_ref().map(ToString::to_string), "dependency unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { detail })).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::Unauthorized { challenge, .. } => {
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::Limited(hit) => {
                let LimitHit {
                    retry_after,
                    headers: extra,
                    ..
                } = *hit;
                headers.extend(extra);
                headers.insert(header::RETRY_AFTER, retry_after_value(retry_after));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_value(wait: Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

pub type ApiResult<T> = Result<T, ApiError>;
