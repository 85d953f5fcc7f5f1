//! The accept loop: TCP, then TLS ([`tls_stream`], with a handshake deadline), then HTTP/1.1 or HTTP/2 as
//! ALPN decided, each connection in its own task. Facts about the connection — peer
//! address, SNI, the client certificate and its SHA-256 thumbprint — are computed once,
//! right after the handshake, and shared by every request on it.
//!
//! Deadlines: TLS handshake (`handshake_timeout`); the first request (`header_read_timeout`,
//! for HTTP/2 too, where hyper has no such timer); idle connections (`idle_timeout`, closed
//! gracefully); HTTP/1.1 request heads (hyper's `header_read_timeout`). At most
//! `max_connections` connections are served at once.
//!
//! Idle HTTP/1.1 keep-alive connections are *parked*: once a connection has had no request
//! in flight for [`PARK_AFTER`], its HTTP state (hyper's read and write buffers, about 20 KiB)
//! is dropped and only the TLS stream is kept, its buffers released; the next request's
//! first bytes start a new HTTP/1.1 connection on the same stream (see [`rewind`]). This is what nginx does with its
//! keep-alive connections, and what keeps 10 000 idle clients affordable (BENCHMARKS.md).
//! Connections that have not sent their first request yet are parked from the start.
//!
//! Shutdown: the listener stops accepting, every connection is told to finish its
//! in-flight requests (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`; parked connections
//! close at once), and whatever is still running after the grace period is aborted.

mod h2_watch;
mod rewind;
pub mod tls_stream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::pipeline::Live;
use crate::tls;
use arc_swap::ArcSwap;
use rewind::Rewind;
use tls_stream::ServerTlsStream;

pub use crate::pipeline::connection::{ClientCertificate, ConnectionInfo};

/// Server settings the accept loop needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
    /// A connection with no request in flight for this long is closed gracefully.
    pub idle_timeout: Duration,
    /// Connections served at once; beyond it the listener stops accepting.
    pub max_connections: usize,
}

/// One connection builder per protocol, configured once.
struct Builders {
    h1: hyper::server::conn::http1::Builder,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(settings: &ServerSettings) -> Self {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_buf_size(settings.max_header_bytes.max(8192));
        let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        h2.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        Builders { h1, h2 }
    }
}

/// An HTTP/1.1 keep-alive connection with no request in flight for this long is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);
/// With more than this share (1/20) of `max_connections` open — 1 000 of the default
/// 20 000 — HTTP/1.1 connections park as soon as their request is answered: memory then
/// matters more than the few hundred nanoseconds it costs to set up hyper's connection
/// state again for the next request.
pub const PARK_AT_ONCE_DIVISOR: usize = 20;

/// Accepts connections until `shutdown` turns true, then drains: every connection finishes
/// its in-flight requests; whatever still runs after `shutdown_grace` is aborted.
pub async fn serve(
    listener: TcpListener,
    live: Arc<ArcSwap<Live>>,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let shared =
        Arc::new(Shared { live, builders: Builders::new(&settings), settings: settings.clone(), slots: slots.clone() });
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // At the connection limit, stop accepting (the kernel backlog holds new clients)
        // until a connection ends.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let task = ConnectionTask { shared: shared.clone(), shutdown: shutdown.clone() };
        connections.spawn(task.run(tcp, peer, permit));
    }
    drop(listener);
    let drained =
        tokio::time::timeout(settings.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    match drained {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!(open = connections.len(), "shutdown grace period over; closing open connections");
            connections.shutdown().await;
        }
    }
}

/// One accepted TCP connection, from TLS handshake to close.
struct ConnectionTask {
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
}

/// What every connection task reads; one allocation for all of them (a connection's task
/// keeps its arguments for its whole life, so they are kept small).
struct Shared {
    live: Arc<ArcSwap<Live>>,
    builders: Builders,
    settings: ServerSettings,
    /// The connection slots; how many are taken tells how many connections are open.
    slots: Arc<Semaphore>,
}

