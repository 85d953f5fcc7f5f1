//! Signing-key management against a real HTTPS JWKS server: rotation, the unknown-`kid`
//! refetch limit, `Cache-Control: max-age`, stale keys while the issuer is down, discovery
//! and key files.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn jwks_cache(settings: &str) -> Options {
    Options { issuer_extra: format!("    jwks_cache: {{ {settings} }}\n"), ..Default::default() }
}

#[tokio::test]
async fn rotated_key_is_fetched_on_first_use() {
    let env = Env::start_with(jwks_cache("refetch_interval: 1s")).await;
    assert_eq!(env.jwks.jwks_hits(), 1);
    let next = Signer::es256("key-2");
    env.jwks.set_keys(vec![next.public_jwk()]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = env.get("/bearer/x", None, Some(&next.jwt(&env.claims()))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.jwks.jwks_hits(), 2);
}

#[tokio::test]
async fn random_kids_do_not_hammer_the_issuer() {
    let env = Env::start_with(jwks_cache("refetch_interval: 1h")).await;
    assert_eq!(env.jwks.jwks_hits(), 1);
    for i in 0..20 {
        let signer = Signer::es256(&format!("random-{i}"));
        let response = env.get("/bearer/x", None, Some(&signer.jwt(&env.claims()))).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            challenge(&response),
            r#"Bearer error="invalid_token", error_description="no signing key of the issuer matches the access token""#
        );
    }
    assert_eq!(env.jwks.jwks_hits(), 1, "unknown kids within refetch_interval must not refetch");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_interval() {
    let env = Env::start_with(jwks_cache("refetch_interval: 1s")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..10 {
        let signer = Signer::es256(&format!("random-{i}"));
        assert_eq!(env.get("/bearer/x", None, Some(&signer.jwt(&env.claims()))).await.status(), 401);
    }
    assert_eq!(env.jwks.jwks_hits(), 2, "one refetch for the first unknown kid, then rate-limited");
}

#[tokio::test]
async fn stale_keys_keep_serving_while_the_issuer_is_down() {
    let env = Env::start_with(jwks_cache("default_ttl: 1s, min_ttl: 1s, refetch_interval: 1s")).await;
    let token = env.bearer_token();
    assert_eq!(env.get("/bearer/x", None, Some(&token)).await.status(), 200);
    env.jwks.set_failing(true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A new token (not in the validated-token cache) needs the keys again: the stale set
    // answers at once while a background refresh tries (and fails).
    let fresh = env.bearer_token();
    assert_eq!(env.get("/bearer/x", None, Some(&fresh)).await.status(), 200);
    assert!(reached(|| env.jwks.jwks_hits() >= 2).await, "background refresh did not happen");
    let another = env.bearer_token();
    assert_eq!(env.get("/bearer/x", None, Some(&another)).await.status(), 200);
}

#[tokio::test]
async fn keys_too_stale_are_not_used_and_the_answer_is_503() {
    let env =
        Env::start_with(jwks_cache("default_ttl: 1s, min_ttl: 1s, stale_if_error: 1s, refetch_interval: 1s")).await;
    env.jwks.stop().await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let response = env.get("/bearer/x", None, Some(&env.bearer_token())).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn cache_control_max_age_is_honoured() {
    let env = Env::start_with(jwks_cache("default_ttl: 1s, min_ttl: 1s, refetch_interval: 1s")).await;
    // The start-up fetch had no Cache-Control: default_ttl (1 s) applies.
    env.jwks.set_cache_control(Some("public, max-age=3600".into()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(env.get("/bearer/x", None, Some(&env.bearer_token())).await.status(), 200);
    assert!(reached(|| env.jwks.jwks_hits() == 2).await, "background refresh did not happen");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(env.get("/bearer/x", None, Some(&env.bearer_token())).await.status(), 200);
    assert_eq!(env.jwks.jwks_hits(), 2, "max-age=3600 keeps the keys fresh");
}

#[tokio::test]
async fn withdrawn_keys_are_honoured() {
    let env = Env::start_with(jwks_cache("default_ttl: 1s, min_ttl: 1s, refetch_interval: 1s")).await;
    assert_eq!(env.get("/bearer/x", None, Some(&env.bearer_token())).await.status(), 200);
    // The issuer withdraws every key (a compromise): the next refresh must not keep the old one.
    env.jwks.set_keys(vec![]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = env.get("/bearer/x", None, Some(&env.bearer_token())).await;
    assert!(reached(|| env.jwks.jwks_hits() == 2).await, "background refresh did not happen");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = env.get("/bearer/x", None, Some(&env.bearer_token())).await;
    assert_rejected(
        response,
        401,
        r#"Bearer error="invalid_token", error_description="no signing key of the issuer matches the access token""#,
        "invalid_token",
    )
    .await;
}

/// Waits (at most 5 s) for a condition reached by a background task; false if it never was.
async fn reached(condition: impl Fn() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn discovery_finds_the_jwks_uri() {
    let env = Env::start_with(Options { key_source: Some("discovery: true".into()), ..Default::default() }).await;
    assert_eq!(env.jwks.metadata_hits(), 1);
    assert_eq!(env.get("/bearer/x", None, Some(&env.bearer_token())).await.status(), 200);
}

#[tokio::test]
async fn discovery_with_a_mismatched_issuer_is_not_used() {
    // The metadata claims another issuer: RFC 8414 §3.3 says its keys must not be used.
    init();
    let pki = TestPki::new();
    let signer = Signer::es256("key-1");
    let jwks = JwksServer::start(&pki, vec![signer.public_jwk()]).await;
    jwks.set_metadata_issuer(Some("https://impostor.test".into()));
    let upstream = Upstream::start().await;
    let issuer = format!(
        "{{ issuer: {}, discovery: true, ca: {}, audiences: [{AUDIENCE}] }}",
        jwks.issuer(),
        pki.ca_pem_path().display()
    );
    let gateway = start_minimal(&pki, &issuer, &upstream).await;
    assert!(!gateway.keys_loaded());
    let response = client(&pki, gateway.local_addr(), None, false)
        .get(gateway_url(gateway.local_addr(), "/x"))
        .bearer_auth(signer.jwt(&claims(&jwks.issuer(), AUDIENCE)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(jwks.jwks_hits(), 0, "keys of a mismatched issuer are never fetched");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn keys_from_a_file() {
    init();
    let pki = TestPki::new();
    let signer = Signer::eddsa("file-key");
    let jwks = json!({"keys": [signer.public_jwk()]});
    let path = write_file(pki.dir(), "jwks.json", &jwks.to_string());
    let upstream = Upstream::start().await;
    let issuer = format!("{{ issuer: https://as.file.test, jwks_file: {}, audiences: [{AUDIENCE}] }}", path.display());
    let gateway = start_minimal(&pki, &issuer, &upstream).await;
    assert!(gateway.keys_loaded());
    let response = client(&pki, gateway.local_addr(), None, false)
        .get(gateway_url(gateway.local_addr(), "/x"))
        .bearer_auth(signer.jwt(&claims("https://as.file.test", AUDIENCE)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.hits(), 1);
}
