//! Starting, reloading and stopping a gateway. Split by job:
//!
//! - [`build`]: everything compiled from a [`Config`] — certificates, key caches, upstream
//!   clients, the DPoP runtime, the routes as served — without binding anything
//!   (`check-config` runs its file checks);
//! - [`run`]: binding the listeners, serving, reloading ([`GatewayHandle::reload`]) and
//!   draining.

pub mod build;
pub mod run;

use std::net::SocketAddr;

use crate::auth;
use crate::auth::jwks_fetch::FetchError;
use crate::tls::TlsError;
pub use build::{check_files, replay_window};
pub use run::{GatewayHandle, start};

/// Why the gateway could not start. Each message names the file or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("issuer {issuer}: {source}")]
    Issuer { issuer: String, source: FetchError },
    #[error("issuer {issuer}: {source}")]
    Introspection { issuer: String, source: auth::token::introspection::IntrospectionSetupError },
    #[error("route {route}: {source}")]
    Upstream { route: String, source: TlsError },
    #[error("dpop: {0}")]
    NonceSecret(#[from] auth::dpop::nonce::NonceSecretError),
    #[error("{0}")]
    ReplayStore(#[from] auth::dpop::replay_redis::RedisConfigError),
    #[error(transparent)]
    Login(#[from] crate::login::LoginSetupError),
    #[error("cannot listen on {address}: {source} (is another process using it?)")]
    Bind { address: SocketAddr, source: std::io::Error },
}

/// Why a reload was refused; the running configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0} changed: that takes a restart; the running configuration keeps serving")]
    NeedsRestart(&'static str),
}
