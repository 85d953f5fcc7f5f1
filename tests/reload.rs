//! Configuration reload: new routes served, certificates rotated, invalid files refused
//! with the old configuration kept, in-flight requests unaffected — in-process through
//! `GatewayHandle::reload` and end to end through SIGHUP to the binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use fapi_gateway::config::Config;
use fapi_gateway::lifecycle::ReloadError;

fn with_route(yaml: &str, name: &str, prefix: &str, upstream: &str) -> String {
    format!("{yaml}  - {{ name: {name}, match: {{ path_prefix: {prefix} }}, upstream: {upstream}, auth: none }}\n")
}

#[tokio::test]
async fn a_reload_adds_routes_and_keeps_in_flight_requests() {
    let env = Env::start().await;
    assert_eq!(env.get("/added/x", None, None).await.status(), 404);
    // A request already at the upstream when the reload happens finishes on the old
    // configuration (the slow route answers 504 after its 1 s timeout).
    let client = env.client(None);
    let url = env.url("/slow/x");
    let in_flight = tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let yaml = with_route(&env.yaml, "added", "/added", &env.upstream.url());
    let config = Config::from_yaml(&yaml, "reloaded.yaml", env.pki.dir()).unwrap();
    env.gateway.as_ref().unwrap().reload(config).await.unwrap();

    assert_eq!(env.get("/added/x", None, None).await.status(), 200);
    assert_eq!(in_flight.await.unwrap().unwrap(), 504);
    // Old routes still work, and the keep-alive connection of `env.client` picked up the new
    // configuration without reconnecting.
    assert_eq!(env.get("/public/x", None, None).await.status(), 200);
}

#[tokio::test]
async fn a_reload_that_changes_the_listen_address_is_refused() {
    let env = Env::start().await;
    let yaml = env.yaml.replace("address: 127.0.0.1:0", "address: 127.0.0.1:1");
    let config = Config::from_yaml(&yaml, "t.yaml", env.pki.dir()).unwrap();
    let error = env.gateway.as_ref().unwrap().reload(config).await.unwrap_err();
    assert!(matches!(error, ReloadError::NeedsRestart("listen.address")), "{error}");
    assert_eq!(env.get("/public/x", None, None).await.status(), 200);
}

#[tokio::test]
async fn a_reload_applies_max_body_bytes_but_refuses_other_limits() {
    // The README's reload rules as implemented: `limits.max_body_bytes` is read per request.
    let env = Env::start().await;
    let post = |len: usize| {
        env.client(None).post(env.url("/public/upload")).header("content-length", len.to_string()).body(vec![b'x'; len])
    };
    assert_eq!(post(1000).send().await.unwrap().status(), 200);
    let yaml = env.yaml.replace("max_body_bytes: 1024", "max_body_bytes: 512");
    assert_ne!(yaml, env.yaml);
    env.gateway.as_ref().unwrap().reload(Config::from_yaml(&yaml, "t.yaml", env.pki.dir()).unwrap()).await.unwrap();
    assert_eq!(post(1000).send().await.unwrap().status(), 413);
    let yaml = yaml.replace("limits:\n", "limits:\n  idle_timeout: 7s\n");
    let error = env.gateway.as_ref().unwrap().reload(Config::from_yaml(&yaml, "t.yaml", env.pki.dir()).unwrap()).await;
    assert!(matches!(error, Err(ReloadError::NeedsRestart("limits or listen.handshake_timeout"))), "{error:?}");
}

#[tokio::test]
async fn a_reload_with_unreadable_files_changes_nothing() {
    let env = Env::start().await;
    let yaml = with_route(&env.yaml, "added", "/added", &env.upstream.url())
        .replace(&env.pki.server_key_path().display().to_string(), "/nonexistent/server.key");
    let config = Config::from_yaml(&yaml, "t.yaml", env.pki.dir()).unwrap();
    let error = env.gateway.as_ref().unwrap().reload(config).await.unwrap_err();
    assert!(error.to_string().contains("/nonexistent/server.key"), "{error}");
    assert_eq!(env.get("/added/x", None, None).await.status(), 404, "the new route was not applied");
    assert_eq!(env.get("/public/x", None, None).await.status(), 200);
}

