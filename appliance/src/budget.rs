//! The relay's global budget for buffered bytes.
//!
//! Two things hold memory the network decides: messages a client has started but not
//! finished sending (reassembly), and messages waiting in recipients' queues. Each is bounded
//! per connection, but a thousand connections times an 8 MiB message is more than a Pi has.
//! So both draw from one [`Budget`] (`limits.buffered_bytes`). When it is spent the relay
//! does not grow and does not drop anybody: it stops reading from the senders that would
//! add to it (TCP slows them down) until recipients have written enough to make room
//! ([`Budget::poll_room`]). Messages being received may use only [`Share::Receive`] of it,
//! so half-sent messages alone can never starve the delivery of whole ones. A broadcast is
//! charged once, however many recipients share it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Bytes the relay may hold for the network at once.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Tasks waiting for room ([`Budget::poll_room`]) per [`Share`], woken by a release
    /// that makes room for that share; `waiting` is their number in all, so a release with
    /// nobody waiting takes no lock.
    wakers: Mutex<[Vec<Waker>; 2]>,
    waiting: AtomicUsize,
}

/// How much of the budget a use may fill before it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Messages being received: three quarters.
    Receive = 0,
    /// Delivering a whole message into queues: all of it.
    Deliver = 1,
}

impl Budget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            wakers: Mutex::new([Vec::new(), Vec::new()]),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` from the budget unless that would exceed it.
    pub fn try_reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Takes `bytes` even beyond the limit. Callers take it only after [`Budget::poll_room`]
    /// said there is room (or for a bounded amount, such as the leave packets of a client
    /// that is gone), so the limit is exceeded by at most what one step adds.
    pub fn force_reserve(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::SeqCst);
    }

    /// Gives `bytes` back, and wakes those waiting for room once there is some.
    pub fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        // Saturating: a bug elsewhere must not wrap the counter and disable the budget.
        let _ = self.used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
            Some(used.saturating_sub(bytes))
        });
        if self.waiting.load(Ordering::SeqCst) == 0 || !self.has_room(Share::Deliver) {
            return;
        }
        let woken = {
            let mut lists = self.lock_wakers();
            let mut woken = std::mem::take(&mut lists[Share::Deliver as usize]);
            if self.has_room(Share::Receive) {
                woken.append(&mut lists[Share::Receive as usize]);
            }
            self.waiting.store(lists.iter().map(Vec::len).sum(), Ordering::SeqCst);
            woken
        };
        woken.into_iter().for_each(Waker::wake);
    }

    /// Whether a use of `share` may add to the budget now.
    pub fn has_room(&self, share: Share) -> bool {
        self.used() < self.threshold(share)
    }

    /// Ready when a use of `share` may add to the budget; otherwise the task is woken when
    /// a release may have made room.
    pub fn poll_room(&self, cx: &mut Context<'_>, share: Share) -> Poll<()> {
        if self.has_room(share) {
            return Poll::Ready(());
        }
        {
            let mut lists = self.lock_wakers();
            let list = &mut lists[share as usize];
            if !list.iter().any(|w| w.will_wake(cx.waker())) {
                list.push(cx.waker().clone());
            }
            self.waiting.store(lists.iter().map(Vec::len).sum(), Ordering::SeqCst);
        }
        // A release between the check above and the registration would have found nobody
        // waiting: look again (a spurious wake later is harmless).
        if self.has_room(share) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Bytes currently taken.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What `share` may fill.
    pub fn threshold(&self, share: Share) -> usize {
        match share {
            Share::Receive => self.limit - self.limit / 4,
            Share::Deliver => self.limit,
        }
    }

    fn lock_wakers(&self) -> std::sync::MutexGuard<'_, [Vec<Waker>; 2]> {
        // A list of wakers stays usable whatever panicked while it was held.
        self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// Takes over `bytes` that were reserved already.
    pub fn adopt(budget: &Arc<Budget>, bytes: usize) -> Self {
        Charge {
            budget: budget.clone(),
            bytes,
        }
    }

    /// Makes this charge cover exactly `bytes`: takes the difference (even beyond the limit,
    /// see [`Budget::force_reserve`]) or gives the excess back.
    pub fn resize(&mut self, bytes: usize) {
        match bytes.cmp(&self.bytes) {
            std::cmp::Ordering::Greater => self.budget.force_reserve(bytes - self.bytes),
            std::cmp::Ordering::Less => self.budget.release(self.bytes - bytes),
            std::cmp::Ordering::Equal => {}
        }
        self.bytes = bytes;
    }

    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        let mut adopted = Charge::adopt(&b, 0);
        adopted.resize(7);
        assert_eq!(b.used(), 7);
        adopted.resize(2);
        assert_eq!((b.used(), adopted.bytes()), (2, 2));
        drop(adopted);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn room_by_share_and_waiters_woken_by_a_release() {
        use std::sync::atomic::AtomicBool;
        use std::task::Wake;
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let b = Budget::new(100);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let c = Charge::try_new(&b, 80).expect("fits");
        assert_eq!(b.poll_room(&mut cx, Share::Deliver), Poll::Ready(()));
        assert_eq!(
            b.poll_room(&mut cx, Share::Receive),
            Poll::Pending,
            "75 of 100 for receiving"
        );
        assert!(!flag.0.load(Ordering::SeqCst));
        drop(c);
        assert!(flag.0.load(Ordering::SeqCst), "the release woke the waiter");
        assert_eq!(b.poll_room(&mut cx, Share::Receive), Poll::Ready(()));
        assert_eq!(b.waiting.load(Ordering::SeqCst), 0);
    }
}
