//! The listener: TCP, then TLS ([`tls_stream`], with a handshake deadline), then HTTP/1.1
//! or HTTP/2 as ALPN decided, each connection in its own task, each request handed to the
//! pipeline ([`crate::pipeline::GatewayState::handle`]). Facts about the connection — peer
//! address, SNI, the client certificate and its SHA-256 thumbprint — are computed once,
//! right after the handshake, and shared by every request on it (the type,
//! [`ConnectionInfo`], belongs to the pipeline's exchange).
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
//!
//! ## Where it is
//! - `accept.rs`: [`serve`] — the accept loop, connection slots, the drain at shutdown;
//! - `connection.rs`: one connection — handshake under its deadline, the [`ConnectionInfo`],
//!   the service, the choice of HTTP/1.1 or HTTP/2;
//! - `h1.rs`: HTTP/1.1 and parking; `h2.rs`: HTTP/2 (with `h2_watch.rs`, responses the
//!   client stops reading);
//! - `activity.rs`: the first-request, idle and park deadlines; `gauge.rs`: the connection
//!   gauge; `handshake.rs`: why a TLS handshake failed (the reasons of
//!   `fapi_gateway_tls_handshake_failures_total`); `reclaim.rs`: idle keep-alive connections closed, oldest first, when every
//!   connection slot is taken; `per_client.rs`: the per-address connection cap;
//! - [`tls_stream`]: TLS on rustls's unbuffered API, which reads the SNI with
//!   [`client_hello`] before rustls sees a byte.
//!
//! This file holds only the settings and constants shared with the rest of the gateway.

mod accept;
mod activity;
/// Public for the fuzz target (`fuzz/fuzz_targets/client_hello.rs`), not as an API.
pub mod client_hello;
mod connection;
mod gauge;
mod h1;
mod h2;
mod h2_watch;
mod handshake;
mod per_client;
mod proxy_protocol;
mod reclaim;
/// Public for the fuzz target (`fuzz/fuzz_targets/http1_framing.rs`), not as an API.
pub mod rewind;
mod send_pace;
pub mod tls_stream;

use std::time::Duration;

pub use accept::{http1_builder, serve};
/// Public for the fuzz target (`fuzz/fuzz_targets/http1_framing.rs`), not as an API.
pub use h1::allows_reuse;
pub use send_pace::SendPolicy;

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
    /// Connections one client IP address may hold at once; more are closed at accept.
    pub max_connections_per_client: Option<usize>,
    /// The pace a client must keep while a response waits for it to read.
    pub send: SendPolicy,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// `SO_SNDBUF` for client sockets; `None` leaves the kernel's autotuning.
    pub socket_send_buffer: Option<usize>,
}

/// An HTTP/1.1 keep-alive connection with no request in flight for this long is parked.
pub const PARK_AFTER: Duration = Duration::from_secs(1);
/// With more than this share (1/20) of `max_connections` open — 1 000 of the default
/// 20 000 — HTTP/1.1 connections park as soon as their request is answered: memory then
/// matters more than the few hundred nanoseconds it costs to set up hyper's connection
/// state again for the next request.
pub const PARK_AT_ONCE_DIVISOR: usize = 20;
