//! Request paths the gateway accepts: only the one canonical spelling of a path.
//!
//! [`check_path`] refuses request paths that different servers could read differently (dot
//! segments, encoded slashes, empty segments, path parameters, needless percent-encoding):
//! a path must mean the same thing to the router and to the upstream, or an allowed prefix
//! could smuggle a request elsewhere. Refused, not normalised: what the router matched is
//! exactly what the upstream receives. Config validation uses the same check on route
//! prefixes.

/// Why a request path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with `/`")]
    NotAbsolute,
    #[error("the request path must not contain `.` or `..` segments")]
    DotSegment,
    #[error("the request path must not contain encoded `/`, `\\` or `.`, or a raw `\\`")]
    AmbiguousEncoding,
    #[error("the request path must not contain empty segments (`//`)")]
    EmptySegment,
    #[error("the request path must not contain `;`")]
    PathParameter,
    #[error("the request path must not percent-encode letters, digits, `-`, `_` or `~`")]
    EncodedUnreserved,
    #[error("the request path has a malformed percent-encoding")]
    MalformedEscape,
}

/// Refuses paths whose meaning could differ between the gateway and the upstream: anything
/// but the one canonical spelling of a path is refused, not normalised, so what the router
/// matched is exactly what the upstream receives.
pub fn check_path(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // `..;x` is `..` to servers that strip path parameters (Tomcat and friends).
    if path.split('/').map(|seg| seg.split(';').next().unwrap_or(seg)).any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }
    if path.contains('\\') {
        return Err(PathError::AmbiguousEncoding);
    }
    // `//accounts` is `/accounts` to servers that merge slashes.
    if path.contains("//") {
        return Err(PathError::EmptySegment);
    }
    // `/accounts;jsessionid=x/1` is `/accounts/1` to servers that strip path parameters.
    if path.contains(';') {
        return Err(PathError::PathParameter);
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
            return Err(PathError::MalformedEscape);
        };
        let (Some(hi), Some(lo)) = ((hi as char).to_digit(16), (lo as char).to_digit(16)) else {
            return Err(PathError::MalformedEscape);
        };
        // Both digits are below 16, so this fits a byte.
        let decoded = (hi * 16 + lo) as u8;
        if matches!(decoded, b'/' | b'\\' | b'.') {
            return Err(PathError::AmbiguousEncoding);
        }
        // RFC 3986 §2.3: unreserved characters are equivalent to their encoding; `%61ccounts`
        // is `accounts` to any server that decodes them.
        if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'_' | b'~') {
            return Err(PathError::EncodedUnreserved);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(check_path("/public/../accounts"), Err(PathError::DotSegment));
        assert_eq!(check_path("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(check_path("/a/.."), Err(PathError::DotSegment));
        assert_eq!(check_path("/public/..;/mtls"), Err(PathError::DotSegment));
        assert_eq!(check_path("/public/.;x/mtls"), Err(PathError::DotSegment));
        assert_eq!(check_path("/public%2F..%2Faccounts"), Err(PathError::AmbiguousEncoding));
        assert_eq!(check_path("/public/%2e%2e/accounts"), Err(PathError::AmbiguousEncoding));
        assert_eq!(check_path("/public/%5C/accounts"), Err(PathError::AmbiguousEncoding));
        assert_eq!(check_path("/a\\b"), Err(PathError::AmbiguousEncoding));
        assert_eq!(check_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(check_path(""), Err(PathError::NotAbsolute));
        assert_eq!(check_path("/a/b.json"), Ok(()));
        assert_eq!(check_path("/a/%20b"), Ok(()));
        assert_eq!(check_path("/a/...b"), Ok(()));
    }

    #[test]
    fn empty_segments_are_refused() {
        for path in ["//accounts/1", "/accounts//1", "/accounts/1//", "/a///b", "//"] {
            assert_eq!(check_path(path), Err(PathError::EmptySegment), "{path}");
        }
        for path in ["/", "/accounts/", "/accounts/1/"] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn path_parameters_are_refused() {
        for path in ["/accounts;jsessionid=x/1", "/accounts/1;v=2", "/;", "/a;/b", "/accounts%3B/1;"] {
            assert_eq!(check_path(path), Err(PathError::PathParameter), "{path}");
        }
        // An encoded `;` is data, not a parameter delimiter.
        assert_eq!(check_path("/accounts%3B/1"), Ok(()));
        assert_eq!(check_path("/accounts%3b/1"), Ok(()));
    }

    #[test]
    fn encoded_unreserved_characters_are_refused() {
        let unreserved = (b'A'..=b'Z').chain(b'a'..=b'z').chain(b'0'..=b'9').chain([b'-', b'_', b'~']);
        for byte in unreserved {
            for path in [format!("/x%{byte:02X}"), format!("/x%{byte:02x}"), format!("/%{byte:02X}/y")] {
                assert_eq!(check_path(&path), Err(PathError::EncodedUnreserved), "{path}");
            }
        }
        assert_eq!(check_path("/%61ccounts/1"), Err(PathError::EncodedUnreserved));
        assert_eq!(check_path("/%41CCOUNTS/1"), Err(PathError::EncodedUnreserved));
        // Reserved, non-ASCII and control characters stay encoded: that is their canonical form.
        for path in ["/a%20b", "/a%3Fb", "/a%23b", "/a%25b", "/a%2Bb", "/a%C3%A9", "/a%40b", "/a%7F", "/a%60", "/a%7B"]
        {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for path in ["/a%zz", "/a%4", "/a%", "/%/x", "/a%4g/b", "/a%g4", "/a%%41", "/a% 1", "/a%-1"] {
            assert_eq!(check_path(path), Err(PathError::MalformedEscape), "{path}");
        }
    }
}
