//! Every answer the gateway gives on its own — authentication challenges, routing and
//! upstream failures — and the one place that turns it into an HTTP response.
//!
//! Each [`Rejection`] has a stable `reason()` code (for logs and, later, metrics), a status,
//! and a small JSON body `{"error": …, "error_description": …}`. Authentication failures
//! carry an RFC 6750 §3 `WWW-Authenticate` challenge; every gateway-made response is sent
//! with `Cache-Control: no-store`.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{ProxyBody, full};

/// An RFC 6750 §3.1 error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthErrorCode {
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
}

impl AuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthErrorCode::InvalidRequest => "invalid_request",
            AuthErrorCode::InvalidToken => "invalid_token",
            AuthErrorCode::InsufficientScope => "insufficient_scope",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            AuthErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            AuthErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            AuthErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        }
    }
}

/// A refused authentication or authorisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthDenial {
    /// `None` when the request carried no credentials at all: RFC 6750 §3.1 says the
    /// challenge then has no error information, and the status is 401.
    pub code: Option<AuthErrorCode>,
    /// Stable machine-readable reason, e.g. `token_expired`.
    pub reason: &'static str,
    pub description: Cow<'static, str>,
    /// The scopes the route needs, for `insufficient_scope`.
    pub scope: Option<String>,
}

impl AuthDenial {
    pub fn new(
        code: AuthErrorCode,
        reason: &'static str,
        description: impl Into<Cow<'static, str>>,
    ) -> Self {
        AuthDenial {
            code: Some(code),
            reason,
            description: description.into(),
            scope: None,
        }
    }

    pub fn missing_credentials() -> Self {
        AuthDenial {
            code: None,
            reason: "no_credentials",
            description: Cow::Borrowed("an access token is required"),
            scope: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code
            .map_or(StatusCode::UNAUTHORIZED, AuthErrorCode::status)
    }

    /// The `WWW-Authenticate` value for the `Bearer` scheme.
    pub fn bearer_challenge(&self) -> String {
        let Some(code) = self.code else {
            return "Bearer".to_string();
        };
        let mut value = format!(
            "Bearer error=\"{}\", error_description=\"{}\"",
            code.as_str(),
            quote_safe(&self.description)
        );
        if let Some(scope) = &self.scope {
            value.push_str(&format!(", scope=\"{}\"", quote_safe(scope)));
        }
        value
    }
}

/// Everything the gateway answers itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    Auth(AuthDenial),
    /// No route matches.
    NotFound,
    /// Host differs from the TLS SNI (RFC 9110 §15.5.20).
    Misdirected,
    BadRequest {
        reason: &'static str,
        description: Cow<'static, str>,
    },
    PayloadTooLarge,
    /// The issuer's keys cannot be had right now; the token might be fine.
    KeysUnavailable,
    UpstreamUnavailable,
    UpstreamTimeout,
    Internal,
}

impl Rejection {
    /// Stable reason code for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Auth(d) => d.reason,
            Rejection::NotFound => "no_route",
            Rejection::Misdirected => "misdirected",
            Rejection::BadRequest { reason, .. } => reason,
            Rejection::PayloadTooLarge => "body_too_large",
            Rejection::KeysUnavailable => "keys_unavailable",
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::Internal => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Auth(d) => d.status(),
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Rejection::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Rejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_and_description(&self) -> (&'static str, Cow<'static, str>) {
        match self {
            Rejection::Auth(d) => (
                d.code.map_or("unauthorized", AuthErrorCode::as_str),
                d.description.clone(),
            ),
            Rejection::NotFound => ("not_found", Cow::Borrowed("no route matches this request")),
            Rejection::Misdirected => (
                "misdirected_request",
                Cow::Borrowed("the Host header does not match the TLS server name"),
            ),
            Rejection::BadRequest { description, .. } => ("invalid_request", description.clone()),
            Rejection::PayloadTooLarge => (
                "payload_too_large",
                Cow::Borrowed("the request body exceeds the configured limit"),
            ),
            Rejection::KeysUnavailable => (
                "temporarily_unavailable",
                Cow::Borrowed("the token issuer's signing keys cannot be fetched; retry later"),
            ),
            Rejection::UpstreamUnavailable => (
                "bad_gateway",
                Cow::Borrowed("the upstream service could not be reached"),
            ),
            Rejection::UpstreamTimeout => (
                "gateway_timeout",
                Cow::Borrowed("the upstream service did not answer in time"),
            ),
            Rejection::Internal => (
                "internal_error",
                Cow::Borrowed("the gateway failed to handle the request"),
            ),
        }
    }

    /// The response sent to the client.
    pub fn into_response(self) -> Response<ProxyBody> {
        let (error, description) = self.error_and_description();
        let body = serde_json::json!({ "error": error, "error_description": description });
        let mut response = Response::new(full(Bytes::from(body.to_string())));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            Rejection::Auth(denial) => {
                if let Ok(v) = HeaderValue::from_str(&denial.bearer_challenge()) {
                    headers.insert(WWW_AUTHENTICATE, v);
                }
            }
            Rejection::KeysUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

impl From<AuthDenial> for Rejection {
    fn from(d: AuthDenial) -> Self {
        Rejection::Auth(d)
    }
}

/// Keeps a value safe inside a quoted-string: no quotes, backslashes or control characters.
fn quote_safe(text: &str) -> Cow<'_, str> {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(
            text.chars()
                .map(|c| {
                    if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                        c
                    } else {
                        '?'
                    }
                })
                .collect(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_credentials_challenge_has_no_error() {
        let d = AuthDenial::missing_credentials();
        assert_eq!(d.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(d.bearer_challenge(), "Bearer");
    }

    #[test]
    fn insufficient_scope_names_the_scope() {
        let mut d = AuthDenial::new(
            AuthErrorCode::InsufficientScope,
            "insufficient_scope",
            "needs more",
        );
        d.scope = Some("accounts:read payments:write".into());
        assert_eq!(d.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            d.bearer_challenge(),
            r#"Bearer error="insufficient_scope", error_description="needs more", scope="accounts:read payments:write""#
        );
    }

    #[test]
    fn descriptions_cannot_break_the_header() {
        let d = AuthDenial::new(AuthErrorCode::InvalidToken, "x", "a \"quoted\"\nvalue");
        assert_eq!(
            d.bearer_challenge(),
            r#"Bearer error="invalid_token", error_description="a ?quoted??value""#
        );
    }

    #[test]
    fn responses_are_json_and_not_cacheable() {
        let r = Rejection::UpstreamTimeout.into_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}
