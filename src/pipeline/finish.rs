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

use super::access_line::{AccessLine, CertField, TokenField, fingerprint};
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
    attach_request_id(response.headers_mut(), exchange.request_id);
    response
}

/// Returns the request id to the client: ours, unless the upstream answered with its own
/// (it got ours; its answer stands). Either way marked sensitive, which makes HTTP/2 send
/// it as a never-indexed literal (RFC 7541 §6.2.3): a value unique to each response would
/// otherwise be inserted into the connection's HPACK table on every response, where `h2`
/// first walks every earlier id of that name and the insert evicts the entries that do
/// repeat (`server`, `content-type`). HTTP/1.1 ignores the mark.
fn attach_request_id(headers: &mut http::HeaderMap, mut ours: HeaderValue) {
    match headers.entry(X_REQUEST_ID) {
        http::header::Entry::Occupied(mut theirs) => theirs.get_mut().set_sensitive(true),
        http::header::Entry::Vacant(slot) => {
            ours.set_sensitive(true);
            slot.insert(ours);
        }
    }
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
    let line = AccessLine {
        request_id: exchange.request_id.to_str().unwrap_or("-"),
        route: exchange.route.map_or("-", |r| r.spec.name.as_str()),
        method: exchange.method.as_str(),
        path: &exchange.path,
        status,
        reason,
        latency: total,
        upstream: exchange.upstream_time,
        bytes: bytes.unwrap_or("-"),
        peer: conn.peer,
        user_agent: exchange.user_agent.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
        cert: CertField(exchange.client_cert().map(|c| &c.thumbprint)),
        token,
    };
    // The plain format on the batching writer: written straight into its buffer.
    match crate::log_writer::plain_access_sink() {
        Some(sink) => sink.append_with(|buffer| line.write_plain(buffer, std::time::SystemTime::now())),
        None => line.emit(),
    }
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
    fn the_request_id_goes_back_never_indexed_and_the_upstreams_own_stands() {
        let mut headers = http::HeaderMap::new();
        attach_request_id(&mut headers, HeaderValue::from_static("ours"));
        let id = &headers[X_REQUEST_ID];
        assert_eq!((id.as_bytes(), id.is_sensitive()), (&b"ours"[..], true));

        let mut headers = http::HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("theirs"));
        attach_request_id(&mut headers, HeaderValue::from_static("ours"));
        let ids: Vec<_> = headers.get_all(X_REQUEST_ID).iter().map(|v| (v.as_bytes(), v.is_sensitive())).collect();
        assert_eq!(ids, [(&b"theirs"[..], true)]);
    }
}
