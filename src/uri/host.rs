//! The host a request names: the HTTP/2 `:authority`, else `Host`, without its port and
//! trailing dot, refused when it is not a plain host name or IP literal. Parsed once per
//! request (the pipeline's canonicalise phase); the Host/SNI check, the router and the
//! forwarding headers all use the same value.

use http::header;
use http::{HeaderMap, Uri};

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

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
