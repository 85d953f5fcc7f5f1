//! Forwarding an allowed request upstream and streaming the answer back.
//!
//! [`headers`] decides which request and response headers travel (hop-by-hop, spoofable and
//! forwarding headers are replaced); [`pool`] keeps the keep-alive HTTP/1.1 connections to
//! each upstream. Bodies stream through without buffering; the request body is cut off at
//! the configured size.

pub mod headers;
pub mod pool;

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::auth::credentials::DPOP;
use crate::auth::token::ValidatedToken;
use crate::body::{BoxError, ProxyBody};
use crate::config::{ForwardToken, Route};
use crate::rejection::Rejection;
use crate::tls::{self, TlsError};

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

/// How long the upstream took to answer with its response head (a response extension).
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTime(pub Duration);

/// What the connection and the authentication step contribute to the forwarded request.
pub struct ForwardContext<'a> {
    /// The connection's forwarding headers, formatted once per connection.
    pub forwarded: &'a ForwardedHeaders,
    /// DER of the connection's client certificate, for RFC 9440 `Client-Cert`.
    pub client_cert_der: Option<&'a [u8]>,
    /// Whether something vouches for that certificate: its chain was verified against
    /// `client_ca`, or the access token is bound to it. A bare self-signed certificate is
    /// never forwarded — the upstream would take its subject on trust.
    pub client_cert_trusted: bool,
    pub token: Option<&'a ValidatedToken>,
    /// The verified DPoP key thumbprint, for DPoP requests.
    pub dpop_jkt: Option<[u8; 32]>,
    pub max_body_bytes: u64,
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
    ) -> Result<Response<ProxyBody>, Rejection> {
        let (mut parts, body) = request.into_parts();
        let original_host = request_host(&parts.uri, &parts.headers).ok().flatten().map(str::to_string);
        parts.uri = self.upstream_uri(&parts.uri)?;
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        headers::prepare_request(headers);
        ctx.forwarded.apply(headers, original_host.as_deref());
        if route.forward_client_cert && ctx.client_cert_trusted {
            if let Some(der) = ctx.client_cert_der {
                if let Ok(v) = HeaderValue::from_str(&format!(":{}:", base64_standard(der))) {
                    headers.insert(CLIENT_CERT, v);
                }
            }
        }
        if ctx.token.is_some() {
            forward_token(headers, route.forward_token);
        }
        if route.identity_headers {
            if let Some(token) = ctx.token {
                set_identity(headers, token, ctx.dpop_jkt.as_ref());
            }
        }
        let body = Limited::new(body, usize::try_from(ctx.max_body_bytes).unwrap_or(usize::MAX))
            .map_err(BoxError::from)
            .boxed();
        let request = Request::from_parts(parts, body);
        let sent = std::time::Instant::now();
        let response = match self.pool.send(request).await {
            Err(SendError::Timeout) => return Err(Rejection::UpstreamTimeout),
            Err(SendError::Http(e)) if is_body_limit(&e) => return Err(Rejection::PayloadTooLarge),
            Err(e) => {
                tracing::warn!(route = %route.name, error = %crate::diagnostics::error_chain(&e), "upstream request failed");
                return Err(Rejection::UpstreamUnavailable);
            }
            Ok(response) => response,
        };
        let (mut parts, body) = response.into_parts();
        parts.extensions.insert(UpstreamTime(sent.elapsed()));
        headers::prepare_response(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
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

/// The host the client asked for — the HTTP/2 `:authority`, else `Host` — without the port.
/// `Err(())` when it is not a plain host name or IP literal (with an optional port): such a
/// value must never be copied into forwarded headers.
#[allow(clippy::result_unit_err)]
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<Option<&'a str>, ()> {
    let authority = match uri.authority() {
        Some(a) => a.as_str(),
        None => match headers.get(header::HOST) {
            None => return Ok(None),
            Some(v) => v.to_str().map_err(|_| ())?,
        },
    };
    let valid = !authority.is_empty()
        && authority.len() <= 255
        && authority.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']'));
    if !valid {
        return Err(());
    }
    // `api.example.com.` (fully qualified) is the same host as `api.example.com`.
    let host = strip_port(authority);
    Ok(Some(host.strip_suffix('.').unwrap_or(host)))
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_once(']').map_or(authority, |(h, _)| &authority[..h.len() + 1]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// How the access token travels on (see [`ForwardToken`]).
fn forward_token(headers: &mut HeaderMap, mode: ForwardToken) {
    match mode {
        ForwardToken::AsIs => {}
        ForwardToken::Strip => {
            headers.remove(header::AUTHORIZATION);
            headers.remove(DPOP);
        }
        ForwardToken::Bearer => {
            headers.remove(DPOP);
            let rewritten = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| !scheme.eq_ignore_ascii_case("bearer"))
                .and_then(|(_, token)| HeaderValue::from_str(&format!("Bearer {}", token.trim_start())).ok());
            if let Some(value) = rewritten {
                headers.insert(header::AUTHORIZATION, value);
            }
        }
    }
}

fn set_identity(headers: &mut HeaderMap, token: &ValidatedToken, dpop_jkt: Option<&[u8; 32]>) {
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

fn is_body_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
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

    #[test]
    fn host_is_read_without_port() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("Gateway.test:8443"));
        let path = Uri::from_static("/x");
        assert_eq!(request_host(&path, &h), Ok(Some("Gateway.test")));
        let ipv6 = Uri::from_static("https://[::1]:8443/x");
        assert_eq!(request_host(&ipv6, &h), Ok(Some("[::1]")));
        let absolute = Uri::from_static("https://a.test/x");
        assert_eq!(request_host(&absolute, &HeaderMap::new()), Ok(Some("a.test")));
        assert_eq!(request_host(&path, &HeaderMap::new()), Ok(None));
    }

    #[test]
    fn trailing_dot_hosts_are_the_same_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("partner.test.:8443"));
        assert_eq!(request_host(&Uri::from_static("/x"), &h), Ok(Some("partner.test")));
    }

    #[test]
    fn hosts_that_could_inject_into_headers_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a\", for=6.6.6.6"));
        assert_eq!(request_host(&Uri::from_static("/x"), &h), Err(()));
        h.insert(header::HOST, HeaderValue::from_static("a b"));
        assert_eq!(request_host(&Uri::from_static("/x"), &h), Err(()));
    }
}
