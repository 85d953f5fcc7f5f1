//! Keep-alive HTTP/1.1 connections to one upstream, driven with hyper's connection API.
//!
//! A request takes the most recently used idle connection (LIFO keeps few connections
//! warm), or opens one (TCP, then TLS for `https://` upstreams, within the connect
//! timeout). The connection goes back to the pool when the response body has been read to
//! its end; a response abandoned half-way (the client went away) closes it instead, since
//! the rest of that body would still be on the wire. A request that hyper hands back unsent
//! — the pooled connection was closed by the upstream just before it was used — is sent
//! once more on a new connection. So is an idempotent request without a body (GET, HEAD,
//! OPTIONS, PUT, DELETE) that failed before any response on a connection that had been idle
//! for [`REPLAY_IF_IDLE_FOR`] or longer: the upstream most likely closed it at its own
//! keep-alive timeout while the request was on its way (nginx's `proxy_next_upstream error`
//! does the same). Idle connections are closed after [`IDLE_TIMEOUT`] by a
//! reaper task that ends with the pool (a configuration reload drops the old pool, and with
//! it the idle connections).
//!
//! Time: the response head must come within the route's `timeout`, and then the body may
//! not stall — go without a byte — for longer than that either (checked on the same timer:
//! a stall is caught between one and two timeouts after the last byte). A stalled body is
//! cut off and its connection closed, as nginx does after `proxy_read_timeout`.
//!
//! Upstream connections speak HTTP/1.1 only, as nginx's and most proxies' do by default.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::body::ProxyBody;
use crate::write_batch::BatchedWrites;