#[tokio::test]
async fn the_server_certificate_rotates_on_reload() {
    let env = Env::start().await;
    let next = TestPki::new();
    // A client that trusts only the next CA cannot talk to the gateway yet…
    let next_client = client(&next, env.addr, None, false);
    assert!(next_client.get(env.url("/public/x")).send().await.is_err());
    // …the operator replaces the certificate files in place and reloads…
    std::fs::copy(next.server_cert_path(), env.pki.server_cert_path()).unwrap();
    std::fs::copy(next.server_key_path(), env.pki.server_key_path()).unwrap();
    let config = Config::from_yaml(&env.yaml, "t.yaml", env.pki.dir()).unwrap();
    env.gateway.as_ref().unwrap().reload(config).await.unwrap();
    // …and new handshakes present the new certificate.
    let fresh = client(&next, env.addr, None, false);
    assert_eq!(fresh.get(env.url("/public/x")).send().await.unwrap().status(), 200);
}

struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(process: &Process, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &process.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn status_of(client: &reqwest::Client, url: &str) -> Option<u16> {
    client.get(url).send().await.ok().map(|r| r.status().as_u16())
}

async fn eventually(client: &reqwest::Client, url: &str, want: u16) -> bool {
    for _ in 0..100 {
        if status_of(client, url).await == Some(want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn sighup_reloads_the_file_and_refuses_an_invalid_one() {
    init();
    let pki = TestPki::new();
    let upstream = Upstream::start().await;
    let jwks = serde_json::json!({ "keys": [Signer::es256("k").public_jwk()] });
    let jwks_path = write_file(pki.dir(), "jwks.json", &jwks.to_string());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!(
        "listen:\n  address: 127.0.0.1:{port}\n  public_url: https://gateway.test\n  tls: {{ cert: {}, key: {} }}\n\
         issuers:\n  - {{ issuer: https://as.test, jwks_file: {}, audiences: [https://api.test] }}\n\
         routes:\n  - {{ name: public, match: {{ path_prefix: /public }}, upstream: {}, auth: none }}\n",
        pki.server_cert_path().display(),
        pki.server_key_path().display(),
        jwks_path.display(),
        upstream.url()
    );
    let path = write_file(pki.dir(), "gateway.yaml", &base);
    let mut process = Process {
        child: Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
            .args(["--config", path.to_str().unwrap(), "--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let http = client(&pki, addr, None, false);
    let added = gateway_url(addr, "/added/x");
    assert!(eventually(&http, &gateway_url(addr, "/public/x"), 200).await, "gateway up");
    assert_eq!(status_of(&http, &added).await, Some(404));

    // An invalid file: refused, the old configuration keeps serving.
    std::fs::write(&path, format!("{base}  - {{ name: broken, bindng: mtls }}\n")).unwrap();
    signal(&process, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status_of(&http, &gateway_url(addr, "/public/x")).await, Some(200));

    // A valid file with a new route: served after SIGHUP.
    std::fs::write(&path, with_route(&base, "added", "/added", &upstream.url())).unwrap();
    signal(&process, "HUP");
    assert!(eventually(&http, &added, 200).await, "the new route is served after SIGHUP");

    signal(&process, "TERM");
    let output = tokio::task::spawn_blocking(move || process.child.wait_with_output_taken()).await.unwrap();
    assert!(output.contains("reload refused"), "the invalid file is reported: {output}");
    assert!(output.contains("configuration reloaded"), "{output}");
}

trait TakeOutput {
    fn wait_with_output_taken(&mut self) -> String;
}

impl TakeOutput for Child {
    fn wait_with_output_taken(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut stderr) = self.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        let _ = self.wait();
        text
    }
}

#[tokio::test]
async fn replay_state_and_nonces_survive_a_reload() {
    let env = Env::start().await;
    let key = Signer::es256("k");
    let token = env.dpop_token(&key);
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    assert_eq!(env.send_dpop("GET", "/dpop/x", &token, &proof).await.status(), 200);
    let challenge = env.dpop_request("GET", "/nonce/x", &key, &token).await;
    let nonce = challenge.headers()["dpop-nonce"].to_str().unwrap().to_string();

    let config = Config::from_yaml(&env.yaml, "t.yaml", env.pki.dir()).unwrap();
    env.gateway.as_ref().unwrap().reload(config).await.unwrap();

    // The proof accepted before the reload is still remembered…
    assert_eq!(env.send_dpop("GET", "/dpop/x", &token, &proof).await.status(), 401);
    // …and the nonce issued before it (random secret) is still valid.
    let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.bare_public_jwk()});
    let claims = serde_json::json!({
        "jti": random_id(), "htm": "GET", "htu": env.public_url("/nonce/x"), "iat": now(), "nonce": nonce,
        "ath": b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())),
    });
    assert_eq!(env.send_dpop("GET", "/nonce/x", &token, &key.sign_compact(&header, &claims)).await.status(), 200);

    // Changing the replay window would need a new store: refused.
    let yaml = format!("{}dpop:\n  max_age: 30s\n", env.yaml);
    let config = Config::from_yaml(&yaml, "t.yaml", env.pki.dir()).unwrap();
    let error = env.gateway.as_ref().unwrap().reload(config).await.unwrap_err();
    assert!(matches!(error, ReloadError::NeedsRestart(_)), "{error}");
}

/// Sends `GET /dpop/x` with a DPoP-bound `token` and `proof`; the status and `DPoP-Nonce`.
async fn dpop_get(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    token: &str,
    proof: &str,
) -> (u16, Option<String>) {
    let response = http
        .get(gateway_url(addr, "/dpop/x"))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    let nonce = response.headers().get("dpop-nonce").map(|v| v.to_str().unwrap().to_string());
    (response.status().as_u16(), nonce)
}

#[tokio::test]
async fn a_proof_accepted_before_a_restart_is_not_accepted_after_it() {
    // The in-memory replay store is empty after a restart: a proof made before the start
    // needs a nonce minted since (issue 15.7; before: 200, restart, 200).
    init();
    let pki = TestPki::new();
    let upstream = Upstream::start().await;
    let issuer = Signer::es256("k");
    let jwks_path =
        write_file(pki.dir(), "jwks.json", &serde_json::json!({ "keys": [issuer.public_jwk()] }).to_string());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!(
        "listen:\n  address: 127.0.0.1:{port}\n  public_url: https://gateway.test\n  tls: {{ cert: {}, key: {} }}\n\
         issuers:\n  - {{ issuer: https://as.test, jwks_file: {}, audiences: [https://api.test] }}\n\
         routes:\n  - {{ name: dpop, match: {{ path_prefix: /dpop }}, upstream: {}, binding: dpop }}\n",
        pki.server_cert_path().display(),
        pki.server_key_path().display(),
        jwks_path.display(),
        upstream.url()
    );
    let path = write_file(pki.dir(), "gateway.yaml", &yaml);
    let start = || Process {
        child: Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
            .args(["--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let key = Signer::es256("client");
    let mut claims = claims("https://as.test", "https://api.test");
    claims["cnf"] = serde_json::json!({ "jkt": key.jwk_thumbprint() });
    let token = issuer.jwt(&claims);
    let htu = "https://gateway.test/dpop/x";

    let process = start();
    let http = client(&pki, addr, None, false);
    let mut first = None;
    for _ in 0..100 {
        let proof = key.dpop_proof("GET", htu, Some(&token));
        if let Ok(response) = http
            .get(gateway_url(addr, "/dpop/x"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", &proof)
            .send()
            .await
        {
            assert_eq!(response.status(), 200);
            first = Some(proof);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let proof = first.expect("gateway up");
    assert_eq!(dpop_get(&http, addr, &token, &proof).await.0, 401, "a replay before the restart");
    // iat has a one-second resolution: restart in a later second than the proof was made.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    drop(process);

    let _process = start();
    let http = client(&pki, addr, None, false);
    let mut replayed = None;
    for _ in 0..100 {
        // Any answer will do: the gateway is listening.
        if http.get(gateway_url(addr, "/dpop/x")).send().await.is_ok() {
            replayed = Some(dpop_get(&http, addr, &token, &proof).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, nonce) = replayed.expect("gateway up again");
    assert_eq!(status, 401, "the replay after the restart is refused");
    assert_eq!(upstream.hits(), 1, "only the first presentation reached the upstream");
    // A client retries with the nonce, as RFC 9449 §8 has it.
    let nonce = nonce.expect("use_dpop_nonce comes with a DPoP-Nonce");
    let (header, mut claims) = (
        serde_json::json!({ "typ": "dpop+jwt", "alg": key.alg(), "jwk": key.bare_public_jwk() }),
        serde_json::json!({ "jti": random_id(), "htm": "GET", "htu": htu, "iat": now() - 5, "nonce": nonce,
            "ath": b64(sha256(token.as_bytes())) }),
    );
    claims["nonce"] = serde_json::json!(nonce);
    let retry = key.sign_compact(&header, &claims);
    assert_eq!(dpop_get(&http, addr, &token, &retry).await.0, 200);
}

fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref().to_vec()
}
