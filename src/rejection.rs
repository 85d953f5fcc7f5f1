//! Every answer the gateway gives on its own — authentication challenges, routing and
//! upstream failures — and the one place that turns it into an HTTP response.
//!
//! Each [`Rejection`] has a stable `reason()` code (for logs and, later, metrics), a status,
//! and a small JSON body `{"error": …, "error_description": …}`. Authentication failures
//! carry an RFC 6750 §3 `WWW-Authenticate` challenge; every gateway-made response is sent
//! with `Cache-Control: no-store`.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_EXPOSE_HEADERS, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderName, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Response, StatusCode};

use crate::body::{ProxyBody, full};

pub use crate::auth::challenge::{AuthDenial, AuthErrorCode};

/// RFC 9449 §8: the server-provided nonce.
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Everything the gateway answers itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    Auth(AuthDenial),
    /// No route matches.
    NotFound,
    /// Routes match the host and path but none takes the method (RFC 9110 §15.5.6); `allow`
    /// is the `Allow` header value, e.g. `GET, HEAD`.
    MethodNotAllowed {
        allow: String,
    },
    /// Host differs from the TLS SNI (RFC 9110 §15.5.20).
    Misdirected,
    BadRequest {
        reason: &'static str,
        description: Cow<'static, str>,
    },
    PayloadTooLarge,
    /// The issuer's keys cannot be had right now; the token might be fine.
    KeysUnavailable,
    /// The DPoP replay store cannot accept the proof (full or unreachable): fail closed.
    ReplayStoreUnavailable,
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
            Rejection::MethodNotAllowed { .. } => "method_not_allowed",
            Rejection::Misdirected => "misdirected",
            Rejection::BadRequest { reason, .. } => reason,
            Rejection::PayloadTooLarge => "body_too_large",
            Rejection::KeysUnavailable => "keys_unavailable",
            Rejection::ReplayStoreUnavailable => "replay_store_unavailable",
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::Internal => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Auth(d) => d.status(),
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Rejection::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Rejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::KeysUnavailable | Rejection::ReplayStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_and_description(&self) -> (&'static str, Cow<'static, str>) {
        match self {
            Rejection::Auth(d) => (d.code.map_or("unauthorized", AuthErrorCode::as_str), d.description.clone()),
            Rejection::NotFound => ("not_found", Cow::Borrowed("no route matches this request")),
            Rejection::MethodNotAllowed { .. } => {
                ("method_not_allowed", Cow::Borrowed("the request method is not allowed for this path"))
            }
            Rejection::Misdirected => {
                ("misdirected_request", Cow::Borrowed("the Host header does not match the TLS server name"))
            }
            Rejection::BadRequest { description, .. } => ("invalid_request", description.clone()),
            Rejection::PayloadTooLarge => {
                ("payload_too_large", Cow::Borrowed("the request body exceeds the configured limit"))
            }
            Rejection::KeysUnavailable => (
                "temporarily_unavailable",
                Cow::Borrowed("the token issuer's signing keys cannot be fetched; retry later"),
            ),
            Rejection::ReplayStoreUnavailable => (
                "temporarily_unavailable",
                Cow::Borrowed("DPoP proofs cannot be checked for replay right now; retry later"),
            ),
            Rejection::UpstreamUnavailable => {
                ("bad_gateway", Cow::Borrowed("the upstream service could not be reached"))
            }
            Rejection::UpstreamTimeout => {
                ("gateway_timeout", Cow::Borrowed("the upstream service did not answer in time"))
            }
            Rejection::Internal => ("internal_error", Cow::Borrowed("the gateway failed to handle the request")),
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
                for challenge in denial.challenges() {
                    if let Ok(v) = HeaderValue::from_str(&challenge) {
                        headers.append(WWW_AUTHENTICATE, v);
                    }
                }
                if let Some(nonce) = denial.nonce.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
                    headers.insert(DPOP_NONCE, nonce);
                }
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("WWW-Authenticate, DPoP-Nonce"));
            }
            Rejection::KeysUnavailable | Rejection::ReplayStoreUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Rejection::MethodNotAllowed { allow } => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    headers.insert(ALLOW, v);
                }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_json_and_not_cacheable() {
        let r = Rejection::UpstreamTimeout.into_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let rejection = Rejection::MethodNotAllowed { allow: "GET, HEAD".into() };
        assert_eq!(rejection.reason(), "method_not_allowed");
        let r = rejection.into_response();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }
}
