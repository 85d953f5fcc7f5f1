//! Integration-test harness for the gateway.
//!
//! - [`TestPki`] / [`ClientCert`]: server CA + server certificate (`gateway.test`,
//!   `localhost`, `127.0.0.1`) and a client CA, generated with rcgen into a temp dir.
//! - [`Signer`], [`claims`], [`now`]: JWT / DPoP minting with `jose::SigningKey`.
//! - [`JwksServer`]: HTTPS JWKS + authorization-server metadata with knobs and counters.
//! - [`Upstream`]: recording plain-HTTP/1.1 upstream.
//! - [`raw`]: raw HTTP/1.1 over TLS ([`RawResponse`], [`raw_exchange`], [`raw_request`], …) for
//!   requests a client library would not send as written, and connection-level tests.
//! - [`client`], [`gateway_url`]: a reqwest client that trusts only the test CA and
//!   resolves `gateway.test` to the gateway under test.
//!
//! All servers listen on ephemeral 127.0.0.1 ports and run as tokio tasks.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod gateway;
pub mod jwt;
pub mod logs;
pub mod oidc_provider;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod servers;
pub mod webdriver;

use std::net::SocketAddr;
use std::time::Duration;

pub use gateway::{
    AUDIENCE, Env, Options, assert_rejected, assert_rejected_with, challenge, challenges, start_minimal, write_file,
};
pub use jwt::{Signer, b64, claims, now, random_id};
pub use logs::{capture_logs, captured_logs};
pub use pki::{ClientCert, GATEWAY_HOST, TestPki};
pub use raw::{RawResponse, Tls, raw_connect, raw_exchange, raw_get, raw_request, read_response};
pub use servers::{JwksServer, Recorded, Upstream};

/// Installs the aws-lc-rs rustls provider as the process default (once; an already
/// installed provider is kept).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// `https://gateway.test:{port}{path}`.
pub fn gateway_url(addr: SocketAddr, path: &str) -> String {
    format!("https://{GATEWAY_HOST}:{}{path}", addr.port())
}

/// A reqwest client for the gateway at `gateway_addr`: trusts only the TestPki CA,
/// resolves `gateway.test` to `gateway_addr`, presents `identity` when given, no proxy,
/// 10 s timeout.
///
/// With `http2_only` the TLS handshake offers only ALPN `h2` (a rustls config built here
/// and handed to reqwest); otherwise it offers `h2` and `http/1.1`. Assert
/// `resp.version()` when the protocol matters: a server that ignores ALPN still gets
/// HTTP/1.1.
pub fn client(
    pki: &TestPki,
    gateway_addr: SocketAddr,
    identity: Option<&ClientCert>,
    http2_only: bool,
) -> reqwest::Client {
    init();
    let mut builder =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).resolve(GATEWAY_HOST, gateway_addr);
    if http2_only {
        // reqwest's own `http2_prior_knowledge()` would also skip HTTP/1.1 fallback
        // entirely; a preconfigured rustls config keeps protocol choice to ALPN.
        let tls = pki.rustls_client_config(identity, &[b"h2"]);
        builder = builder.tls_backend_preconfigured(tls);
    } else {
        let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).expect("CA PEM");
        builder = builder.tls_certs_only([ca]);
        if let Some(id) = identity {
            builder = builder.identity(id.identity());
        }
    }
    builder.build().expect("reqwest client")
}
