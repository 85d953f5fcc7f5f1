//! CORS (the Fetch standard's CORS protocol) for routes with `cors:`: browser apps on the
//! allowed origins may call them, read the challenges (`WWW-Authenticate`) and the
//! `DPoP-Nonce` a DPoP client needs, and send `Authorization` and `DPoP`.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is routed by
//!   the method it asks about (unless another route takes `OPTIONS` itself; a request with a
//!   body is no preflight). From an allowed origin the gateway answers it (204 with the
//!   route's methods, headers and max age), or with `preflight: upstream` passes it to the
//!   upstream without authentication and without any credential the client sent; from any
//!   other origin it answers 403 without CORS headers. Preflights never reach
//!   authentication.
//! - Every other answer of the route — the upstream's or the gateway's own refusals — gets
//!   `Vary: Origin`, and for an allowed origin `Access-Control-Allow-Origin` (that origin,
//!   never `*`) and `Access-Control-Expose-Headers`; the upstream's own `Access-Control-*`
//!   answer headers are replaced. No credentials mode: DPoP and bearer tokens travel in
//!   headers the page sets, not in cookies.

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD,
    CACHE_CONTROL, CONTENT_TYPE, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use super::{GatewayState, ServedRoute};
use crate::answer::Answer;
use crate::body::{ProxyBody, full};
use crate::config::CorsPolicy;

/// What to do with a preflight.
pub enum Preflight<'s> {
    /// The gateway's answer (204, or 403 for another origin).
    Answer(Answer),
    /// `preflight: upstream`: send it to this route's upstream, unauthenticated.
    Forward(&'s ServedRoute),
}

/// A CORS preflight for a route with `cors:`, and what to do with it; `None` when the
/// request is not a preflight or the route it asks about has no CORS policy (it then goes
/// on as any other request).
pub fn preflight<'s, B: hyper::body::Body>(
    state: &'s GatewayState,
    host: Option<&str>,
    request: &Request<B>,
) -> Option<(Preflight<'s>, &'s ServedRoute)> {
    if request.method() != Method::OPTIONS {
        return None;
    }
    let origin = request.headers().get(ORIGIN)?;
    let method = Method::from_bytes(request.headers().get(ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()?;
    // A browser's preflight has no body; anything else is an ordinary OPTIONS request.
    let has_body = request.headers().contains_key(http::header::TRANSFER_ENCODING)
        || request.headers().get(http::header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0")
        || !request.body().is_end_stream();
    if has_body {
        return None;
    }
    let path = request.uri().path();
    let index = state.router.route(host, path, &method).ok()?;
    // A route that takes OPTIONS itself keeps it: a preflight may not reach another.
    if state.router.route(host, path, &Method::OPTIONS).is_ok_and(|own| own != index) {
        return None;
    }
    let route = state.routes.get(index)?;
    let cors = route.spec.cors.as_ref()?;
    if !path.starts_with(route.spec.path_prefix.as_str()) {
        return None;
    }
    let decision = match (cors.allows(origin.as_bytes()), cors.preflight_upstream) {
        (false, _) => Preflight::Answer(refused()),
        (true, true) => Preflight::Forward(route),
        (true, false) => Preflight::Answer(answered(cors)),
    };
    Some((decision, route))
}

/// The request's `Origin` when `cors` allows it.
pub fn allowed_origin(cors: &CorsPolicy, headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(ORIGIN).filter(|origin| cors.allows(origin.as_bytes())).cloned()
}

/// The gateway's answer to an allowed preflight; [`decorate`] adds the origin.
fn answered(cors: &CorsPolicy) -> Answer {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_METHODS, cors.allow_methods.clone());
    headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, cors.allow_headers.clone());
    headers.insert(ACCESS_CONTROL_MAX_AGE, cors.max_age.clone());
    headers.append(VARY, HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"));
    Answer::Respond { response: Box::new(response), reason: "cors_preflight" }
}

/// A preflight from an origin the route does not allow: no CORS headers, so the browser
/// stops there.
fn refused() -> Answer {
    let body = serde_json::json!({
        "error": "cors_origin_refused",
        "error_description": "this origin may not call this route from a browser",
    });
    let mut response = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Answer::Respond { response: Box::new(response), reason: "cors_origin_refused" }
}

/// Puts the route's CORS answer headers on `response`: `Vary: Origin` always, the allowed
/// `origin` and the exposed headers when there is one; the upstream's own are replaced.
pub fn decorate(response: &mut Response<ProxyBody>, cors: &CorsPolicy, origin: Option<&HeaderValue>) {
    let headers = response.headers_mut();
    for name in [ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_EXPOSE_HEADERS] {
        headers.remove(name);
    }
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, cors.expose_headers.clone());
    }
}
