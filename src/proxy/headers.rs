//! Header hygiene for forwarded requests and returned responses (RFC 9110 §7.6.1, RFC 9440
//! §2.4, RFC 9700 §4.13).
//!
//! Requests: hop-by-hop headers (the fixed set, every `Proxy-*`, whatever `Connection`
//! lists) go; headers only the gateway may set (`Client-Cert*`, `X-Fapi-*`), the
//! forwarding headers (`X-Forwarded-*`, `X-Real-Ip`, `Forwarded`), other vendors' trusted
//! headers (certificates, client addresses, users, URL and method overrides: see
//! `vendor_trusted`) and `Host` go too — also when spelled with `_` for `-`, which
//! CGI-style upstreams read as the same header — and the gateway sets its own forwarding
//! headers. `listen.strip_headers` names more. Responses lose their hop-by-hop headers.
//!
//! Built for the hot path: one pass over the header names decides what goes (a typical
//! request has nothing to remove, so nothing is hashed or allocated for it), and the
//! forwarding values of a connection are formatted once, on its first request.

use std::net::SocketAddr;
use std::sync::OnceLock;

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};

pub const CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
pub const CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");
pub const X_FAPI_SUBJECT: HeaderName = HeaderName::from_static("x-fapi-subject");
pub const X_FAPI_CLIENT_ID: HeaderName = HeaderName::from_static("x-fapi-client-id");
pub const X_FAPI_SCOPES: HeaderName = HeaderName::from_static("x-fapi-scopes");
pub const X_FAPI_DPOP_JKT: HeaderName = HeaderName::from_static("x-fapi-dpop-jkt");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// What [`prepare_request`] does with a request header, by name alone.
fn request_header_goes(name: &str) -> bool {
    hop_by_hop(name)
        || gateway_owned(name)
        || vendor_trusted(name)
        || name == "host"
        || name.contains('_') && underscore_spoof(name)
}

/// Headers other proxies, load balancers and frameworks set and their upstreams trust: the
/// client certificate and its verification result, the "real" client address, the
/// authenticated user, and URL or method overrides. Only an edge in front of the gateway
/// could vouch for them, and the gateway is the edge: whatever a client sends is removed
/// (`listen.strip_headers` adds names).
fn vendor_trusted(name: &str) -> bool {
    matches!(
        name,
        // Client certificates (nginx, HAProxy, Apache, IIS ARR, F5, Traefik conventions).
        "ssl-client-cert"
            | "ssl-client-verify"
            | "x-arr-clientcert"
            | "x-client-verify"
            | "x-client-dn"
            // Client addresses (Akamai/Cloudflare, Fastly, common proxies).
            | "true-client-ip"
            | "x-client-ip"
            | "x-cluster-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-original-forwarded-for"
            // Authenticated users (Apache/CGI, oauth2-proxy, Kong).
            | "remote-user"
            | "x-remote-user"
            | "x-authenticated-userid"
            | "x-authenticated-scope"
            | "x-consumer-id"
            | "x-consumer-username"
            | "x-credential-identifier"
            | "x-userinfo"
            // URL and method overrides (IIS, Symfony, Rails, Express).
            | "x-original-url"
            | "x-rewrite-url"
            | "x-original-uri"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
    ) || ["x-ssl-", "x-client-cert", "x-amzn-mtls-", "x-tls-client-", "x-auth-request-", "x-envoy-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Removes the configured extra headers (`listen.strip_headers`).
pub fn strip_configured(headers: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        headers.remove(name);
    }
}

/// Hop-by-hop by name (RFC 9110 §7.6.1), plus every `Proxy-*` header.
fn hop_by_hop(name: &str) -> bool {
    matches!(name, "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade")
        || name.starts_with("proxy-")
}

/// Set by the gateway alone: identity, client certificate and forwarding headers.
fn gateway_owned(name: &str) -> bool {
    matches!(
        name,
        "client-cert"
            | "client-cert-chain"
            | "x-fapi-subject"
            | "x-fapi-client-id"
            | "x-fapi-scopes"
            | "x-fapi-dpop-jkt"
            | "forwarded"
            | "x-real-ip"
    ) || name.starts_with("x-forwarded-")
}

/// `x_fapi_subject`, `x_forwarded_for`, `proxy_authorization`, …: an `_` spelling of a
/// header the gateway removes or controls.
fn underscore_spoof(name: &str) -> bool {
    let dashed = name.replace('_', "-");
    gateway_owned(&dashed)
        || hop_by_hop(&dashed)
        || vendor_trusted(&dashed)
        || matches!(dashed.as_str(), "authorization" | "dpop" | "host")
}

/// Removes every header [`request_header_goes`] names and every header `Connection` lists.
pub fn prepare_request(headers: &mut HeaderMap) {
    remove_where(headers, request_header_goes);
}

/// RFC 9113 §8.2.3: an HTTP/2 client may split `cookie` into crumbs, one field each; an
/// HTTP/1.1 upstream must get them as one header, joined with `"; "`. Nothing is touched
/// (or allocated) when there is at most one.
pub fn join_cookie_crumbs(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    if crumbs.next().is_none() || crumbs.next().is_none() {
        return;
    }
    let mut joined = Vec::new();
    for crumb in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    // Every crumb was a valid field value, and so is their join.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Removes the gateway's own cookies — the session cookies `names` and every
/// login-transaction cookie — from what goes upstream; other cookies stay (one `Cookie`
/// header, crumbs joined first).
pub fn strip_login_cookies(headers: &mut HeaderMap, names: &[String]) {
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    join_cookie_crumbs(headers);
    let Some(value) = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) else {
        headers.remove(header::COOKIE);
        return;
    };
    let kept: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|pair| {
            let cookie = pair.split_once('=').map_or(*pair, |(n, _)| n);
            !pair.is_empty()
                && !names.iter().any(|n| n == cookie)
                && !cookie.starts_with(crate::login::session::TRANSACTION_COOKIE_PREFIX)
        })
        .collect();
    match HeaderValue::from_str(&kept.join("; ")) {
        Ok(v) if !kept.is_empty() => {
            headers.insert(header::COOKIE, v);
        }
        _ => {
            headers.remove(header::COOKIE);
        }
    }
}

