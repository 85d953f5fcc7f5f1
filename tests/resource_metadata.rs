//! OAuth 2.0 Protected Resource Metadata (RFC 9728) end to end: with `resource_metadata:`
//! the gateway serves a document per protected route prefix and one per origin, built from
//! the routes and issuers, and every challenge names the route's document; without it,
//! nothing is served and the challenges stay as they were.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

async fn with_metadata() -> Env {
    Env::start_with(Options {
        dpop:
            "resource_metadata:\n  resource_name: Test accounts API\n  resource_documentation: https://docs.test/api\n"
                .into(),
        ..Options::default()
    })
    .await
}

async fn document(env: &Env, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = env.client(None).get(env.url(path)).send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = response.text().await.unwrap();
    (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn each_protected_prefix_has_its_document_built_from_the_route() {
    let env = with_metadata().await;
    let issuer = env.issuer();
    let (status, headers, mtls) = document(&env, &format!("{WELL_KNOWN}/mtls")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(
        mtls,
        json!({
            "resource": "https://gateway.test/mtls",
            "authorization_servers": [issuer],
            "scopes_supported": ["accounts:read"],
            "bearer_methods_supported": ["header"],
            "tls_client_certificate_bound_access_tokens": true,
            "resource_name": "Test accounts API",
            "resource_documentation": "https://docs.test/api",
        })
    );
    // A DPoP-only route says DPoP is required and which algorithms the proofs may use.
    let (_, _, dpop) = document(&env, &format!("{WELL_KNOWN}/dpop-pay")).await;
    assert_eq!(dpop["resource"], "https://gateway.test/dpop-pay");
    assert_eq!(dpop["scopes_supported"], json!(["payments:write"]));
    assert_eq!(dpop["dpop_signing_alg_values_supported"], json!(["ES256", "PS256", "EdDSA"]));
    assert_eq!(dpop["dpop_bound_access_tokens_required"], true);
    assert!(dpop.get("tls_client_certificate_bound_access_tokens").is_none(), "zero values are left out: {dpop}");
    // A route without scopes has no scopes_supported (RFC 9728 §2: no empty values).
    let (_, _, any) = document(&env, &format!("{WELL_KNOWN}/any")).await;
    assert!(any.get("scopes_supported").is_none() && any.get("dpop_bound_access_tokens_required").is_none(), "{any}");
    assert_eq!(any["tls_client_certificate_bound_access_tokens"], true);
    assert_eq!(env.upstream.hits(), 0, "the gateway answers these itself");
}

#[tokio::test]
async fn the_origin_document_covers_every_protected_route_of_the_origin() {
    let env = with_metadata().await;
    let (status, _, origin) = document(&env, WELL_KNOWN).await;
    assert_eq!(status, 200);
    assert_eq!(origin["resource"], "https://gateway.test");
    assert_eq!(origin["scopes_supported"], json!(["accounts:read", "payments:write"]));
    assert_eq!(origin["tls_client_certificate_bound_access_tokens"], true);
    assert!(origin["dpop_signing_alg_values_supported"].is_array());
    assert!(origin.get("dpop_bound_access_tokens_required").is_none(), "some routes take mTLS tokens: {origin}");
}

#[tokio::test]
async fn public_routes_unknown_paths_and_other_methods() {
    let env = with_metadata().await;
    // Public routes are not resources: no document; the path then routes as any other.
    let (status, _, _) = document(&env, &format!("{WELL_KNOWN}/public")).await;
    assert_eq!(status, 404);
    let (status, _, _) = document(&env, &format!("{WELL_KNOWN}/nothing-here")).await;
    assert_eq!(status, 404);
    let response = env.client(None).post(env.url(&format!("{WELL_KNOWN}/mtls"))).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    let head = env.client(None).head(env.url(WELL_KNOWN)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn every_challenge_names_the_routes_document() {
    let env = with_metadata().await;
    let mtls = env.get("/mtls/x", None, None).await;
    assert_rejected(
        mtls,
        401,
        r#"Bearer resource_metadata="https://gateway.test/.well-known/oauth-protected-resource/mtls""#,
        "unauthorized",
    )
    .await;
    // A Bearer token on a DPoP route: the error on Bearer, DPoP offered; both name it.
    let token = env.bearer_token();
    let wrong_scheme = env.get("/dpop-pay/x", None, Some(&token)).await;
    let document = r#"resource_metadata="https://gateway.test/.well-known/oauth-protected-resource/dpop-pay""#;
    assert_eq!(
        challenges(&wrong_scheme),
        [
            format!(
                r#"Bearer error="invalid_token", error_description="this resource requires a DPoP-bound access token", {document}"#
            ),
            format!(r#"DPoP algs="ES256 PS256 EdDSA", {document}"#),
        ]
    );
    // A route with its own public_url names a document on that origin.
    let lb = env.get("/lb/x", None, None).await;
    assert!(
        challenge(&lb)
            .contains(r#"resource_metadata="https://api.example.com/.well-known/oauth-protected-resource/lb""#),
        "{}",
        challenge(&lb)
    );
}

#[tokio::test]
async fn without_the_section_nothing_changes() {
    let env = Env::start().await;
    let (status, _, _) = document(&env, WELL_KNOWN).await;
    assert_eq!(status, 404);
    assert_rejected(env.get("/mtls/x", None, None).await, 401, "Bearer", "unauthorized").await;
}

#[test]
fn bad_settings_are_refused_with_the_key() {
    let pki = TestPki::new();
    let yaml = |section: &str| {
        format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: /r }}, upstream: http://127.0.0.1:9, auth: none }}\n{section}",
            pki.server_cert_path().display(),
            pki.server_key_path().display()
        )
    };
    let error = |section: &str| {
        fapi_gateway::config::Config::from_yaml(&yaml(section), "t.yaml", pki.dir()).unwrap_err().to_string()
    };
    let e = error("resource_metadata:\n  authorization_servers: [http://as.test]\n");
    assert!(e.contains("resource_metadata.authorization_servers[0]") && e.contains("not an https:// URL"), "{e}");
    let e = error("resource_metadata:\n  resource_tos_uri: tos.html\n");
    assert!(e.contains("resource_metadata.resource_tos_uri"), "{e}");
    let e = error("resource_metadata:\n  resource_nam: x\n");
    assert!(e.contains("resource_nam") && e.contains("resource_name"), "a typo gets its fix: {e}");
}
