//! The accept loop ([`serve`]): connection slots, one task per accepted connection, and the
//! drain with its grace period at shutdown. Also what every connection task shares
//! ([`Shared`], with the hyper connection [`Builders`]).
//!
//! Not here: what happens on a connection once accepted (`connection.rs`, `h1.rs`, `h2.rs`).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, TryAcquireError, watch};
use tokio::task::JoinSet;

use super::ServerSettings;
use super::connection::ConnectionTask;
use super::handshake::HandshakeFailure;
use super::per_client::PerClient;
use super::reclaim::IdleQueue;
use crate::metrics::ReasonLabels;
use crate::pipeline::Live;
use arc_swap::ArcSwap;

/// What an HTTP/2 stream may hold of its response beyond what the client's flow-control
/// window lets out at once (hyper's default, 400 KiB, is what a client that stops reading
/// a response pins per stream; one body chunk may come on top).
pub const H2_SEND_BUFFER_BYTES: usize = 32 * 1024;

/// One connection builder per protocol, configured once.
pub(super) struct Builders {
    pub(super) h1: hyper::server::conn::http1::Builder,
    pub(super) h2: auto::Builder<TokioExecutor>,
}

impl Builders {
    fn new(settings: &ServerSettings) -> Self {
        let h1 = http1_builder(settings);
        let mut h2 = auto::Builder::new(TokioExecutor::new()).http2_only();
        h2.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_send_buf_size(H2_SEND_BUFFER_BYTES);
        Builders { h1, h2 }
    }
}

/// The HTTP/1.1 connection builder every client connection is served with: hyper's
/// request-head timer (`header_read_timeout`) and a read buffer of `max_header_bytes` (at
/// least 8 KiB), beyond which a request head is refused (431). Public so that the framing
/// fuzz target (`fuzz/fuzz_targets/http1_framing.rs`) drives the very configuration the
/// gateway serves with.
pub fn http1_builder(settings: &ServerSettings) -> hyper::server::conn::http1::Builder {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    h1
}

/// Accepts connections until `shutdown` turns true, then drains: every connection finishes
/// its in-flight requests; whatever still runs after `shutdown_grace` is aborted.
pub async fn serve(
    listener: TcpListener,
    live: Arc<ArcSwap<Live>>,
    settings: ServerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every failure reason has a series from the start, at 0.
    let metrics = live.load().state.metrics.clone();
    for reason in HandshakeFailure::ALL {
        metrics.tls_handshake_failures.get_or_create_owned(&ReasonLabels { reason: reason.as_str() });
    }
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let shared = Arc::new(Shared {
        live,
        builders: Builders::new(&settings),
        settings: settings.clone(),
        slots: slots.clone(),
        idle: IdleQueue::default(),
    });
    let per_client = settings.max_connections_per_client.map(PerClient::new);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // At the connection limit, the longest-idle keep-alive connection is told to close
        // (the kernel backlog holds the new client meanwhile); with none idle, accepting
        // waits until a connection ends.
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => loop {
                shared.idle.reclaim_oldest();
                tokio::select! {
                    permit = slots.clone().acquire_owned() => match permit {
                        Ok(p) => break p,
                        Err(_) => return drain(connections, settings.shutdown_grace, listener).await,
                    },
                    _ = shutdown.changed() => return drain(connections, settings.shutdown_grace, listener).await,
                    // A reclaimed connection closes within about a second; look again then
                    // (it may have just become busy), or when another one has parked.
                    () = tokio::time::sleep(RECLAIM_RETRY) => {}
                }
            },
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
        let client_slot = match &per_client {
            None => None,
            Some(caps) => match caps.admit(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    tracing::debug!(%peer, "client address at limits.max_connections_per_client; connection closed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        if let Some(bytes) = settings.socket_send_buffer {
            // Best effort, like TCP_NODELAY: a refused size leaves the kernel's.
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(bytes);
        }
        let task = ConnectionTask { shared: shared.clone(), shutdown: shutdown.clone(), reclaim: Default::default() };
        connections.spawn(task.run(tcp, peer, (permit, client_slot)));
    }
    drain(connections, settings.shutdown_grace, listener).await;
}

/// Stops accepting and lets the open connections finish, for up to `grace`.
async fn drain(mut connections: JoinSet<()>, grace: Duration, listener: TcpListener) {
    drop(listener);
    let drained = tokio::time::timeout(grace, async { while connections.join_next().await.is_some() {} }).await;
    match drained {
        Ok(()) => tracing::info!("all connections drained"),
        Err(_) => {
            tracing::warn!(open = connections.len(), "shutdown grace period over; closing open connections");
            connections.shutdown().await;
        }
    }
}

/// What every connection task reads; one allocation for all of them (a connection's task
/// keeps its arguments for its whole life, so they are kept small).
pub(super) struct Shared {
    pub(super) live: Arc<ArcSwap<Live>>,
    pub(super) builders: Builders,
    pub(super) settings: ServerSettings,
    /// The connection slots; how many are taken tells how many connections are open.
    pub(super) slots: Arc<Semaphore>,
    /// Parked keep-alive connections, reclaimed oldest first at the connection limit.
    pub(super) idle: IdleQueue,
}

/// How long the accept loop waits at the limit before it reclaims another idle connection.
const RECLAIM_RETRY: Duration = Duration::from_millis(200);
