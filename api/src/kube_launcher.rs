//! The Kubernetes mode: every accepted upload becomes a `ThumbnailJob` resource, which the operator
//! reconciles (and mirrors back to the job store the API reads from).
use crate::error::{ApiError, ApiResult};
use crate::state::JobLauncher;
use async_trait::async_trait;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use std::collections::BTreeMap;
use thumbnail_core::CoreError;
use thumbnail_core::jobstore::{DynJobStore, ResourceRef, RowBinding};
use thumbnail_core::model::JobRecord;
use thumbnail_core::retention::ResourceReaper;
use thumbnail_crds::{
    DEFAULT_BACKOFF_LIMIT, Execution, Fit, Gravity, ImageFormat, LABEL_JOB_ID, OutputSpec, SourceRef,
    ThumbnailJob, ThumbnailJobSpec,
};
use thumbnail_engine::{Fit as EngineFit, Gravity as EngineGravity, OutputFormat};
use tracing::{info, warn};
use uuid::Uuid;

/// The label that carries a job's owner, so that `kubectl get tj -l thumbnailer.dev/owner=NAME`
/// finds a tenant's jobs (the exact owner is `spec.owner`, selectable with
/// `--field-selector spec.owner=NAME`).
pub const LABEL_OWNER: &str = "thumbnailer.dev/owner";

/// The label that carries a job's batch (`POST /api/v1/batches/`), so that
/// `kubectl get tj -l thumbnailer.dev/batch=ID` shows a batch's jobs.
pub const LABEL_BATCH: &str = "thumbnailer.dev/batch";

/// The owner as a label value (at most 63 characters of `[A-Za-z0-9._-]`, starting and ending
/// with a letter or digit). An owner that already is one is used as it is; any other is
/// sanitised (other characters become `_`, the ends trimmed, shortened) and followed by `-` and
/// 8 hex digits of its SHA-256, so that two owners never share a label value. Pure.
pub fn owner_label_value(owner: &str) -> String {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let is_valid = |v: &str| {
        !v.is_empty()
            && v.len() <= 63
            && v.chars().all(valid_char)
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if is_valid(owner) {
        return owner.to_owned();
    }
    use sha2::{Digest, Sha256};
    let digest = hex::encode(&Sha256::digest(owner.as_bytes())[..4]);
    let cleaned: String = owner
        .chars()
        .map(|c| if valid_char(c) { c } else { '_' })
        .collect();
    let cleaned = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let head: String = cleaned.chars().take(63 - 9).collect();
    let head = head.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if head.is_empty() {
        format!("o-{digest}")
    } else {
        format!("{head}-{digest}")
    }
}

/// What the API's ThumbnailJobs get besides the upload's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceSettings {
    /// `ttlSecondsAfterFinished`; `None` keeps them.
    pub ttl_seconds_after_finished: Option<i32>,
    /// `activeDeadlineSeconds`.
    pub active_deadline_seconds: Option<i64>,
}

/// Creates one `ThumbnailJob` per accepted upload, in one namespace.
pub struct KubernetesLauncher {
    api: Api<ThumbnailJob>,
    namespace: String,
    settings: ResourceSettings,
    jobs: DynJobStore,
}

pub use crate::cli::install_crypto_provider;

/// The Kubernetes client: `url` without authentication when given (tests, `kubectl proxy`), else
/// the in-cluster configuration or kubeconfig.
pub async fn client(url: Option<&str>) -> Result<kube::Client, String> {
    install_crypto_provider();
    match url.filter(|u| !u.is_empty()) {
        Some(url) => {
            let uri = url.parse().map_err(|e| format!("KUBE_API_URL: {e}"))?;
            kube::Client::try_from(kube::Config::new(uri)).map_err(|e| e.to_string())
        }
        None => kube::Client::try_default()
            .await
            .map_err(|e| format!("Kubernetes client configuration: {e}")),
    }
}

/// The resource's gravity for the engine's.
fn crd_gravity(gravity: EngineGravity) -> Gravity {
    match gravity {
        EngineGravity::Centre => Gravity::Centre,
        EngineGravity::North => Gravity::North,
        EngineGravity::South => Gravity::South,
        EngineGravity::East => Gravity::East,
        EngineGravity::West => Gravity::West,
        EngineGravity::Northeast => Gravity::Northeast,
        EngineGravity::Northwest => Gravity::Northwest,
        EngineGravity::Southeast => Gravity::Southeast,
        EngineGravity::Southwest => Gravity::Southwest,
        EngineGravity::Smart => Gravity::Smart,
    }
}

impl KubernetesLauncher {
    pub fn new(client: kube::Client, namespace: &str, settings: ResourceSettings, jobs: DynJobStore) -> Self {
        KubernetesLauncher {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            settings,
            jobs,
        }
    }

    /// The resource name of a job: `tj-{job id}`.
    pub fn resource_name(id: Uuid) -> String {
        format!("tj-{id}")
    }

