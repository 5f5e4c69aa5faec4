//! Originals handed from the upload that stored them to the in-process worker that renders them.
//!
//! In the embedded runner the process that accepted an upload also renders it, a few
//! milliseconds later. Reading the original back from the object store then only repeats what
//! was just written: for a 630 KB photo on S3 that is a GET costing more CPU (in this process and
//! in the S3 server) than a small thumbnail's render. The upload therefore leaves its bytes here,
//! and the worker takes them. The object store stays the source of truth: the original is stored
//! before the job is accepted, and a job whose bytes are not here (a restart, a retry, an entry
//! dropped for room) reads it from the store as before.
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use uuid::Uuid;

/// Bytes kept for jobs not yet started, at most `budget` in all; the oldest go first.
#[derive(Debug)]
pub struct OriginalHandoff {
    budget: u64,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    bytes: HashMap<Uuid, Bytes>,
    /// Insertion order, for dropping the oldest; ids already taken are skipped lazily.
    order: VecDeque<Uuid>,
    total: u64,
}

impl OriginalHandoff {
    pub fn new(budget: u64) -> Self {
        OriginalHandoff {
            budget,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// Leave job `id`'s original. Larger than the whole budget: not kept. Otherwise the oldest
    /// entries are dropped until it fits (their jobs read from the object store).
    pub fn put(&self, id: Uuid, original: Bytes) {
        let size = original.len() as u64;
        if size > self.budget {
            return;
        }
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while e.total + size > self.budget {
            let Some(old) = e.order.pop_front() else { break };
            if let Some(b) = e.bytes.remove(&old) {
                e.total -= b.len() as u64;
            }
        }
        if let Some(previous) = e.bytes.insert(id, original) {
            e.total -= previous.len() as u64;
        } else {
            e.order.push_back(id);
        }
        e.total += size;
    }

    /// Take job `id`'s original, if it is still here.
    pub fn take(&self, id: Uuid) -> Option<Bytes> {
        let mut e = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let b = e.bytes.remove(&id)?;
        e.total -= b.len() as u64;
        // Keep the order queue from growing with ids that were taken.
        if e.order.len() > 2 * e.bytes.len() + 16 {
            let Entries { bytes, order, .. } = &mut *e;
            order.retain(|id| bytes.contains_key(id));
        }
        Some(b)
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    #[test]
    fn a_put_original_is_taken_once() {
        let h = OriginalHandoff::new(100);
        let id = Uuid::new_v4();
        h.put(id, bytes(10));
        assert_eq!(h.held(), 10);
        assert_eq!(h.take(id).map(|b| b.len()), Some(10));
        assert_eq!(h.take(id), None);
        assert_eq!(h.held(), 0);
    }

    #[test]
    fn the_budget_holds_by_dropping_the_oldest() {
        let h = OriginalHandoff::new(100);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            h.put(*id, bytes(40));
        }
        assert!(h.held() <= 100, "{}", h.held());
        assert_eq!(h.take(ids[0]), None, "oldest dropped");
        assert_eq!(h.take(ids[1]), None, "second oldest dropped");
        assert!(h.take(ids[2]).is_some());
        assert!(h.take(ids[3]).is_some());
        // Larger than the budget: never kept.
        let big = Uuid::new_v4();
        h.put(big, bytes(101));
        assert_eq!(h.take(big), None);
        assert_eq!(h.held(), 0);
    }

    #[test]
    fn taken_ids_do_not_pile_up_in_the_order_queue() {
        let h = OriginalHandoff::new(1000);
        for _ in 0..10_000 {
            let id = Uuid::new_v4();
            h.put(id, bytes(1));
            h.take(id);
        }
        let e = h.inner.lock().unwrap();
        assert!(e.order.len() <= 16 + 1, "{}", e.order.len());
    }
}
