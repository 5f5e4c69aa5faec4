//! The API's one error type and its mapping to HTTP, in one place. User errors carry a precise
//! `detail`; internal errors are logged and answered with an opaque one.
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thumbnail_core::CoreError;
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
    /// A dependency (database, object store, Kubernetes API) is down: 503, retry later.
    #[error("{dependency} is unavailable, try again later")]
    Unavailable {
        dependency: &'static str,
        source: Option<CoreError>,
    },
    #[error("internal error")]
    Internal(String),
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
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
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
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
