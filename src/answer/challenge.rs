//! Authentication refusals and their `WWW-Authenticate` challenges (RFC 6750 §3,
//! RFC 9449 §7.1 and §7.2).
//!
//! A route offers the schemes its binding accepts: `Bearer` (mtls, bearer), `DPoP` (dpop),
//! or both (any). The challenge of the scheme the failure concerns carries the error; the
//! others are bare (`DPoP` always lists `algs`). Without credentials no challenge has an
//! error (RFC 6750 §3.1). An ambiguous request (both schemes) gets the error on both.

use std::borrow::Cow;
use std::sync::Arc;

use http::StatusCode;

use crate::config::Binding;

/// An RFC 6750 §3.1 / RFC 9449 §7.1 error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthErrorCode {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
    InvalidDpopProof,
    UseDpopNonce,
}

impl AuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthErrorCode::InvalidRequest => "invalid_request",
            AuthErrorCode::InvalidToken => "invalid_token",
            AuthErrorCode::InsufficientScope => "insufficient_scope",
            AuthErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            AuthErrorCode::UseDpopNonce => "use_dpop_nonce",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            AuthErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            AuthErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
            AuthErrorCode::InvalidToken | AuthErrorCode::InvalidDpopProof | AuthErrorCode::UseDpopNonce => {
                StatusCode::UNAUTHORIZED
            }
        }
    }
}

/// Which authentication scheme a failure concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
    /// The request was ambiguous (both schemes): the error goes on every challenge.
    Both,
}

/// A refused authentication or authorisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthDenial {
    /// `None` when the request carried no credentials at all.
    pub code: Option<AuthErrorCode>,
    /// Stable machine-readable reason, e.g. `token_expired`.
    pub reason: &'static str,
    pub description: Cow<'static, str>,
    /// The scopes the route needs, for `insufficient_scope`.
    pub scope: Option<Box<str>>,
    /// The scheme the error belongs to.
    pub scheme: Scheme,
    /// Challenges offered: the route's accepted schemes.
    pub offer_bearer: bool,
    pub offer_dpop: bool,
    /// The `algs` parameter of `DPoP` challenges.
    pub dpop_algs: Option<Arc<str>>,
    /// A fresh `DPoP-Nonce` to send (with `use_dpop_nonce`).
    pub nonce: Option<Box<str>>,
    /// The route's RFC 9728 document, named on every challenge (`resource_metadata`, §5.1).
    pub resource_metadata: Option<Arc<str>>,
}

impl AuthDenial {
    /// A denial about a `Bearer` credential.
    pub fn new(code: AuthErrorCode, reason: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        AuthDenial {
            code: Some(code),
            reason,
            description: description.into(),
            scope: None,
            scheme: Scheme::Bearer,
            offer_bearer: true,
            offer_dpop: false,
            dpop_algs: None,
            nonce: None,
            resource_metadata: None,
        }
    }

    /// A denial about a `DPoP` credential or proof.
    pub fn dpop(code: AuthErrorCode, reason: &'static str, description: impl Into<Cow<'static, str>>) -> Self {
        AuthDenial { scheme: Scheme::Dpop, ..AuthDenial::new(code, reason, description) }
    }

    pub fn missing_credentials() -> Self {
        AuthDenial {
            code: None,
            ..AuthDenial::new(AuthErrorCode::InvalidRequest, "no_credentials", "an access token is required")
        }
    }

    /// Sets the challenges to what a route with `binding` accepts.
    pub fn for_route(mut self, binding: Binding, dpop_algs: &Arc<str>) -> Self {
        self.offer_bearer = matches!(binding, Binding::Mtls | Binding::Any | Binding::Bearer);
        self.offer_dpop = matches!(binding, Binding::Dpop | Binding::Any);
        self.dpop_algs = Some(dpop_algs.clone());
        self
    }

    /// Names the route's RFC 9728 document on every challenge.
    pub fn with_resource_metadata(mut self, url: Option<&Arc<str>>) -> Self {
        self.resource_metadata = url.cloned();
        self
    }

    pub fn status(&self) -> StatusCode {
        self.code.map_or(StatusCode::UNAUTHORIZED, AuthErrorCode::status)
    }

    /// The `WWW-Authenticate` values, `Bearer` first.
    pub fn challenges(&self) -> Vec<String> {
        let errs_on = |scheme: Scheme| self.code.is_some() && (self.scheme == scheme || self.scheme == Scheme::Both);
        let bearer = self.offer_bearer || errs_on(Scheme::Bearer);
        let dpop = self.offer_dpop || errs_on(Scheme::Dpop);
        let mut out = Vec::with_capacity(2);
        if bearer {
            out.push(self.challenge("Bearer", errs_on(Scheme::Bearer), None));
        }
        if dpop {
            out.push(self.challenge("DPoP", errs_on(Scheme::Dpop), self.dpop_algs.as_deref()));
        }
        out
    }

