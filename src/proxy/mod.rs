//! Forwarding an admitted request upstream and streaming the answer back: the pipeline's
//! forward phase.
//!
//! [`headers`] decides which request and response headers travel (hop-by-hop, spoofable and
//! forwarding headers are replaced); [`pool`] keeps the keep-alive HTTP/1.1 connections to
//! each upstream. Bodies stream through without buffering; the request body is cut off at
//! the configured size.
//!
//! The proxy knows nothing of tokens or proofs: it is handed a [`Principal`] and sends the
//! credential and identity headers that says (it never imports `auth`).

pub mod headers;
pub mod pool;

use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::answer::Rejection;
use crate::body::{BoxError, ProxyBody};
use crate::config::Route;
use crate::principal::{DPOP, Identity, Principal, UpstreamCredential};
use crate::tls::{TlsError, client as tls};

pub use headers::{
    CLIENT_CERT, CLIENT_CERT_CHAIN, ForwardedHeaders, X_FAPI_CLIENT_ID, X_FAPI_DPOP_JKT, X_FAPI_SCOPES, X_FAPI_SUBJECT,
};
use pool::{ConnectionPool, SendError, UpstreamTls};

/// One route's upstream: where requests go and the pooled connections that take them.
pub struct Upstream {
    pool: ConnectionPool,
    /// The upstream URL's path without its trailing slash, prepended to request paths.
    base_path: String,
}

/// The upstream's answer, and how long it took to send its response head.
#[derive(Debug)]
pub struct Upstreamed {
    pub response: Response<ProxyBody>,
    pub upstream_time: Duration,
}

/// What the connection and the admit phase contribute to the forwarded request.
#[derive(Debug)]
pub struct ForwardContext<'a> {
    /// The connection's forwarding headers, formatted once per connection.
    pub forwarded: &'a ForwardedHeaders,
    /// The host the client named (canonical form), for `X-Forwarded-Host` / `Forwarded`.
    pub host: Option<&'a str>,
    /// DER of the connection's client certificate, for RFC 9440 `Client-Cert`.
    pub client_cert_der: Option<&'a [u8]>,
    /// Whether something vouches for that certificate: its chain was verified against
    /// `client_ca`, or the access token is bound to it. A bare self-signed certificate is
    /// never forwarded — the upstream would take its subject on trust.
    pub client_cert_trusted: bool,
    pub principal: &'a Principal,
    pub max_body_bytes: u64,
    /// `listen.strip_headers`.
    pub strip_headers: &'a [HeaderName],
    /// Every login's session cookie name: these and the login-transaction cookies never go
    /// upstream, on any route (they are the gateway's credentials, not the upstream's).
    pub login_cookies: &'a [String],
    /// A session route: the CSRF header does not go upstream either (the upstream gets the
    /// session's token instead).
    pub session_route: bool,
    /// On a session route: a second proof when the upstream answers `use_dpop_nonce`; a
    /// request without a body is then sent once more with it.
    pub upstream_proofs: Option<&'a crate::login::UpstreamProofs>,
}

impl Upstream {
    pub fn new(route: &Route) -> Result<Self, TlsError> {
        let uri = &route.upstream;
        // Built (and `upstream_ca` read) even for an http:// upstream, so that an unreadable
        // CA file is reported at start-up whatever the scheme.
        let mut config = tls::client_config(route.upstream_ca.as_deref())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = (uri.scheme_str() == Some("https")).then(|| UpstreamTls { config: std::sync::Arc::new(config) });
        let connect_timeout = route.timeout.min(Duration::from_secs(10));
        let pool = ConnectionPool::new(uri, tls, connect_timeout, route.timeout)
            .map_err(|reason| TlsError::Certificates { path: Default::default(), reason })?;
        Ok(Upstream { pool, base_path: uri.path().trim_end_matches('/').to_string() })
    }

