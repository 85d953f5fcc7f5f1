//! Phase 5, finish: the response phase. It sees the whole exchange and the response —
//! the upstream's, or the gateway's own [`Answer`] — and is where response-side work
//! lives: the DPoP nonce headers of a successful response (RFC 9449 §8.2), `X-Request-Id`,
//! the request metrics and the access log (later: response signatures).
//!
//! The access log (target `access`, one line per request) names the request id, route,
//! method, path (no query), status, reason code, latency, peer, a prefix of the client
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
            (answer.into_response(), reason, class)
        }
    };
    let status = response.status().as_u16();
    let total = exchange.started.elapsed();
    record(state, &exchange, status, reason, class, total);
    if exchange.logging {
        access_log(&exchange, status, reason, total);
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

fn access_log(exchange: &Exchange<'_>, status: u16, reason: &'static str, total: Duration) {
    let conn = exchange.conn;
    let cert = conn.client_cert.as_ref().map(|c| crate::jose::b64url_encode(&c.thumbprint[..6]));
    let identity = exchange.principal.as_ref().and_then(|p| p.identity.as_ref());
    let token = match identity {
        Some(identity) => {
            Some(identity.jti.as_deref().map_or_else(|| "no-jti".to_string(), |j| format!("jti:{}", sanitize(j))))
        }
        None => exchange.notes.credential.as_ref().map(|c| fingerprint(c.expose())),
    };
    tracing::info!(
        target: "access",
        request_id = exchange.request_id.to_str().unwrap_or("-"),
        route = exchange.route.map_or("-", |r| r.spec.name.as_str()),
        method = %exchange.method,
        path = exchange.path,
        status,
        reason,
        latency_us = u64::try_from(total.as_micros()).unwrap_or(u64::MAX),
        peer = %conn.peer,
        cert = cert.as_deref().unwrap_or("-"),
        token = token.as_deref().unwrap_or("-"),
        "request"
    );
}

/// A short, non-reversible name for the credential of a refused request: `fp:` and the first
/// 8 hex digits of the token's SHA-256. Never the token itself.
fn fingerprint(authorization: &HeaderValue) -> String {
    let token = authorization.as_bytes().splitn(2, |&b| b == b' ').nth(1).unwrap_or_default();
    let digest = crate::jose::sha256(token);
    format!("fp:{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3])
}

/// A `jti` made safe for a log line (printable ASCII, at most 64 characters).
fn sanitize(value: &str) -> String {
    value.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()
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
