//! Caps checked when a job is admitted, from counts the job store keeps (so that several API
//! replicas agree): unfinished jobs of everyone, and per owner unfinished jobs and bytes stored
//! (originals and thumbnails, kept exact by the `owner_usage` triggers of migration 0002).

/// The caps; 0 means no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// Unfinished (PENDING or STARTED) jobs of all owners together (`MAX_QUEUED_JOBS`).
    pub max_queued_jobs: u64,
    /// Unfinished jobs of the job's owner. Not applied to jobs without an owner.
    pub max_unfinished_per_owner: u64,
    /// Bytes stored for the job's owner, counting the new original. Not applied to jobs without
    /// an owner.
    pub max_stored_bytes_per_owner: u64,
}

/// What an owner uses now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnerUsage {
    pub unfinished_jobs: u64,
    pub stored_bytes: u64,
}

/// Why a job was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the service's queue is full ({queued} unfinished jobs, at most {max}); try again later")]
    QueueFull { queued: u64, max: u64 },
    #[error("too many unfinished jobs for this owner ({unfinished}, at most {max}); wait for some to finish")]
    TooManyUnfinished { unfinished: u64, max: u64 },
    #[error(
        "storage quota exceeded: this owner stores {stored} bytes, this upload adds {incoming}, \
         at most {max} are allowed"
    )]
    StorageFull { stored: u64, incoming: u64, max: u64 },
}

impl Caps {
    pub fn has_owner_caps(&self) -> bool {
        self.max_unfinished_per_owner > 0 || self.max_stored_bytes_per_owner > 0
    }

    /// Whether a job of `incoming` bytes may be admitted, given the unfinished jobs of everyone
    /// (`None`: not counted because not capped) and its owner's usage (`None`: no owner, or no
    /// owner caps). Pure.
    pub fn check(
        &self,
        queued: Option<u64>,
        owner: Option<OwnerUsage>,
        incoming: u64,
    ) -> Result<(), Refusal> {
        if let Some(queued) = queued
            && self.max_queued_jobs > 0
            && queued >= self.max_queued_jobs
        {
            return Err(Refusal::QueueFull {
                queued,
                max: self.max_queued_jobs,
            });
        }
        if let Some(usage) = owner {
            if self.max_unfinished_per_owner > 0 && usage.unfinished_jobs >= self.max_unfinished_per_owner {
                return Err(Refusal::TooManyUnfinished {
                    unfinished: usage.unfinished_jobs,
                    max: self.max_unfinished_per_owner,
                });
            }
            if self.max_stored_bytes_per_owner > 0
                && usage.stored_bytes.saturating_add(incoming) > self.max_stored_bytes_per_owner
            {
                return Err(Refusal::StorageFull {
                    stored: usage.stored_bytes,
                    incoming,
                    max: self.max_stored_bytes_per_owner,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cap_refuses_at_its_limit_and_zero_means_none() {
        let caps = Caps {
            max_queued_jobs: 10,
            max_unfinished_per_owner: 3,
            max_stored_bytes_per_owner: 1000,
        };
        let usage = |unfinished_jobs, stored_bytes| {
            Some(OwnerUsage {
                unfinished_jobs,
                stored_bytes,
            })
        };
        assert_eq!(caps.check(Some(9), usage(2, 900), 100), Ok(()));
        assert_eq!(
            caps.check(Some(10), usage(0, 0), 1),
            Err(Refusal::QueueFull { queued: 10, max: 10 })
        );
        assert_eq!(
            caps.check(Some(0), usage(3, 0), 1),
            Err(Refusal::TooManyUnfinished {
                unfinished: 3,
                max: 3
            })
        );
        assert_eq!(
            caps.check(Some(0), usage(0, 900), 101),
            Err(Refusal::StorageFull {
                stored: 900,
                incoming: 101,
                max: 1000
            })
        );
        // Jobs without an owner only meet the global cap.
        assert_eq!(caps.check(Some(1), None, u64::MAX), Ok(()));
        assert_eq!(
            Caps::default().check(Some(u64::MAX), usage(u64::MAX, u64::MAX), 1),
            Ok(())
        );
        assert!(!Caps::default().has_owner_caps());
    }
}
