//! What the gateway knows about a client connection, computed once after the TLS handshake
//! (by `server`) and shared by every request on it: the exchange's connection facts.
//!
//! Its `Debug` shows no secret: the remembered token sits in a [`crate::secret::Secret`].

use std::net::SocketAddr;

use crate::auth::token::TokenMemo;
use crate::proxy::ForwardedHeaders;

/// The verified client certificate of a connection (or, behind a trusted proxy, of a
/// request).
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
    /// The peer is a trusted proxy (`listen.trusted_proxies`): each request's RFC 9440
    /// `Client-Cert` is the client's certificate, and `client_cert` (the proxy's own) is
    /// never used for binding.
    pub via_trusted_proxy: bool,
    /// The forwarding headers of this connection's requests, formatted once.
    pub forwarded: ForwardedHeaders,
    /// The last access token validated on this connection (cleared when it parks).
    pub token_memo: TokenMemo,
}
