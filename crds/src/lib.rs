#![forbid(unsafe_code)]
//! The `ThumbnailJob` custom resource (`thumbnailer.dev/v1alpha1`, short name `tj`): the contract
//! between the REST API (which creates one per upload), the operator (which reconciles them) and
//! GitOps users (who write them by hand for objects already in the bucket).
//!
//! - [`ThumbnailJob`], [`ThumbnailJobSpec`], [`ThumbnailJobStatus`] and their parts: the types.
//! - [`status`]: pure lifecycle helpers (phase, conditions, timestamps).
//! - [`ThumbnailJobSpec::validate`]: the schema's rules in Rust.
//! - [`crd()`] / [`crd_yaml()`]: the CustomResourceDefinition, as committed in the Helm chart.
//! - [`rbac`]: the permissions each component needs.

pub mod rbac;
pub mod status;
mod types;
mod validate;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use types::{
    DEFAULT_BACKOFF_LIMIT, DEFAULT_OUTPUT_NAME, DEFAULT_OUTPUT_SIZE, DEFAULT_QUALITY, Execution, Executor,
    Fit, Gravity, ImageFormat, MAX_BACKOFF_LIMIT, MAX_DIMENSION, MAX_OUTPUTS, OutputSpec, OutputStatus,
    Phase, SourceRef, ThumbnailJob, ThumbnailJobSpec, ThumbnailJobStatus, WebhookAttemptStatus,
    WebhookStatus,
};
pub use validate::SpecError;

/// API group of the custom resource.
pub const GROUP: &str = "thumbnailer.dev";
/// API version of the custom resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the custom resource.
pub const API_VERSION: &str = "thumbnailer.dev/v1alpha1";
/// Kind of the custom resource.
pub const KIND: &str = "ThumbnailJob";
/// Plural (resource) name.
pub const PLURAL: &str = "thumbnailjobs";
/// Name of the CustomResourceDefinition object.
pub const CRD_NAME: &str = "thumbnailjobs.thumbnailer.dev";
/// Finalizer the operator puts on ThumbnailJobs to clean up their objects and Jobs.
pub const FINALIZER: &str = "thumbnailer.dev/cleanup";
/// Label carrying the job id, on ThumbnailJobs created by the API and on render Jobs and pods.
pub const LABEL_JOB_ID: &str = "thumbnailer.dev/job-id";
/// Label naming the ThumbnailJob, on render Jobs and pods (when the name fits a label value).
pub const LABEL_THUMBNAILJOB: &str = "thumbnailer.dev/thumbnailjob";
/// Label with the ThumbnailJob's uid, on render Jobs and pods. Render Jobs run in the operator's
/// namespace, where an owner reference to a ThumbnailJob in another namespace is not allowed:
/// this label (and [`ANNOTATION_THUMBNAILJOB`]) says whose Job it is.
pub const LABEL_THUMBNAILJOB_UID: &str = "thumbnailer.dev/thumbnailjob-uid";
/// Annotation `namespace/name` of the ThumbnailJob a render Job works for.
pub const ANNOTATION_THUMBNAILJOB: &str = "thumbnailer.dev/thumbnailjob";
/// Where the committed CRD lives, relative to the repository root.
pub const CRD_PATH: &str = "helm-charts/files/thumbnailjobs.thumbnailer.dev.yaml";
/// Where the committed RBAC table lives, relative to the repository root.
pub const RBAC_TABLE_PATH: &str = "helm-charts/files/rbac-table.json";

/// The CustomResourceDefinition.
pub fn crd() -> CustomResourceDefinition {
    ThumbnailJob::crd()
}

/// The CustomResourceDefinition as the YAML document committed at [`CRD_PATH`], with a header
/// saying how to regenerate it.
pub fn crd_yaml() -> String {
    let yaml = serde_yaml::to_string(&crd()).expect("the CRD serializes to YAML");
    format!(
        "# Generated from crds/src by `cargo run -p thumbnail-crds --features crdgen --bin crdgen -- --write`.\n\
         # Do not edit: change the Rust types and regenerate (see crds/README.md).\n{yaml}"
    )
}

/// The RBAC table as pretty JSON, as committed at [`RBAC_TABLE_PATH`].
pub fn rbac_json() -> String {
    let mut s = serde_json::to_string_pretty(&rbac::table_json()).expect("JSON");
    s.push('\n');
    s
}
