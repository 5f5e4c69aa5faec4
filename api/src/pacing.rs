//! Upload bodies that must keep coming: a total deadline (UPLOAD_TIMEOUT_SECONDS) and, after a
//! grace period, a minimum average rate (UPLOAD_MIN_BYTES_PER_SECOND). A client that trickles
//! bytes to hold a connection and a spool file is cut off with 408 instead of tying them up for
//! as long as it likes.
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio::time::Instant;

/// The first seconds of an upload, before the minimum rate applies (connection set-up, TCP
/// slow start).
pub const GRACE: Duration = Duration::from_secs(10);

/// How fast an upload body must arrive.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub deadline: Duration,
    /// Bytes per second on average after [`GRACE`]; 0: no minimum.
    pub min_rate: u64,
}

/// Why an upload body was cut off; found again in the multipart error's source chain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TooSlow {
    #[error("the upload took longer than {0} s (UPLOAD_TIMEOUT_SECONDS)")]
    Deadline(u64),
    #[error(
        "the upload arrived slower than {0} bytes per second (UPLOAD_MIN_BYTES_PER_SECOND), \
         {1} bytes in {2} s"
    )]
    Rate(u64, u64, u64),
}

impl Pace {
    /// When the body is too late if no more bytes arrive, having received `received` bytes
    /// since `start`; and what is wrong then. Pure.
    pub fn cutoff(&self, start: Instant, received: u64) -> (Instant, TooSlow) {
        let end = start + self.deadline;
        if self.min_rate == 0 {
            return (end, TooSlow::Deadline(self.deadline.as_secs()));
        }
        // The average rate falls below the minimum at received / min_rate seconds.
        let rate_end = start + GRACE.max(Duration::from_secs_f64(received as f64 / self.min_rate as f64));
        if rate_end < end {
            let seconds = rate_end.saturating_duration_since(start).as_secs();
            (rate_end, TooSlow::Rate(self.min_rate, received, seconds))
        } else {
            (end, TooSlow::Deadline(self.deadline.as_secs()))
        }
    }
}

/// Middleware of the upload route: the request body, paced.
pub async fn pace_uploads(State(pace): State<Pace>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let request = request.map(|body| {
        let stream = futures::stream::unfold(
            (body.into_data_stream(), 0u64, false),
            move |(mut data, received, done)| async move {
                if done {
                    return None;
                }
                let (cutoff, why) = pace.cutoff(start, received);
                match tokio::time::timeout_at(cutoff, data.next()).await {
                    Err(_) => Some((Err(axum::BoxError::from(why)), (data, received, true))),
                    Ok(None) => None,
                    Ok(Some(Err(e))) => Some((Err(axum::BoxError::from(e)), (data, received, true))),
                    Ok(Some(Ok(chunk))) => {
                        let received = received + chunk.len() as u64;
                        Some((Ok::<Bytes, axum::BoxError>(chunk), (data, received, false)))
                    }
                }
            },
        );
        Body::from_stream(stream)
    });
    next.run(request).await
}

/// The [`TooSlow`] somewhere in an error's source chain.
pub fn too_slow<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a TooSlow> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(slow) = e.downcast_ref::<TooSlow>() {
            return Some(slow);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_follows_the_rate_after_the_grace_and_never_passes_the_deadline() {
        let pace = Pace {
            deadline: Duration::from_secs(300),
            min_rate: 1000,
        };
        let start = Instant::now();
        let (at, why) = pace.cutoff(start, 0);
        assert_eq!(at - start, GRACE);
        assert!(matches!(why, TooSlow::Rate(1000, 0, 10)));
        let (at, _) = pace.cutoff(start, 50_000);
        assert_eq!(at - start, Duration::from_secs(50));
        let (at, why) = pace.cutoff(start, 10_000_000);
        assert_eq!(at - start, Duration::from_secs(300));
        assert!(matches!(why, TooSlow::Deadline(300)));
        let no_rate = Pace {
            deadline: Duration::from_secs(5),
            min_rate: 0,
        };
        assert_eq!(no_rate.cutoff(start, 0).0 - start, Duration::from_secs(5));
    }
}
