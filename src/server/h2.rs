//! HTTP/2 on one connection ([`ConnectionTask::serve_h2`]): hyper serves it; around it, the
//! first-request and idle deadlines hyper has no timer for, graceful shutdown, and the
//! cut-off of responses the client stops reading (`h2_watch.rs`).
//!
//! Not here: the deadline logic itself (`activity.rs`); HTTP/2 connections are never parked.

use std::convert::Infallible;
use std::net::SocketAddr;

use hyper_util::rt::TokioIo;

use super::activity::{Activity, Verdict};
use super::connection::ConnectionTask;
use super::h2_watch;
use super::tls_stream::ServerTlsStream;

impl ConnectionTask {
    pub(super) async fn serve_h2<S>(
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
        let stall_period = self.shared.settings.send.timeout;
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
                        tracing::debug!(%peer, "HTTP/2 responses unread for send_timeout; closing");
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
}