    fn challenge(&self, scheme: &str, with_error: bool, algs: Option<&str>) -> String {
        let mut params = Vec::with_capacity(4);
        if let (true, Some(code)) = (with_error, self.code) {
            params.push(format!("error=\"{}\"", code.as_str()));
            params.push(format!("error_description=\"{}\"", quote_safe(&self.description)));
            if let Some(scope) = &self.scope {
                params.push(format!("scope=\"{}\"", quote_safe(scope)));
            }
        }
        if let Some(algs) = algs {
            params.push(format!("algs=\"{}\"", quote_safe(algs)));
        }
        if let Some(url) = &self.resource_metadata {
            params.push(format!("resource_metadata=\"{}\"", quote_safe(url)));
        }
        if params.is_empty() { scheme.to_string() } else { format!("{scheme} {}", params.join(", ")) }
    }
}

/// Keeps a value safe inside a quoted-string: no quotes, backslashes or control characters.
fn quote_safe(text: &str) -> Cow<'_, str> {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\') {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' { c } else { '?' })
                .collect(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn algs() -> Arc<str> {
        Arc::from("ES256 PS256 EdDSA")
    }

    #[test]
    fn the_resource_metadata_url_goes_on_every_challenge() {
        let url: Arc<str> = "https://api.test/.well-known/oauth-protected-resource/a".into();
        let d = AuthDenial::missing_credentials().for_route(Binding::Any, &algs()).with_resource_metadata(Some(&url));
        assert_eq!(
            d.challenges(),
            [
                r#"Bearer resource_metadata="https://api.test/.well-known/oauth-protected-resource/a""#,
                r#"DPoP algs="ES256 PS256 EdDSA", resource_metadata="https://api.test/.well-known/oauth-protected-resource/a""#,
            ]
        );
    }

    #[test]
    fn no_credentials_challenge_has_no_error() {
        let d = AuthDenial::missing_credentials();
        assert_eq!(d.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(d.challenges(), vec!["Bearer"]);
        let d = AuthDenial::missing_credentials().for_route(Binding::Dpop, &algs());
        assert_eq!(d.challenges(), vec![r#"DPoP algs="ES256 PS256 EdDSA""#]);
        let d = AuthDenial::missing_credentials().for_route(Binding::Any, &algs());
        assert_eq!(d.challenges(), vec!["Bearer".to_string(), r#"DPoP algs="ES256 PS256 EdDSA""#.to_string()]);
    }

    #[test]
    fn the_error_goes_on_the_scheme_it_concerns() {
        let d = AuthDenial::dpop(AuthErrorCode::InvalidDpopProof, "x", "bad proof").for_route(Binding::Any, &algs());
        assert_eq!(
            d.challenges(),
            vec![
                "Bearer".to_string(),
                r#"DPoP error="invalid_dpop_proof", error_description="bad proof", algs="ES256 PS256 EdDSA""#
                    .to_string()
            ]
        );
        // A DPoP credential on an mtls route still gets its error on a DPoP challenge.
        let d = AuthDenial::dpop(AuthErrorCode::InvalidToken, "x", "no").for_route(Binding::Mtls, &algs());
        assert_eq!(d.challenges().len(), 2);
        assert!(d.challenges()[1].starts_with(r#"DPoP error="invalid_token""#));
    }

    #[test]
    fn ambiguous_requests_get_the_error_on_both() {
        let mut d = AuthDenial::new(AuthErrorCode::InvalidRequest, "x", "both").for_route(Binding::Any, &algs());
        d.scheme = Scheme::Both;
        assert_eq!(d.status(), StatusCode::BAD_REQUEST);
        for c in d.challenges() {
            assert!(c.contains(r#"error="invalid_request""#), "{c}");
        }
    }

    #[test]
    fn insufficient_scope_names_the_scope() {
        let mut d = AuthDenial::new(AuthErrorCode::InsufficientScope, "insufficient_scope", "needs more");
        d.scope = Some("accounts:read payments:write".into());
        assert_eq!(d.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            d.challenges(),
            vec![
                r#"Bearer error="insufficient_scope", error_description="needs more", scope="accounts:read payments:write""#
            ]
        );
    }

    #[test]
    fn descriptions_cannot_break_the_header() {
        let d = AuthDenial::new(AuthErrorCode::InvalidToken, "x", "a \"quoted\"\nvalue");
        assert_eq!(d.challenges(), vec![r#"Bearer error="invalid_token", error_description="a ?quoted??value""#]);
    }
}
