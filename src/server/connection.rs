//! One accepted connection from TCP to the choice of protocol ([`ConnectionTask::run`]): the
//! TLS handshake under its deadline, the connection's facts ([`ConnectionInfo`]) computed
//! once, the hyper service every request on it goes through, then HTTP/1.1 or HTTP/2 as
//! ALPN decided.
//!
//! Not here: serving either protocol once chosen (`h1.rs`, `h2.rs`), the deadlines after
//! the handshake (`activity.rs`), accepting (`accept.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use tokio::sync::watch;

use super::accept::Shared;
use super::activity::Activity;
use super::gauge::ConnectionGauge;
use super::handshake::HandshakeFailure;
use super::per_client::ClientSlot;
use super::reclaim::Reclaim;
use super::tls_stream::ServerTlsStream;
use super::{ClientCertificate, ConnectionInfo, h2_watch};
use crate::metrics::ReasonLabels;
use crate::tls;

/// One accepted TCP connection, from TLS handshake to close.
pub(super) struct ConnectionTask {
    pub(super) shared: Arc<Shared>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// How the accept loop tells this connection, while parked, to close.
    pub(super) reclaim: Arc<Reclaim>,
}

impl ConnectionTask {
    fn count_handshake_failure(&self, reason: HandshakeFailure) {
        let metrics = &self.shared.live.load().state.metrics;
        metrics.tls_handshake_failures.get_or_create(&ReasonLabels { reason: reason.as_str() }).inc();
    }

    /// Serves one connection; `_slot` is its place among `max_connections` (and among its
    /// address's `max_connections_per_client`), given back when the connection ends.
    pub(super) async fn run(
        mut self,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        _slot: (tokio::sync::OwnedSemaphorePermit, Option<ClientSlot>),
    ) {
        // The certificate of the configuration current at accept time; requests then use the
        // configuration current when each arrives (a reload applies to open connections).
        let (server_tls, proxy_protocol, trusted_proxies) = {
            let live = self.shared.live.load();
            let listen = &live.state.config.listen;
            let from_balancer = listen.proxy_protocol_from.iter().any(|net| net.contains(peer.ip()));
            (live.server_tls.clone(), from_balancer, listen.trusted_proxies.clone())
        };
        // A balancer in front sends the client's address first (PROXY protocol v2): from
        // `proxy_protocol.from` it is required, from anyone else never read.
        let mut tcp = tcp;
        let mut client = peer;
        if proxy_protocol {
            let header = super::proxy_protocol::read_header(&mut tcp);
            match tokio::time::timeout(self.shared.settings.handshake_timeout, header).await {
                Ok(Ok(Some(address))) => client = address,
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "PROXY protocol header refused");
                    self.count_handshake_failure(HandshakeFailure::ProxyProtocol);
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "PROXY protocol header timed out");
                    self.count_handshake_failure(HandshakeFailure::Timeout);
                    return;
                }
            }
        }
        // Boxed, like the HTTP/2 connection below: a task's allocation is as large as its
        // largest state, and an idle connection should not pay for the handshake's.
        let handshake = Box::pin(ServerTlsStream::accept(tcp, server_tls, self.shared.settings.send));
        let tls = match tokio::time::timeout(self.shared.settings.handshake_timeout, handshake).await {
            // Boxed: moved between the serving and parked states, and 1.2 KB.
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => {
                let reason = HandshakeFailure::of(&e);
                tracing::debug!(%peer, error = %e, reason = reason.as_str(), "TLS handshake failed");
                self.count_handshake_failure(reason);
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                self.count_handshake_failure(HandshakeFailure::Timeout);
                return;
            }
        };
        let (info, h2) = {
            let h2 = tls.alpn_protocol() == Some(b"h2");
            let client_cert = tls.peer_certificates().and_then(|chain| chain.first()).map(|leaf| ClientCertificate {
                thumbprint: tls::certificate_thumbprint(leaf.as_ref()),
                der: leaf.as_ref().to_vec(),
            });
            // Trust is the TCP peer's (the proxy's), not the address it speaks for.
            let via_trusted_proxy = trusted_proxies
                .as_ref()
                .is_some_and(|trusted| trusted.trusts(peer.ip(), client_cert.as_ref().map(|c| &c.thumbprint)));
            let info = ConnectionInfo {
                peer: client,
                sni: tls.sni().map(str::to_string),
                client_cert,
                via_trusted_proxy,
                forwarded: crate::proxy::ForwardedHeaders::new(client),
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
}
