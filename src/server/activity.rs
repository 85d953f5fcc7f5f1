//! The deadlines hyper does not enforce itself: request activity on one connection
//! ([`Activity`]), when the next look is due ([`Activity::deadline`]) and what to do then
//! ([`Verdict`]: carry on, close a silent or idle connection, park an HTTP/1.1 one).
//!
//! Not here: acting on a verdict (`h1.rs`, `h2.rs`); hyper's own timers (the HTTP/1.1
//! request head, HTTP/2 keep-alive pings), set up in `accept.rs`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::ServerSettings;
use super::h1::allows_reuse;

/// Request activity on one connection, for the deadlines hyper does not enforce itself
/// (HTTP/2 preface and idle connections).
pub(super) struct Activity {
    started: Instant,
    pub(super) in_flight: AtomicUsize,
    pub(super) requests: AtomicU64,
    /// Milliseconds after `started` of the last request start or end.
    last_change_ms: AtomicU64,
    /// Signalled when the last request in flight has been answered.
    pub(super) answered: tokio::sync::Notify,
    /// Whether the latest request leaves the connection reusable by a new HTTP/1.1
    /// connection: HTTP/1.1, no `Connection: close`, no request body (whose unread rest
    /// would otherwise be parsed as a request).
    pub(super) last_request_allows_reuse: std::sync::atomic::AtomicBool,
}

pub(super) enum Verdict {
    Active,
    /// Connected, but never sent a request: a slowloris or a dead client.
    Silent,
    /// No request in flight for the park delay: drop the HTTP state, keep the stream.
    Park,
    /// No request in flight for `idle_timeout`.
    Idle,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_change_ms: AtomicU64::new(0),
            answered: tokio::sync::Notify::new(),
            last_request_allows_reuse: std::sync::atomic::AtomicBool::new(true),
        }
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(ms, Ordering::Relaxed);
    }

    pub(super) fn begin_request<B>(&self, request: &http::Request<B>) {
        self.last_request_allows_reuse.store(allows_reuse(request), Ordering::Relaxed);
        self.begin();
    }

    fn begin(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    pub(super) fn end(&self) {
        let before = self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
        if before == 1 {
            self.answered.notify_one();
        }
    }

    /// When the next verdict is due: always a moment at which [`Activity::verdict`] acts,
    /// or one in the future (a deadline in the past that the verdict ignores would spin the
    /// connection's select loop). `park_after` is given while an HTTP/1.1 connection is
    /// being served (it may be parked); otherwise the idle deadline applies.
    pub(super) fn deadline(&self, settings: &ServerSettings, park_after: Option<Duration>) -> tokio::time::Instant {
        let now = Instant::now();
        let quiet = park_after.map_or(settings.idle_timeout, |p| p.min(settings.idle_timeout));
        let at = if self.requests.load(Ordering::Relaxed) == 0 {
            match park_after {
                // Request bytes arrived (that is when an HTTP/1.1 connection is served);
                // hyper's own header timer guards the head. Look again later.
                Some(park_after) => now + park_after,
                // Nothing wakes this timer when the first request starts, so it looks once
                // at `idle_timeout` (to move on to the idle deadline of a connection whose
                // first request came and went), then at `header_read_timeout`, when the
                // first-request verdict is due.
                None => {
                    let first_look = self.started + settings.idle_timeout.min(settings.header_read_timeout);
                    if first_look > now { first_look } else { self.started + settings.header_read_timeout }
                }
            }
        } else if self.in_flight.load(Ordering::Relaxed) > 0 {
            // Busy: nothing to decide until the request ends; look again later.
            now + quiet
        } else {
            self.started + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed)) + quiet
        };
        // A floor against any arithmetic edge (millisecond truncation, clock steps).
        tokio::time::Instant::from_std(at.max(now + Duration::from_millis(5)))
    }

    pub(super) fn verdict(&self, settings: &ServerSettings, park_after: Option<Duration>) -> Verdict {
        if self.requests.load(Ordering::Relaxed) == 0 {
            return if park_after.is_none() && self.started.elapsed() >= settings.header_read_timeout {
                Verdict::Silent
            } else {
                Verdict::Active
            };
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Verdict::Active;
        }
        let idle = (self.started + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed))).elapsed();
        if idle >= settings.idle_timeout {
            Verdict::Idle
        } else if park_after.is_some_and(|p| idle >= p) {
            Verdict::Park
        } else {
            Verdict::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ServerSettings {
        ServerSettings {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16384,
            shutdown_grace: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(2),
            max_connections: 100,
            max_connections_per_client: None,
            send: crate::server::SendPolicy { timeout: Duration::from_secs(60), min_rate: 0 },
            max_concurrent_streams: 100,
            socket_send_buffer: None,
        }
    }

    /// An activity record as if the connection had opened `ago` and its last request had
    /// started right then.
    fn activity_since(ago: Duration, in_flight: usize, requests: u64) -> Activity {
        let activity = Activity::new();
        let activity = Activity { started: Instant::now() - ago, ..activity };
        activity.in_flight.store(in_flight, Ordering::Relaxed);
        activity.requests.store(requests, Ordering::Relaxed);
        activity
    }

    #[test]
    fn deadlines_are_never_in_the_past_while_the_verdict_waits() {
        let now = tokio::time::Instant::now();
        let s = settings();
        // A request in flight for longer than the park delay and the idle timeout.
        let busy = activity_since(Duration::from_secs(5), 1, 1);
        for park_after in [Some(Duration::from_secs(1)), None] {
            assert!(matches!(busy.verdict(&s, park_after), Verdict::Active));
            assert!(busy.deadline(&s, park_after) > now, "{park_after:?}");
        }
        // No request yet, idle_timeout shorter than header_read_timeout: the first verdict
        // is due at header_read_timeout, not before.
        let fresh = activity_since(Duration::from_secs(3), 0, 0);
        assert!(matches!(fresh.verdict(&s, None), Verdict::Active));
        assert!(fresh.deadline(&s, None) > now + Duration::from_secs(6));
        // Idle past the park delay: the deadline is due and the verdict acts on it.
        let idle = activity_since(Duration::from_millis(1500), 0, 1);
        assert!(matches!(idle.verdict(&s, Some(Duration::from_secs(1))), Verdict::Park));
        assert!(matches!(idle.verdict(&s, None), Verdict::Active));
    }
}
