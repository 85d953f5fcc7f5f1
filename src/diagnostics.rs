//! Error text for logs: an error with all its causes, so "connection refused" is not hidden
//! behind "client error (Connect)"; and a throttle for warnings a failure repeats on every
//! request, so an outage is logged, not a log flood.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `error` followed by each of its sources, joined with `": "`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// At most one log line per period for a condition that recurs on every request (metrics
/// still count each occurrence); each line says how many were held back before it.
#[derive(Debug)]
pub struct LogThrottle {
    started: Instant,
    period_ms: u64,
    /// Milliseconds after `started` from which the next line may be written.
    next_ms: AtomicU64,
    held_back: AtomicU64,
}

impl LogThrottle {
    pub fn new(period: Duration) -> Self {
        LogThrottle {
            started: Instant::now(),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` when a line may be written now.
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(self.period_ms), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::Relaxed));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_throttle_lets_one_line_through_per_period_and_counts_the_rest() {
        let throttle = super::LogThrottle::new(std::time::Duration::from_millis(50));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        std::thread::sleep(std::time::Duration::from_millis(60));
        assert_eq!(throttle.allow(), Some(2), "the next line tells how many were held back");
        assert_eq!(throttle.allow(), None);
    }

    #[test]
    fn causes_are_joined() {
        let e = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
        assert_eq!(super::error_chain(&e), "outer: connection refused");
    }
}
