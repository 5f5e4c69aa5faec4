//! Mirroring a job's state kept elsewhere (the operator's `ThumbnailJob` status) into the job
//! store, so that the REST API answers from the database in the Kubernetes mode too.
//!
//! Built only from the conditional operations of [`JobStore`] (`create`, `start`, `finish`), so it
//! inherits their guards: a finished row never goes back, and of two writers racing to finish a
//! job only one lands. Mirroring the same state twice changes nothing.
use super::{JobStore, Outcome};
use crate::Result;
use crate::model::{JobRecord, JobStatus, NewJob};
use uuid::Uuid;

/// The state to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMirror {
    pub id: Uuid,
    /// `PENDING` (not started, or waiting to retry), `STARTED`, `SUCCESS` or `FAILURE`.
    pub status: JobStatus,
    /// Attempts started so far (0 before the first).
    pub attempts: u32,
    /// How the job ended; required when `status` is finished.
    pub outcome: Option<Outcome>,
}

/// What [`mirror`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirrored {
    /// The row was written (created and/or moved forward); the new row.
    Written(JobRecord),
    /// The row already said as much, or was finished already (it never goes back).
    Unchanged(JobRecord),
    /// No row, and no [`NewJob`] to create it from.
    Missing,
}

/// Bring the row of `state.id` up to `state`: create it from `new` when missing (jobs written as
/// manifests have no row yet), count attempts, and finish it. Idempotent.
pub async fn mirror(store: &dyn JobStore, new: Option<&NewJob>, state: &JobMirror) -> Result<Mirrored> {
    let mut written = false;
    let mut row = match store.get(state.id).await? {
        Some(row) => row,
        None => {
            let Some(new) = new else {
                return Ok(Mirrored::Missing);
            };
            debug_assert_eq!(new.id, state.id);
            match store.create(new).await {
                Ok(row) => {
                    written = true;
                    row
                }
                // Created concurrently by someone else: use theirs.
                Err(err) => match store.get(state.id).await? {
                    Some(row) => row,
                    None => return Err(err),
                },
            }
        }
    };
    // Bounded: a finished row or a concurrent writer ends the loop early.
    for _ in 0..64 {
        if row.status.is_finished() {
            break;
        }
        let wanted_attempts = match state.status {
            JobStatus::Pending => 0,
            _ => state.attempts.max(1),
        };
        if state.status != JobStatus::Pending
            && (row.attempts < wanted_attempts || row.status == JobStatus::Pending)
        {
            match store.start(state.id).await? {
                Some(started) => {
                    row = started;
                    written = true;
                    continue;
                }
                None => break,
            }
        }
        match (&state.outcome, state.status.is_finished()) {
            (Some(outcome), true) => {
                if store.finish(state.id, row.attempts, outcome).await? {
                    written = true;
                }
                // Landed or not (another writer moved the row), read what is there now.
                match store.get(state.id).await? {
                    Some(now) => row = now,
                    None => return Ok(Mirrored::Missing),
                }
                if row.status.is_finished() {
                    break;
                }
            }
            _ => break,
        }
    }
    Ok(if written {
        Mirrored::Written(row)
    } else {
        Mirrored::Unchanged(row)
    })
}
