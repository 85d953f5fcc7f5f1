//! The accept loop: TCP, then TLS (with a handshake deadline), then HTTP/1.1 or HTTP/2 as
//! ALPN decided, each connection in its own task. Facts about the connection — peer
//! address, SNI, the client certificate and its SHA-256 thumbprint — are computed once,
//! right after the handshake, and shared by every request on it.
//!
//! Deadlines: TLS handshake (`handshake_timeout`); the first request (`header_read_timeout`,
//! for HTTP/2 too, where hyper has no such timer); idle connections (`idle_timeout`, closed
//! gracefully); HTTP/1.1 request heads (hyper's `header_read_timeout`). At most
//! `max_connections` connections are served at once.
//!
//! Shutdown: the listener stops accepting, every connection is told to finish its
//! in-flight requests (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`), and whatever is still
//! running after the grace period is aborted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::gateway::Live;
use crate::tls;
use arc_swap::ArcSwap;

/// The verified client certificate of a connection.
#[derive(Debug)]
pub struct ClientCertificate {
    /// SHA-256 of the DER: what RFC 8705 `x5t#S256` binds to.
    pub thumbprint: [u8; 32],
    pub der: Vec<u8>,
}

/// What the gateway knows about a connection, computed once after the handshake.
#[derive(Debug)]
pub struct ConnectionInfo {
    pub peer: SocketAddr,
    /// The TLS server name the client asked for (absent when it connected by IP address).
    pub sni: Option<String>,
    pub client_cert: Option<ClientCertificate>,
    /// The forwarding headers of this connection's requests, formatted once.
    pub forwarded: crate::proxy::ForwardedHeaders,
}

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
    h1: auto::Builder<TokioExecutor>,
    h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(settings: &ServerSettings) -> Self {
        let configure = |mut builder: auto::Builder<TokioExecutor>| {
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read_timeout)
                .max_buf_size(settings.max_header_bytes.max(8192));
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(10));
            builder
        };
        Builders {
            h1: configure(auto::Builder::new(TokioExecutor::new()).http1_only()),
            h2: configure(auto::Builder::new(TokioExecutor::new()).http2_only()),
        }
    }
}

/// Accepts connections until `shutdown` turns true, then drains: every connection finishes
/// its in-flight requests; whatever still runs after `shutdown_grace` is aborted.
pub async fn serve(
    listener: TcpListener,
    live: Arc<ArcSwap<Live>>,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let builders = Arc::new(Builders::new(&settings));
    let slots = Arc::new(Semaphore::new(settings.max_connections));
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
        let task = ConnectionTask {
            live: live.clone(),
            builders: builders.clone(),
            settings: settings.clone(),
            shutdown: shutdown.clone(),
        };
        connections.spawn(async move {
            task.run(tcp, peer).await;
            drop(permit);
        });
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
    live: Arc<ArcSwap<Live>>,
    builders: Arc<Builders>,
    settings: ServerSettings,
    shutdown: watch::Receiver<bool>,
}

impl ConnectionTask {
    async fn run(mut self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        // The certificate of the configuration current at accept time; requests then use the
        // configuration current when each arrives (a reload applies to open connections).
        let acceptor = self.live.load().acceptor.clone();
        let tls = match tokio::time::timeout(self.settings.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
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
            let session = tls.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            let client_cert =
                session.peer_certificates().and_then(|chain| chain.first()).map(|leaf| ClientCertificate {
                    thumbprint: tls::certificate_thumbprint(leaf.as_ref()),
                    der: leaf.as_ref().to_vec(),
                });
            let info = ConnectionInfo {
                peer,
                sni: session.server_name().map(str::to_string),
                client_cert,
                forwarded: crate::proxy::ForwardedHeaders::new(peer),
            };
            (Arc::new(info), h2)
        };
        let activity = Arc::new(Activity::new());
        let service = {
            let live = self.live.clone();
            let activity = activity.clone();
            service_fn(move |request| {
                let state = live.load().state.clone();
                let info = info.clone();
                let activity = activity.clone();
                async move {
                    activity.begin();
                    let response = state.handle(request, info).await;
                    activity.end();
                    Ok::<_, Infallible>(response)
                }
            })
        };
        // ALPN already chose the protocol: no sniffing, so the deadlines below run from the
        // first byte the client owes us.
        let builder = if h2 { &self.builders.h2 } else { &self.builders.h1 };
        let mut connection = std::pin::pin!(builder.serve_connection(TokioIo::new(tls), service));
        let mut closing = false;
        loop {
            let deadline = activity.deadline(&self.settings);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.shutdown.changed(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep_until(deadline), if !closing => {
                    match activity.verdict(&self.settings) {
                        Verdict::Active => {}
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
}

/// Request activity on one connection, for the deadlines hyper does not enforce itself
/// (HTTP/2 preface and idle connections).
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `started` of the last request start or end.
    last_change_ms: AtomicU64,
}

enum Verdict {
    Active,
    /// Connected, but never sent a request: a slowloris or a dead client.
    Silent,
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
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_change_ms.store(ms, Ordering::Relaxed);
    }

    fn begin(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    fn end(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    fn deadline(&self, settings: &ServerSettings) -> tokio::time::Instant {
        // Nothing wakes this timer when a request starts, so before the first request it also
        // fires after `idle_timeout`, to move on to the idle deadline in time.
        let at = if self.requests.load(Ordering::Relaxed) == 0 {
            self.started + settings.header_read_timeout.min(settings.idle_timeout)
        } else {
            self.started + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed)) + settings.idle_timeout
        };
        tokio::time::Instant::from_std(at)
    }

    fn verdict(&self, settings: &ServerSettings) -> Verdict {
        if self.requests.load(Ordering::Relaxed) == 0 {
            return if self.started.elapsed() >= settings.header_read_timeout {
                Verdict::Silent
            } else {
                Verdict::Active
            };
        }
        let idle_since = self.started + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed));
        if self.in_flight.load(Ordering::Relaxed) == 0 && idle_since.elapsed() >= settings.idle_timeout {
            Verdict::Idle
        } else {
            Verdict::Active
        }
    }
}
