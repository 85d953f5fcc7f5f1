//! Route selection: optional host, then path prefix on a segment boundary, then methods.
//!
//! The most specific `(host, path prefix)` that matches the request is found first, whatever
//! the method: a host-bound route before a host-less one, a longer prefix before a shorter
//! one. Only routes with exactly that host and prefix are then considered for the method: a
//! route listing the method (`HEAD` counts as listed where `GET` is) before one that takes
//! every method. A method none of them takes is refused (405), never handed to a less specific
//! route: `POST /accounts/1` must not fall through from a GET-only `/accounts` to a public `/`.
//!
//! Prefixes compare ASCII case-insensitively: many upstreams treat `/ACCOUNTS` as `/accounts`,
//! so a request the gateway cannot tell apart from a protected route's must get its policy.
//!
//! Paths reach the router only after [`crate::uri::check_path`] refused every spelling
//! that different servers could read differently.

use http::Method;

use crate::config::Route;

/// The route table, compiled once per configuration.
#[derive(Debug)]
pub struct Router {
    /// Distinct `(host, prefix)` pairs, most specific first.
    groups: Vec<Group>,
    /// Every route's methods, same index as the configuration's routes.
    methods: Vec<Option<Vec<Method>>>,
}

/// The routes sharing one host and (case-folded) path prefix.
#[derive(Debug)]
struct Group {
    /// Lower-case, as the configuration stores it.
    host: Option<String>,
    /// ASCII lower-case, without a trailing `/` (`""` for the root).
    prefix: String,
    /// Indexes into the configuration's routes, in configuration order.
    routes: Vec<usize>,
}

/// Why no route takes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMiss {
    /// No route's host and prefix match.
    NotFound,
    /// Routes match the host and prefix, but none takes the method. Holds the value of the
    /// `Allow` header: every method those routes take, comma-separated (`GET, HEAD`).
    MethodNotAllowed(String),
}

impl Router {
    pub fn new(routes: &[Route]) -> Router {
        let mut groups: Vec<Group> = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
            let prefix = r.path_prefix.to_ascii_lowercase();
            match groups.iter_mut().find(|g| g.host == host && g.prefix == prefix) {
                Some(group) => group.routes.push(i),
                None => groups.push(Group { host, prefix, routes: vec![i] }),
            }
        }
        // Stable: groups of equal specificity keep configuration order.
        groups.sort_by_key(|g| (std::cmp::Reverse(g.host.is_some()), std::cmp::Reverse(g.prefix.len())));
        Router { groups, methods: routes.iter().map(|r| r.methods.clone()).collect() }
    }

    /// The index of the route for this request. `host` is the request's host without port,
    /// in any case; `path` should have passed [`crate::uri::check_path`].
    pub fn route(&self, host: Option<&str>, path: &str, method: &Method) -> Result<usize, RouteMiss> {
        let group = self
            .groups
            .iter()
            .find(|g| {
                let host_ok = match (&g.host, host) {
                    (None, _) => true,
                    (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
                    (Some(_), None) => false,
                };
                host_ok && prefix_matches(&g.prefix, path)
            })
            .ok_or(RouteMiss::NotFound)?;
        let routes = &group.routes;
        let takes = |i: usize, m: &Method| self.methods[i].as_ref().is_some_and(|list| list.contains(m));
        routes
            .iter()
            .copied()
            .find(|&i| takes(i, method))
            .or_else(|| routes.iter().copied().find(|&i| *method == Method::HEAD && takes(i, &Method::GET)))
            .or_else(|| routes.iter().copied().find(|&i| self.methods[i].is_none()))
            .ok_or_else(|| RouteMiss::MethodNotAllowed(self.allow(routes)))
    }

    /// The `Allow` value for a group in which every route is method-restricted: the union of
    /// their methods in configuration order, with `HEAD` right after `GET`.
    fn allow(&self, routes: &[usize]) -> String {
        let mut allow: Vec<&str> = Vec::new();
        for m in routes.iter().filter_map(|&i| self.methods[i].as_ref()).flatten() {
            let implied = (*m == Method::GET).then_some("HEAD");
            for name in std::iter::once(m.as_str()).chain(implied) {
                if !allow.contains(&name) {
                    allow.push(name);
                }
            }
        }
        allow.join(", ")
    }
}

