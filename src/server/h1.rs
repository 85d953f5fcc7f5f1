//! HTTP/1.1 on one connection, with parking ([`ConnectionTask::serve_h1`]): while no
//! request is in flight only the TLS stream is held; the next request's first bytes start
//! a new hyper connection on it (`rewind.rs`), served until it has been idle for
//! [`PARK_AFTER`] (or at once, with many connections open), then parked again.
//!
//! Not here: the deadline logic (`activity.rs`); hyper's own request-head timer.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::activity::{Activity, Verdict};
use super::connection::ConnectionTask;
use super::gauge::ConnectionGauge;
use super::rewind::Rewind;
use super::tls_stream::ServerTlsStream;
use super::{PARK_AFTER, PARK_AT_ONCE_DIVISOR};

impl ConnectionTask {
    /// HTTP/1.1: parked (only the TLS stream held) until request bytes arrive, then served
    /// by a hyper connection until it has been idle for [`PARK_AFTER`], then parked again.
    pub(super) async fn serve_h1<S>(
        &mut self,
        tls: Box<ServerTlsStream>,
        service: S,
        activity: &Activity,
        peer: SocketAddr,
        gauge: &mut ConnectionGauge,
        token_memo: &crate::auth::token::TokenMemo,
    ) where
        S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::body::ProxyBody> + Clone + Unpin,
        S::Future: Unpin,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let park_after = PARK_AFTER.min(self.shared.settings.idle_timeout);
        let mut stream = tls;
        let mut pending = Bytes::new();
        loop {
            if pending.is_empty() {
                gauge.set(Some(false));
                match self.await_request(&mut stream, activity).await {
                    Some(first_bytes) => pending = first_bytes,
                    None => {
                        close(stream).await;
                        return;
                    }
                }
            }
            gauge.set(Some(true));
            // Boxed: the serving state (hyper's connection, its timers) is allocated only
            // while the connection is active, and the task itself stays small.
            match Box::pin(self.serve_until_parked(stream, pending, service.clone(), activity, peer, park_after)).await
            {
                Some((parked, unread)) => {
                    stream = parked;
                    pending = unread;
                    token_memo.clear();
                }
                None => return,
            }
        }
    }

    /// Serves requests on `stream` (after the already-read `pending` bytes) with a new hyper
    /// connection until it parks — then returns the stream and any bytes read but not
    /// used — or closes.
    async fn serve_until_parked<S>(
        &mut self,
        stream: Box<ServerTlsStream>,
        pending: Bytes,
        service: S,
        activity: &Activity,
        peer: SocketAddr,
        park_after: Duration,
    ) -> Option<(Box<ServerTlsStream>, Bytes)>
    where
        S: hyper::service::HttpService<hyper::body::Incoming, ResBody = crate::body::ProxyBody> + Unpin,
        S::Future: Unpin,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The idle clock restarts with the new bytes, and only requests served by this
        // hyper connection can make it park (a stale timer or `answered` signal must not
        // park a connection that has not served its first request yet).
        activity.touch();
        let served_before = activity.requests.load(Ordering::Relaxed);
        let io = TokioIo::new(Rewind::new(stream, pending));
        let mut connection = self.shared.builders.h1.serve_connection(io, service);
        let (mut parking, mut closing) = (false, false);
        let result = loop {
            let deadline = activity.deadline(&self.shared.settings, Some(park_after));
            let open = self.shared.settings.max_connections.saturating_sub(self.shared.slots.available_permits());
            let at_once = open > self.shared.settings.max_connections / PARK_AT_ONCE_DIVISOR;
            let may_park = || {
                activity.requests.load(Ordering::Relaxed) > served_before
                    && activity.in_flight.load(Ordering::Relaxed) == 0
            };
            tokio::select! {
                biased;
                result = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)) => break result,
                _ = activity.answered.notified(), if at_once && !closing && !parking => {
                    // The response head is written by now (hyper writes it in the same
                    // poll that finishes the request), so this only stops keep-alive
                    // after the body: hyper hands the stream back, the client notices
                    // nothing.
                    if may_park() {
                        std::pin::Pin::new(&mut connection).graceful_shutdown();
                        parking = true;
                    }
                }
                _ = self.shutdown.changed(), if !closing => {
                    std::pin::Pin::new(&mut connection).graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep_until(deadline), if !closing && !parking => {
                    match activity.verdict(&self.shared.settings, Some(park_after)) {
                        Verdict::Active | Verdict::Silent => {}
                        Verdict::Park if may_park() => {
                            // Idle: hyper closes its side at once and hands the stream
                            // back. (A client that has begun its next request head by
                            // now gets it answered with `Connection: close`.)
                            std::pin::Pin::new(&mut connection).graceful_shutdown();
                            parking = true;
                        }
                        // Bytes came but no request has started: a slow head, which
                        // hyper's header timer bounds. Count it as activity.
                        Verdict::Park => activity.touch(),
                        Verdict::Idle => {
                            std::pin::Pin::new(&mut connection).graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        };
        let parts = connection.into_parts();
        let (mut tls, unread) = parts.io.into_inner().into_parts();
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
            // hyper may have answered the error (400, 431): the answer goes out before FIN.
            close(tls).await;
            return None;
        }
        // hyper also ends a connection on its own — `Connection: close`, HTTP/1.0, a
        // request body left unread — and then the stream must close, never park: parking
        // would read the rest of an unread body as the next request.
        if closing || !parking || !activity.last_request_allows_reuse.load(Ordering::Relaxed) {
            // Keep-alive over (the client closed, asked to, or we are shutting down).
            close(tls).await;
            return None;
        }
        // hyper is done without waiting for its last flush (`poll_without_shutdown`), and
        // a flush waits for the end of the runtime's round (`write_batch`): the last
        // response goes out before the connection parks, under the client's send pace.
        if tls.flush().await.is_err() {
            return None;
        }
        // Bytes hyper read but did not use (a pipelined request), then any it never saw —
        // copied out: `read_buf` is a view of hyper's whole read buffer, which would
        // otherwise stay allocated while the connection is parked.
        let pending = if parts.read_buf.is_empty() && unread.is_empty() {
            Bytes::new()
        } else {
            let mut joined = BytesMut::with_capacity(parts.read_buf.len() + unread.len());
            joined.extend_from_slice(&parts.read_buf);
            joined.extend_from_slice(&unread);
            joined.freeze()
        };
        Some((tls, pending))
    }

    /// Waits, holding nothing but the TLS stream, for the next request's first bytes:
    /// `None` when the client closes, when it stays silent past the first-request or idle
    /// deadline, or when the gateway shuts down.
    async fn await_request(&mut self, stream: &mut Box<ServerTlsStream>, activity: &Activity) -> Option<Bytes> {
        // Nothing is in flight: the handshake's or the last exchange's buffers can go.
        stream.release_buffers();
        let deadline = activity.deadline(&self.shared.settings, None);
        // A keep-alive connection (one that has served a request) may be reclaimed at the
        // connection limit; one that never sent a request waits for its deadline.
        let parked = (activity.requests.load(Ordering::Relaxed) > 0).then(|| self.shared.idle.park(&self.reclaim));
        let reclaimed = async {
            match &parked {
                Some(parked) => parked.reclaimed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            bytes = next_bytes(stream) => bytes,
            _ = self.shutdown.changed() => None,
            _ = tokio::time::sleep_until(deadline) => None,
            () = reclaimed => {
                tracing::debug!("idle keep-alive connection reclaimed at the connection limit");
                None
            }
        }
    }
}

/// Whether a new HTTP/1.1 connection may continue on this stream after `request`: see
/// `Activity::last_request_allows_reuse`.
pub fn allows_reuse<B>(request: &http::Request<B>) -> bool {
    let headers = request.headers();
    let closes = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| v.to_str().map_or(true, |v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))));
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers.get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    request.version() == http::Version::HTTP_11 && !closes && !has_body
}