    /// The `ThumbnailJob` for a stored job. Pure.
    pub fn resource(job: &JobRecord, settings: &ResourceSettings) -> ThumbnailJob {
        let outputs = job
            .outputs_requested
            .iter()
            .map(|o| OutputSpec {
                name: o.name.clone(),
                width: o.options.width,
                height: o.options.height,
                fit: match o.options.fit {
                    EngineFit::Cover => Fit::Cover,
                    EngineFit::Contain => Fit::Contain,
                    EngineFit::Fill => Fit::Fill,
                },
                format: o.options.format.map(|f| match f {
                    OutputFormat::Jpeg => ImageFormat::Jpeg,
                    OutputFormat::Png => ImageFormat::Png,
                    OutputFormat::Webp => ImageFormat::Webp,
                    OutputFormat::Avif => ImageFormat::Avif,
                    OutputFormat::Gif => ImageFormat::Gif,
                }),
                quality: o.options.quality,
                upscale: o.options.upscale,
                gravity: crd_gravity(o.options.gravity),
                animated: o.options.animated,
            })
            .collect();
        let spec = ThumbnailJobSpec {
            source: SourceRef {
                bucket: Some(job.source_bucket.clone()),
                key: job.source_key.clone(),
            },
            outputs,
            execution: Execution::Auto,
            ttl_seconds_after_finished: settings.ttl_seconds_after_finished,
            backoff_limit: DEFAULT_BACKOFF_LIMIT,
            active_deadline_seconds: settings.active_deadline_seconds,
            owner: job.owner.clone(),
            job_id: Some(job.id.to_string()),
        };
        let mut tj = ThumbnailJob::new(&Self::resource_name(job.id), spec);
        let mut labels = BTreeMap::from([
            (LABEL_JOB_ID.to_owned(), job.id.to_string()),
            (
                "app.kubernetes.io/created-by".to_owned(),
                "thumbnail-api".to_owned(),
            ),
        ]);
        if let Some(owner) = &job.owner {
            labels.insert(LABEL_OWNER.to_owned(), owner_label_value(owner));
        }
        if let Some(batch) = job.batch_id {
            labels.insert(LABEL_BATCH.to_owned(), batch.to_string());
        }
        tj.metadata = ObjectMeta {
            name: Some(Self::resource_name(job.id)),
            labels: Some(labels),
            ..ObjectMeta::default()
        };
        tj
    }
}

#[async_trait]
impl JobLauncher for KubernetesLauncher {
    async fn launch(&self, job: &JobRecord, _original: Option<bytes::Bytes>) -> ApiResult<()> {
        // The operator's workers are other processes: they read the original from S3.
        let resource = Self::resource(job, &self.settings);
        match self.api.create(&PostParams::default(), &resource).await {
            Ok(created) => {
                info!(job_id = %job.id, namespace = %self.namespace, "ThumbnailJob created");
                // The row belongs to this resource from now on: another ThumbnailJob naming the
                // same job id is refused by the operator instead of overwriting it. If this
                // fails, the operator binds it at its first reconcile.
                let binding = ResourceRef {
                    namespace: self.namespace.clone(),
                    name: created.name_any(),
                    uid: created.metadata.uid.clone().unwrap_or_default(),
                };
                if let Err(e) = self.jobs.bind_resource(job.id, &binding).await {
                    warn!(job_id = %job.id, error = %e, "could not bind the job row to its ThumbnailJob yet");
                }
                Ok(())
            }
            Err(err) => {
                warn!(job_id = %job.id, namespace = %self.namespace, error = %err, "could not create the ThumbnailJob");
                Err(ApiError::Unavailable {
                    dependency: "the Kubernetes API",
                    source: None,
                })
            }
        }
    }

    fn name(&self) -> &'static str {
        "kubernetes"
    }
}

/// Retention and early deletes in Kubernetes mode: deletes an expiring job's ThumbnailJob, so that
/// the operator's finalizer stops and deletes its render Job (and deletes its thumbnails, which
/// the sweeper deletes too). The deletion is not awaited: a ThumbnailJob waiting for its
/// finalizer (the operator down) is deleted when the operator is back, and the sweeper need not
/// wait for it.
pub struct ThumbnailJobReaper {
    client: kube::Client,
    /// Where this API creates its ThumbnailJobs (for rows no resource has bound).
    namespace: String,
    jobs: DynJobStore,
}

impl ThumbnailJobReaper {
    pub fn new(client: kube::Client, namespace: &str, jobs: DynJobStore) -> Self {
        ThumbnailJobReaper {
            client,
            namespace: namespace.to_owned(),
            jobs,
        }
    }
}

