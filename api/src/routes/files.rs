//! Signed, expiring download links of the embedded default: `/files/{key}?expires=&signature=`.
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Query};
use crate::state::SharedState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use thumbnail_core::CoreError;
use thumbnail_core::objects::ObjectStore;
use thumbnail_core::signing::LinkError;
use tracing::instrument;
use utoipa::IntoParams;

pub fn router() -> axum::Router<SharedState> {
    axum::Router::new().route("/files/{*key}", get(download))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkParams {
    /// Expiry, Unix seconds.
    pub expires: Option<String>,
    /// Hex HMAC-SHA256 over the key and the expiry.
    pub signature: Option<String>,
}

fn content_type_of(key: &str) -> &'static str {
    match key.rsplit('.').next().map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    }
}

/// Download an object through a signed link (embedded object store only).
#[utoipa::path(
    get, path = "/files/{key}", tag = "files",
    params(("key" = String, Path, description = "Object key"), LinkParams),
    responses(
        (status = 200, description = "The object's bytes, with its type (from its extension)",
         content(("image/jpeg"), ("image/png"), ("image/webp"), ("image/gif"), ("application/octet-stream"))),
        (status = 403, description = "Missing, tampered or expired signature", body = ErrorBody),
        (status = 404, description = "No such object", body = ErrorBody),
    )
)]
#[instrument(skip(state, params))]
pub async fn download(
    State(state): State<SharedState>,
    Path(key): Path<String>,
    Query(params): Query<LinkParams>,
) -> ApiResult<Response> {
    let Some(local) = state.local_objects.as_ref() else {
        return Err(ApiError::NotFound(
            "signed links are only served by the embedded object store".into(),
        ));
    };
    let (Some(expires), Some(signature)) = (params.expires.as_deref(), params.signature.as_deref()) else {
        return Err(ApiError::Forbidden(
            "the link is not signed (expires and signature are required)".into(),
        ));
    };
    let expires: i64 = expires
        .parse()
        .map_err(|_| ApiError::Forbidden("the link's expiry is invalid".into()))?;
    local
        .signer()
        .verify(&key, expires, signature, chrono::Utc::now().timestamp())
        .map_err(|e| match e {
            LinkError::Expired => ApiError::Forbidden("the link has expired; ask for a new one".into()),
            LinkError::BadSignature => ApiError::Forbidden("the link's signature is invalid".into()),
        })?;
    let bytes = local.get(&key).await.map_err(|e| match e {
        CoreError::ObjectNotFound(_) | CoreError::InvalidKey(_) => {
            ApiError::NotFound(format!("object '{key}' not found"))
        }
        other => other.into(),
    })?;
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type_of(&key)),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}
