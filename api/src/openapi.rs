//! The OpenAPI document (served at `/openapi.json`, committed as `api/openapi.json`) and Swagger UI
//! at `/docs`, both from the binary: the UI's files are vendored at build time, no CDN.
use crate::error::ErrorBody;
use crate::routes::{files, health, jobs, thumbnails};
use crate::views;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Thumbnail service",
        description = "Upload an image, poll the job, fetch a presigned URL of its thumbnail. \
                       Compatible with the original Python service's REST contract."
    ),
    paths(
        thumbnails::create_thumbnail,
        jobs::get_job,
        jobs::list_jobs,
        jobs::get_thumbnail,
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
        views::SourceView,
        views::RequestedOutput,
        views::ThumbnailUrl,
        views::Health,
        views::Readiness,
        thumbnails::UploadForm,
    )),
    tags(
        (name = "thumbnails", description = "Uploads"),
        (name = "jobs", description = "Job status and results"),
        (name = "files", description = "Signed downloads (embedded default)"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// The document as committed: pretty JSON with a trailing newline.
pub fn openapi_json() -> String {
    let mut json = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    json.push('\n');
    json
}
