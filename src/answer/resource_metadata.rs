//! OAuth 2.0 Protected Resource Metadata (RFC 9728), built once from the configuration:
//! what a client needs to know before calling a route — which authorization servers issue
//! its tokens, its scopes, how tokens must be bound.
//!
//! One document per protected route's path prefix (resource `public_origin` + prefix, at
//! `/.well-known/oauth-protected-resource` + prefix, §3.1), and one per public origin for
//! all its protected routes (resource = the origin). Routes with the same origin and prefix
//! share one document. Zero values are left out (§2). The challenges of a route name its
//! document (`resource_metadata`, §5.1; see [`super::challenge`]).

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::Answer;
use crate::body::full;
use crate::config::{Binding, Config, RESOURCE_METADATA_PATH, Route, RoutePolicy};

/// The documents, by path and host.
#[derive(Debug)]
pub struct ResourceMetadata {
    documents: Vec<Document>,
}

#[derive(Debug)]
struct Document {
    /// The resource's host (lower case, no port).
    host: String,
    /// `/.well-known/oauth-protected-resource` + the resource's path.
    path: String,
    body: Bytes,
    /// Every route it describes has a `match.host`: served only for that host.
    host_bound: bool,
}

/// The routes one document describes.
struct Group<'a> {
    origin: &'a str,
    prefix: &'a str,
    routes: Vec<&'a Route>,
}

impl ResourceMetadata {
    /// The documents of `config`; `None` without `resource_metadata:`.
    pub fn new(config: &Config) -> Option<ResourceMetadata> {
        let settings = config.resource_metadata.as_ref()?;
        let mut groups: Vec<Group<'_>> = Vec::new();
        for route in config.routes.iter().filter(|r| matches!(r.policy, RoutePolicy::Protected { .. })) {
            for prefix in [route.path_prefix.as_str(), ""] {
                match groups.iter_mut().find(|g| g.origin == route.public_origin && g.prefix == prefix) {
                    Some(group) => {
                        if !group.routes.iter().any(|r| std::ptr::eq(*r, route)) {
                            group.routes.push(route);
                        }
                    }
                    None => groups.push(Group { origin: &route.public_origin, prefix, routes: vec![route] }),
                }
            }
        }
        let documents = groups
            .iter()
            .map(|group| Document {
                host: host_of(group.origin),
                path: format!("{RESOURCE_METADATA_PATH}{}", group.prefix),
                body: Bytes::from(document(group, settings, config).to_string()),
                host_bound: group.routes.iter().all(|r| r.host.is_some()),
            })
            .collect();
        Some(ResourceMetadata { documents })
    }

    /// The answer to a request for one of the documents; `None` when `path` is not one.
    /// `host` is the request's host (without port): the document of that host, else one of
    /// the routes that take any host (a host-bound route's document only for its host).
    pub fn answer(&self, method: &Method, host: Option<&str>, path: &str) -> Option<Answer> {
        if !path.starts_with(RESOURCE_METADATA_PATH) {
            return None;
        }
        let at_path = || self.documents.iter().filter(|d| d.path == path);
        let document = host
            .and_then(|host| at_path().find(|d| d.host.eq_ignore_ascii_case(host)))
            .or_else(|| at_path().find(|d| !d.host_bound))?;
        let response = if *method == Method::GET || *method == Method::HEAD {
            let mut response = Response::new(full(document.body.clone()));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            // Public by nature: browser clients on other origins may read it.
            headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
            response
        } else {
            let mut response = Response::new(full(Bytes::from_static(b"GET or HEAD only\n")));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        };
        // The reason code of a served document, for the access log and metrics.
        Some(Answer::Respond { response: Box::new(response), reason: "resource_metadata" })
    }
}

/// `https://host:port` → `host`.
fn host_of(origin: &str) -> String {
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.to_ascii_lowercase()
}