/// `/api` matches `/api`, `/api/` and `/api/x`, never `/apiv2`; ASCII letters in any case
/// (`/API/x`). The empty prefix (from `/`) matches everything.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    match (path.get(..prefix.len()), path.get(prefix.len()..)) {
        (Some(head), Some(rest)) => head.eq_ignore_ascii_case(prefix) && rest.first().is_none_or(|&b| b == b'/'),
        _ => false,
    }
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
            resource_metadata_url: None,
            cors: None,
            as_edge: None,
        }
    }

    fn names<'a>(
        routes: &'a [Route],
        r: &Router,
        host: Option<&str>,
        path: &str,
        m: Method,
    ) -> Result<&'a str, RouteMiss> {
        r.route(host, path, &m).map(|i| routes[i].name.as_str())
    }

    fn not_allowed(allow: &str) -> Result<&'static str, RouteMiss> {
        Err(RouteMiss::MethodNotAllowed(allow.into()))
    }

    #[test]
    fn prefix_matches_on_segment_boundary_only() {
        let routes = vec![route("api", None, "/api", None)];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, None, "/api", Method::GET), Ok("api"));
        assert_eq!(names(&routes, &r, None, "/api/", Method::GET), Ok("api"));
        assert_eq!(names(&routes, &r, None, "/api/x/y", Method::GET), Ok("api"));
        assert_eq!(names(&routes, &r, None, "/apiv2", Method::GET), Err(RouteMiss::NotFound));
        assert_eq!(names(&routes, &r, None, "/APIv2", Method::GET), Err(RouteMiss::NotFound));
        assert_eq!(names(&routes, &r, None, "/ap", Method::GET), Err(RouteMiss::NotFound));
        assert_eq!(names(&routes, &r, None, "/", Method::GET), Err(RouteMiss::NotFound));
    }

    #[test]
    fn prefix_matches_ascii_case_insensitively() {
        let routes =
            vec![route("root", None, "/", None), route("accounts", None, "/Accounts", Some(vec![Method::GET]))];
        let r = Router::new(&routes);
        for path in ["/accounts/1", "/ACCOUNTS/1", "/aCcOuNtS", "/Accounts/"] {
            assert_eq!(names(&routes, &r, None, path, Method::GET), Ok("accounts"), "{path}");
        }
        assert_eq!(names(&routes, &r, None, "/ACCOUNTSX/1", Method::GET), Ok("root"));
        // Non-ASCII bytes are compared as they are, and never split.
        assert_eq!(names(&routes, &r, None, "/accountś/1", Method::GET), Ok("root"));
        assert!(prefix_matches("/é", "/é/x"));
        assert!(!prefix_matches("/é", "/É/x"));
        assert!(!prefix_matches("/ab", "/é"));
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
        assert_eq!(names(&routes, &r, None, "/api/x", Method::POST), Ok("api"));
        assert_eq!(names(&routes, &r, None, "/api/x", Method::GET), Ok("api-get"));
        assert_eq!(names(&routes, &r, None, "/api/x", Method::HEAD), Ok("api-get"));
        assert_eq!(names(&routes, &r, None, "/api/admin/1", Method::GET), Ok("api-deep"));
        assert_eq!(names(&routes, &r, Some("PARTNER.test"), "/api/admin", Method::GET), Ok("api-host"));
        assert_eq!(names(&routes, &r, Some("other.test"), "/other", Method::GET), Ok("root"));
    }

    #[test]
    fn method_mismatch_is_405_not_a_fall_through() {
        // The reviewer's configuration: a protected GET-only `/accounts` under a public `/`.
        let routes =
            vec![route("root", None, "/", None), route("accounts", None, "/accounts", Some(vec![Method::GET]))];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, None, "/accounts/1", Method::GET), Ok("accounts"));
        assert_eq!(names(&routes, &r, None, "/accounts/1", Method::HEAD), Ok("accounts"));
        assert_eq!(names(&routes, &r, None, "/ACCOUNTS/1", Method::HEAD), Ok("accounts"));
        for m in [Method::POST, Method::DELETE, Method::PUT, Method::PATCH, Method::OPTIONS] {
            assert_eq!(names(&routes, &r, None, "/accounts/1", m.clone()), not_allowed("GET, HEAD"), "{m}");
            assert_eq!(names(&routes, &r, None, "/accounts", m.clone()), not_allowed("GET, HEAD"), "{m}");
        }
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(names(&routes, &r, None, "/accounts/1", custom.clone()), not_allowed("GET, HEAD"));
        // Elsewhere the catch-all takes everything.
        assert_eq!(names(&routes, &r, None, "/accountsx", Method::DELETE), Ok("root"));
        assert_eq!(names(&routes, &r, None, "/other", custom), Ok("root"));
    }

    #[test]
    fn method_restriction_without_other_routes_is_405() {
        let routes = vec![route("get-only", None, "/x", Some(vec![Method::GET]))];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, None, "/x", Method::DELETE), not_allowed("GET, HEAD"));
        assert_eq!(names(&routes, &r, None, "/y", Method::DELETE), Err(RouteMiss::NotFound));
    }

    #[test]
    fn allow_lists_the_union_of_the_candidates_methods() {
        let routes = vec![
            route("root", None, "/", None),
            route("read", None, "/r", Some(vec![Method::GET])),
            route("write", None, "/R/", Some(vec![Method::POST, Method::GET, Method::PUT])),
            route("head", None, "/r", Some(vec![Method::HEAD])),
            route("echo", None, "/echo", Some(vec![Method::POST, Method::PUT])),
            route("deeper", None, "/r/x", Some(vec![Method::PATCH])),
        ];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, None, "/r/1", Method::DELETE), not_allowed("GET, HEAD, POST, PUT"));
        assert_eq!(names(&routes, &r, None, "/echo", Method::GET), not_allowed("POST, PUT"));
        assert_eq!(names(&routes, &r, None, "/echo", Method::HEAD), not_allowed("POST, PUT"));
        // Only the most specific prefix's routes count, not the shorter `/r` ones.
        assert_eq!(names(&routes, &r, None, "/r/x/1", Method::GET), not_allowed("PATCH"));
        assert_eq!(names(&routes, &r, None, "/r/x/1", Method::PATCH), Ok("deeper"));
        // The first route listing the method wins; an explicit HEAD beats one implied by GET.
        assert_eq!(names(&routes, &r, None, "/r/1", Method::GET), Ok("read"));
        assert_eq!(names(&routes, &r, None, "/r/1", Method::POST), Ok("write"));
        assert_eq!(names(&routes, &r, None, "/r/1", Method::HEAD), Ok("head"));
    }

    #[test]
    fn listed_method_beats_any_method_and_head_follows_get() {
        let routes = vec![
            route("any", None, "/a", None),
            route("get", None, "/a", Some(vec![Method::GET])),
            route("post", None, "/a", Some(vec![Method::POST])),
        ];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, None, "/a/1", Method::GET), Ok("get"));
        assert_eq!(names(&routes, &r, None, "/a/1", Method::HEAD), Ok("get"));
        assert_eq!(names(&routes, &r, None, "/a/1", Method::POST), Ok("post"));
        assert_eq!(names(&routes, &r, None, "/a/1", Method::DELETE), Ok("any"));
    }

    #[test]
    fn host_bound_prefix_does_not_fall_through_to_a_hostless_one() {
        let routes = vec![
            route("public", None, "/api", None),
            route("partner", Some("partner.test"), "/api", Some(vec![Method::GET])),
        ];
        let r = Router::new(&routes);
        assert_eq!(names(&routes, &r, Some("partner.test"), "/api/1", Method::GET), Ok("partner"));
        assert_eq!(names(&routes, &r, Some("partner.test"), "/api/1", Method::POST), not_allowed("GET, HEAD"));
        assert_eq!(names(&routes, &r, Some("other.test"), "/api/1", Method::POST), Ok("public"));
        assert_eq!(names(&routes, &r, None, "/api/1", Method::POST), Ok("public"));
    }
}
