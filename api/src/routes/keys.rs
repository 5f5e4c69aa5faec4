//! API key management for admins: create, list, show, revoke. The same as `thumbnail-api keys
//! ...` on the command line. Served (and in the OpenAPI document) only with AUTH_MODE=api-key.
use crate::auth::{Authenticator, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Path, Query};
use crate::state::SharedState;
use crate::views::{CreatedKey, KeyView, NewKey};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use thumbnail_core::apikeys::{self, Scope, Scopes, validate_owner};
use tracing::{info, instrument};
use utoipa::IntoParams;

/// Longest key request body.
const MAX_BODY: usize = 16 * 1024;
pub const MAX_KEY_LIST: u32 = 1000;
/// Longest key name, in characters.
pub const MAX_NAME: usize = 200;

pub fn router() -> axum::Router<SharedState> {
    axum::Router::new()
        .route("/api/v1/keys", get(list_keys).post(create_key))
        .route("/api/v1/keys/", get(list_keys).post(create_key))
        .route("/api/v1/keys/{key_id}", get(get_key))
        .route("/api/v1/keys/{key_id}/revoke", post(revoke_key))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// Admins only.
fn admin(principal: &Principal) -> ApiResult<()> {
    principal.require(Scope::Admin)
}

fn json_error(rejection: JsonRejection) -> ApiError {
    let detail = rejection.body_text();
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(detail),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(detail),
        _ => ApiError::Invalid(detail),
    }
}

/// Create a key. The secret is in this answer only; it is stored as a hash.
#[utoipa::path(
    post, path = "/api/v1/keys", tag = "keys",
    request_body = NewKey,
    responses(
        (status = 201, description = "The new key, with its secret", body = CreatedKey,
         headers(("Location" = String, description = "URL of the key"))),
        (status = 413, description = "The body is larger than 16 KiB", body = ErrorBody),
        (status = 415, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid; `detail` names it", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip_all)]
pub async fn create_key(
    State(state): State<SharedState>,
    principal: Principal,
    body: Result<Json<NewKey>, JsonRejection>,
) -> ApiResult<Response> {
    admin(&principal)?;
    let Json(request) = body.map_err(json_error)?;
    validate_owner(&request.owner).map_err(|e| ApiError::Invalid(format!("owner: {e}")))?;
    let scopes = match &request.scopes {
        None => Scopes::default_for_keys(),
        Some(list) if list.is_empty() => {
            return Err(ApiError::Invalid("scopes: name at least one scope".into()));
        }
        Some(list) => Scopes::of(&list.iter().map(|s| Scope::from(*s)).collect::<Vec<_>>()),
    };
    if let Some(name) = &request.name
        && (name.chars().count() > MAX_NAME || name.chars().any(char::is_control))
    {
        return Err(ApiError::Invalid(format!(
            "name: at most {MAX_NAME} characters, no control characters"
        )));
    }
    let expires_at = match &request.expires_in_seconds {
        None => None,
        // A JSON integer may be written 185 or 185.0.
        Some(seconds) => Some(
            seconds
                .as_i64()
                .or_else(|| {
                    seconds
                        .as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                        .map(|f| f as i64)
                })
                .filter(|s| (1..=100 * 365 * 86_400).contains(s))
                .map(|s| thumbnail_core::model::now() + chrono::Duration::seconds(s))
                .ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "expires_in_seconds: a whole number of seconds between 1 and 100 years, got {seconds}"
                    ))
                })?,
        ),
    };
    let webhook_url = match &request.webhook_url {
        None => None,
        Some(raw) => {
            let fields = std::collections::HashMap::from([("webhook_url".to_owned(), raw.clone())]);
            crate::routes::thumbnails::webhook_url(&fields, state.webhooks_enabled)?
        }
    };
    let mut generated = apikeys::generate(&request.owner, scopes, request.name.clone(), expires_at);
    generated.record.webhook_url = webhook_url;
    state.key_store.insert(&generated.record).await?;
    info!(key_id = %generated.record.id, owner = %request.owner, scopes = %scopes, "API key created");
    let body = CreatedKey {
        key: generated.key,
        info: KeyView::new(&generated.record, Utc::now()),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/keys/{}", generated.record.id)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyListParams {
    /// Only keys of this owner.
    #[param(pattern = "^[!-~]{1,253}$")]
    pub owner: Option<String>,
    /// At most this many keys, newest first (1 to 1000, default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
}

/// Keys, newest first (never their secrets).
#[utoipa::path(
    get, path = "/api/v1/keys", tag = "keys",
    params(KeyListParams),
    responses(
        (status = 200, description = "Keys, newest first", body = Vec<KeyView>),
        (status = 422, description = "A parameter is invalid", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip_all)]
pub async fn list_keys(
    State(state): State<SharedState>,
    principal: Principal,
    Query(params): Query<KeyListParams>,
) -> ApiResult<Json<Vec<KeyView>>> {
    admin(&principal)?;
    let limit = match params.limit.as_deref() {
        None => 100,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_KEY_LIST).contains(n) && raw.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "limit: must be an integer between 1 and {MAX_KEY_LIST}, got '{raw}'"
                ))
            })?,
    };
    let owner = params.owner;
    if let Some(owner) = &owner {
        validate_owner(owner).map_err(|e| ApiError::Invalid(format!("owner: {e}")))?;
    }
    let now = Utc::now();
    let keys = state.key_store.list(owner.as_deref(), limit).await?;
    Ok(Json(keys.iter().map(|k| KeyView::new(k, now)).collect()))
}

/// One key.
#[utoipa::path(
    get, path = "/api/v1/keys/{key_id}", tag = "keys",
    params(("key_id" = String, Path, description = "The key's id (the 12 characters after `thn_`)")),
    responses(
        (status = 200, description = "The key", body = KeyView),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal))]
pub async fn get_key(
    State(state): State<SharedState>,
    principal: Principal,
    Path(key_id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    admin(&principal)?;
    let key = state
        .key_store
        .get(&key_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("key '{key_id}' not found")))?;
    Ok(Json(KeyView::new(&key, Utc::now())))
}

/// Revoke a key: it stops working at once on this replica and within 5 s on the others. It
/// stays listed, as revoked. Revoking a revoked key changes nothing.
#[utoipa::path(
    post, path = "/api/v1/keys/{key_id}/revoke", tag = "keys",
    params(("key_id" = String, Path, description = "The key's id (the 12 characters after `thn_`)")),
    responses(
        (status = 200, description = "The key, revoked", body = KeyView),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal))]
pub async fn revoke_key(
    State(state): State<SharedState>,
    principal: Principal,
    Path(key_id): Path<String>,
) -> ApiResult<Json<KeyView>> {
    admin(&principal)?;
    let key = state
        .key_store
        .revoke(&key_id, Utc::now())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("key '{key_id}' not found")))?;
    if let Authenticator::ApiKey(keys) = &state.auth.authenticator {
        keys.forget(&key.id);
    }
    info!(key_id = %key.id, owner = %key.owner, "API key revoked");
    Ok(Json(KeyView::new(&key, Utc::now())))
}
