//! Several gateway instances sharing DPoP replay state through a real `redis-server`:
//! a proof accepted by one instance is refused by the others, races have exactly one
//! winner, nonces travel between instances, and a Redis outage fails closed (or, with
//! `on_error: local`, falls back as documented) and heals without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::redis::RedisServer;
use common::*;

struct Cluster {
    env: Env,
    twin: fapi_gateway::GatewayHandle,
    redis: RedisServer,
    key: Signer,
    token: String,
    _secret_dir: tempfile::TempDir,
}

/// The cluster, or `None` when redis-server is missing (`redis_server_is_installed` fails).
async fn cluster(on_error: &str) -> Option<Cluster> {
    cluster_with(on_error, "").await
}

/// [`cluster`] with more `dpop.replay` keys (lines indented by 4 spaces).
async fn cluster_with(on_error: &str, replay_extra: &str) -> Option<Cluster> {
    if common::redis::missing() {
        return None;
    }
    let redis = RedisServer::start().await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("nonce-secret");
    std::fs::write(&secret, "a shared nonce secret of forty bytes......").unwrap();
    let dpop = format!(
        "dpop:\n  nonce_secret_file: {}\n  replay:\n    store: redis\n    url: {}\n    timeout: 300ms\n    on_error: {on_error}\n{replay_extra}",
        secret.display(),
        redis.url()
    );
    let env = Env::start_with(Options { dpop, ..Default::default() }).await;
    let twin = env.start_twin().await;
    let key = Signer::es256("client-key");
    let token = env.dpop_token(&key);
    Some(Cluster { env, twin, redis, key, token, _secret_dir: secret_dir })
}

#[test]
fn redis_server_is_installed() {
    assert!(common::redis::installed(), "{}", common::redis::MISSING);
}

impl Cluster {
    fn proof(&self, path: &str) -> String {
        self.key.dpop_proof("GET", &self.env.public_url(path), Some(&self.token))
    }

    async fn send_a(&self, path: &str, proof: &str) -> reqwest::Response {
        self.env.send_dpop("GET", path, &self.token, proof).await
    }

    async fn send_b(&self, path: &str, proof: &str) -> reqwest::Response {
        self.env.send_dpop_to(self.twin.local_addr(), path, &self.token, proof).await
    }
}

fn replayed() -> String {
    r#"DPoP error="invalid_dpop_proof", error_description="the DPoP proof was already used", algs="ES256 PS256 EdDSA""#
        .to_string()
}

#[tokio::test]
async fn a_proof_accepted_by_one_instance_is_refused_by_another() {
    let Some(c) = cluster("fail").await else { return };
    let proof = c.proof("/dpop/x");
    assert_eq!(c.send_a("/dpop/x", &proof).await.status(), 200);
    assert_rejected(c.send_b("/dpop/x", &proof).await, 401, &replayed(), "invalid_dpop_proof").await;
    assert_rejected(c.send_a("/dpop/x", &proof).await, 401, &replayed(), "invalid_dpop_proof").await;
    assert_eq!(c.env.upstream.hits(), 1);
}

#[tokio::test]
async fn one_key_over_its_quota_gets_429_on_every_instance_and_others_pass() {
    // `per_key_limit: 3` shared through Redis: a key's proofs count together on both
    // instances, per fixed window of the replay window's length (75 s here); another
    // client's key is not affected. A run that straddles a window boundary is played again
    // with a new key (the count starts over there, as documented).
    let Some(c) = cluster_with("fail", "    per_key_limit: 3\n").await else { return };
    let window_of = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() / 75_000;
    for attempt in 0..3 {
        let key = Signer::es256(&format!("flooder-{attempt}"));
        let token = c.env.dpop_token(&key);
        let began = std::time::SystemTime::now();
        let mut statuses = Vec::new();
        let mut over = None;
        for send_to_b in [false, true, false, true] {
            let proof = key.dpop_proof("GET", &c.env.public_url("/dpop/x"), Some(&token));
            let response = if send_to_b {
                c.env.send_dpop_to(c.twin.local_addr(), "/dpop/x", &token, &proof).await
            } else {
                c.env.send_dpop("GET", "/dpop/x", &token, &proof).await
            };
            statuses.push(response.status().as_u16());
            over = Some(response);
            if statuses.len() == 1 {
                // Replays are refused as replays and do not use up the key's share (else
                // whoever saw one proof could lock its key out).
                for _ in 0..3 {
                    let replay = c.env.send_dpop_to(c.twin.local_addr(), "/dpop/x", &token, &proof).await;
                    assert_eq!(replay.status(), 401);
                }
            }
        }
        if window_of(began) != window_of(std::time::SystemTime::now()) {
            continue;
        }
        assert_eq!(statuses, [200, 200, 200, 429], "the fourth proof of the key, on either instance");
        let over = over.unwrap();
        let retry_after: u64 = over.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=75).contains(&retry_after), "until the next window: {retry_after}");
        let body: serde_json::Value = serde_json::from_str(&over.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "too_many_requests");
        let other = Signer::es256("another-client");
        let token = c.env.dpop_token(&other);
        let proof = other.dpop_proof("GET", &c.env.public_url("/dpop/x"), Some(&token));
        assert_eq!(c.env.send_dpop("GET", "/dpop/x", &token, &proof).await.status(), 200);
        return;
    }
    panic!("three runs straddled a window boundary");
}

