//! The admin listener: liveness, and readiness that reflects the issuer's keys and the
//! shared replay store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::*;
use serde_json::Value;

async fn admin_get(env: &Env, path: &str) -> (u16, String) {
    let addr = env.gateway.as_ref().unwrap().admin_addr().expect("admin listener");
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn readyz(env: &Env) -> (u16, Value) {
    let (status, body) = admin_get(env, "/readyz").await;
    (status, serde_json::from_str(&body).unwrap())
}

#[tokio::test]
async fn healthz_answers_and_unknown_paths_are_404() {
    let env = Env::start_with(Options { admin: true, ..Default::default() }).await;
    assert_eq!(admin_get(&env, "/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(admin_get(&env, "/metrics-nope").await.0, 404);
}

#[tokio::test]
async fn ready_once_the_issuers_keys_are_loaded() {
    let env = Env::start_with(Options { admin: true, ..Default::default() }).await;
    let (status, body) = readyz(&env).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        serde_json::json!({"ready": true, "draining": false, "keys_loaded": true, "replay_store_reachable": true, "login_as_discovered": true, "login_store_reachable": true})
    );
}

#[tokio::test]
async fn not_ready_until_the_issuer_answers_then_ready_without_traffic() {
    init();
    let pki = TestPki::new();
    let signer = Signer::es256("k");
    let jwks = JwksServer::start(&pki, vec![signer.public_jwk()]).await;
    jwks.set_failing(true);
    let upstream = Upstream::start().await;
    let yaml = format!(
        "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
         admin: {{ address: 127.0.0.1:0 }}\n\
         issuers:\n  - {{ issuer: {}, jwks_uri: {}, ca: {}, audiences: [{AUDIENCE}], jwks_cache: {{ refetch_interval: 1s }} }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: {}, binding: bearer }}\n",
        pki.server_cert_path().display(),
        pki.server_key_path().display(),
        jwks.issuer(),
        jwks.jwks_uri(),
        pki.ca_pem_path().display(),
        upstream.url()
    );
    let config = fapi_gateway::config::Config::from_yaml(&yaml, "t.yaml", pki.dir()).unwrap();
    let gateway = fapi_gateway::start(config).await.unwrap();
    let admin = gateway.admin_addr().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = client.get(format!("http://{admin}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["keys_loaded"], false);
    // The issuer comes back; the gateway fetches in the background, no request needed.
    jwks.set_failing(false);
    let mut ready = false;
    for _ in 0..50 {
        if client.get(format!("http://{admin}/readyz")).send().await.unwrap().status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "keys must be fetched in the background");
    assert_eq!(upstream.hits(), 0);
}

#[tokio::test]
async fn not_ready_while_the_shared_replay_store_is_down() {
    if common::redis::missing() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let dpop = format!("dpop:\n  replay:\n    store: redis\n    url: {}\n    timeout: 200ms\n", redis.url());
    let env = Env::start_with(Options { admin: true, dpop, ..Default::default() }).await;
    assert_eq!(readyz(&env).await.0, 200);
    redis.kill();
    let (status, body) = readyz(&env).await;
    assert_eq!(status, 503);
    assert_eq!(body["replay_store_reachable"], false);
    assert_eq!(body["keys_loaded"], true);
    redis.restart().await;
    let mut ready = false;
    for _ in 0..50 {
        if readyz(&env).await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready);
}

#[tokio::test]
async fn metrics_count_requests_caches_fetches_and_replays() {
    let env = Env::start_with(Options { admin: true, ..Default::default() }).await;
    let token = env.bearer_token();
    assert_eq!(env.get("/bearer/x", None, Some(&token)).await.status(), 200);
    assert_eq!(env.get("/bearer/x", None, Some(&token)).await.status(), 200);
    assert_eq!(env.get("/mtls/x", None, None).await.status(), 401);
    assert_eq!(env.get("/refused/x", None, None).await.status(), 502);
    let key = Signer::es256("k");
    let dpop_token = env.dpop_token(&key);
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&dpop_token));
    assert_eq!(env.send_dpop("GET", "/dpop/x", &dpop_token, &proof).await.status(), 200);
    assert_eq!(env.send_dpop("GET", "/dpop/x", &dpop_token, &proof).await.status(), 401);

    let (status, text) = admin_get(&env, "/metrics").await;
    assert_eq!(status, 200);
    let issuer = env.issuer();
    for line in [
        r#"fapi_gateway_requests_total{route="bearer",status="200",reason="ok"} 2"#.to_string(),
        r#"fapi_gateway_requests_total{route="mtls",status="401",reason="no_credentials"} 1"#.to_string(),
        r#"fapi_gateway_requests_total{route="refused",status="502",reason="upstream_unavailable"} 1"#.to_string(),
        r#"fapi_gateway_requests_total{route="dpop",status="401",reason="dpop_replayed"} 1"#.to_string(),
        r#"fapi_gateway_upstream_errors_total{route="refused",status="502",reason="upstream_unavailable"} 1"#
            .to_string(),
        r#"fapi_gateway_token_cache_lookups_total{result="hit"} 2"#.to_string(),
        r#"fapi_gateway_token_cache_lookups_total{result="miss"} 2"#.to_string(),
        format!(r#"fapi_gateway_jwks_fetches_total{{issuer="{issuer}",result="ok"}} 1"#),
        r#"fapi_gateway_dpop_replay_refusals_total{reason="replayed"} 1"#.to_string(),
        "fapi_gateway_dpop_replay_entries 1".to_string(),
        r#"fapi_gateway_upstream_duration_seconds_count{route="bearer"} 2"#.to_string(),
        r#"fapi_gateway_gateway_duration_seconds_count{route="mtls"} 1"#.to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn redis_server_is_installed() {
    assert!(common::redis::installed(), "{}", common::redis::MISSING);
}
