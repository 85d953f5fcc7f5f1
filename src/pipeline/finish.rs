//! Phase 5, finish: the response phase. It sees the whole exchange and the response —
//! the upstream's, or the gateway's own [`Answer`] — and is where response-side work
//! lives: the DPoP nonce headers of a successful response (RFC 9449 §8.2), `X-Request-Id`,
//! the request metrics and the access log (later: response signatures).
//!
//! The access log (target `access`, one line per request) names the request id, route,
//! method, path (no query), status, reason code, latency, the upstream's time to its
//! response head, the response's `Content-Length` (`bytes`; `-` when streamed without one —
//! the line is written when the response starts), peer, user agent, a prefix of the client
//! certificate's thumbprint and the token's `jti` (or, for a refused request, a short
//! fingerprint of the credential) — never a token, proof or key.

use std::time::Duration;

use http::header::{ACCESS_CONTROL_EXPOSE_HEADERS, CACHE_CONTROL};
use http::{HeaderValue, Response};

use super::{Exchange, GatewayState, X_REQUEST_ID};
use crate::answer::{Answer, DPOP_NONCE, FailureClass};
use crate::body::ProxyBody;
use crate::metrics::RequestLabels;

/// The reason code of a request the upstream answered.
const OK: &str = "ok";

/// Turns the outcome of the request into the response sent to the client, counts it and
/// logs it.
pub fn finish(
    state: &GatewayState,
    exchange: Exchange<'_>,
    outcome: Result<Response<ProxyBody>, Answer>,
) -> Response<ProxyBody> {
    let (mut response, reason, class) = match outcome {
        Ok(mut response) => {
            if let Some(nonce) = &exchange.notes.fresh_nonce {
                attach_nonce(&mut response, nonce);
            }
            (response, OK, None)
        }
        Err(answer) => {
            let (reason, class) = (answer.reason(), answer.class());
            if let Some(description) = answer.description() {
                tracing::debug!(
                    target: "refusal",
                    request_id = exchange.request_id.to_str().unwrap_or("-"),
                    route = exchange.route.map_or("-", |r| r.spec.name.as_str()),
                    reason,
                    description,
                    "request refused"
                );
            }
            (answer.into_response(), reason, class)
        }
    };
    if let Some(cors) = exchange.route.and_then(|r| r.spec.cors.as_deref())
        && !exchange.notes.cors_passthrough
    {
        super::cors::decorate(&mut response, cors, exchange.notes.cors_origin.as_ref());
    }
    let status = response.status().as_u16();
    let total = exchange.started.elapsed();
    record(state, &exchange, status, reason, class, total);
    if exchange.logging {
        let bytes = response.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        access_log(&exchange, status, reason, total, bytes);
    }
    tracing::trace!(target: "exchange", ?exchange, status, reason, "exchange finished");
    // The upstream got the same id; if it answers with its own, that one stands.
    if !response.headers().contains_key(X_REQUEST_ID) {
        response.headers_mut().insert(X_REQUEST_ID, exchange.request_id);
    }
    response
}

/// Counts the request and its latencies on its route's handles (`-` when unrouted).
fn record(
    state: &GatewayState,
    exchange: &Exchange<'_>,
    status: u16,
    reason: &'static str,
    class: Option<FailureClass>,
    total: Duration,
) {
    let handles = exchange.route.map_or(&state.unrouted, |r| &r.metrics);
    let m = &state.metrics;
    // The pre-looked-up counter of `{status="200", reason="ok"}`: an upstream's 200.
    if status == 200 && reason == OK {
        handles.ok.inc();
    } else {
        m.requests.get_or_create(&RequestLabels { route: handles.label.clone(), status, reason }).inc();
    }
    if class == Some(FailureClass::Upstream) {
        m.upstream_errors.get_or_create(&RequestLabels { route: handles.label.clone(), status, reason }).inc();
    }
    if let Some(upstream) = exchange.upstream_time {
        handles.upstream_seconds.observe(upstream.as_secs_f64());
    }
    handles.gateway_seconds.observe(total.saturating_sub(exchange.upstream_time.unwrap_or_default()).as_secs_f64());
}

