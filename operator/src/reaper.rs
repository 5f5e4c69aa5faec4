//! Retention in the operator: the leader runs the same sweeper as the API (see
//! `thumbnail_core::retention`), so that an operator-only deployment (ThumbnailJobs written with
//! kubectl or GitOps, no API) expires jobs too. Its reaper deletes an expiring job's
//! ThumbnailJob; the finalizer's cleanup then deletes the render Job and publishes the
//! `RetentionExpired` event (see `reconcile::cleanup`).
use async_trait::async_trait;
use kube::api::{Api, DeleteParams, Preconditions};
use thumbnail_core::CoreError;
use thumbnail_core::jobstore::{DynJobStore, RowBinding};
use thumbnail_core::model::JobRecord;
use thumbnail_core::retention::ResourceReaper;
use thumbnail_crds::ThumbnailJob;
use tracing::{info, warn};

/// Deletes the ThumbnailJob an expiring job's row is bound to, with the operator's client.
pub struct ThumbnailJobReaper {
    pub client: kube::Client,
    pub jobs: DynJobStore,
}

#[async_trait]
impl ResourceReaper for ThumbnailJobReaper {
    async fn reap(&self, job: &JobRecord) -> thumbnail_core::Result<()> {
        // A finished row was finished by a reconcile, which binds it first: a row without a
        // binding never had a ThumbnailJob (the embedded runner's, or an upload undone).
        let RowBinding::BoundTo(resource) = self.jobs.resource_binding(job.id).await? else {
            return Ok(());
        };
        let api: Api<ThumbnailJob> = Api::namespaced(self.client.clone(), &resource.namespace);
        // Only the resource the row belongs to: a later one under the same name is not this job's.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(resource.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match api.delete(&resource.name, &params).await {
            Ok(_) => {
                info!(job_id = %job.id, namespace = %resource.namespace, name = %resource.name, "ThumbnailJob of an expiring job deleted");
                Ok(())
            }
            // 404: gone already (ttlSecondsAfterFinished, a kubectl delete, an earlier sweep);
            // 409: the uid precondition failed, so the name is another resource now.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
            Err(e) => {
                warn!(job_id = %job.id, namespace = %resource.namespace, name = %resource.name, error = %e, "could not delete the ThumbnailJob of an expiring job");
                Err(CoreError::Cluster(e.to_string()))
            }
        }
    }
}
