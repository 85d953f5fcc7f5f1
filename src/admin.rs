//! The admin listener (`admin.address`, plain HTTP, meant for loopback or a private
//! network): `/metrics` in the Prometheus/OpenMetrics text format (see [`crate::metrics`]);
//! `/healthz` answers 200 while the process serves; `/readyz` answers 200 only
//! when every issuer's keys have been loaded, the shared DPoP replay store (if any)
//! answers and every login's authorization server has been discovered, else 503 with the
//! reasons, so a load balancer sends traffic only to instances
//! that can decide requests.
//!
//! Draining ([`Drain`]): from the moment a shutdown begins `/readyz` answers 503 with
//! `"draining": true`, and the admin listener keeps serving until the TLS listener has
//! drained (the lifecycle stops it last), so a balancer sees the instance leave.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{ProxyBody, full};
use crate::pipeline::{GatewayState, Live};
use arc_swap::ArcSwap;

/// What `/readyz` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// A shutdown has begun: the instance wants no new traffic.
    pub draining: bool,
    pub keys_loaded: bool,
    pub replay_store_reachable: bool,
    /// Every `login:` entry's authorization server has been discovered (true without any).
    pub login_as_discovered: bool,
    /// Every `login:` entry's shared session store (Redis) answers (true without any).
    pub login_store_reachable: bool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        !self.draining
            && self.keys_loaded
            && self.replay_store_reachable
            && self.login_as_discovered
            && self.login_store_reachable
    }
}

/// Whether the gateway is shutting down; shared by the lifecycle, which begins it, and the
/// admin listener, whose `/readyz` reports it. Once begun it never ends.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    begun: Arc<AtomicBool>,
}

impl Drain {
    /// Marks the gateway as draining: `/readyz` answers 503 from now on.
    pub fn begin(&self) {
        self.begun.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }
}

/// Checks what a ready instance needs.
pub async fn readiness(state: &GatewayState, drain: &Drain) -> Readiness {
    let keys_loaded = state.validator.issuer_keys().all(|k| k.is_loaded());
    // With `on_error: local` the instance still decides DPoP requests while Redis is down.
    let replay_store_reachable = match &state.dpop.shared_replay {
        Some(store) if store.fails_closed() => store.is_reachable().await,
        _ => true,
    };
    // Not yet discovered: try again in the background (the answer does not wait for it).
    let mut login_as_discovered = true;
    let mut login_store_reachable = true;
    for login in &state.logins {
        if !login.is_discovered() {
            login_as_discovered = false;
            tokio::spawn(login.clone().prefetch());
        }
        if let Some(store) = login.sessions.shared()
            && !store.is_reachable().await
        {
            login_store_reachable = false;
        }
    }
    Readiness {
        draining: drain.is_draining(),
        keys_loaded,
        replay_store_reachable,
        login_as_discovered,
        login_store_reachable,
    }
}

/// Serves the admin endpoints until `shutdown` turns true (or its sender is dropped).
pub async fn serve(listener: TcpListener, live: Arc<ArcSwap<Live>>, drain: Drain, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = shutdown.changed() => return,
        };
        let live = live.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = live.load().state.clone();
                let drain = drain.clone();
                async move { Ok::<_, Infallible>(handle(&state, &drain, request).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

async fn handle(state: &GatewayState, drain: &Drain, request: Request<Incoming>) -> Response<ProxyBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_string());
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".to_string()),
        "/metrics" => {
            state.metrics.replay_entries.set(i64::try_from(state.dpop.replay.len()).unwrap_or(i64::MAX));
            for login in &state.logins {
                let labels = crate::metrics::LoginNameLabels { login: login.settings.name.clone() };
                state
                    .metrics
                    .login_sessions
                    .get_or_create(&labels)
                    .set(i64::try_from(login.sessions.len()).unwrap_or(i64::MAX));
            }
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            response
        }
        "/readyz" => {
            let r = readiness(state, drain).await;
            let status = if r.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = serde_json::json!({
                "ready": r.ready(),
                "draining": r.draining,
                "keys_loaded": r.keys_loaded,
                "login_as_discovered": r.login_as_discovered,
                "login_store_reachable": r.login_store_reachable,
                "replay_store_reachable": r.replay_store_reachable,
            });
            let mut response = text(status, format!("{body}\n"));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_string()),
    }
}

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Binds the admin listener.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}
