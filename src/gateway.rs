//! The request pipeline: one pass, in request order, from a parsed HTTP request to a
//! response. `handle` maps every [`Rejection`] to its response; `handle_inner` does the
//! work and short-circuits with `?`.
//!
//! 1. the Host must match the TLS SNI (421);
//! 2. the path must be canonical (400), then a route must match (404, or 405 when its
//!    path matches but not its methods) in the same letter case (400);
//! 3. a declared body larger than the limit is refused (413);
//! 4. the route's policy is enforced (token, binding, scopes: 400/401/403/503);
//! 5. the request is forwarded and the response streamed back (502/504 on failure).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::{ACCESS_CONTROL_EXPOSE_HEADERS, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, HeaderName};
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::auth::token::TokenValidator;
use crate::auth::{self, DpopRuntime, Outcome, RequestFacts};
use crate::body::ProxyBody;
use crate::config::Config;
use crate::metrics::{Metrics, RequestLabels, RouteMetrics};
use crate::proxy::{ForwardContext, Upstream, UpstreamTime, request_host};
use crate::rejection::{DPOP_NONCE, Rejection};
use crate::router::{Router, check_path};
use crate::server::ConnectionInfo;

/// What serves requests now; replaced whole by a configuration reload.
pub struct Live {
    pub state: Arc<GatewayState>,
    /// TLS for new connections (the certificate rotates on reload).
    pub server_tls: Arc<rustls::ServerConfig>,
}

/// Everything compiled from one configuration that requests read.
pub struct GatewayState {
    pub config: Config,
    pub router: Router,
    pub validator: TokenValidator,
    pub dpop: DpopRuntime,
    /// One upstream client per route, same index as `config.routes`.
    pub upstreams: Vec<Upstream>,
    pub metrics: Arc<Metrics>,
    /// Each route's metric handles, same index as `config.routes`; the last entry is `-`
    /// for requests that matched no route.
    pub route_metrics: Vec<RouteMetrics>,
}

impl GatewayState {
    /// Handles one request. Never fails: rejections become responses. Writes one access-log
    /// line per request (target `access`): request id, route, method, path (no query),
    /// status, reason code, latency, peer, a prefix of the client-certificate thumbprint and
    /// the token's `jti` (or a short fingerprint) — never a token, proof or key.
    pub async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        conn: Arc<ConnectionInfo>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let request_id = request_id(request.headers());
        request.headers_mut().insert(X_REQUEST_ID, request_id.clone());
        let method = request.method().clone();
        let logging = tracing::enabled!(target: "access", tracing::Level::INFO);
        let path = if logging { request.uri().path().to_owned() } else { String::new() };
        let credential = request.headers().get(AUTHORIZATION).cloned();
        let (route, result) = self.handle_inner(request, &conn).await;
        let (mut response, reason) = match result {
            Ok(response) => (response, "ok"),
            Err(rejection) => {
                let reason = rejection.reason();
                (rejection.into_response(), reason)
            }
        };
        let token = response.extensions_mut().remove::<TokenLog>().map(|t| t.0).or_else(|| credential.map(fingerprint));
        let upstream_time = response.extensions_mut().remove::<UpstreamTime>().map(|t| t.0);
        self.record(route, response.status().as_u16(), reason, started.elapsed(), upstream_time);
        if logging {
            let cert = conn.client_cert.as_ref().map(|c| crate::jose::b64url_encode(&c.thumbprint[..6]));
            tracing::info!(
                target: "access",
                request_id = request_id.to_str().unwrap_or("-"),
                route = route.map_or("-", |i| self.config.routes[i].name.as_str()),
                %method,
                path,
                status = response.status().as_u16(),
                reason,
                latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                peer = %conn.peer,
                cert = cert.as_deref().unwrap_or("-"),
                token = token.as_deref().unwrap_or("-"),
                "request"
            );
        }
        // The upstream got the same id; if it answers with its own, that one stands.
        if !response.headers().contains_key(X_REQUEST_ID) {
            response.headers_mut().insert(X_REQUEST_ID, request_id);
        }
        response
    }

    async fn handle_inner(
        &self,
        request: Request<Incoming>,
        conn: &ConnectionInfo,
    ) -> (Option<usize>, Result<Response<ProxyBody>, Rejection>) {
        let Ok(host) = request_host(request.uri(), request.headers()) else {
            return (
                None,
                Err(Rejection::BadRequest {
                    reason: "invalid_host",
                    description: "the Host header is not a valid host name".into(),
                }),
            );
        };
        if let (Some(sni), Some(host)) = (conn.sni.as_deref(), host) {
            if !sni.eq_ignore_ascii_case(host) {
                return (None, Err(Rejection::Misdirected));
            }
        }
        if let Err(e) = check_path(request.uri().path()) {
            return (None, Err(Rejection::BadRequest { reason: "ambiguous_path", description: e.to_string().into() }));
        }
        let index = match self.router.route(host, request.uri().path(), request.method()) {
            Ok(index) => index,
            Err(crate::router::RouteMiss::NotFound) => return (None, Err(Rejection::NotFound)),
            Err(crate::router::RouteMiss::MethodNotAllowed(allow)) => {
                return (None, Err(Rejection::MethodNotAllowed { allow }));
            }
        };
        let route = &self.config.routes[index];
        // Prefixes match case-insensitively so that `/ACCOUNTS` cannot slip past a protected
        // `/accounts` to a public catch-all; a path that differs in case from its route is
        // refused outright, since a case-sensitive upstream would serve another resource.
        if !request.uri().path().starts_with(route.path_prefix.as_str()) {
            return (
                Some(index),
                Err(Rejection::BadRequest {
                    reason: "path_case_mismatch",
                    description: "the request path differs in letter case from the route's path".into(),
                }),
            );
        }
        let limits = &self.config.limits;
        let declared =
            request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limits.max_body_bytes) {
            return (Some(index), Err(Rejection::PayloadTooLarge));
        }
        let facts = RequestFacts {
            method: request.method(),
            path: request.uri().path(),
            query: request.uri().query(),
            headers: request.headers(),
            client_cert: conn.client_cert.as_ref().map(|c| &c.thumbprint),
            now: unix_now(),
            token_memo: Some(&conn.token_memo),
        };
        let outcome = match auth::authorize(&self.validator, &self.dpop, route, facts).await {
            Ok(outcome) => outcome,
            Err(rejection) => return (Some(index), Err(rejection)),
        };
        let (token, dpop_jkt, fresh_nonce) = match &outcome {
            Outcome::Authorized { token, dpop_jkt, fresh_nonce } => {
                (Some(token.as_ref()), *dpop_jkt, fresh_nonce.clone())
            }
            Outcome::Public => (None, None, None),
        };
        let ctx = ForwardContext {
            forwarded: &conn.forwarded,
            client_cert_der: conn.client_cert.as_ref().map(|c| c.der.as_slice()),
            client_cert_trusted: self.config.listen.tls.client_ca.is_some()
                || token.is_some_and(|t| t.cnf.x5t_s256.is_some()),
            token,
            dpop_jkt,
            max_body_bytes: limits.max_body_bytes,
        };
        let log = token
            .map(|t| TokenLog(t.jti.as_ref().map_or_else(|| "no-jti".to_string(), |j| format!("jti:{}", sanitize(j)))));
        let mut result = self.upstreams[index].forward(request, route, ctx).await;
        if let Ok(response) = result.as_mut() {
            if let Some(nonce) = fresh_nonce {
                attach_nonce(response, &nonce);
            }
            if let Some(log) = log {
                response.extensions_mut().insert(log);
            }
        }
        (Some(index), result)
    }
}

