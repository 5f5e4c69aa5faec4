//! The OpenAPI document (served at `/openapi.json`, committed as `api/openapi.json`) and Swagger UI
//! at `/docs`, both from the binary: the UI's files are vendored at build time, no CDN.
//!
//! The document describes the server as configured: with AUTH_MODE=api-key or jwt every
//! `/api/v1/` operation (and `/metrics` with METRICS_AUTH) declares its security scheme and its
//! 401 and 403 answers, so that Swagger UI's "Authorize" button works and no client is told an
//! operation is open when it is not. The committed file is the api-key document (the Helm
//! chart's default).
use crate::config::AuthMode;
use crate::error::ErrorBody;
use crate::routes::{batches, deliveries, events, files, health, jobs, keys, thumbnails};
use crate::views;
use utoipa::OpenApi;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Header, Ref, RefOr, ResponseBuilder};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Thumbnail service",
        description = "Upload an image, poll the job, fetch a presigned URL of its thumbnail. \
                       Compatible with the original Python service's REST contract."
    ),
    paths(
        thumbnails::create_thumbnail,
        batches::create_batch,
        batches::get_batch,
        batches::batch_events,
        jobs::get_job,
        jobs::delete_job,
        events::job_events,
        deliveries::list_deliveries,
        jobs::list_jobs,
        jobs::get_thumbnail,
        keys::create_key,
        keys::list_keys,
        keys::get_key,
        keys::revoke_key,
        files::download,
        health::health,
        health::ready,
        health::metrics,
    ),
    components(schemas(
        ErrorBody,
        views::Status,
        views::JobAccepted,
        views::JobResult,
        views::JobFailure,
        views::JobView,
        views::OutputView,
        views::PlaceholderView,
        views::SourceView,
        views::RequestedOutput,
        views::ThumbnailUrl,
        views::Health,
        views::Readiness,
        views::KeyView,
        views::CreatedKey,
        views::NewKey,
        views::ScopeName,
        thumbnails::UploadForm,
        thumbnails::FitName,
        thumbnails::FormatName,
        batches::BatchForm,
        batches::BatchAccepted,
        batches::BatchEntryView,
        batches::BatchView,
        batches::BatchJobView,
        batches::ProgressView,
        deliveries::DeliveryList,
        deliveries::DeliveryView,
        deliveries::AttemptView,
        deliveries::DeliveryStateName,
    )),
    tags(
        (name = "thumbnails", description = "Uploads"),
        (name = "batches", description = "Many images in one upload"),
        (name = "jobs", description = "Job status and results"),
        (name = "keys", description = "API keys (admins; served with AUTH_MODE=api-key only)"),
        (name = "files", description = "Signed downloads (embedded default)"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

fn error_response(description: &str, challenge: bool) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if challenge {
        let mut header = Header::default();
        header.description = Some("The Bearer challenge (RFC 6750)".into());
        response = response.header("WWW-Authenticate", header);
    }
    RefOr::T(response.build())
}

/// Declare that `operation` needs `schemes` (any one of them) and may answer 401 and 403.
fn protect(operation: &mut Operation, schemes: &[&str]) {
    operation.security = Some(
        schemes
            .iter()
            .map(|name| SecurityRequirement::new(*name, Vec::<String>::new()))
            .collect(),
    );
    let responses = &mut operation.responses.responses;
    responses
        .entry("401".into())
        .or_insert_with(|| error_response("Missing, unknown, expired or revoked credentials", true));
    responses
        .entry("403".into())
        .or_insert_with(|| error_response("The credentials lack the scope this needs", false));
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.put.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The document for a server running `mode` (with METRICS_AUTH = `metrics_auth`).
pub fn document(mode: AuthMode, metrics_auth: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    // Keys are served only where they are what authenticates.
    if mode != AuthMode::ApiKey {
        doc.paths
            .paths
            .retain(|path, _| !path.starts_with("/api/v1/keys"));
        if let Some(tags) = doc.tags.as_mut() {
            tags.retain(|tag| tag.name != "keys");
        }
    }
    // The key routes answer 403 without the admin scope in every mode.
    for (path, item) in doc.paths.paths.iter_mut() {
        if path.starts_with("/api/v1/keys") {
            for operation in operations(item) {
                operation
                    .responses
                    .responses
                    .entry("403".into())
                    .or_insert_with(|| error_response("The caller is not an admin", false));
            }
        }
    }
    let schemes: &[&str] = match mode {
        AuthMode::None => return doc,
        AuthMode::ApiKey => &["bearer", "api_key"],
        AuthMode::Jwt => &["bearer"],
    };
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = match mode {
        AuthMode::Jwt => HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("An OIDC access token of the configured issuer (JWT_ISSUER)"))
            .build(),
        _ => HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("thn_ API key")
            .description(Some("An API key: `Authorization: Bearer thn_…`"))
            .build(),
    };
    components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
    if mode == AuthMode::ApiKey {
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key: `X-API-Key: thn_…`",
            ))),
        );
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        if path.starts_with("/api/v1/") || (metrics_auth && path == "/metrics") {
            for operation in operations(item) {
                protect(operation, schemes);
            }
        }
    }
    doc
}

/// The document for `mode` as committed: pretty JSON with a trailing newline.
pub fn openapi_json_for(mode: AuthMode) -> String {
    let mut json = document(mode, false)
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    json.push('\n');
    json
}

/// The committed document (`api/openapi.json`): the api-key server's.
pub fn openapi_json() -> String {
    openapi_json_for(AuthMode::ApiKey)
}
