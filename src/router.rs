//! Route selection: optional host, then path prefix on a segment boundary, then methods.
//! The most specific route wins: a host-bound route before a host-less one, a longer prefix
//! before a shorter one, a method-restricted route before one that takes every method.
//!
//! Also home of [`check_path`], which refuses request paths that different servers could
//! read differently (dot segments, encoded slashes): a path must mean the same thing to
//! the router and to the upstream, or an allowed prefix could smuggle a request elsewhere.

use http::Method;

use crate::config::Route;

/// The route table, compiled once per configuration.
#[derive(Debug)]
pub struct Router {
    /// Indexes into the configuration's routes, most specific first.
    order: Vec<usize>,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    host: Option<String>,
    prefix: String,
    methods: Option<Vec<Method>>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        let entries: Vec<Entry> = routes
            .iter()
            .map(|r| Entry { host: r.host.clone(), prefix: r.path_prefix.clone(), methods: r.methods.clone() })
            .collect();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| {
            let e = &entries[i];
            (
                std::cmp::Reverse(e.host.is_some()),
                std::cmp::Reverse(e.prefix.len()),
                std::cmp::Reverse(e.methods.is_some()),
                i,
            )
        });
        Router { order, entries }
    }

    /// The index of the most specific route for this request, if any. `host` is the request's
    /// host without port, in any case.
    pub fn route(&self, host: Option<&str>, path: &str, method: &Method) -> Option<usize> {
        self.order.iter().copied().find(|&i| {
            let e = &self.entries[i];
            let host_ok = match (&e.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_ok && prefix_matches(&e.prefix, path) && e.methods.as_ref().is_none_or(|m| m.contains(method))
        })
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, never `/apiv2`. The empty prefix (from `/`)
/// matches everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Why a request path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the request path must start with `/`")]
    NotAbsolute,
    #[error("the request path must not contain `.` or `..` segments")]
    DotSegment,
    #[error("the request path must not contain encoded `/`, `\\` or `.`, or a raw `\\`")]
    AmbiguousEncoding,
}

/// Refuses paths whose meaning could differ between the gateway and the upstream.
pub fn check_path(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // `..;x` is `..` to servers that strip path parameters (Tomcat and friends).
    if path.split('/').map(|seg| seg.split(';').next().unwrap_or(seg)).any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }
    if path.contains('\\') {
        return Err(PathError::AmbiguousEncoding);
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
        if hex.eq_ignore_ascii_case(b"2f") || hex.eq_ignore_ascii_case(b"5c") || hex.eq_ignore_ascii_case(b"2e") {
            return Err(PathError::AmbiguousEncoding);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{Binding, RoutePolicy};
    use std::time::Duration;

    fn route(name: &str, host: Option<&str>, prefix: &str, methods: Option<Vec<Method>>) -> Route {
        Route {
            name: name.into(),
            host: host.map(str::to_string),
            path_prefix: prefix.trim_end_matches('/').into(),
            methods,
            upstream: "http://127.0.0.1:1".parse().unwrap(),
            upstream_ca: None,
            timeout: Duration::from_secs(1),
            policy: RoutePolicy::Protected { binding: Binding::Mtls, scopes: vec![] },
            forward_client_cert: false,
            identity_headers: false,
            forward_token: crate::config::ForwardToken::Bearer,
            public_origin: "https://api.test".into(),
            nonce_required: false,
        }
    }

    fn names<'a>(routes: &'a [Route], r: &Router, host: Option<&str>, path: &str, m: Method) -> Option<&'a str> {
        r.route(host, path, &m).map(|i| routes[i].name.as_str())
    }

    #[test]
    fn prefix_matches_on_segment_boundary_only() {
        let routes = vec![route("api", None, "/api", None)];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, None, "/api", Method::GET), Some("api"));
        assert_eq!(names(&routes, &r, None, "/api/", Method::GET), Some("api"));
        assert_eq!(names(&routes, &r, None, "/api/x/y", Method::GET), Some("api"));
        assert_eq!(names(&routes, &r, None, "/apiv2", Method::GET), None);
        assert_eq!(names(&routes, &r, None, "/", Method::GET), None);
    }

    #[test]
    fn most_specific_route_wins() {
        let routes = vec![
            route("root", None, "/", None),
            route("api", None, "/api/", None),
            route("api-get", None, "/api", Some(vec![Method::GET])),
            route("api-deep", None, "/api/admin", None),
            route("api-host", Some("partner.test"), "/api", None),
        ];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, None, "/api/x", Method::POST), Some("api"));
        assert_eq!(names(&routes, &r, None, "/api/x", Method::GET), Some("api-get"));
        assert_eq!(names(&routes, &r, None, "/api/admin/1", Method::GET), Some("api-deep"));
        assert_eq!(names(&routes, &r, Some("PARTNER.test"), "/api/admin", Method::GET), Some("api-host"));
        assert_eq!(names(&routes, &r, Some("other.test"), "/other", Method::GET), Some("root"));
    }

    #[test]
    fn method_restriction_falls_through_to_no_match() {
        let routes = vec![route("get-only", None, "/x", Some(vec![Method::GET]))];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, None, "/x", Method::DELETE), None);
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(check_path("/public/../accounts"), Err(PathError::DotSegment));
        assert_eq!(check_path("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(check_path("/a/.."), Err(PathError::DotSegment));
        assert_eq!(check_path("/public/..;/mtls"), Err(PathError::DotSegment));
        assert_eq!(check_path("/public/.;x/mtls"), Err(PathError::DotSegment));
        assert_eq!(check_path("/public%2F..%2Faccounts"), Err(PathError::AmbiguousEncoding));
        assert_eq!(check_path("/public/%2e%2e/accounts"), Err(PathError::AmbiguousEncoding));
        assert_eq!(check_path("/a\\b"), Err(PathError::AmbiguousEncoding));
        assert_eq!(check_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(check_path("/a/b.json"), Ok(()));
        assert_eq!(check_path("/a/%20b"), Ok(()));
        assert_eq!(check_path("/a/...b"), Ok(()));
    }
}