#[tokio::test]
async fn the_same_proof_raced_to_two_instances_passes_once() {
    let Some(c) = cluster("fail").await else { return };
    let c = Arc::new(c);
    for round in 0..10 {
        let proof = c.proof("/dpop/race");
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for to_twin in [false, true] {
            let (c, proof, barrier) = (c.clone(), proof.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let response =
                    if to_twin { c.send_b("/dpop/race", &proof).await } else { c.send_a("/dpop/race", &proof).await };
                response.status().as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await.unwrap());
        }
        statuses.sort();
        assert_eq!(statuses, vec![200, 401], "round {round}");
    }
    assert_eq!(c.env.upstream.hits(), 10);
}

#[tokio::test]
async fn a_nonce_issued_by_one_instance_is_accepted_by_another() {
    let Some(c) = cluster("fail").await else { return };
    let response = c.send_a("/nonce/x", &c.proof("/nonce/x")).await;
    assert_eq!(response.status(), 401);
    let nonce = response.headers()["dpop-nonce"].to_str().unwrap().to_string();
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": c.key.bare_public_jwk()});
    let mut claims = serde_json::json!({
        "jti": random_id(), "htm": "GET", "htu": c.env.public_url("/nonce/x"), "iat": now(), "nonce": nonce,
    });
    claims["ath"] = serde_json::json!(b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.token.as_bytes())));
    let proof = c.key.sign_compact(&header, &claims);
    assert_eq!(c.send_b("/nonce/x", &proof).await.status(), 200);
}

