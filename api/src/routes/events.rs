//! Live progress: `GET /api/v1/jobs/{id}/events` streams the job's status changes as
//! server-sent events, closing after the final one (SUCCESS or FAILURE).
//!
//! The stream re-reads the job when this process announces its finish (on PostgreSQL also
//! finishes by other processes, see `relay_finished_jobs`) and at least every
//! LONG_POLL_RECHECK_MILLISECONDS, so it follows jobs the operator or another replica runs. A
//! comment every few seconds keeps proxies from closing it and refreshes the server's idle timer
//! (KEEP_ALIVE_TIMEOUT_SECONDS counts from the last byte written). Streams share the long-polls'
//! per-caller cap, and end when the server stops.
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Path;
use crate::limits::{ClientAddr, RateKey, WaitSlot};
use crate::routes::jobs::load;
use crate::state::SharedState;
use crate::views::JobView;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;
use std::convert::Infallible;
use std::time::Duration;
use thumbnail_core::apikeys::Scope;
use thumbnail_core::model::{JobRecord, JobStatus};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tracing::instrument;
use uuid::Uuid;

pub fn router() -> axum::Router<SharedState> {
    axum::Router::new().route("/api/v1/jobs/{job_id}/events", get(job_events))
}

/// Time between keep-alive comments: well inside any idle timeout in front of or in the server.
pub fn keep_alive_every(keep_alive_timeout: Duration) -> Duration {
    (keep_alive_timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

/// One server-sent event as it is framed on the wire (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StreamedEvent {
    /// `status`, or `error` when the job expired meanwhile.
    event: String,
    /// The job's version (`status` events).
    id: Option<String>,
    /// A `status` event's job, as JSON text (the shape of `GET /api/v1/jobs/{job_id}`); an
    /// `error` event's reason.
    data: String,
}

/// What a stream still has to do.
struct Follow {
    state: SharedState,
    principal: Principal,
    raw_id: String,
    id: Uuid,
    /// The status last sent; `None` before the first event.
    sent: Option<JobStatus>,
    /// The job read when the request came, sent first.
    first: Option<JobRecord>,
    finished: broadcast::Receiver<Uuid>,
    done: bool,
    /// Held for the stream's life: one of the caller's long-poll places.
    _slot: WaitSlot,
}

/// One `status` event: the job as `GET /api/v1/jobs/{id}` shows it; its id is the job's
/// version, so a reconnecting client can tell what it saw.
fn status_event(state: &SharedState, job: &JobRecord) -> Event {
    let view = JobView::new(job, state.objects.endpoint_url());
    Event::default()
        .event("status")
        .id(job.version.to_string())
        .json_data(&view)
        .unwrap_or_else(|_| Event::default().event("status").data("{}"))
}

impl Follow {
    /// Wait until the job may have changed: its finish announced, or the re-read interval.
    async fn changed(&mut self) {
        let recheck = self.state.long_poll_recheck;
        let id = self.id;
        let finished = &mut self.finished;
        let _ = tokio::time::timeout(recheck, async {
            loop {
                match finished.recv().await {
                    Ok(other) if other != id => continue,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                    Ok(_) | Err(RecvError::Lagged(_)) => return,
                }
            }
        })
        .await;
    }

    /// The next event, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Event> {
        if self.done {
            return None;
        }
        loop {
            let job = match self.first.take() {
                Some(job) => Ok(job),
                None => {
                    let stopping = self.state.stopping.clone();
                    tokio::select! {
                        _ = stopping.cancelled() => return None,
                        _ = self.changed() => {}
                    }
                    load(&self.state, &self.principal, &self.raw_id).await
                }
            };
            let job = match job {
                Ok(job) => job,
                Err(ApiError::Unavailable { .. }) => continue,
                // Expired or deleted meanwhile: say so, then end.
                Err(err) => {
                    self.done = true;
                    return Some(Event::default().event("error").data(err.to_string()));
                }
            };
            if self.sent != Some(job.status) {
                self.sent = Some(job.status);
                self.done = job.status.is_finished();
                return Some(status_event(&self.state, &job));
            }
        }
    }
}

/// One of the caller's long-poll places, held for an event stream's life (429 when all are
/// taken).
pub(crate) fn stream_slot(
    state: &SharedState,
    principal: &Principal,
    client: ClientAddr,
) -> ApiResult<WaitSlot> {
    let caller = match principal.owner.as_deref() {
        Some(owner) => RateKey::Owner(owner),
        None => RateKey::Client(client.0),
    };
    state.waiters.enter(caller).ok_or_else(|| {
        ApiError::limited(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many event streams and long-polls open for this caller (at most {}); close one first",
                crate::limits::MAX_WAITS_PER_CALLER
            ),
            Duration::from_secs(5),
            HeaderMap::new(),
        )
    })
}

/// Follow a job live: server-sent events, one `status` event per status change (PENDING,
/// STARTED, then SUCCESS or FAILURE), each carrying the job as `GET /api/v1/jobs/{job_id}` shows
/// it; the stream closes after the final one. Comments keep the connection alive meanwhile.
#[utoipa::path(
    get, path = "/api/v1/jobs/{job_id}/events", tag = "jobs",
    params(("job_id" = String, Path, description = "The id returned by the upload")),
    responses(
        (status = 200, description = "`text/event-stream`: `event: status` with `data:` the job (JSON, as GET /api/v1/jobs/{job_id}) at once and at every status change; closed after SUCCESS or FAILURE. `event: error` when the job expires meanwhile",
         content_type = "text/event-stream", body = StreamedEvent),
        (status = 404, description = "No such job (or another owner's)", body = ErrorBody),
        (status = 410, description = "The job expired (or was deleted)", body = ErrorBody),
        (status = 429, description = "The caller has 32 event streams and long-polls open", body = ErrorBody,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "The job store is unavailable", body = ErrorBody),
    )
)]
#[instrument(skip(state, principal, client))]
pub async fn job_events(
    State(state): State<SharedState>,
    principal: Principal,
    client: ClientAddr,
    Path(job_id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    principal.require(Scope::Read)?;
    let slot = stream_slot(&state, &principal, client)?;
    // Subscribed before the first read, so a finish right after it is not missed.
    let finished = state.job_events.subscribe();
    let job = load(&state, &principal, &job_id).await?;
    let keep_alive = keep_alive_every(state.keep_alive_timeout);
    let follow = Follow {
        state,
        principal,
        raw_id: job_id,
        id: job.id,
        sent: None,
        first: Some(job),
        finished,
        done: false,
        _slot: slot,
    };
    let stream = futures::stream::unfold(follow, |mut follow| async move {
        let event = follow.next().await?;
        Some((Ok(event), follow))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(keep_alive)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_come_well_inside_the_idle_timeout() {
        assert_eq!(keep_alive_every(Duration::from_secs(75)), Duration::from_secs(15));
        assert_eq!(keep_alive_every(Duration::from_secs(6)), Duration::from_secs(2));
        assert_eq!(keep_alive_every(Duration::from_secs(1)), Duration::from_secs(1));
    }
}
