//! Phase 2, route: the most specific route for the canonical host and path
//! ([`crate::router`]), in the same letter case as its prefix.

use http::Request;

use super::{GatewayState, ServedRoute};
use crate::answer::Rejection;
use crate::router::RouteMiss;

/// Returns the route that serves the request.
///
/// Refuses with 404 when none matches, 405 (with `Allow`) when routes match the host and
/// path but none takes the method, and 400 `path_case_mismatch` when the path differs in
/// letter case from the route's prefix.
pub fn route<'s, B>(
    state: &'s GatewayState,
    host: Option<&str>,
    request: &Request<B>,
) -> Result<&'s ServedRoute, Rejection> {
    let path = request.uri().path();
    let index = state.router.route(host, path, request.method()).map_err(|miss| match miss {
        RouteMiss::NotFound => Rejection::NotFound,
        RouteMiss::MethodNotAllowed(allow) => Rejection::MethodNotAllowed { allow },
    })?;
    let route = state.routes.get(index).ok_or(Rejection::NotFound)?;
    // Prefixes match case-insensitively so that `/ACCOUNTS` cannot slip past a protected
    // `/accounts` to a public catch-all; a path that differs in case from its route is
    // refused outright, since a case-sensitive upstream would serve another resource.
    if !path.starts_with(route.spec.path_prefix.as_str()) {
        return Err(Rejection::BadRequest {
            reason: "path_case_mismatch",
            description: "the request path differs in letter case from the route's path".into(),
        });
    }
    Ok(route)
}
