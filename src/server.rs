//! The accept loop: TCP, then TLS (with a handshake deadline), then HTTP/1.1 or HTTP/2 as
//! ALPN decided, each connection in its own task. Facts about the connection — peer
//! address, SNI, the client certificate and its SHA-256 thumbprint — are computed once,
//! right after the handshake, and shared by every request on it.
//!
//! Shutdown: the listener stops accepting, every connection is told to finish its
//! in-flight requests (HTTP/2 GOAWAY, HTTP/1.1 `Connection: close`), and whatever is still
//! running after the grace period is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::gateway::GatewayState;
use crate::tls;

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
}

/// Server settings the accept loop needs.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
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

/// Accepts connections until `shutdown` turns true, then drains.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<GatewayState>,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let builders = Arc::new(Builders::new(&settings));
    loop {
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
        let acceptor = acceptor.clone();
        let state = state.clone();
        let builders = builders.clone();
        let handshake_timeout = settings.handshake_timeout;
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
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
                let info = ConnectionInfo { peer, sni: session.server_name().map(str::to_string), client_cert };
                (Arc::new(info), h2)
            };
            let service = service_fn(move |request| {
                let state = state.clone();
                let info = info.clone();
                async move { Ok::<_, Infallible>(state.handle(request, info).await) }
            });
            // ALPN already chose the protocol: no sniffing, so the header-read deadline runs
            // from the first byte the client owes us.
            let builder = if h2 { &builders.h2 } else { &builders.h1 };
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(settings.shutdown_grace) => tracing::warn!("shutdown grace period over; dropping open connections"),
    }
}
