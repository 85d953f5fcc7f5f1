//! The host a request names: the HTTP/2 `:authority`, else `Host`, without its port and
//! trailing dot, in lower case; refused when it is missing from an HTTP/1.1 request,
//! repeated, or not a plain host name or IP literal. Parsed once per request (the
//! pipeline's canonicalise phase); the Host/SNI check, the router and the forwarding
//! headers all use the same value.

use http::header;
use http::{HeaderMap, Uri, Version};

/// Why a request's host is refused (400 `invalid_host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the request must name its host (Host or :authority)")]
    Missing,
    #[error("the request carries more than one Host header")]
    Repeated,
    #[error("the Host header is not a valid host name")]
    Invalid,
}

/// The host the client asked for — the HTTP/2 `:authority` (or an absolute request URI's
/// authority), else `Host` — in canonical form: without the port and the one trailing dot
/// of a fully qualified name, in lower case.
///
/// Refused (RFC 9112 §3.2, RFC 9113 §8.3.1, RFC 3986 §3.2.2): an HTTP/1.1 or HTTP/2
/// request that names no host, any
/// request with several `Host` headers, and a value that is not a host name of non-empty
/// labels (`a..b`, `.a`, `a..`) or a bracketed IPv6 literal, with an optional port of
/// digits only. Such a value must never reach the router or forwarded headers.
pub fn request_host(uri: &Uri, version: Version, headers: &HeaderMap) -> Result<Option<Box<str>>, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Repeated);
    }
    let authority = match (uri.authority(), host_header) {
        (Some(a), _) => a.as_str(),
        (None, Some(v)) => v.to_str().map_err(|_| HostError::Invalid)?,
        // Only HTTP/1.0 clients may name no host; HTTP/2 ones send `:authority`.
        (None, None) if version <= Version::HTTP_10 => return Ok(None),
        (None, None) => return Err(HostError::Missing),
    };
    canonical_host(authority).map(|h| Some(h.to_ascii_lowercase().into_boxed_str())).ok_or(HostError::Invalid)
}

/// The host part of `host[:port]` when the whole value is well formed.
fn canonical_host(authority: &str) -> Option<&str> {
    if authority.is_empty() || authority.len() > 255 {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (inside, after) = v6.split_once(']')?;
            let valid = !inside.is_empty() && inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !valid {
                return None;
            }
            (&authority[..inside.len() + 2], after.strip_prefix(':').or(after.is_empty().then_some(""))?)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, port),
            None => (authority, ""),
        },
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
        return None;
    }
    if host.starts_with('[') {
        return Some(host);
    }
    // `api.example.com.` (fully qualified) is the same host as `api.example.com`.
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    labels_ok.then_some(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const H11: Version = Version::HTTP_11;

    fn host(value: &'static str) -> Result<Option<Box<str>>, HostError> {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static(value));
        request_host(&Uri::from_static("/x"), H11, &h)
    }

    fn ok(value: &str) -> Result<Option<Box<str>>, HostError> {
        Ok(Some(value.into()))
    }

    #[test]
    fn host_is_read_without_port_in_lower_case() {
        assert_eq!(host("Gateway.test:8443"), ok("gateway.test"));
        assert_eq!(host("gateway.test:"), ok("gateway.test"));
        assert_eq!(host("127.0.0.1:8443"), ok("127.0.0.1"));
        assert_eq!(host("[::1]:8443"), ok("[::1]"));
        assert_eq!(host("[::FFFF:127.0.0.1]"), ok("[::ffff:127.0.0.1]"));
        let h = HeaderMap::new();
        assert_eq!(request_host(&Uri::from_static("https://[::1]:8443/x"), H11, &h), ok("[::1]"));
        assert_eq!(request_host(&Uri::from_static("https://A.test/x"), Version::HTTP_2, &h), ok("a.test"));
    }

    #[test]
    fn one_trailing_dot_is_the_same_host() {
        assert_eq!(host("partner.test.:8443"), ok("partner.test"));
        assert_eq!(host("partner.test."), ok("partner.test"));
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        let none = HeaderMap::new();
        let path = Uri::from_static("/x");
        assert_eq!(request_host(&path, H11, &none), Err(HostError::Missing));
        // HTTP/1.0 may omit it; HTTP/2 must name its authority in `:authority` or `Host`.
        assert_eq!(request_host(&path, Version::HTTP_10, &none), Ok(None));
        assert_eq!(request_host(&path, Version::HTTP_2, &none), Err(HostError::Missing));
        let mut two = HeaderMap::new();
        two.append(header::HOST, HeaderValue::from_static("a.test"));
        two.append(header::HOST, HeaderValue::from_static("a.test"));
        assert_eq!(request_host(&path, H11, &two), Err(HostError::Repeated));
        assert_eq!(
            request_host(&Uri::from_static("https://a.test/x"), Version::HTTP_2, &two),
            Err(HostError::Repeated)
        );
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for bad in [
            "secure.localhost..",
            "a..b",
            ".a",
            ".",
            "",
            "a.test:8443:1",
            "a.test:x",
            "a.test:123456",
            "[::1",
            "[::1]x",
            "[zz::1]",
            "[]",
            "a\", for=6.6.6.6",
            "a b",
            "user@a.test",
            "a.test/x",
        ] {
            assert_eq!(host(bad), Err(HostError::Invalid), "{bad:?}");
        }
    }
}