fn access_log(exchange: &Exchange<'_>, status: u16, reason: &'static str, total: Duration, bytes: Option<&str>) {
    let conn = exchange.conn;
    let identity = exchange.principal.as_ref().and_then(|p| p.identity.as_ref());
    let token = match identity {
        Some(identity) => identity.jti.as_deref().map_or(TokenField::NoJti, TokenField::Jti),
        None => exchange.notes.credential.as_ref().map_or(TokenField::None, |c| fingerprint(c.expose())),
    };
    // The fields are formatted straight into the line: no allocation of their own.
    tracing::info!(
        target: "access",
        request_id = exchange.request_id.to_str().unwrap_or("-"),
        route = exchange.route.map_or("-", |r| r.spec.name.as_str()),
        method = %exchange.method,
        path = exchange.path,
        status,
        reason,
        latency_us = u64::try_from(total.as_micros()).unwrap_or(u64::MAX),
        upstream_us = %MicrosField(exchange.upstream_time),
        bytes = bytes.unwrap_or("-"),
        peer = %conn.peer,
        user_agent = exchange.user_agent.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
        cert = %CertField(exchange.client_cert().map(|c| &c.thumbprint)),
        token = %token,
        "request"
    );
}

/// The access line's `upstream_us`: microseconds to the upstream's response head, `-` when
/// no upstream answered.
struct MicrosField(Option<Duration>);

impl std::fmt::Display for MicrosField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{}", u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => f.write_str("-"),
        }
    }
}

/// The access line's `cert`: base64url of the first 6 bytes of the client certificate's
/// thumbprint (8 characters), or `-`.
struct CertField<'a>(Option<&'a [u8; 32]>);

impl std::fmt::Display for CertField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use base64::Engine as _;
        let Some(thumbprint) = self.0 else {
            return f.write_str("-");
        };
        let mut text = [0u8; 8];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(&thumbprint[..6], &mut text) {
            Ok(8) => f.write_str(std::str::from_utf8(&text).unwrap_or("-")),
            _ => f.write_str("-"),
        }
    }
}

/// The access line's `token`: the token's `jti` (printable ASCII, at most 64 characters),
/// `no-jti`, a refused credential's fingerprint, or `-` — never the token itself.
enum TokenField<'a> {
    Jti(&'a str),
    NoJti,
    /// The first 4 bytes of the credential's SHA-256.
    Fingerprint([u8; 4]),
    None,
}

impl std::fmt::Display for TokenField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenField::Jti(jti) => {
                f.write_str("jti:")?;
                for c in jti.chars().filter(char::is_ascii_graphic).take(64) {
                    std::fmt::Write::write_char(f, c)?;
                }
                Ok(())
            }
            TokenField::NoJti => f.write_str("no-jti"),
            TokenField::Fingerprint(d) => write!(f, "fp:{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3]),
            TokenField::None => f.write_str("-"),
        }
    }
}

/// A short, non-reversible name for the credential of a refused request: `fp:` and the first
/// 8 hex digits of the token's SHA-256. Never the token itself.
fn fingerprint(authorization: &HeaderValue) -> TokenField<'static> {
    let token = authorization.as_bytes().splitn(2, |&b| b == b' ').nth(1).unwrap_or_default();
    let digest = crate::jose::sha256(token);
    TokenField::Fingerprint([digest[0], digest[1], digest[2], digest[3]])
}

/// RFC 9449 §8.2: a new nonce on a successful response; such a response must not be cached.
fn attach_nonce(response: &mut Response<ProxyBody>, nonce: &str) {
    if let Ok(value) = HeaderValue::from_str(nonce) {
        let headers = response.headers_mut();
        headers.insert(DPOP_NONCE, value);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // Appended, not inserted: the upstream's own exposed headers must survive.
        headers.append(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("DPoP-Nonce"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cert_field_is_eight_characters_of_the_thumbprint_or_a_dash() {
        let mut thumbprint = [0u8; 32];
        thumbprint[..6].copy_from_slice(&[0xfb, 0xff, 0x00, 0x01, 0x02, 0x03]);
        assert_eq!(CertField(Some(&thumbprint)).to_string(), "-_8AAQID");
        assert_eq!(CertField(None).to_string(), "-");
    }

    #[test]
    fn the_token_field_never_carries_more_than_a_sanitised_jti_or_a_fingerprint() {
        assert_eq!(TokenField::Jti("a b\u{7}c\nd\u{e9}").to_string(), "jti:abcd");
        assert_eq!(TokenField::Jti(&"x".repeat(100)).to_string(), format!("jti:{}", "x".repeat(64)));
        assert_eq!(TokenField::NoJti.to_string(), "no-jti");
        assert_eq!(TokenField::None.to_string(), "-");
        let field = fingerprint(&HeaderValue::from_static("Bearer secret-token"));
        let digest = crate::jose::sha256(b"secret-token");
        assert_eq!(
            field.to_string(),
            format!("fp:{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3])
        );
    }
}
