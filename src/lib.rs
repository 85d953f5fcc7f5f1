//! # fapi-gateway
//!
//! A TLS-terminating reverse proxy that makes a stolen access token useless: every request
//! on a protected route must carry a valid JWT access token (RFC 9068) that is bound to the
//! caller — to the client certificate of the connection (RFC 8705) or to a DPoP key proven
//! on every request (RFC 9449) — and carry the route's
//! scopes. Everything else is answered by the gateway with the RFC 6750 challenge and
//! never reaches the upstream.
//!
//! ## The life of a request
//! 1. [`server`] accepts TCP, finishes TLS and computes the connection's facts once
//!    ([`pipeline::ConnectionInfo`]: peer, SNI, the client certificate's SHA-256);
//! 2. hyper parses HTTP/1.1 or HTTP/2 and hands the request to [`pipeline`], where it is
//!    decided in five phases over one [`pipeline::Exchange`]: canonicalise (host against
//!    SNI, canonical path, [`uri`]) → route ([`router`]) → admit ([`auth`] turns the token,
//!    its binding and scopes into a [`principal::Principal`], or an [`answer::Answer`]) →
//!    forward ([`proxy`] streams the request upstream as the principal) → finish (nonce
//!    headers, metrics, access log);
//! 3. every refusal is an [`answer::Rejection`], turned into a response in one place.
//!
//! Imports point one way (leaves such as [`jose`], [`uri`], [`secret`] at the bottom,
//! [`config`] as plain data above them, [`lifecycle`] at the top); `tests/architecture.rs`
//! checks it. The README's "Architecture" section has the full map.

pub mod admin;
pub mod answer;
pub mod auth;
pub mod body;
pub mod config;
pub mod demo;
pub mod diagnostics;
pub mod jose;
pub mod lifecycle;
pub mod log_writer;
pub mod login;
pub mod metrics;
pub mod pipeline;
pub mod principal;
pub mod proxy;
pub mod router;
pub mod secret;
pub mod server;
pub mod tls;
pub mod uri;
pub mod write_batch;

pub use lifecycle::{GatewayHandle, ReloadError, StartError, check_files, start};