/// One document (RFC 9728 §2), zero values left out.
fn document(group: &Group<'_>, settings: &crate::config::ResourceMetadataSettings, config: &Config) -> Value {
    let mut scopes: Vec<&str> = Vec::new();
    let (mut mtls, mut dpop, mut all_dpop) = (false, false, true);
    for route in &group.routes {
        let RoutePolicy::Protected { binding, scopes: needed } = &route.policy else { continue };
        for scope in needed {
            if !scopes.contains(&scope.as_str()) {
                scopes.push(scope);
            }
        }
        mtls |= matches!(binding, Binding::Mtls | Binding::Any);
        dpop |= matches!(binding, Binding::Dpop | Binding::Any);
        all_dpop &= *binding == Binding::Dpop;
    }
    let mut doc = Map::new();
    doc.insert("resource".into(), json!(format!("{}{}", group.origin, group.prefix)));
    if !settings.authorization_servers.is_empty() {
        doc.insert("authorization_servers".into(), json!(settings.authorization_servers));
    }
    if !scopes.is_empty() {
        doc.insert("scopes_supported".into(), json!(scopes));
    }
    doc.insert("bearer_methods_supported".into(), json!(["header"]));
    if mtls {
        doc.insert("tls_client_certificate_bound_access_tokens".into(), json!(true));
    }
    if dpop {
        let algs: Vec<&str> = config.dpop.algorithms.iter().map(|a| a.name()).collect();
        doc.insert("dpop_signing_alg_values_supported".into(), json!(algs));
    }
    if all_dpop {
        doc.insert("dpop_bound_access_tokens_required".into(), json!(true));
    }
    for (name, value) in [
        ("resource_name", &settings.resource_name),
        ("resource_documentation", &settings.resource_documentation),
        ("resource_policy_uri", &settings.resource_policy_uri),
        ("resource_tos_uri", &settings.resource_tos_uri),
    ] {
        if let Some(value) = value {
            doc.insert(name.into(), json!(value));
        }
    }
    Value::Object(doc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn config(extra_routes: &str) -> Config {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let yaml = format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://api.test, tls: {{ cert: certs/server.pem, key: certs/server.key }} }}\n\
             issuers:\n  - {{ issuer: https://as.test, jwks_file: certs/dev-issuer-jwks.json, audiences: [https://api.test] }}\n\
             resource_metadata: {{}}\n\
             routes:\n\
             \x20 - {{ name: a, match: {{ path_prefix: /a }}, upstream: http://127.0.0.1:9, binding: mtls, scopes: [x] }}\n\
             \x20 - {{ name: a-post, match: {{ path_prefix: /a, methods: [POST] }}, upstream: http://127.0.0.1:9, binding: dpop, scopes: [y] }}\n{extra_routes}"
        );
        Config::from_yaml(&yaml, "t.yaml", dir).unwrap()
    }

    async fn json_of(answer: Option<Answer>) -> Value {
        let response = answer.unwrap().into_response();
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn routes_sharing_a_prefix_share_a_document_and_hosts_keep_theirs() {
        let partner = "  - { name: p, match: { host: partner.test, path_prefix: /a }, upstream: http://127.0.0.1:9, binding: dpop }\n";
        let metadata = ResourceMetadata::new(&config(partner)).unwrap();
        let a =
            json_of(metadata.answer(&Method::GET, Some("api.test"), "/.well-known/oauth-protected-resource/a")).await;
        assert_eq!(a["resource"], "https://api.test/a");
        assert_eq!(a["scopes_supported"], json!(["x", "y"]), "both methods' routes");
        assert_eq!(a["authorization_servers"], json!(["https://as.test"]), "the issuers by default");
        // The partner host gets its own; any other host never gets the partner's.
        let p = json_of(metadata.answer(&Method::GET, Some("PARTNER.test"), "/.well-known/oauth-protected-resource/a"))
            .await;
        assert_eq!(
            (p["resource"].as_str(), p["dpop_bound_access_tokens_required"].as_bool()),
            (Some("https://partner.test/a"), Some(true))
        );
        let other =
            json_of(metadata.answer(&Method::GET, Some("elsewhere.test"), "/.well-known/oauth-protected-resource/a"))
                .await;
        assert_eq!(other["resource"], "https://api.test/a");
        let root =
            json_of(metadata.answer(&Method::GET, Some("partner.test"), "/.well-known/oauth-protected-resource")).await;
        assert_eq!(root["resource"], "https://partner.test");
        assert!(metadata.answer(&Method::GET, Some("api.test"), "/.well-known/oauth-protected-resource/b").is_none());
        assert!(metadata.answer(&Method::GET, Some("api.test"), "/a").is_none());
    }

    #[test]
    fn without_the_section_there_are_no_documents() {
        let mut config = config("");
        config.resource_metadata = None;
        assert!(ResourceMetadata::new(&config).is_none());
    }
}