/// The next decrypted bytes of `stream`. While rustls holds no plaintext, waits for the
/// socket without allocating a buffer.
async fn next_bytes(stream: &mut ServerTlsStream) -> Option<Bytes> {
    if !stream.has_buffered_input() {
        stream.tcp().readable().await.ok()?;
    }
    let mut buf = BytesMut::with_capacity(4096);
    match stream.read_buf(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(buf.freeze()),
    }
}

/// Ends a connection the way hyper would have: TLS `close_notify`, then FIN (bounded, the
/// client may be gone).
async fn close(mut stream: Box<ServerTlsStream>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_keep_alive_requests_allow_reuse_after_parking() {
        let request = |version, headers: &[(&str, &str)]| {
            let mut builder = http::Request::get("/").version(version);
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            builder.body(()).unwrap_or_default()
        };
        assert!(allows_reuse(&request(http::Version::HTTP_11, &[])));
        assert!(allows_reuse(&request(http::Version::HTTP_11, &[("content-length", "0")])));
        assert!(!allows_reuse(&request(http::Version::HTTP_10, &[])));
        assert!(!allows_reuse(&request(http::Version::HTTP_11, &[("connection", "keep-alive, Close")])));
        assert!(!allows_reuse(&request(http::Version::HTTP_11, &[("content-length", "12")])));
        assert!(!allows_reuse(&request(http::Version::HTTP_11, &[("transfer-encoding", "chunked")])));
    }
}