impl ConnectionTask {
    /// Serves one connection; `_slot` is its place among `max_connections`, given back when
    /// the connection ends.
    async fn run(mut self, tcp: tokio::net::TcpStream, peer: SocketAddr, _slot: tokio::sync::OwnedSemaphorePermit) {
        // The certificate of the configuration current at accept time; requests then use the
        // configuration current when each arrives (a reload applies to open connections).
        let server_tls = self.shared.live.load().server_tls.clone();
        // Boxed, like the HTTP/2 connection below: a task's allocation is as large as its
        // largest state, and an idle connection should not pay for the handshake's.
        // A client that reads nothing for `idle_timeout` is as good as gone.
        let handshake = Box::pin(ServerTlsStream::accept(tcp, server_tls, self.shared.settings.idle_timeout));
        let tls = match tokio::time::timeout(self.shared.settings.handshake_timeout, handshake).await {
            // Boxed: moved between the serving and parked states, and 1.2 KB.
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let (info, h2) = {
            let h2 = tls.alpn_protocol() == Some(b"h2");
            let client_cert = tls.peer_certificates().and_then(|chain| chain.first()).map(|leaf| ClientCertificate {
                thumbprint: tls::certificate_thumbprint(leaf.as_ref()),
                der: leaf.as_ref().to_vec(),
            });
            let info = ConnectionInfo {
                peer,
                sni: tls.sni().map(str::to_string),
                client_cert,
                forwarded: crate::proxy::ForwardedHeaders::new(peer),
                token_memo: Default::default(),
            };
            (Arc::new(info), h2)
        };
        let mut gauge = ConnectionGauge::new(self.shared.live.load().state.metrics.clone());
        let activity = Arc::new(Activity::new());
        let token_memo_owner = info.clone();
        // HTTP/2 response bodies are watched for clients that stop reading them.
        let h2_bodies = h2.then(|| Arc::new(h2_watch::BodyProgress::default()));
        let service = {
            let live = self.shared.live.clone();
            let activity = activity.clone();
            let h2_bodies = h2_bodies.clone();
            service_fn(move |request| {
                let state = live.load().state.clone();
                let info = info.clone();
                let activity = activity.clone();
                let h2_bodies = h2_bodies.clone();
                // Boxed: hyper's `poll_without_shutdown`, which parking needs, wants an
                // `Unpin` future.
                Box::pin(async move {
                    activity.begin_request(&request);
                    let mut response = state.handle(request, info).await;
                    activity.end();
                    if let Some(progress) = h2_bodies {
                        response = response
                            .map(|body| http_body_util::BodyExt::boxed(h2_watch::WatchedBody::new(body, progress)));
                    }
                    Ok::<_, Infallible>(response)
                })
            })
        };
        // ALPN already chose the protocol: no sniffing, so the deadlines run from the first
        // byte the client owes us.
        if h2 {
            gauge.set(Some(true));
            // Boxed, like the HTTP/1.1 serving state: the task stays small.
            let progress = h2_bodies.unwrap_or_default();
            Box::pin(self.serve_h2(tls, service, &activity, &progress, peer)).await;
        } else {
            self.serve_h1(tls, service, &activity, peer, &mut gauge, &token_memo_owner.token_memo).await;
        }
    }

    async fn serve_h2<S>(
        &mut self,
        tls: Box<ServerTlsStream>,
        service: S,
        activity: &Activity,
        bodies: &h2_watch::BodyProgress,
        peer: SocketAddr,
    ) where
        S: hyper::service::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<crate::body::ProxyBody>,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let mut connection = Box::pin(self.shared.builders.h2.serve_connection(TokioIo::new(tls), service));
        let mut closing = false;
        // Runs on after a graceful shutdown too: a stream the client never reads would
        // otherwise hold the connection (and its upstream connection) open for good.
        let stall_period = self.shared.settings.idle_timeout;
        let mut stall_check = Box::pin(tokio::time::sleep(stall_period));
        let mut frames_then = 0;
        loop {
            let deadline = activity.deadline(&self.shared.settings, None);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = stall_check.as_mut() => {
                    if bodies.stalled(&mut frames_then) {
                        tracing::debug!(%peer, "HTTP/2 responses unread for idle_timeout; closing");
                        return;
                    }
                    stall_check.as_mut().reset(tokio::time::Instant::now() + stall_period);
                }
                _ = self.shutdown.changed(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep_until(deadline), if !closing => {
                    match activity.verdict(&self.shared.settings, None) {
                        Verdict::Active | Verdict::Park => {}
                        Verdict::Silent => {
                            tracing::debug!(%peer, "no request within header_read_timeout; closing");
                            return;
                        }
                        Verdict::Idle => {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        }
    }

    /// HTTP/1.1: parked (only the TLS stream held) until request bytes arrive, then served
    /// by a hyper connection until it has been idle for [`PARK_AFTER`], then parked again.
    async fn serve_h1<S>(
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
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
            return None;
        }
        let parts = connection.into_parts();
        let (tls, unread) = parts.io.into_inner().into_parts();
        // hyper also ends a connection on its own — `Connection: close`, HTTP/1.0, a
        // request body left unread — and then the stream must close, never park: parking
        // would read the rest of an unread body as the next request.
        if closing || !parking || !activity.last_request_allows_reuse.load(Ordering::Relaxed) {
            // Keep-alive over (the client closed, asked to, or we are shutting down).
            close(tls).await;
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
        tokio::select! {
            bytes = next_bytes(stream) => bytes,
            _ = self.shutdown.changed() => None,
            _ = tokio::time::sleep_until(deadline) => None,
        }
    }
}

/// Whether a new HTTP/1.1 connection may continue on this stream after `request`: see
/// [`Activity::last_request_allows_reuse`].
fn allows_reuse<B>(request: &http::Request<B>) -> bool {
    let headers = request.headers();
    let closes = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| v.to_str().map_or(true, |v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))));
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers.get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    request.version() == http::Version::HTTP_11 && !closes && !has_body
}

/// Keeps `fapi_gateway_connections{state}` in step with one connection; the drop takes
/// the connection out.
struct ConnectionGauge {
    metrics: Arc<crate::metrics::Metrics>,
    /// `Some(true)` active, `Some(false)` parked, `None` not counted yet.
    active: Option<bool>,
}

impl ConnectionGauge {
    fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        ConnectionGauge { metrics, active: None }
    }