/// The most an upstream connection reads ahead: the read buffer starts at 8 KiB and grows
/// to this while reads fill it, and every body chunk is a slice of it. It bounds the
/// upstream's response head too (nginx allows 4–8 KiB, Envoy 60 KiB). hyper's default,
/// ~408 KiB, let each client that stops reading pin about three times that (the buffer,
/// the chunk waiting to be sent, the buffer reallocated while that chunk holds the old one).
pub const UPSTREAM_BUFFER_BYTES: usize = 32 * 1024;
/// Idle connections older than this are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// At most this many idle connections are kept per upstream; beyond, they are closed.
const MAX_IDLE: usize = 1024;
/// How often the reaper looks for connections idle longer than [`IDLE_TIMEOUT`].
const REAP_INTERVAL: Duration = Duration::from_secs(10);
/// How long a pooled connection may take to finish its previous exchange before a request
/// uses another one.
const READY_WAIT: Duration = Duration::from_millis(50);
/// A connection idle this long may have been closed by the upstream as a request was sent
/// on it: idempotent requests without a body are then kept to be sent again. (Connections
/// reused sooner — all of them under load — cost no copy.)
pub const REPLAY_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting to the upstream timed out")]
    ConnectTimeout,
    #[error("connecting to the upstream failed")]
    Connect(#[source] std::io::Error),
    #[error("TLS with the upstream failed")]
    Tls(#[source] std::io::Error),
    #[error("HTTP/1.1 handshake with the upstream failed")]
    Handshake(#[source] hyper::Error),
    #[error("the upstream exchange failed")]
    Http(#[source] hyper::Error),
    #[error("the upstream did not answer in time")]
    Timeout,
}

/// A response body cut off because the upstream sent nothing more for too long.
#[derive(Debug, thiserror::Error)]
#[error("the upstream response stalled for more than {0:?}")]
pub struct BodyStalled(pub Duration);

/// Where connections go.
struct Target {
    /// Host name or IP address (IPv6 without brackets), for connecting and TLS.
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// The connection pool of one upstream.
pub struct ConnectionPool {
    inner: Arc<PoolInner>,
    /// `Host` for every request: the upstream URL's host and port.
    host_header: HeaderValue,
}

struct PoolInner {
    target: Target,
    connect_timeout: Duration,
    /// For the response head, then for each stall of the body.
    read_timeout: Duration,
    idle: Mutex<Vec<IdleConnection>>,
    reaper_started: std::sync::atomic::AtomicBool,
}

struct IdleConnection {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// The TLS settings of an `https://` upstream.
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
}

impl ConnectionPool {
    /// A pool for `uri` (`http://` or `https://`, with a host); `tls` for `https://`. The
    /// response head must come within `read_timeout`, and the body may not stall longer.
    pub fn new(
        uri: &http::Uri,
        tls: Option<UpstreamTls>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, String> {
        let host = uri.host().filter(|h| !h.is_empty()).ok_or("the upstream URL has no host")?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = match uri.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let host_header =
            HeaderValue::from_str(&host_header).map_err(|_| "the upstream URL's host is not a valid Host header")?;
        let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = match (https, tls) {
            (false, _) => None,
            (true, None) => return Err("an https:// upstream needs TLS settings".into()),
            (true, Some(tls)) => {
                let name = ServerName::try_from(bare_host.clone())
                    .map_err(|_| format!("`{bare_host}` is not a valid TLS server name"))?;
                Some((tokio_rustls::TlsConnector::from(tls.config), name))
            }
        };
        Ok(ConnectionPool {
            inner: Arc::new(PoolInner {
                target: Target { host: bare_host, port, tls },
                connect_timeout,
                read_timeout,
                idle: Mutex::new(Vec::new()),
                reaper_started: std::sync::atomic::AtomicBool::new(false),
            }),
            host_header,
        })
    }

    /// Sends `request` (origin-form URI; its `Host` is set here) and returns the response,
    /// whose body hands the connection back to the pool when it ends; [`SendError::Timeout`]
    /// when no response head came within the read timeout.
    pub async fn send(&self, request: Request<ProxyBody>) -> Result<Response<ProxyBody>, SendError> {
        // One timer for the head, then handed to the body to watch for stalls.
        let mut timer = Box::pin(tokio::time::sleep(self.inner.read_timeout));
        let exchanged = tokio::select! {
            biased;
            exchanged = self.exchange(request) => exchanged,
            () = timer.as_mut() => return Err(SendError::Timeout),
        };
        let (response, sender) = exchanged?;
        Ok(self.inner.clone().wrap(response, sender, timer))
    }

    async fn exchange(
        &self,
        mut request: Request<ProxyBody>,
    ) -> Result<(Response<Incoming>, http1::SendRequest<ProxyBody>), SendError> {
        request.headers_mut().insert(HOST, self.host_header.clone());
        let mut fresh_only = false;
        loop {
            let (mut sender, idle_for) = match self.inner.checkout(fresh_only).await {
                Some(idle) => idle,
                // Boxed: connecting (TCP, TLS, handshake) is the large and rare state; inline
                // it would grow every request's future, which is moved to the heap per request.
                None => (Box::pin(self.inner.connect()).await?, Duration::ZERO),
            };
            let replay = if idle_for >= REPLAY_IF_IDLE_FOR { Replay::of(&request) } else { None };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, sender)),
                Err(mut e) => match (e.take_message(), replay) {
                    // Never written: the connection closed before it could take the request.
                    // Once more, on a new connection.
                    (Some(unsent), _) if !fresh_only => {
                        tracing::debug!(error = %e.error(), "pooled upstream connection was closed; retrying");
                        request = unsent;
                        fresh_only = true;
                    }
                    // Written to a long-idle connection that failed before any response.
                    (None, Some(replay)) if !fresh_only => {
                        tracing::debug!(error = %e.error(), "idle upstream connection failed; sending the idempotent request again");
                        request = replay.into_request();
                        fresh_only = true;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// Idle connections right now (for tests and diagnostics).
    pub fn idle_connections(&self) -> usize {
        lock(&self.inner.idle).len()
    }
}

fn lock(idle: &Mutex<Vec<IdleConnection>>) -> MutexGuard<'_, Vec<IdleConnection>> {
    // A panic while holding the lock cannot leave the Vec inconsistent.
    idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PoolInner {
    /// The most recently used idle connection that is still open, and how long it has been
    /// idle, if any (none when `fresh_only`).
    async fn checkout(&self, fresh_only: bool) -> Option<(http1::SendRequest<ProxyBody>, Duration)> {
        if fresh_only {
            return None;
        }
        loop {
            let IdleConnection { mut sender, since } = lock(&self.idle).pop()?;
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() {
                return Some((sender, since.elapsed()));
            }
            // Returned the moment its last response body ended; the connection task may
            // not have caught up yet.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Some((sender, since.elapsed()));
            }
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<ProxyBody>, SendError> {
        match tokio::time::timeout(self.connect_timeout, self.open()).await {
            Ok(result) => result,
            Err(_) => Err(SendError::ConnectTimeout),
        }
    }

    async fn open(&self) -> Result<http1::SendRequest<ProxyBody>, SendError> {
        let target = &self.target;
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await.map_err(SendError::Connect)?;
        // Requests and responses are small writes; do not wait to coalesce them.
        let _ = tcp.set_nodelay(true);
        let tcp = BatchedWrites::new(tcp);
        match &target.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(SendError::Tls)?;
                handshake(tls).await
            }
        }
    }

    /// The response with a body that returns `sender` to the pool when it ends and is cut
    /// off when it stalls (`timer` is the head's, still running).
    fn wrap(
        self: Arc<Self>,
        response: Response<Incoming>,
        sender: http1::SendRequest<ProxyBody>,
        timer: Pin<Box<tokio::time::Sleep>>,
    ) -> Response<ProxyBody> {
        let (parts, body) = response.into_parts();
        let stall = StallWatch { timer, timeout: self.read_timeout, frames: 0, frames_at_last_check: None };
        let mut body = PooledBody { inner: body, lease: Some(Lease { pool: self, sender }), stall, rest: Bytes::new() };
        // A body that is empty from the start (204, 304, HEAD, `content-length: 0`) may
        // never be polled.
        body.release_if_done();
        Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
    }

    fn put(self: &Arc<Self>, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = lock(&self.idle);
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push(IdleConnection { sender, since: Instant::now() });
        }
        if !self.reaper_started.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }
}

/// Closes connections idle for longer than [`IDLE_TIMEOUT`]; ends when the pool is gone.
async fn reap(pool: Weak<PoolInner>) {
    loop {
        tokio::time::sleep(REAP_INTERVAL).await;
        let Some(pool) = pool.upgrade() else { return };
        // Oldest first: the Vec is in order of return.
        let mut idle = lock(&pool.idle);
        let expired = idle.iter().take_while(|c| c.since.elapsed() >= IDLE_TIMEOUT).count();
        idle.drain(..expired);
        idle.retain(|c| !c.sender.is_closed());
    }
}

async fn handshake<T>(io: T) -> Result<http1::SendRequest<ProxyBody>, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(UPSTREAM_BUFFER_BYTES)
        .handshake(TokioIo::new(io))
        .await
        .map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection closed with an error");
        }
    });
    Ok(sender)
}

/// What it takes to send a request without a body again.
struct Replay {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Replay {
    /// A copy of `request` when it may be sent twice: an idempotent method (RFC 9110
    /// §9.2.2) and no body.
    fn of(request: &Request<ProxyBody>) -> Option<Replay> {
        use http::Method;
        let idempotent = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        (idempotent && request.body().is_end_stream()).then(|| Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn into_request(self) -> Request<ProxyBody> {
        let mut request = Request::new(crate::body::full(Bytes::new()));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// A connection lent to one response.
struct Lease {
    pool: Arc<PoolInner>,
    sender: http1::SendRequest<ProxyBody>,
}

/// Watches a response body for stalls: each time the timer fires, the body must have
/// brought a frame since the last time (the first firing — the head's deadline — always
/// grants a full period).
struct StallWatch {
    timer: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    frames: u64,
    frames_at_last_check: Option<u64>,
}

impl StallWatch {
    /// Whether the body has stalled (registers for the next check otherwise).
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if self.frames_at_last_check == Some(self.frames) {
                return true;
            }
            self.frames_at_last_check = Some(self.frames);
            let next = tokio::time::Instant::now() + self.timeout;
            self.timer.as_mut().reset(next);
        }
        false
    }
}

/// The upstream's response body; gives the connection back when it has been read to its end.
struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
    stall: StallWatch,
    /// What is left of a chunk larger than [`MAX_CHUNK_BYTES`].
    rest: Bytes,
}

/// The largest chunk a response body is handed on in. hyper's HTTP/1.1 writer copies a
/// chunk into its buffer while that holds less than its limit (16 KiB), so a chunk of a
/// whole 32 KiB read would grow that buffer to 64 KiB for each client that stops reading.
const MAX_CHUNK_BYTES: usize = 16 * 1024;

/// `data` cut to [`MAX_CHUNK_BYTES`]; what is cut off goes to `rest` (no copy).
fn bounded_chunk(mut data: Bytes, rest: &mut Bytes) -> Bytes {
    if data.len() > MAX_CHUNK_BYTES {
        *rest = data.split_off(MAX_CHUNK_BYTES);
    }
    data
}

impl PooledBody {
    fn release_if_done(&mut self) {
        if self.inner.is_end_stream()
            && let Some(Lease { pool, sender }) = self.lease.take()
        {
            pool.put(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if !this.rest.is_empty() {
            let rest = std::mem::take(&mut this.rest);
            return Poll::Ready(Some(Ok(Frame::data(bounded_chunk(rest, &mut this.rest)))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(Lease { pool, sender }) = this.lease.take() {
                    pool.put(sender);
                }
            }
            Poll::Ready(Some(Ok(_))) => {
                this.stall.frames += 1;
                this.release_if_done();
            }
            // The exchange failed: the connection is not reusable.
            Poll::Ready(Some(Err(_))) => this.lease = None,
            Poll::Pending => {
                if this.lease.is_some() && this.stall.stalled(cx) {
                    // The rest of the body may still come: the connection cannot be reused.
                    this.lease = None;
                    tracing::warn!(
                        timeout_ms = u64::try_from(this.stall.timeout.as_millis()).unwrap_or(u64::MAX),
                        "upstream response stalled; cut off"
                    );
                    return Poll::Ready(Some(Err(BodyStalled(this.stall.timeout).into())));
                }
            }
        }
        polled.map(|frame| {
            frame.map(|frame| match frame.map(|f| f.map_data(|data| bounded_chunk(data, &mut this.rest))) {
                Ok(frame) => Ok(frame),
                Err(e) => Err(e.into()),
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint.set_lower(hint.lower().saturating_add(rest));
        hint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn large_chunks_are_handed_on_in_bounded_pieces_without_loss() {
        let data: Bytes = (0..40_000u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        let mut rest = Bytes::new();
        let mut pieces = vec![bounded_chunk(data.clone(), &mut rest)];
        while !rest.is_empty() {
            let next = std::mem::take(&mut rest);
            pieces.push(bounded_chunk(next, &mut rest));
        }
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [16_384, 16_384, 7_232]);
        assert_eq!(pieces.concat(), data.to_vec());
        // A small chunk passes whole.
        assert_eq!(bounded_chunk(Bytes::from_static(b"abc"), &mut rest), Bytes::from_static(b"abc"));
        assert!(rest.is_empty());
    }
}
