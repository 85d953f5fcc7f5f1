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
//! 1. [`server`] accepts TCP, finishes TLS and computes the client certificate's SHA-256
//!    thumbprint once per connection;
//! 2. hyper parses HTTP/1.1 or HTTP/2; [`gateway`] checks Host against SNI and the path,
//!    and [`router`] picks the most specific route;
//! 3. [`auth`] extracts the credential, validates the token ([`auth::token`], keys from
//!    [`auth::jwks`], results cached), checks its binding ([`auth::binding`]) and scopes;
//! 4. [`proxy`] rewrites headers and streams the request upstream and the answer back.
//!
//! Every refusal is a [`rejection::Rejection`], turned into a response in one place.

pub mod admin;
pub mod answer;
pub mod auth;
pub mod body;
pub mod config;
pub mod demo;
pub mod diagnostics;
pub mod jose;
pub mod lifecycle;
pub mod metrics;
pub mod pipeline;
pub mod principal;
pub mod proxy;
pub mod router;
pub mod secret;
pub mod server;
pub mod tls;
pub mod uri;

pub use lifecycle::{GatewayHandle, ReloadError, StartError, check_files, start};