    fn gauge(&self, active: bool) -> &prometheus_client::metrics::gauge::Gauge {
        if active { &self.metrics.connections_active } else { &self.metrics.connections_parked }
    }

    fn set(&mut self, active: Option<bool>) {
        if self.active == active {
            return;
        }
        if let Some(previous) = self.active {
            self.gauge(previous).dec();
        }
        if let Some(now) = active {
            self.gauge(now).inc();
        }
        self.active = active;
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.set(None);
    }
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

/// Request activity on one connection, for the deadlines hyper does not enforce itself
/// (HTTP/2 preface and idle connections).
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `started` of the last request start or end.
    last_change_ms: AtomicU64,
    /// Signalled when the last request in flight has been answered.
    answered: tokio::sync::Notify,
    /// Whether the latest request leaves the connection reusable by a new HTTP/1.1
    /// connection: HTTP/1.1, no `Connection: close`, no request body (whose unread rest
    /// would otherwise be parsed as a request).
    last_request_allows_reuse: std::sync::atomic::AtomicBool,
}

enum Verdict {
    Active,
    /// Connected, but never sent a request: a slowloris or a dead client.
    Silent,
    /// No request in flight for the park delay: drop the HTTP state, keep the stream.
    Park,
    /// No request in flight for `idle_timeout`.
    Idle,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            last_change_ms: AtomicU64::new(0),
            answered: tokio::sync::Notify::new(),
            last_request_allows_reuse: std::sync::atomic::AtomicBool::new(true),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(ms, Ordering::Relaxed);
    }

    fn begin_request<B>(&self, request: &http::Request<B>) {
        self.last_request_allows_reuse.store(allows_reuse(request), Ordering::Relaxed);
        self.begin();
    }

    fn begin(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    fn end(&self) {
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
    fn deadline(&self, settings: &ServerSettings, park_after: Option<Duration>) -> tokio::time::Instant {
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

    fn verdict(&self, settings: &ServerSettings, park_after: Option<Duration>) -> Verdict {
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
