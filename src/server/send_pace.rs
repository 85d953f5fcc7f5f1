//! How slowly a client may take a response: nginx's `send_timeout` plus a minimum rate.
//!
//! The clock runs only while the gateway has bytes the socket will not take (a *blocked
//! spell*, from the first write that would block until everything buffered has been
//! written). Within a spell, every `timeout` the client must have taken at least
//! `min_rate × timeout` bytes, and at least one: otherwise the write fails with `TimedOut`
//! and the connection ends, so a client that stops reading — or reads a byte now and then —
//! cannot hold its connection slot, its upstream connection and the response buffers for
//! longer than `timeout`. A client whose socket keeps up is never timed: a long-lived
//! response that sends a little now and then (server-sent events) has no spell to lose.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The pace a client must keep while the gateway waits to write to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendPolicy {
    /// The longest stretch a blocked write may go with less than the minimum taken.
    pub timeout: Duration,
    /// Bytes per second the client must take, on average over each `timeout`; 0: any
    /// progress will do.
    pub min_rate: u64,
}

impl SendPolicy {
    /// What the client must take in one `timeout`.
    fn required(&self) -> u64 {
        let per_window = u128::from(self.min_rate) * self.timeout.as_millis() / 1000;
        u64::try_from(per_window).unwrap_or(u64::MAX).max(1)
    }
}

/// One connection's pace: see the module docs.
#[derive(Debug)]
pub struct SendPace {
    policy: SendPolicy,
    /// Bytes the socket has taken, ever.
    taken: u64,
    /// The current blocked spell's window; `None` while the socket keeps up.
    window: Option<Window>,
    /// Wakes the writer at the window's end; made at the first blocked write, kept after.
    timer: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug)]
struct Window {
    /// When the window ends.
    ends: Instant,
    /// `taken` when it began.
    taken_at_start: u64,
}

impl SendPace {
    pub fn new(policy: SendPolicy) -> Self {
        SendPace { policy, taken: 0, window: None, timer: None }
    }

    /// The socket took `n` bytes.
    pub fn took(&mut self, n: usize) {
        self.taken = self.taken.saturating_add(n as u64);
    }

    /// Everything buffered has been written: the spell is over.
    pub fn caught_up(&mut self) {
        self.window = None;
    }

    /// A write would block: starts or continues the spell. `Pending` (the waker is
    /// registered with the window's timer) while the client keeps the pace; `TimedOut`
    /// when a whole window passed with less than the minimum taken.
    pub fn poll_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let ends = match self.check(Instant::now()) {
                Err(too_slow) => return Poll::Ready(too_slow),
                Ok(ends) => ends,
            };
            let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(ends)));
            if timer.deadline() != ends {
                timer.as_mut().reset(ends);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// The pace at `now` while blocked: starts a window if none runs, judges every window
    /// that has ended (the next one starts at `now`), and gives when the current one ends.
    fn check(&mut self, now: Instant) -> Result<Instant, io::Error> {
        let (timeout, required, taken) = (self.policy.timeout, self.policy.required(), self.taken);
        let window = self.window.get_or_insert(Window { ends: now + timeout, taken_at_start: taken });
        if now >= window.ends {
            if taken - window.taken_at_start < required {
                let message = if taken == window.taken_at_start {
                    "the client took no data for the send timeout"
                } else {
                    "the client took data slower than the minimum send rate"
                };
                return Err(io::Error::new(io::ErrorKind::TimedOut, message));
            }
            // The pace was kept: the next window starts now.
            *window = Window { ends: now + timeout, taken_at_start: taken };
        }
        Ok(window.ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace(timeout_ms: u64, min_rate: u64) -> SendPace {
        SendPace::new(SendPolicy { timeout: Duration::from_millis(timeout_ms), min_rate })
    }

    /// The verdict at `ms` milliseconds after `start`: `None` while the pace is kept.
    fn blocked_at(pace: &mut SendPace, start: Instant, ms: u64) -> Option<String> {
        pace.check(start + Duration::from_millis(ms)).err().map(|e| e.to_string())
    }

    #[test]
    fn the_required_amount_is_the_rate_over_the_window_and_never_zero() {
        assert_eq!(pace(60_000, 0).policy.required(), 1);
        assert_eq!(pace(60_000, 1024).policy.required(), 60 * 1024);
        assert_eq!(pace(500, 1000).policy.required(), 500);
        assert_eq!(pace(u64::MAX, u64::MAX).policy.required(), u64::MAX);
    }

    #[test]
    fn a_client_that_takes_nothing_for_the_timeout_is_cut() {
        let (mut pace, t) = (pace(1000, 0), Instant::now());
        assert_eq!(blocked_at(&mut pace, t, 0), None);
        assert_eq!(blocked_at(&mut pace, t, 999), None);
        assert_eq!(blocked_at(&mut pace, t, 1000).as_deref(), Some("the client took no data for the send timeout"));
    }

    #[test]
    fn progress_each_window_keeps_a_client_with_no_minimum_rate() {
        let (mut pace, t) = (pace(1000, 0), Instant::now());
        for window in 0..10 {
            assert_eq!(blocked_at(&mut pace, t, window * 1000), None);
            pace.took(1);
        }
        assert_eq!(blocked_at(&mut pace, t, 10_000), None);
    }

    #[test]
    fn a_client_below_the_minimum_rate_is_cut_after_one_window() {
        let (mut pace, t) = (pace(1000, 10_000), Instant::now());
        assert_eq!(blocked_at(&mut pace, t, 0), None);
        pace.took(9_999);
        assert_eq!(
            blocked_at(&mut pace, t, 1000).as_deref(),
            Some("the client took data slower than the minimum send rate")
        );
    }

    #[test]
    fn a_client_at_the_minimum_rate_goes_on_window_after_window() {
        let (mut pace, t) = (pace(1000, 10_000), Instant::now());
        for window in 0..5 {
            assert_eq!(blocked_at(&mut pace, t, window * 1000), None);
            pace.took(10_000);
        }
        assert_eq!(blocked_at(&mut pace, t, 5000), None);
        assert!(blocked_at(&mut pace, t, 6000).is_some(), "nothing taken in the last window");
    }

    #[test]
    fn catching_up_ends_the_spell() {
        let (mut pace, t) = (pace(1000, 0), Instant::now());
        assert_eq!(blocked_at(&mut pace, t, 0), None);
        pace.took(10);
        pace.caught_up();
        // Long after, a new spell has a whole window again.
        assert_eq!(blocked_at(&mut pace, t, 60_000), None);
        assert_eq!(blocked_at(&mut pace, t, 60_999), None);
        assert!(blocked_at(&mut pace, t, 61_000).is_some());
    }

    #[tokio::test]
    async fn a_blocked_writer_is_woken_and_cut_at_the_end_of_the_window() {
        let mut pace = pace(50, 0);
        let cut = std::future::poll_fn(|cx| pace.poll_blocked(cx)).await;
        assert_eq!(cut.kind(), io::ErrorKind::TimedOut);
    }
}
