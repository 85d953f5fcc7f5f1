//! Extracting the access token from a request, once, by the rules of RFC 6750 §2.1 and
//! FAPI 2.0 §5.3.4: only from the `Authorization` header (never the query or the body),
//! exactly one such header, the scheme compared case-insensitively, the value a `token68`.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::answer::{AuthDenial, AuthErrorCode, Scheme};

pub use crate::principal::DPOP;

/// The credential a request presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// `Authorization: Bearer <token>`.
    Bearer(&'a str),
    /// `Authorization: DPoP <token>`.
    Dpop(&'a str),
}

impl<'a> Credential<'a> {
    pub fn token(&self) -> &'a str {
        match self {
            Credential::Bearer(t) | Credential::Dpop(t) => t,
        }
    }
}

/// Reads the request's credential. `Ok(None)` when there is none at all; an error when there
/// are several, when the scheme is unknown, or when the value is not a `token68`.
pub fn extract<'a>(headers: &'a HeaderMap, query: Option<&str>) -> Result<Option<Credential<'a>>, AuthDenial> {
    if query.is_some_and(has_access_token_param) {
        return Err(AuthDenial::new(
            AuthErrorCode::InvalidRequest,
            "token_in_query",
            "access tokens are accepted only in the Authorization header",
        ));
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        let schemes: Vec<String> = headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(' ').next())
            .map(str::to_ascii_lowercase)
            .collect();
        if schemes.iter().any(|s| s == "bearer") && schemes.iter().any(|s| s == "dpop") {
            // RFC 9449 §7.2: ambiguous, so both challenges carry the error.
            let mut denial = AuthDenial::new(
                AuthErrorCode::InvalidRequest,
                "ambiguous_schemes",
                "send either a Bearer or a DPoP credential, not both",
            );
            denial.scheme = Scheme::Both;
            return Err(denial);
        }
        return Err(AuthDenial::new(
            AuthErrorCode::InvalidRequest,
            "multiple_authorization",
            "exactly one Authorization header is allowed",
        ));
    }
    let text = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = text.split_once(' ').ok_or_else(malformed)?;
    let bearer = scheme.eq_ignore_ascii_case("bearer");
    if !bearer && !scheme.eq_ignore_ascii_case("dpop") {
        // RFC 6750 §3.1: an unsupported authentication method gets a challenge without
        // error information, as if no credentials had been sent.
        return Err(AuthDenial { reason: "unsupported_scheme", ..AuthDenial::missing_credentials() });
    }
    let token = token.trim_start_matches(' ');
    if !is_token68(token) {
        let denial = malformed();
        // The error belongs on the challenge of the scheme the client used.
        return Err(if bearer { denial } else { AuthDenial { scheme: Scheme::Dpop, ..denial } });
    }
    Ok(Some(if bearer { Credential::Bearer(token) } else { Credential::Dpop(token) }))
}

/// The request's one DPoP proof (RFC 9449 §4.3 check 1: not more than one `DPoP` header,
/// and no comma-joined list in it).
pub fn dpop_proof(headers: &HeaderMap) -> Result<&str, AuthDenial> {
    let mut values = headers.get_all(DPOP).iter();
    let Some(value) = values.next() else {
        return Err(AuthDenial::dpop(AuthErrorCode::InvalidDpopProof, "dpop_missing", "a DPoP proof is required"));
    };
    let text = value.to_str().unwrap_or_default();
    if values.next().is_some() || text.contains(',') {
        return Err(AuthDenial::dpop(
            AuthErrorCode::InvalidRequest,
            "dpop_multiple",
            "exactly one DPoP proof header is allowed",
        ));
    }
    if !is_token68(text.trim()) {
        return Err(AuthDenial::dpop(
            AuthErrorCode::InvalidDpopProof,
            "dpop_malformed",
            "the DPoP proof is not a well-formed JWT",
        ));
    }
    Ok(text.trim())
}

fn malformed() -> AuthDenial {
    AuthDenial::new(
        AuthErrorCode::InvalidRequest,
        "malformed_authorization",
        "the Authorization header must be `<scheme> <token>`",
    )
}

/// RFC 9110 §11.2: `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(value: &str) -> bool {
    let body = value.trim_end_matches('=');
    // Branch-free per byte, so the compiler can check many bytes at once (a token is
    // hundreds of bytes and this runs on every request).
    let token68_char = |b: u8| {
        let lower = b | 0x20;
        (lower.is_ascii_lowercase())
            | b.is_ascii_digit()
            | (b == b'-')
            | (b == b'.')
            | (b == b'_')
            | (b == b'~')
            | (b == b'+')
            | (b == b'/')
    };
    !body.is_empty() && body.bytes().fold(true, |all, b| all & token68_char(b))
}

