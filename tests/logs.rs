//! What the gateway writes to its logs: one access line per request with a request id,
//! and never a token, a proof, a key or a secret — whatever the request carried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[tokio::test]
async fn logs_never_contain_tokens_proofs_keys_or_secrets() {
    capture_logs();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = "a-nonce-secret-that-must-never-be-logged-0123456789";
    let secret_path = secret_dir.path().join("nonce");
    std::fs::write(&secret_path, secret).unwrap();
    let env = Env::start_with(Options {
        dpop: format!("dpop:\n  nonce_secret_file: {}\n", secret_path.display()),
        ..Default::default()
    })
    .await;
    let cert = env.pki.self_signed_client("c");
    let mtls_token = env.bound_token(&cert);
    assert_eq!(env.get("/mtls/a", Some(&cert), Some(&mtls_token)).await.status(), 200);
    let thief = env.pki.self_signed_client("thief");
    assert_eq!(env.get("/mtls/a", Some(&thief), Some(&mtls_token)).await.status(), 401);
    let key = Signer::es256("dpop");
    let dpop_token = env.dpop_token(&key);
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&dpop_token));
    assert_eq!(env.send_dpop("GET", "/dpop/x", &dpop_token, &proof).await.status(), 200);
    assert_eq!(env.send_dpop("GET", "/dpop/x", &dpop_token, &proof).await.status(), 401, "replay");
    let nonce_response = env.dpop_request("GET", "/nonce/x", &key, &dpop_token).await;
    let nonce = nonce_response.headers()["dpop-nonce"].to_str().unwrap().to_string();
    let garbage = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
    assert_eq!(env.get("/bearer/x", None, Some(garbage)).await.status(), 401);
    let agent = "curl/8.5.0 (logs test)";
    let public = env.client(None).get(env.url("/public/ua")).header("user-agent", agent).send().await.unwrap();
    assert_eq!(public.status(), 200);

    let logs = captured_logs();
    let forbidden = [
        ("mTLS access token", mtls_token.as_str()),
        ("DPoP access token", dpop_token.as_str()),
        ("DPoP proof", proof.as_str()),
        ("garbage token", garbage),
        ("nonce secret", secret),
        ("issued nonce", nonce.as_str()),
    ];
    for (what, value) in forbidden {
        assert!(!logs.contains(value), "the {what} reached the logs");
        // Not even a large piece of it (e.g. a token's signature part).
        let tail = &value[value.len().saturating_sub(24)..];
        assert!(!logs.contains(tail), "part of the {what} reached the logs");
    }
    let jwk = key.public_jwk();
    for member in ["x", "y"] {
        assert!(!logs.contains(jwk[member].as_str().unwrap()), "a DPoP key coordinate reached the logs");
    }
    let issuer_jwk = env.signer.public_jwk();
    assert!(!logs.contains(issuer_jwk["x"].as_str().unwrap()), "the issuer's key reached the logs");

    // The access lines are there, with what an operator needs.
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "access")
        .collect();
    assert!(access.len() >= 6, "{} access lines", access.len());
    let replayed = access.iter().find(|v| v["fields"]["reason"] == "dpop_replayed").expect("replay logged");
    assert_eq!(replayed["fields"]["status"], 401);
    assert_eq!(replayed["fields"]["route"], "dpop");
    assert!(replayed["fields"]["token"].as_str().unwrap().starts_with("fp:"), "{replayed}");
    let ok = access.iter().find(|v| v["fields"]["route"] == "mtls" && v["fields"]["status"] == 200).unwrap();
    assert!(ok["fields"]["token"].as_str().unwrap().starts_with("jti:"), "{ok}");
    assert_eq!(ok["fields"]["cert"].as_str().unwrap().len(), 8);
    assert_eq!(ok["fields"]["request_id"].as_str().unwrap().len(), 32);
    // Upstream time and response size for an answered request; `-` when none answered.
    let upstream_us: u64 = ok["fields"]["upstream_us"].as_str().unwrap().parse().unwrap();
    assert!(upstream_us <= ok["fields"]["latency_us"].as_u64().unwrap(), "{ok}");
    assert!(ok["fields"]["bytes"].as_str().unwrap().parse::<u64>().is_ok(), "{ok}");
    assert_eq!(replayed["fields"]["upstream_us"], "-", "{replayed}");
    // At debug, each refusal's line says what was wrong in the words of the challenge.
    let refusal = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "refusal" && v["fields"]["reason"] == "dpop_replayed")
        .expect("the replay's refusal line");
    assert_eq!(refusal["fields"]["description"], "the DPoP proof was already used", "{refusal}");
    let with_agent = access.iter().find(|v| v["fields"]["path"] == "/public/ua").expect("the public request");
    assert_eq!(with_agent["fields"]["user_agent"], agent, "{with_agent}");

    // At trace level every request's whole state is printed with `{:?}`: the exchange, its
    // principal and the connection with its token memo. Secrets show as redacted (the
    // check above already found no token or proof anywhere in the logs).
    let exchanges: Vec<&str> = logs.lines().filter(|l| l.contains(r#""target":"exchange""#)).collect();
    assert!(exchanges.len() >= 6, "{} exchange lines", exchanges.len());
    let mtls_ok = exchanges
        .iter()
        .find(|l| l.contains(r#"route: Some(\"mtls\")"#) && l.contains(r#""status":200"#))
        .expect("the admitted mTLS request's state was printed");
    for part in ["Exchange {", "principal: Some(Principal {", "token_memo: TokenMemo(", "Secret(<redacted>)"] {
        assert!(mtls_ok.contains(part), "{part} missing from {mtls_ok}");
    }
}

#[tokio::test]
async fn request_ids_are_propagated_or_generated() {
    let env = Env::start().await;
    let response =
        env.client(None).get(env.url("/public/x")).header("x-request-id", "trace-abc-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(env.upstream.last().unwrap().headers["x-request-id"], "trace-abc-123");

    let response =
        env.client(None).get(env.url("/public/x")).header("x-request-id", "bad id with spaces").send().await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(env.upstream.last().unwrap().headers["x-request-id"], generated.as_str());

    // Gateway-made answers carry it too.
    let response = env.get("/mtls/x", None, None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"].len(), 32);
}