    /// Forwards `request` and returns the upstream's response, streaming both bodies.
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        route: &Route,
        ctx: ForwardContext<'_>,
    ) -> Result<Upstreamed, Rejection> {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.upstream_uri(&parts.uri)?;
        let headers = &mut parts.headers;
        if parts.version == Version::HTTP_2 {
            headers::join_cookie_crumbs(headers);
        }
        parts.version = Version::HTTP_11;
        headers::prepare_request(headers);
        headers::strip_configured(headers, ctx.strip_headers);
        if ctx.session_route {
            headers.remove(crate::login::runtime::CSRF_HEADER);
        }
        if !ctx.login_cookies.is_empty() {
            headers::strip_login_cookies(headers, ctx.login_cookies);
        }
        ctx.forwarded.apply(headers, ctx.host);
        if route.forward_client_cert
            && ctx.client_cert_trusted
            && let Some(der) = ctx.client_cert_der
            && let Ok(v) = HeaderValue::from_str(&format!(":{}:", base64_standard(der)))
        {
            headers.insert(CLIENT_CERT, v);
        }
        send_credential(headers, &ctx.principal.upstream_credential);
        if route.identity_headers
            && let Some(identity) = &ctx.principal.identity
        {
            set_identity(headers, identity, ctx.principal.binding.dpop_jkt.as_ref());
        }
        // A bodiless request on a session route may be sent again with a nonce'd proof.
        let replayable = ctx.upstream_proofs.is_some() && headers::has_no_body(&parts.method, &parts.headers);
        let resend = replayable.then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
        let body = Limited::new(body, usize::try_from(ctx.max_body_bytes).unwrap_or(usize::MAX))
            .map_err(|e: BoxError| if e.is::<LengthLimitError>() { e } else { Box::new(ClientBodyError(e)) })
            .boxed();
        let request = Request::from_parts(parts, body);
        let sent = Instant::now();
        let response = match self.pool.send(request).await {
            Err(SendError::Timeout) => return Err(Rejection::UpstreamTimeout),
            Err(SendError::Http(e)) if caused_by::<LengthLimitError>(&e) => return Err(Rejection::PayloadTooLarge),
            Err(SendError::Http(e)) if caused_by::<ClientBodyError>(&e) => {
                tracing::debug!(route = %route.name, error = %crate::diagnostics::error_chain(&e), "request body failed");
                return Err(Rejection::BadRequest {
                    reason: "bad_request_body",
                    description: "the request body is malformed or ended early".into(),
                });
            }
            Err(e) => {
                tracing::warn!(route = %route.name, error = %crate::diagnostics::error_chain(&e), "upstream request failed");
                return Err(Rejection::UpstreamUnavailable);
            }
            Ok(response) => response,
        };
        let response = match (resend, ctx.upstream_proofs, headers::asked_nonce(&response)) {
            (Some((method, uri, mut headers)), Some(proofs), Some(nonce)) => match proofs.with_nonce(&nonce) {
                Some(proof) => {
                    headers.insert(DPOP, proof);
                    let mut again = Request::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
                    *again.method_mut() = method;
                    *again.uri_mut() = uri;
                    *again.headers_mut() = headers;
                    match self.pool.send(again).await {
                        Ok(response) => response,
                        Err(SendError::Timeout) => return Err(Rejection::UpstreamTimeout),
                        Err(e) => {
                            tracing::warn!(route = %route.name, error = %crate::diagnostics::error_chain(&e), "upstream request failed");
                            return Err(Rejection::UpstreamUnavailable);
                        }
                    }
                }
                None => response,
            },
            (None, Some(proofs), Some(nonce)) => {
                // Not replayable: keep the nonce for the next request.
                proofs.with_nonce(&nonce);
                response
            }
            _ => response,
        };
        let upstream_time = sent.elapsed();
        let (mut parts, body) = response.into_parts();
        headers::prepare_response(&mut parts.headers);
        if !ctx.login_cookies.is_empty() {
            headers::drop_login_set_cookies(&mut parts.headers, ctx.login_cookies);
        }
        Ok(Upstreamed { response: Response::from_parts(parts, body), upstream_time })
    }

    /// The origin-form URI for the upstream: the request's path and query, behind the
    /// upstream URL's own path.
    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, Rejection> {
        let bad = |_| Rejection::BadRequest { reason: "bad_path", description: "the request path is invalid".into() };
        let path_and_query = match uri.path_and_query() {
            Some(pq) if self.base_path.is_empty() => pq.clone(),
            Some(pq) => format!("{}{}", self.base_path, pq.as_str()).parse().map_err(bad)?,
            None if self.base_path.is_empty() => http::uri::PathAndQuery::from_static("/"),
            None => format!("{}/", self.base_path).parse().map_err(bad)?,
        };
        Ok(Uri::from(path_and_query))
    }

    /// Idle upstream connections of this route (for tests and diagnostics).
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_connections()
    }
}