/// Whether the query names `access_token`, however its key is percent-encoded.
fn has_access_token_param(query: &str) -> bool {
    query.split('&').any(|pair| decode_percent(pair.split('=').next().unwrap_or_default()) == "access_token")
}

/// Decodes `%XX` escapes (and `+` as space, as forms do); invalid escapes stay as they are.
fn decode_percent(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn scheme_is_case_insensitive() {
        let h = headers(&["bEaReR abc.def.ghi"]);
        assert_eq!(extract(&h, None).unwrap(), Some(Credential::Bearer("abc.def.ghi")));
        let h = headers(&["dpop abc"]);
        assert_eq!(extract(&h, None).unwrap(), Some(Credential::Dpop("abc")));
    }

    #[test]
    fn no_header_is_no_credential() {
        assert_eq!(extract(&HeaderMap::new(), Some("a=b")).unwrap(), None);
    }

    #[test]
    fn two_headers_are_refused() {
        let e = extract(&headers(&["Bearer a", "Bearer b"]), None).unwrap_err();
        assert_eq!(e.reason, "multiple_authorization");
        assert_eq!(e.code, Some(AuthErrorCode::InvalidRequest));
    }

    #[test]
    fn malformed_values_are_refused() {
        for v in ["Bearer", "Bearer ", "Bearer a b", "Bearer a,b", "Bearertoken"] {
            assert_eq!(extract(&headers(&[v]), None).unwrap_err().reason, "malformed_authorization", "{v}");
        }
        assert_eq!(extract(&headers(&["DPoP a b"]), None).unwrap_err().scheme, Scheme::Dpop);
        assert_eq!(extract(&headers(&["Bearer a b"]), None).unwrap_err().scheme, Scheme::Bearer);
        let e = extract(&headers(&["Basic dXNlcjpwYXNz"]), None).unwrap_err();
        assert_eq!((e.reason, e.code), ("unsupported_scheme", None));
        let e = extract(&headers(&["Digest username=\"a\", realm=\"b\""]), None).unwrap_err();
        assert_eq!((e.reason, e.code), ("unsupported_scheme", None));
    }

    #[test]
    fn token68_accepts_exactly_its_alphabet() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            let value = [b'a', b, b'z'];
            let text = String::from_utf8_lossy(&value);
            assert_eq!(is_token68(&text), allowed, "byte {b:#04x}");
        }
        assert!(is_token68("abc=="));
        assert!(!is_token68("=="));
        assert!(!is_token68("a=b"));
    }

    #[test]
    fn bearer_and_dpop_together_are_ambiguous() {
        let e = extract(&headers(&["Bearer a", "DPoP b"]), None).unwrap_err();
        assert_eq!(e.reason, "ambiguous_schemes");
        assert_eq!(e.scheme, Scheme::Both);
    }

    #[test]
    fn one_dpop_proof_header_is_read() {
        let mut h = HeaderMap::new();
        assert_eq!(dpop_proof(&h).unwrap_err().reason, "dpop_missing");
        h.insert("DPOP", HeaderValue::from_static("a.b.c"));
        assert_eq!(dpop_proof(&h).unwrap(), "a.b.c");
        h.append("dpop", HeaderValue::from_static("d.e.f"));
        assert_eq!(dpop_proof(&h).unwrap_err().code, Some(AuthErrorCode::InvalidRequest));
        let mut h = HeaderMap::new();
        h.insert("dpop", HeaderValue::from_static("a.b.c, d.e.f"));
        assert_eq!(dpop_proof(&h).unwrap_err().reason, "dpop_multiple");
    }

    #[test]
    fn query_tokens_are_refused() {
        let e = extract(&HeaderMap::new(), Some("x=1&access_token=abc")).unwrap_err();
        assert_eq!(e.reason, "token_in_query");
        assert!(extract(&HeaderMap::new(), Some("my_access_token=1")).is_ok());
        for encoded in ["access%5Ftoken=x", "%61ccess_token=x", "a=1&access%5ftoken"] {
            assert_eq!(extract(&HeaderMap::new(), Some(encoded)).unwrap_err().reason, "token_in_query", "{encoded}");
        }
    }
}
