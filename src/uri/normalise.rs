//! URL normalisation for the `htu` comparison of RFC 9449 §4.3 — the proof's URL must be the
//! URL the client called, ignoring query and fragment — after RFC 3986 syntax-based
//! (§6.2.2: case of scheme and host, percent-encoding, dot segments) and scheme-based
//! (§6.2.3: default port, empty path) normalisation. Config validation normalises the
//! configured `public_url` origins with the same functions.
//!
//! The expected URL is built from the configured public origin and the client-visible path —
//! never from `X-Forwarded-*` headers the client controls (see `auth::dpop`).

/// Why an `htu` value is not a usable URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAUrl;

/// Normalises an absolute `http(s)` URL and drops its query and fragment.
pub fn normalise(url: &str) -> Result<String, NotAUrl> {
    let (scheme, rest) = url.split_once("://").ok_or(NotAUrl)?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return Err(NotAUrl),
    };
    let end_of_authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end_of_authority);
    let origin = normalise_authority(&scheme, authority, default_port)?;
    let path_end = after.find(['?', '#']).unwrap_or(after.len());
    let path = normalise_path(&after[..path_end])?;
    Ok(format!("{origin}{path}"))
}

/// `scheme://host[:port]` in normal form, from a configured origin such as
/// `https://API.example.com:443`.
pub fn normalise_origin(url: &str) -> Result<String, NotAUrl> {
    let normalised = normalise(url)?;
    Ok(normalised.strip_suffix('/').unwrap_or(&normalised).to_string())
}

/// The normalised URL a request was sent to: the public origin plus the request path.
pub fn request_url(origin: &str, path: &str) -> Result<String, NotAUrl> {
    Ok(format!("{origin}{}", normalise_path(path)?))
}

fn normalise_authority(scheme: &str, authority: &str, default_port: &str) -> Result<String, NotAUrl> {
    if authority.is_empty() || authority.contains('@') {
        return Err(NotAUrl);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, tail) = v6.split_once(']').ok_or(NotAUrl)?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or(NotAUrl)?),
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        match authority.split_once(':') {
            // One colon at most outside brackets: `a.test:8443:443` is not a URL.
            Some((_, p)) if p.contains(':') => return Err(NotAUrl),
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() || host.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(NotAUrl);
    }
    match port {
        None | Some("") => Ok(format!("{scheme}://{host}")),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            let p = p.trim_start_matches('0');
            if p == default_port {
                Ok(format!("{scheme}://{host}"))
            } else if p.is_empty() {
                Ok(format!("{scheme}://{host}:0"))
            } else {
                Ok(format!("{scheme}://{host}:{p}"))
            }
        }
        Some(_) => Err(NotAUrl),
    }
}

/// Percent-encoding normalised (unreserved characters decoded, hex upper-cased), dot
/// segments removed, empty path as `/`.
fn normalise_path(path: &str) -> Result<String, NotAUrl> {
    if path.is_empty() {
        return Ok("/".to_string());
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(NotAUrl)?;
            let value = std::str::from_utf8(hex).ok().and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or(NotAUrl)?;
            if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push_str(&format!("{value:02X}"));
            }
            i += 3;
        } else if b.is_ascii_control() || b == b' ' {
            return Err(NotAUrl);
        } else if !b.is_ascii() {
            // An IRI's UTF-8 bytes compare as their percent-encoding (RFC 3987 §3.1).
            out.push_str(&format!("%{b:02X}"));
            i += 1;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    if !out.starts_with('/') {
        return Err(NotAUrl);
    }
    Ok(remove_dot_segments(&out))
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    if !path.split('/').any(|s| s == "." || s == "..") {
        return path.to_string();
    }
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {
                if i == last {
                    output.push("");
                }
            }
            ".." => {
                output.pop();
                if i == last {
                    output.push("");
                }
            }
            s => output.push(s),
        }
    }
    format!("/{}", output.join("/"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scheme_and_host_case_and_default_port_are_normalised() {
        let want = "https://server.example.com/token";
        for url in [
            "https://server.example.com/token",
            "HTTPS://Server.Example.COM/token",
            "https://server.example.com:443/token",
            "https://server.example.com/token?x=1",
            "https://server.example.com/token#frag",
            "https://server.example.com/%74oken",
        ] {
            assert_eq!(normalise(url).unwrap(), want, "{url}");
        }
        assert_eq!(normalise("https://a.test:8443/x").unwrap(), "https://a.test:8443/x");
        assert_eq!(normalise("http://a.test:80").unwrap(), "http://a.test/");
        assert_eq!(normalise("https://a.test").unwrap(), "https://a.test/");
        assert_eq!(normalise("https://[::1]:443/x").unwrap(), "https://[::1]/x");
    }

    #[test]
    fn percent_encoding_is_normalised_but_reserved_stays_encoded() {
        assert_eq!(normalise("https://a.test/a%2fb").unwrap(), "https://a.test/a%2Fb");
        assert_ne!(normalise("https://a.test/a%2Fb").unwrap(), normalise("https://a.test/a/b").unwrap());
        assert_eq!(normalise("https://a.test/%7Euser").unwrap(), "https://a.test/~user");
        assert_eq!(normalise("https://a.test/a/./b/../c").unwrap(), "https://a.test/a/c");
    }

    #[test]
    fn different_urls_stay_different() {
        assert_ne!(normalise("https://a.test/x").unwrap(), normalise("http://a.test/x").unwrap());
        assert_ne!(normalise("https://a.test/x").unwrap(), normalise("https://a.test:444/x").unwrap());
        assert_ne!(normalise("https://a.test/x").unwrap(), normalise("https://a.test/X").unwrap());
    }

    #[test]
    fn junk_is_refused() {
        for url in [
            "",
            "a.test/x",
            "ftp://a.test/x",
            "https://",
            "https://u@a.test/",
            "https://a.test:x/",
            "https://a.test/%zz",
            "https://a.test/a b",
            "https://a.test:8443:443/x",
        ] {
            assert_eq!(normalise(url), Err(NotAUrl), "{url}");
        }
    }

    #[test]
    fn non_ascii_compares_as_its_percent_encoding() {
        assert_eq!(normalise("https://a.test/caf\u{e9}").unwrap(), "https://a.test/caf%C3%A9");
        assert_eq!(normalise("https://a.test/caf%c3%a9").unwrap(), "https://a.test/caf%C3%A9");
    }

    #[test]
    fn request_url_joins_origin_and_path() {
        let origin = normalise_origin("https://API.test:443").unwrap();
        assert_eq!(origin, "https://api.test");
        assert_eq!(request_url(&origin, "/accounts/%7e1").unwrap(), "https://api.test/accounts/~1");
    }
}