#[tokio::test]
async fn redis_down_fails_closed_and_recovers_without_a_restart() {
    let Some(mut c) = cluster("fail").await else { return };
    assert_eq!(c.send_a("/dpop/x", &c.proof("/dpop/x")).await.status(), 200);
    assert!(c.twin.replay_store_reachable().await);

    c.redis.kill();
    let response = c.send_a("/dpop/x", &c.proof("/dpop/x")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(c.send_b("/dpop/x", &c.proof("/dpop/x")).await.status(), 503);
    assert!(!c.twin.replay_store_reachable().await);
    assert_eq!(c.env.upstream.hits(), 1, "nothing passes while replay cannot be checked");
    // Routes without DPoP are unaffected.
    assert_eq!(c.env.get("/public/x", None, None).await.status(), 200);

    c.redis.restart().await;
    let mut recovered = false;
    for _ in 0..50 {
        if c.send_a("/dpop/x", &c.proof("/dpop/x")).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the gateway must reconnect to Redis by itself");
    let proof = c.proof("/dpop/x");
    assert_eq!(c.send_b("/dpop/x", &proof).await.status(), 200);
    assert_eq!(c.send_a("/dpop/x", &proof).await.status(), 401, "replay protection is shared again");
}

#[tokio::test]
async fn local_fallback_keeps_serving_and_still_refuses_local_replays() {
    let Some(mut c) = cluster("local").await else { return };
    let before = c.proof("/dpop/x");
    assert_eq!(c.send_a("/dpop/x", &before).await.status(), 200, "accepted through Redis");
    c.redis.kill();
    // A proof this instance accepted through Redis is still refused here while Redis is down.
    assert_rejected(c.send_a("/dpop/x", &before).await, 401, &replayed(), "invalid_dpop_proof").await;
    let during = c.proof("/dpop/x");
    assert_eq!(c.send_a("/dpop/x", &during).await.status(), 200, "served from the local fallback");
    assert_rejected(c.send_a("/dpop/x", &during).await, 401, &replayed(), "invalid_dpop_proof").await;
    // Another instance cannot know it: the documented weakness of `on_error: local`.
    assert_eq!(c.send_b("/dpop/x", &during).await.status(), 200);
    // After Redis returns, a proof accepted locally during the outage stays refused here.
    c.redis.restart().await;
    let mut back = false;
    for _ in 0..50 {
        if c.twin.readiness().await.replay_store_reachable
            && c.send_a("/dpop/x", &c.proof("/dpop/x")).await.status() == 200
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back);
    assert_rejected(c.send_a("/dpop/x", &during).await, 401, &replayed(), "invalid_dpop_proof").await;
}

#[tokio::test]
async fn a_redis_that_accepts_but_never_answers_fails_closed() {
    init();
    // A black hole: connections are accepted, nothing is ever answered.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hole.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let dpop = format!(
        "dpop:
  replay:
    store: redis
    url: redis://127.0.0.1:{port}/0
    timeout: 200ms
"
    );
    let env = Arc::new(Env::start_with(Options { dpop, ..Default::default() }).await);
    let key = Arc::new(Signer::es256("k"));
    let token = Arc::new(env.dpop_token(&key));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (env, key, token) = (env.clone(), key.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
            (response.status().as_u16(), response.headers().get("retry-after").is_some())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), (503, true));
    }
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn the_gateway_starts_while_redis_is_down() {
    if common::redis::missing() {
        return;
    }
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    redis.kill();
    let dpop = format!("dpop:\n  replay:\n    store: redis\n    url: {url}\n    timeout: 200ms\n");
    let env = Env::start_with(Options { dpop, ..Default::default() }).await;
    let key = Signer::es256("k");
    let token = env.dpop_token(&key);
    assert_eq!(env.dpop_request("GET", "/dpop/x", &key, &token).await.status(), 503);
    redis.restart().await;
    let mut ok = false;
    for _ in 0..50 {
        if env.dpop_request("GET", "/dpop/x", &key, &token).await.status() == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "first connection made once Redis is up");
}

#[tokio::test]
async fn tls_and_password_in_the_url_work_and_a_wrong_password_fails_closed() {
    init();
    capture_logs();
    // The server uses a certificate of the test CA for `localhost` and demands a password.
    let ca_holder = TestPki::new();
    if common::redis::missing() {
        return;
    }
    let redis = RedisServer::start_tls(&ca_holder, "s3cr3t-pass").await;
    let ca = ca_holder.ca_pem_path().display().to_string();
    let good = format!(
        "dpop:\n  replay:\n    store: redis\n    url: rediss://:s3cr3t-pass@localhost:{}/0\n    ca: {ca}\n    timeout: 500ms\n",
        redis.port
    );
    let env = Env::start_with(Options { dpop: good, ..Default::default() }).await;
    let key = Signer::es256("k");
    let token = env.dpop_token(&key);
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    assert_eq!(env.send_dpop("GET", "/dpop/x", &token, &proof).await.status(), 200);
    let twin = env.start_twin().await;
    assert_eq!(env.send_dpop_to(twin.local_addr(), "/dpop/x", &token, &proof).await.status(), 401, "shared over TLS");

    let wrong = format!(
        "dpop:\n  replay:\n    store: redis\n    url: rediss://:wrong-pass@localhost:{}/0\n    ca: {ca}\n    timeout: 500ms\n",
        redis.port
    );
    let env = Env::start_with(Options { dpop: wrong, ..Default::default() }).await;
    let token = env.dpop_token(&key);
    assert_eq!(env.dpop_request("GET", "/dpop/x", &key, &token).await.status(), 503);
    let logs = captured_logs();
    assert!(logs.contains("DPoP replay"), "the failure is logged: {logs}");
    assert!(logs.contains(&format!("rediss://localhost:{}/0", redis.port)), "with the redacted URL: {logs}");
    assert!(!logs.contains("s3cr3t-pass") && !logs.contains("wrong-pass"), "a password reached the logs: {logs}");
}
