//! Who a request was proven to come from, and what the upstream receives for it.
//!
//! The pipeline's admit phase turns whatever it checked — an access token and its binding
//! today, a browser session with the login mode — into a [`Principal`]; the forward phase
//! reads only this. So the proxy never sees tokens, proofs or sessions: it copies the
//! identity into `X-FAPI-*` headers when the route asks for it and sends the
//! [`UpstreamCredential`] the admit phase chose (the route's `forward_token`).
//!
//! A leaf module: plain data, imported by the pipeline, the authentication step and the
//! proxy alike.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::secret::Secret;

/// RFC 9449 §4.1: the proof header (name matched case-insensitively by `http`), one of the
/// two credential headers an [`UpstreamCredential`] replaces.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");

/// The caller as its access token describes it: the claims an upstream may be told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub jti: Option<String>,
}

impl Identity {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// What the caller proved about holding the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProvenBinding {
    /// The token is bound to a client certificate (RFC 8705 `cnf."x5t#S256"`) and it is
    /// this connection's: a certificate the upstream may be shown.
    pub certificate: bool,
    /// The RFC 7638 thumbprint of the DPoP key whose proof was verified (RFC 9449).
    pub dpop_jkt: Option<[u8; 32]>,
}

/// What goes upstream in place of the client's `Authorization` and `DPoP` headers.
#[derive(Debug, Clone, Default)]
pub enum UpstreamCredential {
    /// Both as the client sent them (public routes, `forward_token: as_is`).
    #[default]
    AsSent,
    /// Neither (`forward_token: strip`).
    Strip,
    /// This `Authorization` value and this `DPoP` header (or none): `forward_token:
    /// bearer` rewrites the scheme; the login mode will send a session's DPoP-bound token
    /// with a fresh proof.
    Replace { authorization: Secret<HeaderValue>, dpop: Option<Secret<HeaderValue>> },
}

/// The admitted caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None` on public routes: nothing was checked.
    pub identity: Option<Arc<Identity>>,
    pub binding: ProvenBinding,
    pub upstream_credential: UpstreamCredential,
}

impl Principal {
    /// The caller of a public route: unchecked, its headers passed on as sent.
    pub const fn anonymous() -> Self {
        Principal {
            identity: None,
            binding: ProvenBinding { certificate: false, dpop_jkt: None },
            upstream_credential: UpstreamCredential::AsSent,
        }
    }
}
