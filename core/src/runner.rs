//! The embedded default's job runner: a queue of job ids drained by as many workers as CPUs.
//!
//! The job store is the source of truth, the queue only a wake-up list: at start-up every
//! unfinished job is queued again, so a job accepted before a crash or SIGTERM is resumed.
//! Transient errors (database or object store down) are retried with exponential backoff, without
//! limit: an accepted job always ends as SUCCESS or FAILURE once its dependencies are back.
use crate::Result;
use crate::worker::{RunOutcome, Worker};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

/// Backoff before retry number `retry` (1-based): 250 ms doubling, capped at 30 s. Pure.
pub fn retry_delay(retry: u32) -> Duration {
    let millis = 250u64.saturating_mul(1u64 << retry.saturating_sub(1).min(16));
    Duration::from_millis(millis.min(30_000))
}

/// Cloneable handle to queue jobs.
#[derive(Clone)]
pub struct RunnerHandle {
    tx: mpsc::UnboundedSender<Uuid>,
}

impl RunnerHandle {
    /// Queue a job. Returns false only when the runner has stopped (the job stays in the store and
    /// is resumed at the next start).
    pub fn enqueue(&self, id: Uuid) -> bool {
        self.tx.send(id).is_ok()
    }
}

pub struct Runner {
    workers: JoinSet<()>,
    shutdown: CancellationToken,
}

impl Runner {
    /// Queue every unfinished job, then start `concurrency` workers. Call before serving requests.
    pub async fn start(worker: Arc<Worker>, concurrency: usize) -> Result<(Runner, RunnerHandle)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = RunnerHandle { tx };
        let mut resumed = 0usize;
        // Page through unfinished jobs; all of them are queued before any worker starts, so the
        // query cannot see a job twice.
        let pending = worker.jobs.unfinished(u32::MAX).await?;
        for id in pending {
            handle.enqueue(id);
            resumed += 1;
        }
        if resumed > 0 {
            info!(resumed, "queued unfinished jobs from a previous run");
        }
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let retries = Arc::new(Mutex::new(HashMap::<Uuid, u32>::new()));
        let shutdown = CancellationToken::new();
        let mut workers = JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (rx, worker, handle, retries, shutdown) = (
                rx.clone(),
                worker.clone(),
                handle.clone(),
                retries.clone(),
                shutdown.clone(),
            );
            workers.spawn(async move {
                loop {
                    let next = tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => None,
                        id = async { rx.lock().await.recv().await } => id,
                    };
                    let Some(id) = next else { break };
                    match worker.run(id).await {
                        Ok(outcome) => {
                            retries.lock().expect("retry map").remove(&id);
                            if outcome == RunOutcome::Superseded {
                                warn!(job_id = %id, "another attempt finished this job first");
                            }
                        }
                        Err(err) => {
                            let retry = {
                                let mut map = retries.lock().expect("retry map");
                                let n = map.entry(id).or_insert(0);
                                *n += 1;
                                *n
                            };
                            let delay = retry_delay(retry);
                            error!(job_id = %id, retry, delay_ms = delay.as_millis() as u64, error = %err, "job will be retried");
                            let (handle, shutdown) = (handle.clone(), shutdown.clone());
                            tokio::spawn(async move {
                                tokio::select! {
                                    _ = shutdown.cancelled() => {}
                                    _ = tokio::time::sleep(delay) => { handle.enqueue(id); }
                                }
                            });
                        }
                    }
                }
            });
        }
        Ok((Runner { workers, shutdown }, handle))
    }

    /// Stop taking jobs, let the running ones finish within `grace`, and abandon the rest: they
    /// stay unfinished in the store and resume at the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        self.shutdown.cancel();
        let drained =
            tokio::time::timeout(grace, async { while self.workers.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            warn!(
                grace_secs = grace.as_secs(),
                "jobs still running after the grace period; they resume at the next start"
            );
            self.workers.abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::from_millis(250));
        assert_eq!(retry_delay(2), Duration::from_millis(500));
        assert_eq!(retry_delay(5), Duration::from_secs(4));
        assert_eq!(retry_delay(40), Duration::from_secs(30));
    }
}
