//! The relay's global budget for buffered bytes.
//!
//! Two things hold memory the network decides: messages a client has started but not
//! finished sending (reassembly), and messages waiting in recipients' queues. Each is bounded
//! per connection, but a thousand connections times an 8 MiB message is more than a Pi has.
//! So both draw from one [`Budget`] (`limits.buffered_bytes`): when it is spent, the relay
//! refuses the next large message (its sender is closed with "try again later") instead of
//! growing. A broadcast is charged once, however many recipients share it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes the relay may hold for the network at once.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` from the budget unless that would exceed it.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Takes `bytes` even beyond the limit: for small packets the relay must not drop
    /// (joins, leaves), whose number the queues' message bound limits anyway.
    pub fn force_reserve(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives `bytes` back.
    pub fn release(&self, bytes: usize) {
        // Saturating: a bug elsewhere must not wrap the counter and disable the budget.
        let _ = self.used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            Some(used.saturating_sub(bytes))
        });
    }

    /// Bytes currently taken.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Bytes taken from a [`Budget`], given back when dropped: a queued broadcast holds one in an
/// `Arc`, so the last recipient to write it releases it.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Charge {
    /// Charges `bytes`, or `None` when the budget cannot cover them.
    pub fn try_new(budget: &Arc<Budget>, bytes: usize) -> Option<Self> {
        budget.try_reserve(bytes).then(|| Charge {
            budget: budget.clone(),
            bytes,
        })
    }

    /// Charges `bytes` even beyond the limit (see [`Budget::force_reserve`]).
    pub fn force(budget: &Arc<Budget>, bytes: usize) -> Self {
        budget.force_reserve(bytes);
        Charge {
            budget: budget.clone(),
            bytes,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_release_and_the_limit() {
        let b = Budget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41), "over the limit");
        assert!(b.try_reserve(40));
        b.release(50);
        assert_eq!(b.used(), 50);
        b.release(500);
        assert_eq!(b.used(), 0, "never below zero");
    }

    #[test]
    fn charges_give_back_on_drop_and_force_may_exceed() {
        let b = Budget::new(10);
        let c = Charge::try_new(&b, 8).expect("fits");
        assert!(Charge::try_new(&b, 3).is_none());
        let forced = Charge::force(&b, 5);
        assert_eq!(b.used(), 13);
        drop((c, forced));
        assert_eq!(b.used(), 0);
    }
}
