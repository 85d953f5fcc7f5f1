//! Reclaiming idle keep-alive connections at the connection limit (like nginx's reusable
//! connections): every parked HTTP/1.1 connection that has served a request waits in an
//! [`IdleQueue`], oldest first; when all `max_connections` slots are taken, the accept loop
//! asks the longest-idle one to close so that a new client gets in instead of waiting for
//! an idle client's `idle_timeout`.
//!
//! Not reclaimed: connections with a request in flight, HTTP/2 connections, and connections
//! that never sent a request (those are bounded by `header_read_timeout`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The parked keep-alive connections, in the order they parked.
#[derive(Default)]
pub(super) struct IdleQueue {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_ticket: u64,
    parked: BTreeMap<u64, Arc<Reclaim>>,
}

/// One connection's end of the queue: told to close through `notify`, for the park
/// period whose ticket is in `reclaimed` (an older wake-up is ignored).
#[derive(Default)]
pub(super) struct Reclaim {
    notify: Notify,
    reclaimed: AtomicU64,
}

/// A connection's place in the queue while it is parked; leaving the queue on drop.
pub(super) struct Parked<'a> {
    queue: &'a IdleQueue,
    reclaim: &'a Reclaim,
    ticket: u64,
}

impl IdleQueue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts a parked connection at the end of the queue.
    pub(super) fn park<'a>(&'a self, reclaim: &'a Arc<Reclaim>) -> Parked<'a> {
        let mut inner = self.lock();
        // Tickets start at 1: 0 in `reclaimed` means "never reclaimed".
        inner.next_ticket += 1;
        let ticket = inner.next_ticket;
        inner.parked.insert(ticket, reclaim.clone());
        Parked { queue: self, reclaim, ticket }
    }

    /// Tells the longest-parked connection to close; false when none is parked.
    pub(super) fn reclaim_oldest(&self) -> bool {
        let Some((ticket, reclaim)) = self.lock().parked.pop_first() else {
            return false;
        };
        reclaim.reclaimed.store(ticket, Ordering::Release);
        reclaim.notify.notify_one();
        true
    }

    /// How many connections are parked and reclaimable.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().parked.len()
    }
}

impl Parked<'_> {
    /// Completes when the accept loop reclaims this connection.
    pub(super) async fn reclaimed(&self) {
        loop {
            self.reclaim.notify.notified().await;
            if self.reclaim.reclaimed.load(Ordering::Acquire) == self.ticket {
                return;
            }
        }
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.queue.lock().parked.remove(&self.ticket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_longest_parked_connection_is_reclaimed_and_stale_wake_ups_ignored() {
        let queue = IdleQueue::default();
        let (a, b) = (Arc::new(Reclaim::default()), Arc::new(Reclaim::default()));
        let first = queue.park(&a);
        let second = queue.park(&b);
        assert_eq!(queue.len(), 2);
        assert!(queue.reclaim_oldest());
        let told = tokio::time::timeout(std::time::Duration::from_secs(1), first.reclaimed()).await;
        assert!(told.is_ok(), "the oldest connection was told to close");
        // The second one was not.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), second.reclaimed()).await.is_err());
        drop(first);
        drop(second);
        assert_eq!(queue.len(), 0);
        assert!(!queue.reclaim_oldest());
        // `a` parks again: the wake-up of its earlier park period does not close it.
        let again = queue.park(&a);
        a.notify.notify_one();
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), again.reclaimed()).await.is_err());
    }
}
