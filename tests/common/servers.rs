//! In-test servers on ephemeral loopback ports: an HTTPS JWKS / metadata server and a
//! recording plain-HTTP/1.1 upstream. Both run in tokio tasks and are torn down on drop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::pki::TestPki;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).expect("content type"));
    resp
}

// ---------------------------------------------------------------------------------------
// JWKS server
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct JwksState {
    issuer: String,
    keys: Mutex<Vec<Value>>,
    cache_control: Mutex<Option<String>>,
    metadata_issuer: Mutex<Option<String>>,
    failing: AtomicBool,
    jwks_hits: AtomicUsize,
    metadata_hits: AtomicUsize,
}

impl JwksState {
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        let get = req.method() == http::Method::GET;
        match path {
            "/jwks" => {
                self.jwks_hits.fetch_add(1, Ordering::SeqCst);
            }
            "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" => {
                self.metadata_hits.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        if self.failing.load(Ordering::SeqCst) {
            return full(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "failing");
        }
        match path {
            "/jwks" if get => {
                let body = json!({ "keys": *lock(&self.keys) }).to_string();
                let mut resp = full(StatusCode::OK, "application/json", body);
                if let Some(cc) = lock(&self.cache_control).as_deref() {
                    let value = HeaderValue::from_str(cc).expect("cache-control value");
                    resp.headers_mut().insert(header::CACHE_CONTROL, value);
                }
                resp
            }
            "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration" if get => {
                let issuer = lock(&self.metadata_issuer).clone().unwrap_or_else(|| self.issuer.clone());
                let jwks_uri = format!("{}/jwks", self.issuer);
                let body = json!({ "issuer": issuer, "jwks_uri": jwks_uri }).to_string();
                full(StatusCode::OK, "application/json", body)
            }
            _ => full(StatusCode::NOT_FOUND, "text/plain", "not found"),
        }
    }
}

/// An HTTPS server (TestPki server certificate, h2 + http/1.1) publishing a JWKS and
/// authorization-server metadata at `https://localhost:{port}`.
pub struct JwksServer {
    addr: SocketAddr,
    state: Arc<JwksState>,
    shutdown: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl JwksServer {
    pub async fn start(pki: &TestPki, keys: Vec<Value>) -> JwksServer {
        super::init();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind JWKS");
        let addr = listener.local_addr().expect("JWKS addr");
        let state = Arc::new(JwksState {
            issuer: format!("https://localhost:{}", addr.port()),
            keys: Mutex::new(keys),
            ..JwksState::default()
        });
        let acceptor = pki.server_tls_acceptor();
        let (tx, mut rx) = oneshot::channel::<()>();
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Dropping the JoinSet when the loop ends aborts the open connections.
            let mut conns = JoinSet::new();
            loop {
                let (tcp, _) = tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                while conns.try_join_next().is_some() {}
                let acceptor = acceptor.clone();
                let st = st.clone();
                conns.spawn(async move {
                    let accept = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                    let Ok(Ok(tls)) = accept.await else { return };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let resp = st.handle(&req);
                        async move { Ok::<_, Infallible>(resp) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        JwksServer { addr, state, shutdown: Mutex::new(Some(tx)), task: Mutex::new(Some(task)) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `https://localhost:{port}` (no trailing slash).
    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    /// `{issuer}/jwks`.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.state.issuer)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *lock(&self.state.keys) = keys;
    }

    /// `Cache-Control` header sent with `/jwks` responses (none by default).
    pub fn set_cache_control(&self, value: Option<String>) {
        *lock(&self.state.cache_control) = value;
    }

    /// `issuer` published in the metadata documents (default: [`JwksServer::issuer`]).
    pub fn set_metadata_issuer(&self, issuer: Option<String>) {
        *lock(&self.state.metadata_issuer) = issuer;
    }

    /// When true every request is answered 503 (requests are still counted).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Requests received for `/jwks` (any method, failing or not).
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Requests received for either well-known metadata path.
    pub fn metadata_hits(&self) -> usize {
        self.state.metadata_hits.load(Ordering::SeqCst)
    }

    /// Closes the listener and drops open connections; returns once the port is closed.
    pub async fn stop(&self) {
        if let Some(tx) = lock(&self.shutdown).take() {
            let _ = tx.send(());
        }
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------------

/// One request as received by the [`Upstream`].
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct UpstreamState {
    requests: Mutex<Vec<Recorded>>,
}

impl UpstreamState {
    fn append_body(&self, idx: usize, data: &[u8]) {
        if let Some(r) = lock(&self.requests).get_mut(idx) {
            r.body.extend_from_slice(data);
        }
    }
}

/// Request body that is streamed back to the client (`/echo`) while being recorded.
struct TeeBody {
    inner: Incoming,
    state: Arc<UpstreamState>,
    idx: usize,
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.state.append_body(this.idx, data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

type UpBody = UnsyncBoxBody<Bytes, hyper::Error>;

fn up_response(status: StatusCode, body: impl Into<Bytes>) -> Response<UpBody> {
    let body = Full::new(body.into()).map_err(|never| match never {});
    let mut resp = Response::new(UnsyncBoxBody::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert("x-upstream", HeaderValue::from_static("yes"));
    resp
}

async fn upstream_handle(state: Arc<UpstreamState>, req: Request<Incoming>) -> Response<UpBody> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    // `X-Reply-Header: name: value` asks for that header on the answer.
    let reply_header = parts.headers.get("x-reply-header").and_then(|v| v.to_str().ok()).and_then(|v| {
        let (name, value) = v.split_once(": ")?;
        Some((http::HeaderName::from_bytes(name.as_bytes()).ok()?, HeaderValue::from_str(value).ok()?))
    });
    let uri = parts.uri.path_and_query().map_or_else(|| path.clone(), ToString::to_string);
    let idx = {
        let mut requests = lock(&state.requests);
        requests.push(Recorded { method: parts.method.to_string(), uri, headers: parts.headers, body: Vec::new() });
        requests.len() - 1
    };

    if path.starts_with("/echo") {
        let tee = TeeBody { inner: body, state, idx };
        let mut resp = Response::new(UnsyncBoxBody::new(tee));
        resp.headers_mut().insert("x-upstream", HeaderValue::from_static("yes"));
        return resp;
    }

    // Read the whole request body (recorded as it arrives) before answering.
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    state.append_body(idx, data);
                }
            }
            Err(_) => break,
        }
    }

    if path.starts_with("/slow") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    } else if let Some(len) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
        return up_response(StatusCode::OK, filler(len));
    } else if let Some(code) = path.strip_prefix("/status/") {
        let status =
            code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST);
        return up_response(status, format!("status {}", status.as_u16()));
    }
    let mut response = up_response(StatusCode::OK, "upstream-ok");
    if let Some((name, value)) = reply_header {
        response.headers_mut().insert(name, value);
    }
    response
}

/// `len` bytes of `x`, sliced from one shared allocation (up to 16 MiB; a view, so many
/// large responses in flight cost the upstream nothing).
fn filler(len: usize) -> Bytes {
    static FILLER: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let all = FILLER.get_or_init(|| Bytes::from(vec![b'x'; 16 << 20]));
    all.slice(..len.min(all.len()))
}

/// A plain-HTTP/1.1 upstream that records every request.
///
/// Answers 200 `upstream-ok` with `x-upstream: yes`, except: `/slow…` waits 5 s first,
/// `/echo…` streams the request body back, `/status/NNN` answers status NNN, `/bytes/N`
/// answers N bytes (at most 16 MiB).
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                while conns.try_join_next().is_some() {}
                let st = st.clone();
                conns.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(upstream_handle(st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
                });
            }
        });
        Upstream { addr, state, task }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything received so far, in arrival order (bodies may still be filling in for
    /// requests in flight).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// The most recent request, if any.
    pub fn last(&self) -> Option<Recorded> {
        lock(&self.state.requests).last().cloned()
    }

    pub fn hits(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// `http://127.0.0.1:{port}` where nothing listens (a port just bound and released).
    pub fn refused_url() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
