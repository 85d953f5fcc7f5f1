//! Every refusal the gateway makes — authentication challenges, routing, framing and
//! upstream failures — and the one place that turns it into an HTTP response.
//!
//! Each [`Rejection`] has a stable `reason()` code (logs and metrics), a [`FailureClass`]
//! (whose fault it was: the client's, the upstream's or the gateway's), a status, and a
//! small JSON body `{"error": …, "error_description": …}`. Authentication failures carry
//! an RFC 6750 §3 / RFC 9449 §7.1 `WWW-Authenticate` challenge ([`super::challenge`]);
//! every refusal is sent with `Cache-Control: no-store`.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_EXPOSE_HEADERS, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderName, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Response, StatusCode};

use super::challenge::{AuthDenial, AuthErrorCode};
use crate::body::{ProxyBody, full};
use crate::config::Binding;

/// RFC 9449 §8: the server-provided nonce.
pub const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// Whose fault a refusal is: metrics and logs count upstream faults apart, so that no
/// client can fake an upstream outage (nginx and Envoy draw the same line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// The request was wrong or not allowed: 4xx.
    Client,
    /// The route's upstream failed or did not answer in time: 502/504, counted in
    /// `fapi_gateway_upstream_errors_total`.
    Upstream,
    /// The gateway could not decide: its own dependencies (the issuer's signing keys, the
    /// DPoP replay store) are unavailable: 503.
    Internal,
}

/// Every refusal the gateway answers itself.
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
    /// The issuer's introspection endpoint gives no usable answer; the token might be fine.
    IntrospectionUnavailable,
    /// The DPoP replay store cannot accept the proof (full or unreachable): fail closed.
    ReplayStoreUnavailable,
    /// This DPoP key has `dpop.replay.per_key_limit` proofs in the replay window already:
    /// 429 until the oldest leave, so that it cannot fill the store for everybody.
    DpopKeyOverQuota {
        retry_after_secs: u64,
    },
    UpstreamUnavailable,
    UpstreamTimeout,
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
            Rejection::IntrospectionUnavailable => "introspection_unavailable",
            Rejection::ReplayStoreUnavailable => "replay_store_unavailable",
            Rejection::DpopKeyOverQuota { .. } => "dpop_key_over_quota",
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// Whose fault it is.
    pub fn class(&self) -> FailureClass {
        match self {
            Rejection::Auth(_)
            | Rejection::NotFound
            | Rejection::MethodNotAllowed { .. }
            | Rejection::Misdirected
            | Rejection::BadRequest { .. }
            | Rejection::PayloadTooLarge
            | Rejection::DpopKeyOverQuota { .. } => FailureClass::Client,
            Rejection::UpstreamUnavailable | Rejection::UpstreamTimeout => FailureClass::Upstream,
            Rejection::KeysUnavailable | Rejection::IntrospectionUnavailable | Rejection::ReplayStoreUnavailable => {
                FailureClass::Internal
            }
        }
    }

    /// The challenges of an authentication refusal set to what a route with `binding`
    /// accepts, naming its RFC 9728 document when it has one; other refusals are unchanged.
    pub fn offering(
        self,
        binding: Binding,
        dpop_algs: &std::sync::Arc<str>,
        resource_metadata: Option<&std::sync::Arc<str>>,
    ) -> Self {
        match self {
            Rejection::Auth(denial) => {
                Rejection::Auth(denial.for_route(binding, dpop_algs).with_resource_metadata(resource_metadata))
            }
            other => other,
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
            Rejection::DpopKeyOverQuota { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::KeysUnavailable | Rejection::IntrospectionUnavailable | Rejection::ReplayStoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
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
            Rejection::IntrospectionUnavailable => (
                "temporarily_unavailable",
                Cow::Borrowed("the token issuer cannot be asked about this token right now; retry later"),
            ),
            Rejection::ReplayStoreUnavailable => (
                "temporarily_unavailable",
                Cow::Borrowed("DPoP proofs cannot be checked for replay right now; retry later"),
            ),
            Rejection::DpopKeyOverQuota { .. } => (
                "too_many_requests",
                Cow::Borrowed("this DPoP key has sent too many proofs in the replay window; retry after Retry-After"),
            ),
            Rejection::UpstreamUnavailable => {
                ("bad_gateway", Cow::Borrowed("the upstream service could not be reached"))
            }
            Rejection::UpstreamTimeout => {
                ("gateway_timeout", Cow::Borrowed("the upstream service did not answer in time"))
            }
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
            Rejection::KeysUnavailable | Rejection::IntrospectionUnavailable | Rejection::ReplayStoreUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("5"));
            }
            Rejection::DpopKeyOverQuota { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
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

    #[test]
    fn every_refusal_is_classed_by_whose_fault_it_is() {
        use FailureClass::*;
        let bad = Rejection::BadRequest { reason: "x", description: "y".into() };
        let denial = Rejection::Auth(AuthDenial::missing_credentials());
        for (rejection, class) in [
            (denial, Client),
            (Rejection::NotFound, Client),
            (Rejection::MethodNotAllowed { allow: "GET".into() }, Client),
            (Rejection::Misdirected, Client),
            (bad, Client),
            (Rejection::PayloadTooLarge, Client),
            (Rejection::UpstreamUnavailable, Upstream),
            (Rejection::UpstreamTimeout, Upstream),
            (Rejection::KeysUnavailable, Internal),
            (Rejection::ReplayStoreUnavailable, Internal),
        ] {
            assert_eq!(rejection.class(), class, "{rejection:?}");
            let status = rejection.status().as_u16();
            let expected = match class {
                Client => 400..500,
                Upstream | Internal => 500..600,
            };
            assert!(expected.contains(&status), "{rejection:?}: {status}");
        }
    }
}