/// Whether a request carries no body (and so may be sent again as it was).
pub fn has_no_body(method: &http::Method, headers: &HeaderMap) -> bool {
    let empty_length = headers.get(header::CONTENT_LENGTH).is_none_or(|v| v.as_bytes() == b"0");
    matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::DELETE)
        && empty_length
        && !headers.contains_key(header::TRANSFER_ENCODING)
}

/// The nonce an upstream's `401` asks for (RFC 9449 §9): a `DPoP-Nonce` header with a
/// `WWW-Authenticate` naming `use_dpop_nonce`.
pub fn asked_nonce<B>(response: &http::Response<B>) -> Option<String> {
    if response.status() != http::StatusCode::UNAUTHORIZED {
        return None;
    }
    let asks = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("use_dpop_nonce")));
    let nonce = response.headers().get("dpop-nonce")?.to_str().ok()?;
    (asks && !nonce.is_empty()).then(|| nonce.to_string())
}

/// Removes the response's hop-by-hop headers and those its `Connection` lists.
pub fn prepare_response(headers: &mut HeaderMap) {
    remove_where(headers, hop_by_hop);
}

/// Removes an upstream's `Set-Cookie` for the gateway's own cookies (the session cookies
/// `names` and the login-transaction cookies): no upstream may plant or end a session.
pub fn drop_login_set_cookies(headers: &mut HeaderMap, names: &[String]) {
    let owned = |value: &HeaderValue| {
        let text = String::from_utf8_lossy(value.as_bytes());
        let name = text.split_once('=').map_or(text.as_ref(), |(n, _)| n).trim();
        names.iter().any(|n| n.eq_ignore_ascii_case(name))
            || name.len() >= crate::login::session::TRANSACTION_COOKIE_PREFIX.len()
                && name[..crate::login::session::TRANSACTION_COOKIE_PREFIX.len()]
                    .eq_ignore_ascii_case(crate::login::session::TRANSACTION_COOKIE_PREFIX)
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(owned) {
        return;
    }
    let kept: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().filter(|v| !owned(v)).cloned().collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

fn remove_where(headers: &mut HeaderMap, goes: fn(&str) -> bool) {
    // The common case — nothing to remove — costs one pass over the names and no allocation.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if goes(name.as_str()) {
            doomed.push(name.clone());
        }
    }
    if doomed.contains(&header::CONNECTION) {
        let listed = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok());
        doomed.extend(listed);
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// The forwarding headers of one connection, formatted once: `X-Forwarded-For` from the
/// peer address, and `X-Forwarded-Host` / `Forwarded` for the host its first request named
/// (a connection's requests name the host of its TLS server name, so they all share it).
#[derive(Debug)]
pub struct ForwardedHeaders {
    x_forwarded_for: Option<HeaderValue>,
    /// `for=…;proto=https`, the start of every `Forwarded` value.
    forwarded_base: String,
    for_host: OnceLock<HostValues>,
}

#[derive(Debug)]
struct HostValues {
    host: Box<str>,
    x_forwarded_host: HeaderValue,
    forwarded: HeaderValue,
}

impl ForwardedHeaders {
    pub fn new(peer: SocketAddr) -> Self {
        let ip = peer.ip().to_string();
        let for_value = if peer.is_ipv6() { format!("\"[{ip}]\"") } else { ip.clone() };
        ForwardedHeaders {
            x_forwarded_for: HeaderValue::from_str(&ip).ok(),
            forwarded_base: format!("for={for_value};proto=https"),
            for_host: OnceLock::new(),
        }
    }

    /// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` (RFC 7239). `host` must
    /// already be validated as a plain host name (see [`super::request_host`]).
    pub fn apply(&self, headers: &mut HeaderMap, host: Option<&str>) {
        if let Some(v) = &self.x_forwarded_for {
            headers.insert(X_FORWARDED_FOR, v.clone());
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let Some(host) = host else {
            match HeaderValue::from_str(&self.forwarded_base) {
                Ok(v) => headers.insert(FORWARDED, v),
                Err(_) => headers.remove(FORWARDED),
            };
            return;
        };
        let cached = self.for_host.get_or_init(|| self.host_values(host));
        let fresh;
        let values = if *cached.host == *host {
            cached
        } else {
            fresh = self.host_values(host);
            &fresh
        };
        headers.insert(X_FORWARDED_HOST, values.x_forwarded_host.clone());
        headers.insert(FORWARDED, values.forwarded.clone());
    }

    fn host_values(&self, host: &str) -> HostValues {
        let invalid = HeaderValue::from_static("invalid");
        HostValues {
            host: host.into(),
            x_forwarded_host: HeaderValue::from_str(host).unwrap_or_else(|_| invalid.clone()),
            forwarded: HeaderValue::from_str(&format!("{};host=\"{host}\"", self.forwarded_base)).unwrap_or(invalid),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vendor_trust_headers_go_whatever_their_spelling() {
        for name in
            ["x-ssl-client-verify", "x-amzn-mtls-clientcert-leaf", "true-client-ip", "x-original-url", "x-envoy-peer"]
        {
            assert!(request_header_goes(name), "{name}");
            assert!(request_header_goes(&name.replace('-', "_")), "{name} with underscores");
        }
        for name in ["x-request-id", "cookie", "accept", "x-client", "x-sslx"] {
            assert!(!request_header_goes(name), "{name}");
        }
    }

    #[test]
    fn no_upstream_sets_the_gateways_cookies() {
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static("__Host-fapi-session=planted; Path=/; Secure"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark; Path=/"));
        h.append(header::SET_COOKIE, HeaderValue::from_static("__host-FAPI-login-abc=; Max-Age=0"));
        drop_login_set_cookies(&mut h, &["__Host-fapi-session".to_string()]);
        assert_eq!(h.get_all(header::SET_COOKIE).iter().collect::<Vec<_>>(), ["theme=dark; Path=/"]);
    }

    #[test]
    fn the_gateways_cookies_stay_at_the_gateway() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("theme=dark; __Host-fapi-session=id.tag"));
        h.append(header::COOKIE, HeaderValue::from_static("__Host-fapi-login-abc=x; lang=en"));
        strip_login_cookies(&mut h, &["__Host-fapi-session".to_string()]);
        assert_eq!(h.get(header::COOKIE).unwrap(), "theme=dark; lang=en");
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, HeaderValue::from_static("__Host-fapi-session=id.tag"));
        strip_login_cookies(&mut only, &["__Host-fapi-session".to_string()]);
        assert!(only.get(header::COOKIE).is_none());
    }

    #[test]
    fn cookie_crumbs_are_joined_into_one_header() {
        let mut h = HeaderMap::new();
        join_cookie_crumbs(&mut h);
        assert!(h.is_empty());
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookie_crumbs(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1"]);
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookie_crumbs(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; b=2; c=3"]);
    }

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
        prepare_response(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn requests_lose_host_forwarding_and_gateway_headers() {
        let mut h = HeaderMap::new();
        for name in [
            "host",
            "x-forwarded-for",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-real-ip",
            "forwarded",
            "client-cert",
            "client-cert-chain",
            "x-fapi-subject",
            "x-fapi-dpop-jkt",
            "transfer-encoding",
            "proxy-connection",
        ] {
            h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("spoofed"));
        }
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert("x-custom", HeaderValue::from_static("kept"));
        prepare_request(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["authorization", "x-custom"]);
    }

    #[test]
    fn forwarded_headers_replace_client_values() {
        let forwarded = ForwardedHeaders::new("127.0.0.1:5000".parse().unwrap());
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        prepare_request(&mut h);
        forwarded.apply(&mut h, Some("api.test"));
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "api.test");
        assert_eq!(h[FORWARDED], "for=127.0.0.1;proto=https;host=\"api.test\"");
        // A later request naming another host gets its own values, not the cached ones.
        forwarded.apply(&mut h, Some("other.test"));
        assert_eq!(h[X_FORWARDED_HOST], "other.test");
        assert_eq!(h[FORWARDED], "for=127.0.0.1;proto=https;host=\"other.test\"");
        let mut h = HeaderMap::new();
        ForwardedHeaders::new("[::1]:5000".parse().unwrap()).apply(&mut h, None);
        assert_eq!(h[FORWARDED], "for=\"[::1]\";proto=https");
        assert_eq!(h[X_FORWARDED_FOR], "::1");
        assert!(!h.contains_key(X_FORWARDED_HOST));
    }

    #[test]
    fn underscore_spellings_of_controlled_headers_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "x_fapi_subject",
            "client_cert",
            "x_forwarded_for",
            "x_real_ip",
            "proxy_authorization",
            "transfer_encoding",
            "x_custom",
        ] {
            h.insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("spoofed"));
        }
        h.insert(X_FAPI_SUBJECT, HeaderValue::from_static("spoofed"));
        prepare_request(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), vec!["x_custom"]);
    }
}