/// Puts the principal's credential in place of the client's `Authorization` and `DPoP`.
fn send_credential(headers: &mut HeaderMap, credential: &UpstreamCredential) {
    match credential {
        UpstreamCredential::AsSent => {}
        UpstreamCredential::Strip => {
            headers.remove(header::AUTHORIZATION);
            headers.remove(DPOP);
        }
        UpstreamCredential::Replace { authorization, dpop } => {
            headers.insert(header::AUTHORIZATION, authorization.expose().clone());
            match dpop {
                Some(proof) => headers.insert(DPOP, proof.expose().clone()),
                None => headers.remove(DPOP),
            };
        }
    }
}

fn set_identity(headers: &mut HeaderMap, token: &Identity, dpop_jkt: Option<&[u8; 32]>) {
    let mut put = |name: HeaderName, value: Option<&str>| {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    };
    put(X_FAPI_SUBJECT, token.subject.as_deref());
    put(X_FAPI_CLIENT_ID, token.client_id.as_deref());
    put(X_FAPI_SCOPES, Some(&token.scopes.join(" ")));
    put(X_FAPI_DPOP_JKT, dpop_jkt.map(|jkt| crate::jose::b64url_encode(jkt)).as_deref());
}

fn base64_standard(der: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// A failure reading the client's request body — malformed chunked framing (bad chunk
/// sizes, bare LF, overflow), or a client gone mid-upload: the client's fault, never
/// counted or logged as an upstream failure.
#[derive(Debug, thiserror::Error)]
#[error("reading the client's request body failed")]
struct ClientBodyError(#[source] BoxError);

/// Whether `error` or one of its sources is a `T`.
fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<T>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn client_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("DPoP client-token"));
        h.insert(DPOP, HeaderValue::from_static("client-proof"));
        h
    }

    #[test]
    fn the_principals_credential_replaces_the_clients() {
        let mut h = client_headers();
        send_credential(&mut h, &UpstreamCredential::AsSent);
        assert_eq!(h, client_headers());

        send_credential(&mut h, &UpstreamCredential::Strip);
        assert!(!h.contains_key(header::AUTHORIZATION) && !h.contains_key(DPOP));

        let mut h = client_headers();
        let authorization = Secret::new(HeaderValue::from_static("Bearer client-token"));
        send_credential(&mut h, &UpstreamCredential::Replace { authorization, dpop: None });
        assert_eq!(h[header::AUTHORIZATION], "Bearer client-token");
        assert!(!h.contains_key(DPOP));

        let mut h = client_headers();
        let authorization = Secret::new(HeaderValue::from_static("DPoP session-token"));
        let dpop = Some(Secret::new(HeaderValue::from_static("fresh-proof")));
        send_credential(&mut h, &UpstreamCredential::Replace { authorization, dpop });
        assert_eq!(h[header::AUTHORIZATION], "DPoP session-token");
        assert_eq!(h[DPOP], "fresh-proof");
    }
}
