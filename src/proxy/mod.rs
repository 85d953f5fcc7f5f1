//! Forwarding an allowed request upstream and streaming the answer back.
//!
//! Header hygiene (RFC 9110 §7.6.1, RFC 9440 §2.4, RFC 9700 §4.13): hop-by-hop headers are
//! removed in both directions; client-sent `Client-Cert`, `Client-Cert-Chain` and the
//! gateway's own identity headers are removed on every route so clients cannot spoof them;
//! `X-Forwarded-For/Proto/Host` and `Forwarded` are set by the gateway (it terminates the
//! client's TLS, so whatever the client sent in them is replaced). Bodies stream through
//! without buffering; the request body is cut off at the configured size.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::auth::credentials::DPOP;
use crate::auth::token::ValidatedToken;
use crate::body::{BoxError, ProxyBody};
use crate::config::{ForwardToken, Route};
use crate::rejection::Rejection;
use crate::tls::{self, TlsError};

pub const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
pub const CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
pub const X_FAPI_SUBJECT: HeaderName = HeaderName::from_static("x-fapi-subject");
pub const X_FAPI_CLIENT_ID: HeaderName = HeaderName::from_static("x-fapi-client-id");
pub const X_FAPI_SCOPES: HeaderName = HeaderName::from_static("x-fapi-scopes");
pub const X_FAPI_DPOP_JKT: HeaderName = HeaderName::from_static("x-fapi-dpop-jkt");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// Headers only the gateway may set; removed from every incoming request.
const GATEWAY_OWNED: [HeaderName; 6] =
    [X_FAPI_DPOP_JKT, CLIENT_CERT, CLIENT_CERT_CHAIN, X_FAPI_SUBJECT, X_FAPI_CLIENT_ID, X_FAPI_SCOPES];

type UpstreamClient = Client<HttpsConnector<HttpConnector>, ProxyBody>;

/// The pooled keep-alive client of one route and where it sends requests.
pub struct Upstream {
    client: UpstreamClient,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The upstream URL's path without its trailing slash, prepended to request paths.
    base_path: String,
    timeout: Duration,
}

/// How long the upstream took to answer with its response head (a response extension).
#[derive(Clone, Copy, Debug)]
pub struct UpstreamTime(pub Duration);

/// What the connection and the authentication step contribute to the forwarded request.
pub struct ForwardContext<'a> {
    pub peer: SocketAddr,
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
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(route.timeout.min(Duration::from_secs(10))));
        let tls = tls::client_config(route.upstream_ca.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let uri = &route.upstream;
        Ok(Upstream {
            client,
            scheme: uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP),
            authority: uri.authority().cloned().ok_or_else(|| TlsError::Certificates {
                path: Default::default(),
                reason: "upstream URL has no host".into(),
            })?,
            base_path: uri.path().trim_end_matches('/').to_string(),
            timeout: route.timeout,
        })
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
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = self.upstream_uri(path_and_query)?;
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        remove_gateway_owned(headers);
        headers.remove(header::HOST);
        set_forwarded(headers, ctx.peer, original_host.as_deref());
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
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => return Err(Rejection::UpstreamTimeout),
            Ok(Err(e)) if is_body_limit(&e) => return Err(Rejection::PayloadTooLarge),
            Ok(Err(e)) => {
                tracing::warn!(route = %route.name, error = %crate::diagnostics::error_chain(&e), "upstream request failed");
                return Err(Rejection::UpstreamUnavailable);
            }
            Ok(Ok(response)) => response,
        };
        let (mut parts, body) = response.into_parts();
        parts.extensions.insert(UpstreamTime(sent.elapsed()));
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body.map_err(BoxError::from).boxed()))
    }

    fn upstream_uri(&self, path_and_query: &str) -> Result<Uri, Rejection> {
        let pq = if self.base_path.is_empty() {
            path_and_query.to_string()
        } else {
            format!("{}{}", self.base_path, path_and_query)
        };
        Uri::builder().scheme(self.scheme.clone()).authority(self.authority.clone()).path_and_query(pq).build().map_err(
            |_| Rejection::BadRequest { reason: "bad_path", description: "the request path is invalid".into() },
        )
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

/// Removes gateway-owned headers the client sent, including spellings with `_` for `-`
/// (`x_fapi_subject`), which CGI-style upstreams read as the same header.
fn remove_gateway_owned(headers: &mut HeaderMap) {
    for name in &GATEWAY_OWNED {
        headers.remove(name);
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_'))
        .filter(|name| {
            let dashed = name.as_str().replace('_', "-");
            GATEWAY_OWNED.iter().any(|owned| owned.as_str() == dashed)
                || dashed.starts_with("x-forwarded-")
                || dashed.starts_with("proxy-")
                || matches!(dashed.as_str(), "forwarded" | "x-real-ip" | "authorization" | "dpop")
        })
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_once(']').map_or(authority, |(h, _)| &authority[..h.len() + 1]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Removes `Connection` and the headers it lists, and the fixed hop-by-hop set.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in
        [header::CONNECTION, KEEP_ALIVE, header::TE, header::TRAILER, header::TRANSFER_ENCODING, header::UPGRADE]
    {
        headers.remove(name);
    }
    let proxy_headers: Vec<HeaderName> =
        headers.keys().filter(|name| name.as_str().starts_with("proxy-")).cloned().collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

/// Replaces every client-sent forwarding header with the gateway's own.
fn set_forwarded(headers: &mut HeaderMap, peer: SocketAddr, host: Option<&str>) {
    let client_sent: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-forwarded-") || *name == X_REAL_IP)
        .cloned()
        .collect();
    for name in client_sent {
        headers.remove(name);
    }
    let ip = peer.ip().to_string();
    let for_value = if peer.is_ipv6() { format!("\"[{ip}]\"") } else { ip.clone() };
    let mut forwarded = format!("for={for_value};proto=https");
    if let Ok(v) = HeaderValue::from_str(&ip) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    if let Some(host) = host {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(X_FORWARDED_HOST, v);
            forwarded.push_str(&format!(";host=\"{host}\""));
        }
    }
    match HeaderValue::from_str(&forwarded) {
        Ok(v) => {
            headers.insert(FORWARDED, v);
        }
        Err(_) => {
            headers.remove(FORWARDED);
        }
    }
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
    fn hop_by_hop_headers_and_connection_listed_ones_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-anything", HeaderValue::from_static("x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_headers_replace_client_values() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert("x-forwarded-port", HeaderValue::from_static("1"));
        h.insert("x-forwarded-prefix", HeaderValue::from_static("/admin"));
        h.insert(X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        set_forwarded(&mut h, "127.0.0.1:5000".parse().unwrap(), Some("api.test"));
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "api.test");
        assert_eq!(h[FORWARDED], "for=127.0.0.1;proto=https;host=\"api.test\"");
        assert!(
            !h.contains_key("x-forwarded-port") && !h.contains_key("x-forwarded-prefix") && !h.contains_key(X_REAL_IP)
        );
        set_forwarded(&mut h, "[::1]:5000".parse().unwrap(), None);
        assert_eq!(h[FORWARDED], "for=\"[::1]\";proto=https");
    }

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
    fn underscore_spellings_of_gateway_headers_are_removed() {
        let mut h = HeaderMap::new();
        for name in ["x_fapi_subject", "client_cert", "x_forwarded_for", "x_real_ip", "proxy_authorization", "x_custom"]
        {
            h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("spoofed"));
        }
        h.insert(X_FAPI_SUBJECT, HeaderValue::from_static("spoofed"));
        remove_gateway_owned(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x_custom"]);
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