/// Delete the ThumbnailJob `name` in `namespace` if it still is the one with `uid` (a resource
/// made later under the same name is left alone). Gone already: done.
pub async fn delete_thumbnailjob(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<(), kube::Error> {
    let api: Api<ThumbnailJob> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        // 404: gone already; 409: the uid precondition failed, so this name is another resource.
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl ResourceReaper for ThumbnailJobReaper {
    async fn reap(&self, job: &JobRecord) -> thumbnail_core::Result<()> {
        let failed = |e: kube::Error| {
            warn!(job_id = %job.id, error = %e, "could not delete the ThumbnailJob of an expiring job");
            CoreError::Cluster(e.to_string())
        };
        let target = match self.jobs.resource_binding(job.id).await? {
            RowBinding::BoundTo(resource) => Some(resource),
            // The launcher could not bind the row and no operator has seen the resource yet:
            // the resource this API created for it, if it names this job.
            RowBinding::Unbound | RowBinding::NoRow => {
                let api: Api<ThumbnailJob> = Api::namespaced(self.client.clone(), &self.namespace);
                let name = KubernetesLauncher::resource_name(job.id);
                api.get_opt(&name)
                    .await
                    .map_err(failed)?
                    .filter(|tj| tj.spec.job_id.as_deref() == Some(job.id.to_string().as_str()))
                    .map(|tj| ResourceRef {
                        namespace: self.namespace.clone(),
                        name,
                        uid: tj.metadata.uid.unwrap_or_default(),
                    })
            }
        };
        if let Some(resource) = target {
            delete_thumbnailjob(&self.client, &resource.namespace, &resource.name, &resource.uid)
                .await
                .map_err(failed)?;
            info!(job_id = %job.id, namespace = %resource.namespace, name = %resource.name, "ThumbnailJob of an expiring job deleted");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thumbnail_core::model::{JobStatus, OutputSpec as CoreOutput};
    use thumbnail_engine::ThumbnailOptions;

    #[test]
    fn resource_carries_the_job() {
        let id = Uuid::new_v4();
        let batch = Uuid::new_v4();
        let job = JobRecord {
            status: JobStatus::Pending,
            owner: Some("alice".into()),
            source_bucket: "thumbnails".into(),
            source_key: format!("images/original/{id}.png"),
            source_format: thumbnail_engine::ImageFormat::Png,
            source_width: 10,
            source_height: 10,
            outputs_requested: vec![CoreOutput::default_output(ThumbnailOptions {
                width: 40,
                height: 30,
                fit: EngineFit::Contain,
                format: Some(OutputFormat::Webp),
                quality: 70,
                upscale: true,
                ..ThumbnailOptions::default()
            })],
            attempts: 0,
            batch_id: Some(batch),
            ..thumbnail_core::testsupport::job_record(id)
        };
        let settings = ResourceSettings {
            ttl_seconds_after_finished: Some(3600),
            active_deadline_seconds: Some(900),
        };
        let tj = KubernetesLauncher::resource(&job, &settings);
        assert_eq!(tj.spec.ttl_seconds_after_finished, Some(3600));
        assert_eq!(tj.spec.active_deadline_seconds, Some(900));
        assert_eq!(tj.metadata.name.as_deref(), Some(format!("tj-{id}").as_str()));
        assert_eq!(tj.metadata.labels.as_ref().unwrap()[LABEL_JOB_ID], id.to_string());
        assert_eq!(tj.spec.job_id.as_deref(), Some(id.to_string().as_str()));
        assert_eq!(tj.spec.owner.as_deref(), Some("alice"));
        assert_eq!(tj.metadata.labels.as_ref().unwrap()[LABEL_OWNER], "alice");
        assert_eq!(
            tj.metadata.labels.as_ref().unwrap()[LABEL_BATCH],
            batch.to_string()
        );
        assert_eq!(tj.spec.source.key, job.source_key);
        let o = &tj.spec.outputs[0];
        assert_eq!(
            (
                o.name.as_str(),
                o.width,
                o.height,
                o.fit,
                o.format,
                o.quality,
                o.upscale
            ),
            ("default", 40, 30, Fit::Contain, Some(ImageFormat::Webp), 70, true)
        );
        assert_eq!(tj.spec.validate(), Ok(()));
    }

    #[test]
    fn owner_labels_are_valid_label_values_and_never_shared() {
        let label = |v: &str| {
            v.len() <= 63
                && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())
        };
        assert_eq!(owner_label_value("alice"), "alice");
        assert_eq!(owner_label_value("team-a.prod_1"), "team-a.prod_1");
        let long = "x".repeat(253);
        for owner in [
            "alice@example.com",
            "auth0|5f1c9a",
            "-leading",
            "trailing.",
            "!!!",
            long.as_str(),
            "a_example.com",
        ] {
            let value = owner_label_value(owner);
            assert!(label(&value), "{owner:?} -> {value:?}");
            assert_ne!(value, owner_label_value(&format!("{owner}x")), "{owner}");
        }
        assert_ne!(
            owner_label_value("a@example.com"),
            owner_label_value("a_example.com")
        );
        assert!(owner_label_value("alice@example.com").starts_with("alice_example.com-"));
    }
}