impl GatewayState {
    /// Counts the request and its latencies.
    fn record(
        &self,
        route: Option<usize>,
        status: u16,
        reason: &'static str,
        total: Duration,
        upstream: Option<Duration>,
    ) {
        let handles = &self.route_metrics[route.unwrap_or(self.route_metrics.len() - 1)];
        let m = &self.metrics;
        if status == 200 && reason == "ok" {
            handles.ok.inc();
        } else {
            m.requests.get_or_create(&RequestLabels { route: handles.label.clone(), status, reason }).inc();
        }
        if matches!(reason, "upstream_unavailable" | "upstream_timeout" | "body_too_large") {
            m.upstream_errors.get_or_create(&RequestLabels { route: handles.label.clone(), status, reason }).inc();
        }
        if let Some(upstream) = upstream {
            handles.upstream_seconds.observe(upstream.as_secs_f64());
        }
        handles.gateway_seconds.observe(total.saturating_sub(upstream.unwrap_or_default()).as_secs_f64());
    }
}

/// `X-Request-Id`: taken from the client when it is a sane identifier, else generated;
/// passed upstream and returned to the client.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How the access log names the token of an authorised request.
#[derive(Clone)]
struct TokenLog(String);

fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    let sane = |v: &&HeaderValue| {
        let b = v.as_bytes();
        (1..=128).contains(&b.len())
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
    };
    if let Some(v) = headers.get(X_REQUEST_ID).filter(sane) {
        return v.clone();
    }
    generated_request_id()
}

/// 32 hex digits: a random 64-bit prefix drawn once per process, then a counter passed
/// through a keyed bijection (SplitMix64's finaliser), so ids are unique per process and,
/// through the prefix, across instances, and do not show clients how many requests an
/// instance serves — without a random draw per request (the system RNG cost a visible
/// share of each request, see BENCHMARKS.md). Not secrets: nothing trusts them.
fn generated_request_id() -> HeaderValue {
    static SEED: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (prefix, key) = *SEED.get_or_init(|| {
        let mut bytes = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        let (prefix, key) = bytes.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        (word(prefix), word(key))
    });
    let mut x = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed) ^ key;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    HeaderValue::from_str(&format!("{prefix:016x}{x:016x}")).unwrap_or(HeaderValue::from_static("-"))
}

/// A short, non-reversible name for the credential of a refused request: `fp:` and the first
/// 8 hex digits of the token's SHA-256. Never the token itself.
fn fingerprint(authorization: HeaderValue) -> String {
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
/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_unique_hex_with_one_prefix() {
        let ids: Vec<String> =
            (0..10_000).map(|_| generated_request_id().to_str().unwrap_or_default().to_string()).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        assert!(ids.iter().all(|id| id[..16] == ids[0][..16]));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Consecutive ids do not count up.
        assert!(ids.windows(2).any(|w| w[0][16..] > w[1][16..]));
    }
}
