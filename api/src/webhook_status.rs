//! Kubernetes mode: every webhook attempt is also shown on the job's ThumbnailJob, as
//! `status.webhook` (state, attempts, the last attempt), written by server-side apply with a
//! field manager of its own, so that the operator's status writes and this one never undo each
//! other. Best effort: the job store has every attempt (`GET /api/v1/jobs/{id}/deliveries`), and
//! a ThumbnailJob already deleted is no error.
use crate::kube_launcher::KubernetesLauncher;
use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use thumbnail_core::webhooks::{DeliveryObserver, DeliveryReport};
use thumbnail_crds::{ThumbnailJob, WebhookAttemptStatus, WebhookStatus};
use tracing::{debug, warn};

/// The field manager of `status.webhook`.
pub const FIELD_MANAGER: &str = "thumbnail-api-webhooks";

pub struct WebhookStatusWriter {
    api: Api<ThumbnailJob>,
}

impl WebhookStatusWriter {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        WebhookStatusWriter {
            api: Api::namespaced(client, namespace),
        }
    }
}

fn time(t: chrono::DateTime<chrono::Utc>) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros())
        .ok()
        .map(Time)
}

/// The status a report shows. Pure.
pub fn webhook_status(report: &DeliveryReport) -> Option<WebhookStatus> {
    let a = &report.last_attempt;
    Some(WebhookStatus {
        delivery_id: report.delivery_id.clone(),
        event_type: report.event_type.clone(),
        state: report.state.as_str().to_owned(),
        attempts: report.attempts.min(i32::MAX as u32) as i32,
        next_attempt_time: report.next_attempt_at.and_then(time),
        last_attempt: WebhookAttemptStatus {
            time: time(a.at)?,
            status_code: a.status_code.map(i32::from),
            latency_ms: a.latency_ms.min(i64::MAX as u64) as i64,
            outcome: a.outcome.clone(),
            error: a.error.clone(),
        },
    })
}

#[async_trait]
impl DeliveryObserver for WebhookStatusWriter {
    async fn attempted(&self, report: &DeliveryReport) {
        let Some(status) = webhook_status(report) else {
            return;
        };
        let name = KubernetesLauncher::resource_name(report.job_id);
        let patch = json!({
            "apiVersion": thumbnail_crds::API_VERSION,
            "kind": thumbnail_crds::KIND,
            "status": { "webhook": status },
        });
        match self
            .api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => debug!(job_id = %report.job_id, "webhook attempt shown on the ThumbnailJob"),
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(error) => {
                warn!(job_id = %report.job_id, %error, "cannot show a webhook attempt on the ThumbnailJob")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thumbnail_core::webhooks::{Attempt, DeliveryState};

    #[test]
    fn a_report_becomes_the_status_field() {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 123_000).unwrap();
        let report = DeliveryReport {
            job_id: uuid::Uuid::nil(),
            delivery_id: "msg_1".into(),
            event_type: "thumbnail.job.succeeded".into(),
            state: DeliveryState::Pending,
            attempts: 2,
            next_attempt_at: Some(at + chrono::Duration::seconds(5)),
            last_attempt: Attempt {
                attempt: 2,
                at,
                status_code: Some(503),
                latency_ms: 12,
                outcome: "http_error".into(),
                error: Some("HTTP 503".into()),
            },
        };
        let status = webhook_status(&report).unwrap();
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["state"], "pending");
        assert_eq!(json["attempts"], 2);
        assert_eq!(json["lastAttempt"]["statusCode"], 503);
        // metav1.Time is whole seconds on the wire.
        assert_eq!(json["lastAttempt"]["time"], "2027-01-15T08:00:00Z");
        assert_eq!(json["nextAttemptTime"], "2027-01-15T08:00:05Z");
    }
}
