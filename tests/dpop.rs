//! DPoP (RFC 9449) enforcement through the running gateway: the happy path and what reaches
//! the upstream, every rejection path (status, exact `WWW-Authenticate` challenges, JSON
//! error, upstream untouched), the tolerances the FAPI conformance suite expects, replay
//! (also under concurrency), server nonces and the `htu` origin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Barrier;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The bare challenge of a DPoP route with the default algorithm list.
const DPOP_BARE: &str = r#"DPoP algs="ES256 PS256 EdDSA""#;

fn dpop_challenge(error: &str, description: &str) -> String {
    format!(r#"DPoP error="{error}", error_description="{description}", algs="ES256 PS256 EdDSA""#)
}

fn bearer_challenge(error: &str, description: &str) -> String {
    format!(r#"Bearer error="{error}", error_description="{description}""#)
}

/// base64url(SHA-256(token)): the proof's `ath`.
fn ath(token: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref())
}

/// The header and claims of a valid proof by `key` for `method htu` with `token`, to be
/// edited and signed with [`Signer::sign_compact`].
fn proof_parts(key: &Signer, method: &str, htu: &str, token: &str) -> (Value, Value) {
    let header = json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": key.bare_public_jwk()});
    let claims = json!({"jti": random_id(), "htm": method, "htu": htu, "iat": now(), "ath": ath(token)});
    (header, claims)
}

/// A proof for `GET /dpop/x` by `key`, after `forge` edited its header and claims.
fn forged(env: &Env, key: &Signer, token: &str, forge: impl FnOnce(&mut Value, &mut Value)) -> String {
    let (mut header, mut claims) = proof_parts(key, "GET", &env.public_url("/dpop/x"), token);
    forge(&mut header, &mut claims);
    key.sign_compact(&header, &claims)
}

/// A proof for `GET path` carrying the server nonce `nonce`.
fn nonce_proof(env: &Env, key: &Signer, path: &str, token: &str, nonce: &str) -> String {
    let (header, mut claims) = proof_parts(key, "GET", &env.public_url(path), token);
    claims["nonce"] = json!(nonce);
    key.sign_compact(&header, &claims)
}

/// An environment, a client key and a token bound to it.
async fn setup_with(options: Options) -> (Env, Signer, String) {
    let env = Env::start_with(options).await;
    let key = Signer::es256("client-key");
    let token = env.dpop_token(&key);
    (env, key, token)
}

async fn setup() -> (Env, Signer, String) {
    setup_with(Options::default()).await
}

/// Sends `proof` with `token` to `GET /dpop/x` and expects a 401 `invalid_dpop_proof` with
/// `description` that never reached the upstream.
async fn assert_proof_refused(env: &Env, token: &str, proof: &str, description: &str) {
    let response = env.send_dpop("GET", "/dpop/x", token, proof).await;
    assert_rejected(response, 401, &dpop_challenge("invalid_dpop_proof", description), "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), 0, "a rejected request must not reach the upstream");
}

/// `GET path` with the given `Authorization` and `DPoP` header values, each sent as given.
async fn get_with(env: &Env, path: &str, authorization: &[&str], dpop: &[&str]) -> reqwest::Response {
    let mut request = env.client(None).get(env.url(path));
    for value in authorization {
        request = request.header("authorization", *value);
    }
    for value in dpop {
        request = request.header("dpop", *value);
    }
    request.send().await.expect("request completes")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// The `DPoP-Nonce` a `use_dpop_nonce` challenge came with, after asserting the rest of
/// the refusal (the body is consumed).
async fn assert_nonce_challenge(env: &Env, response: reqwest::Response, description: &str) -> String {
    let nonce = header(&response, "dpop-nonce").expect("a DPoP-Nonce header").to_string();
    assert!(!nonce.is_empty());
    let expose = header(&response, "access-control-expose-headers").unwrap_or_default().to_string();
    assert!(expose.contains("DPoP-Nonce"), "{expose}");
    assert_rejected(response, 401, &dpop_challenge("use_dpop_nonce", description), "use_dpop_nonce").await;
    assert_eq!(env.upstream.hits(), 0);
    nonce
}

const NO_NONCE: &str = "this resource requires a server-provided nonce in the DPoP proof";
const BAD_NONCE: &str = "the DPoP proof's nonce is invalid or expired; use the new DPoP-Nonce";
const AFTER_RESTART: &str = "the gateway restarted after this proof was made; send a new proof with the DPoP-Nonce";

// ---------------------------------------------------------------------------------------
// Happy paths and what the upstream sees
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn valid_proof_passes_and_the_upstream_sees_a_plain_bearer_token() {
    let (env, key, token) = setup().await;
    let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.headers["authorization"], format!("Bearer {token}"));
    assert!(seen.headers.get("dpop").is_none(), "the proof must not travel on: {:?}", seen.headers);
    assert_eq!(seen.headers["x-fapi-dpop-jkt"], key.jwk_thumbprint());
}

#[tokio::test]
async fn post_with_a_matching_htm_passes() {
    let (env, key, token) = setup().await;
    let response = env.dpop_request("POST", "/dpop/x", &key, &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.upstream.last().unwrap().method, "POST");
}

#[tokio::test]
async fn ps256_and_eddsa_proofs_pass() {
    let env = Env::start().await;
    for key in [Signer::ps256("rsa"), Signer::eddsa("ed")] {
        let token = env.dpop_token(&key);
        let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
        assert_eq!(response.status(), 200, "{}", key.alg());
    }
    assert_eq!(env.upstream.hits(), 2);
}

#[tokio::test]
async fn forward_token_as_is_passes_the_dpop_credential_and_proof_on() {
    let (env, key, token) = setup().await;
    let proof = key.dpop_proof("GET", &env.public_url("/as-is/x"), Some(&token));
    let response = env.send_dpop("GET", "/as-is/x", &token, &proof).await;
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.headers["authorization"], format!("DPoP {token}"));
    assert_eq!(seen.headers["dpop"], proof.as_str());
}

#[tokio::test]
async fn forward_token_strip_removes_the_token_and_the_proof() {
    let (env, key, token) = setup().await;
    let response = env.dpop_request("GET", "/strip/x", &key, &token).await;
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    assert!(seen.headers.get("authorization").is_none(), "{:?}", seen.headers);
    assert!(seen.headers.get("dpop").is_none(), "{:?}", seen.headers);
}

#[tokio::test]
async fn spoofed_jkt_identity_header_never_reaches_the_upstream() {
    let (env, key, token) = setup().await;
    let proof = key.dpop_proof("GET", &env.public_url("/as-is/x"), Some(&token));
    let response = env
        .client(None)
        .get(env.url("/as-is/x"))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", &proof)
        .header("x-fapi-dpop-jkt", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    assert!(seen.headers.get("x-fapi-dpop-jkt").is_none(), "{:?}", seen.headers);
}

#[tokio::test]
async fn dpop_credential_passes_any_and_bearer_routes() {
    let (env, key, token) = setup().await;
    for path in ["/any/x", "/bearer/x"] {
        let response = env.dpop_request("GET", path, &key, &token).await;
        assert_eq!(response.status(), 200, "{path}");
    }
    assert_eq!(env.upstream.hits(), 2);
}

#[tokio::test]
async fn http2_request_with_a_proof_passes() {
    let (env, key, token) = setup().await;
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let response = env
        .h2_client(None)
        .get(env.url("/dpop/x"))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(env.upstream.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// Extraction
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn no_credentials_get_a_bare_dpop_challenge() {
    let env = Env::start().await;
    let response = get_with(&env, "/dpop/x", &[], &[]).await;
    assert_eq!(header(&response, "access-control-expose-headers"), Some("WWW-Authenticate, DPoP-Nonce"));
    assert_rejected(response, 401, DPOP_BARE, "unauthorized").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn no_credentials_on_an_any_route_get_both_challenges() {
    let env = Env::start().await;
    let response = get_with(&env, "/any/x", &[], &[]).await;
    assert_rejected_with(response, 401, &["Bearer", DPOP_BARE], "unauthorized").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn dpop_scheme_without_a_proof_is_refused() {
    let (env, _key, token) = setup().await;
    let response = get_with(&env, "/dpop/x", &[&format!("DPoP {token}")], &[]).await;
    let want = dpop_challenge("invalid_dpop_proof", "a DPoP proof is required");
    assert_rejected(response, 401, &want, "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn two_dpop_headers_are_refused() {
    let (env, key, token) = setup().await;
    let one = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let two = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let response = get_with(&env, "/dpop/x", &[&format!("DPoP {token}")], &[&one, &two]).await;
    let want = dpop_challenge("invalid_request", "exactly one DPoP proof header is allowed");
    assert_rejected(response, 400, &want, "invalid_request").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn comma_joined_dpop_header_is_refused() {
    let (env, key, token) = setup().await;
    let one = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let two = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let joined = format!("{one}, {two}");
    let response = get_with(&env, "/dpop/x", &[&format!("DPoP {token}")], &[&joined]).await;
    let want = dpop_challenge("invalid_request", "exactly one DPoP proof header is allowed");
    assert_rejected(response, 400, &want, "invalid_request").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn bearer_and_dpop_credentials_together_are_ambiguous() {
    let (env, key, token) = setup().await;
    let description = "send either a Bearer or a DPoP credential, not both";
    let want = [bearer_challenge("invalid_request", description), dpop_challenge("invalid_request", description)];
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    for path in ["/any/x", "/dpop/x"] {
        let proof = key.dpop_proof("GET", &env.public_url(path), Some(&token));
        let response = get_with(&env, path, &[&format!("Bearer {token}"), &format!("DPoP {token}")], &[&proof]).await;
        assert_rejected_with(response, 400, &want, "invalid_request").await;
    }
    assert_eq!(env.upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Downgrades and token binding
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn dpop_bound_token_sent_as_bearer_is_refused_on_every_route() {
    let (env, key, token) = setup().await;
    let error = bearer_challenge("invalid_token", "a DPoP-bound token must be sent with the DPoP scheme and a proof");
    let bearer = format!("Bearer {token}");
    // Even with a valid proof alongside, the Bearer scheme is a downgrade.
    for (path, want) in [
        ("/dpop/x", vec![error.as_str(), DPOP_BARE]),
        ("/any/x", vec![error.as_str(), DPOP_BARE]),
        ("/bearer/x", vec![error.as_str()]),
        ("/mtls/x", vec![error.as_str()]),
    ] {
        let proof = key.dpop_proof("GET", &env.public_url(path), Some(&token));
        let response = get_with(&env, path, &[&bearer], &[&proof]).await;
        assert_rejected_with(response, 401, &want, "invalid_token").await;
    }
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn unbound_token_as_bearer_on_a_dpop_route_is_refused() {
    let env = Env::start().await;
    let response = env.get("/dpop/x", None, Some(&env.bearer_token())).await;
    let error = bearer_challenge("invalid_token", "this resource requires a DPoP-bound access token");
    assert_rejected_with(response, 401, &[&error, DPOP_BARE], "invalid_token").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn unbound_token_with_the_dpop_scheme_is_refused() {
    let env = Env::start().await;
    let key = Signer::es256("client-key");
    let token = env.bearer_token();
    let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
    let want = dpop_challenge("invalid_token", "the DPoP scheme requires a DPoP-bound access token");
    assert_rejected(response, 401, &want, "invalid_token").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn stolen_token_with_the_thiefs_own_key_is_refused() {
    let (env, _victim, token) = setup().await;
    let thief = Signer::es256("thief");
    let response = env.dpop_request("GET", "/dpop/x", &thief, &token).await;
    let want =
        dpop_challenge("invalid_token", "the DPoP proof key does not match the key the access token is bound to");
    assert_rejected(response, 401, &want, "invalid_token").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn stolen_token_with_the_victims_jwk_but_the_thiefs_signature_is_refused() {
    let (env, victim, token) = setup().await;
    let thief = Signer::es256("thief");
    let proof = forged(&env, &thief, &token, |h, _| h["jwk"] = victim.bare_public_jwk());
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's signature is invalid").await;
}

#[tokio::test]
async fn expired_dpop_token_is_refused_on_the_dpop_challenge() {
    let env = Env::start().await;
    let key = Signer::es256("client-key");
    let mut claims = env.claims();
    claims["cnf"] = json!({ "jkt": key.jwk_thumbprint() });
    claims["exp"] = json!(now() - 60);
    let token = env.token(&claims);
    let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
    assert_rejected(response, 401, &dpop_challenge("invalid_token", "the access token has expired"), "invalid_token")
        .await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn dpop_token_on_an_mtls_route_is_refused() {
    let (env, key, token) = setup().await;
    let response = env.dpop_request("GET", "/mtls/x", &key, &token).await;
    let error = dpop_challenge("invalid_token", "this resource requires a certificate-bound access token");
    assert_rejected_with(response, 401, &["Bearer", &error], "invalid_token").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn insufficient_scope_names_the_scope_on_the_dpop_challenge() {
    let (env, key, token) = setup().await;
    let response = env.dpop_request("GET", "/dpop-pay/x", &key, &token).await;
    let want = r#"DPoP error="insufficient_scope", error_description="the access token lacks the scope `payments:write`", scope="payments:write", algs="ES256 PS256 EdDSA""#;
    assert_rejected(response, 403, want, "insufficient_scope").await;
    assert_eq!(env.upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_proof_is_accepted_once() {
    let (env, key, token) = setup().await;
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let first = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
    assert_eq!(first.status(), 200);
    let second = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
    let want = dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used");
    assert_rejected(second, 401, &want, "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), 1, "the replay must not reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_proof_on_eight_connections_at_once_passes_exactly_once() {
    let (env, key, token) = setup().await;
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        // A client per connection, connected beforehand (an unrouted 404 never reaches the
        // upstream), so the eight requests race on live connections.
        let client = env.client(None);
        let warm = client.get(env.url("/unrouted")).send().await.unwrap();
        assert_eq!(warm.status(), 404);
        warm.bytes().await.unwrap();
        let (barrier, url, token, proof) = (barrier.clone(), env.url("/dpop/x"), token.clone(), proof.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let response =
                client.get(url).header("authorization", format!("DPoP {token}")).header("dpop", proof).send().await;
            let response = response.unwrap();
            (response.status().as_u16(), challenge(&response))
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let replayed = dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used");
    let ok = results.iter().filter(|(status, _)| *status == 200).count();
    let refused = results.iter().filter(|(status, c)| *status == 401 && *c == replayed).count();
    assert_eq!((ok, refused), (1, 7), "{results:?}");
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn a_full_replay_store_refuses_new_proofs_and_still_remembers_old_ones() {
    let (env, key, token) =
        // One key fills the store here: its share (`per_key_limit`, half the store by
        // default) is lifted for the test (tests/replay_quota.rs tests the share).
        setup_with(Options {
            dpop: "dpop:\n  replay:\n    max_entries: 1\n    per_key_limit: 1000\n".into(),
            ..Default::default()
        })
        .await;
    let first = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    assert_eq!(env.send_dpop("GET", "/dpop/x", &token, &first).await.status(), 200);
    // 16 shards of one entry each: at most 16 more fresh proofs fit before one is refused.
    let mut full = None;
    for _ in 0..17 {
        let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
        if response.status() != 200 {
            full = Some(response);
            break;
        }
    }
    let response = full.expect("the store fills up");
    let accepted = env.upstream.hits();
    assert_eq!(header(&response, "retry-after"), Some("5"));
    assert_rejected_with(response, 503, &[""], "temporarily_unavailable").await;
    // The flood did not evict the first proof: its replay is still caught.
    let replay = env.send_dpop("GET", "/dpop/x", &token, &first).await;
    let want = dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used");
    assert_rejected(replay, 401, &want, "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), accepted);
}

// ---------------------------------------------------------------------------------------
// Proof checks, one per rejection path
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn proof_that_is_not_a_jwt_is_refused() {
    let (env, _key, token) = setup().await;
    assert_proof_refused(&env, &token, "not-a-jwt", "the DPoP proof is not a well-formed JWT").await;
}

#[tokio::test]
async fn oversized_proof_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| c["pad"] = json!("x".repeat(9 * 1024)));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof is too large").await;
}

#[tokio::test]
async fn proof_with_the_wrong_typ_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |h, _| h["typ"] = json!("JWT"));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's typ must be dpop+jwt").await;
    let proof = forged(&env, &key, &token, |h, _| {
        h.as_object_mut().unwrap().remove("typ");
    });
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's typ must be dpop+jwt").await;
}

#[tokio::test]
async fn proof_with_alg_none_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |h, _| h["alg"] = json!("none"));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's algorithm is not accepted").await;
}

#[tokio::test]
async fn hs256_proof_keyed_by_an_oct_jwk_is_refused() {
    let (env, _key, token) = setup().await;
    let secret = [7u8; 32];
    let header = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": b64(secret)}});
    let claims =
        json!({"jti": random_id(), "htm": "GET", "htu": env.public_url("/dpop/x"), "iat": now(), "ath": ath(&token)});
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
    let proof = format!("{input}.{}", b64(aws_lc_rs::hmac::sign(&key, input.as_bytes())));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's algorithm is not accepted").await;
}

#[tokio::test]
async fn proof_with_an_algorithm_outside_the_allow_list_is_refused() {
    let env = Env::start().await;
    let key = Signer::es384("p384");
    let token = env.dpop_token(&key);
    let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
    let want = dpop_challenge("invalid_dpop_proof", "the DPoP proof's algorithm is not accepted");
    assert_rejected(response, 401, &want, "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn proof_without_a_jwk_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |h, _| {
        h.as_object_mut().unwrap().remove("jwk");
    });
    assert_proof_refused(&env, &token, &proof, "the DPoP proof has no usable public jwk").await;
}

#[tokio::test]
async fn proof_with_a_private_jwk_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |h, _| h["jwk"]["d"] = json!(b64([1u8; 32])));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's jwk contains a private key").await;
}

#[tokio::test]
async fn proof_whose_jwk_does_not_fit_its_alg_is_refused() {
    let (env, key, token) = setup().await;
    let ed = Signer::eddsa("ed");
    let proof = forged(&env, &key, &token, |h, _| h["jwk"] = ed.bare_public_jwk());
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's jwk does not fit its algorithm").await;
}

#[tokio::test]
async fn proof_with_a_tampered_payload_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, _| {});
    let parts: Vec<&str> = proof.split('.').collect();
    let claims =
        json!({"jti": random_id(), "htm": "GET", "htu": env.public_url("/dpop/x"), "iat": now(), "ath": ath(&token)});
    let tampered = format!("{}.{}.{}", parts[0], b64(claims.to_string()), parts[2]);
    assert_proof_refused(&env, &token, &tampered, "the DPoP proof's signature is invalid").await;
}

#[tokio::test]
async fn proof_without_a_jti_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| {
        c.as_object_mut().unwrap().remove("jti");
    });
    assert_proof_refused(&env, &token, &proof, "the DPoP proof has no valid jti").await;
    let proof = forged(&env, &key, &token, |_, c| c["jti"] = json!("j".repeat(300)));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof has no valid jti").await;
}

#[tokio::test]
async fn proof_for_another_method_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| c["htm"] = json!("POST"));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's htm does not match the request method").await;
    let proof = forged(&env, &key, &token, |_, c| c["htm"] = json!("get"));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's htm does not match the request method").await;
}

#[tokio::test]
async fn proof_for_another_url_is_refused() {
    let (env, key, token) = setup().await;
    for htu in [
        "https://gateway.test/dpop/y",
        "https://other.test/dpop/x",
        "http://gateway.test/dpop/x",
        "https://gateway.test:8443/dpop/x",
        "https://gateway.test/DPOP/x",
        "not a url",
    ] {
        eprintln!("htu {htu}");
        let proof = forged(&env, &key, &token, |_, c| c["htu"] = json!(htu));
        // Both URLs are named (issue 14.3): what the client signed, what the gateway expects.
        let want = format!("the DPoP proof's htu `{htu}` does not match the request URL `https://gateway.test/dpop/x`");
        assert_proof_refused(&env, &token, &proof, &want).await;
    }
    let proof = forged(&env, &key, &token, |_, c| {
        c.as_object_mut().unwrap().remove("htu");
    });
    let want = "the DPoP proof's htu `` does not match the request URL `https://gateway.test/dpop/x`";
    assert_proof_refused(&env, &token, &proof, want).await;
}

#[tokio::test]
async fn proof_issued_an_hour_ago_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| c["iat"] = json!(now() - 3600));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof is too old").await;
}

#[tokio::test]
async fn proof_issued_an_hour_ahead_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| c["iat"] = json!(now() + 3600));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's iat is in the future").await;
}

#[tokio::test]
async fn proof_without_iat_is_refused() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| {
        c.as_object_mut().unwrap().remove("iat");
    });
    assert_proof_refused(&env, &token, &proof, "the DPoP proof has no iat").await;
}

#[tokio::test]
async fn proof_with_the_ath_of_another_token_is_refused() {
    let (env, key, token) = setup().await;
    let other = env.dpop_token(&key);
    let proof = forged(&env, &key, &token, |_, c| c["ath"] = json!(ath(&other)));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's ath does not match the access token").await;
    let proof = forged(&env, &key, &token, |_, c| {
        c.as_object_mut().unwrap().remove("ath");
    });
    assert_proof_refused(&env, &token, &proof, "the DPoP proof's ath does not match the access token").await;
}

#[tokio::test]
async fn max_age_setting_is_applied() {
    let (env, key, token) = setup_with(Options { dpop: "dpop:\n  max_age: 5s\n".into(), ..Default::default() }).await;
    let proof = forged(&env, &key, &token, |_, c| c["iat"] = json!(now() - 30));
    assert_proof_refused(&env, &token, &proof, "the DPoP proof is too old").await;
}

// ---------------------------------------------------------------------------------------
// Tolerances
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn dpop_header_name_in_capitals_is_accepted() {
    let (env, key, token) = setup().await;
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let request = format!(
        "GET /dpop/x HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\nAuthorization: DPoP {token}\r\nDPOP: {proof}\r\nConnection: close\r\n\r\n"
    );
    // A raw request: reqwest would send the header name in lower case.
    assert_eq!(raw_exchange(&env, request.as_bytes()).await.expect("an answer").status, 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn dpop_scheme_in_lower_case_is_accepted() {
    let (env, key, token) = setup().await;
    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let response = get_with(&env, "/dpop/x", &[&format!("dpop {token}")], &[&proof]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.upstream.last().unwrap().headers["authorization"], format!("Bearer {token}"));
}

#[tokio::test]
async fn htu_differing_only_by_normalisation_is_accepted() {
    let (env, key, token) = setup().await;
    for htu in [
        "https://GATEWAY.test/dpop/x",
        "HTTPS://gateway.TEST/dpop/x",
        "https://gateway.test:443/dpop/x",
        "https://gateway.test/dpop/%78",
        "https://gateway.test/dpop/x#fragment",
    ] {
        let proof = forged(&env, &key, &token, |_, c| c["htu"] = json!(htu));
        let response = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
        assert_eq!(response.status(), 200, "{htu}: {:?}", challenge(&response));
    }
    assert_eq!(env.upstream.hits(), 5);
}

#[tokio::test]
async fn percent_encoding_of_unreserved_characters_is_normalised_in_htu() {
    let (env, key, token) = setup().await;
    // The proof's htu is normalised; the request path itself must already be canonical
    // (the router refuses `/dpop/%7Eme` with 400 before any authentication).
    let proof = forged(&env, &key, &token, |_, c| c["htu"] = json!("https://gateway.test/dpop/%7eme"));
    let response = env.send_dpop("GET", "/dpop/~me", &token, &proof).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
    let proof = forged(&env, &key, &token, |_, c| c["htu"] = json!("https://gateway.test/dpop/~me"));
    let response = env.send_dpop("GET", "/dpop/%7Eme", &token, &proof).await;
    assert_eq!(response.status(), 400);
    // Reserved characters stay encoded: `%3A` is not `:`.
    let proof = forged(&env, &key, &token, |_, c| c["htu"] = json!("https://gateway.test/dpop/a:b"));
    let response = env.send_dpop("GET", "/dpop/a%3Ab", &token, &proof).await;
    let want = dpop_challenge(
        "invalid_dpop_proof",
        "the DPoP proof's htu `https://gateway.test/dpop/a:b` does not match the request URL `https://gateway.test/dpop/a%3Ab`",
    );
    assert_rejected(response, 401, &want, "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn query_string_on_the_request_is_ignored_by_htu() {
    let (env, key, token) = setup().await;
    let response = env.dpop_request("GET", "/dpop/x?a=1", &key, &token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.upstream.last().unwrap().uri, "/dpop/x?a=1");
    // An htu that carries the query is just as good: query and fragment are ignored.
    let proof = forged(&env, &key, &token, |_, c| c["htu"] = json!("https://gateway.test/dpop/x?a=1"));
    assert_eq!(env.send_dpop("GET", "/dpop/x?a=1", &token, &proof).await.status(), 200);
}

#[tokio::test]
async fn iat_slightly_ahead_or_behind_is_accepted() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| c["iat"] = json!(now() + 8));
    let response = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
    assert_eq!(response.status(), 200, "iat +8: {:?}", challenge(&response));
    // 10 s behind is before this gateway started: the in-memory replay store cannot know
    // whether its predecessor took it, so a nonce minted since must vouch for it.
    let proof = forged(&env, &key, &token, |_, c| c["iat"] = json!(now() - 10));
    let response = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
    let nonce = header(&response, "dpop-nonce").expect("a DPoP-Nonce with use_dpop_nonce").to_string();
    assert_rejected(response, 401, &dpop_challenge("use_dpop_nonce", AFTER_RESTART), "use_dpop_nonce").await;
    assert_eq!(env.upstream.hits(), 1, "the refused proof did not reach the upstream");
    let proof = forged(&env, &key, &token, |_, c| {
        c["iat"] = json!(now() - 10);
        c["nonce"] = json!(nonce);
    });
    let response = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
    assert_eq!(response.status(), 200, "iat -10 with a nonce: {:?}", challenge(&response));
    assert_eq!(env.upstream.hits(), 2);
}

#[tokio::test]
async fn unknown_header_parameters_and_claims_are_ignored() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |h, c| {
        h["kid"] = json!("whatever");
        h["x-extension"] = json!({"nested": true});
        c["nbf"] = json!(now() + 3600);
        c["exp"] = json!(now() - 3600);
        c["custom"] = json!([1, 2, 3]);
    });
    let response = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
}

// ---------------------------------------------------------------------------------------
// Public origin for htu
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn route_public_url_overrides_the_listener_origin_for_htu() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| c["htu"] = json!("https://api.example.com/lb/x"));
    let response = env.send_dpop("GET", "/lb/x", &token, &proof).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
    assert_eq!(env.upstream.hits(), 1);

    let proof = key.dpop_proof("GET", "https://gateway.test/lb/x", Some(&token));
    let response = env.send_dpop("GET", "/lb/x", &token, &proof).await;
    // The expected URL is the route's public_url: what a client behind the balancer must sign.
    let want = dpop_challenge(
        "invalid_dpop_proof",
        "the DPoP proof's htu `https://gateway.test/lb/x` does not match the request URL `https://api.example.com/lb/x`",
    );
    assert_rejected(response, 401, &want, "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn forwarded_headers_do_not_change_the_expected_htu() {
    let (env, key, token) = setup().await;
    let proof = forged(&env, &key, &token, |_, c| c["htu"] = json!("https://evil.test/dpop/x"));
    let response = env
        .client(None)
        .get(env.url("/dpop/x"))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "host=evil.test;proto=https")
        .send()
        .await
        .unwrap();
    let want = dpop_challenge(
        "invalid_dpop_proof",
        "the DPoP proof's htu `https://evil.test/dpop/x` does not match the request URL `https://gateway.test/dpop/x`",
    );
    assert_rejected(response, 401, &want, "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Server nonces
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn nonce_flow_challenge_then_retry_with_the_nonce() {
    let (env, key, token) = setup().await;
    let response = env.dpop_request("GET", "/nonce/x", &key, &token).await;
    let nonce = assert_nonce_challenge(&env, response, NO_NONCE).await;

    let proof = nonce_proof(&env, &key, "/nonce/x", &token, &nonce);
    let response = env.send_dpop("GET", "/nonce/x", &token, &proof).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn made_up_nonce_gets_a_fresh_one() {
    let (env, key, token) = setup().await;
    let made_up = b64([0u8; 24]);
    let proof = nonce_proof(&env, &key, "/nonce/x", &token, &made_up);
    let response = env.send_dpop("GET", "/nonce/x", &token, &proof).await;
    let fresh = assert_nonce_challenge(&env, response, BAD_NONCE).await;
    assert_ne!(fresh, made_up);
    // The fresh nonce works.
    let proof = nonce_proof(&env, &key, "/nonce/x", &token, &fresh);
    assert_eq!(env.send_dpop("GET", "/nonce/x", &token, &proof).await.status(), 200);
}

#[tokio::test]
async fn routes_without_nonce_ignore_a_nonce_claim() {
    let (env, key, token) = setup().await;
    let proof = nonce_proof(&env, &key, "/dpop/x", &token, "anything");
    let response = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "dpop-nonce").is_none());
}

#[tokio::test]
async fn expired_nonce_is_refused_with_a_new_one() {
    let options = Options { dpop: "dpop:\n  nonce_step: 1s\n  nonce_window: 0\n".into(), ..Default::default() };
    let (env, key, token) = setup_with(options).await;
    let response = env.dpop_request("GET", "/nonce/x", &key, &token).await;
    let nonce = assert_nonce_challenge(&env, response, NO_NONCE).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let proof = nonce_proof(&env, &key, "/nonce/x", &token, &nonce);
    let response = env.send_dpop("GET", "/nonce/x", &token, &proof).await;
    let fresh = assert_nonce_challenge(&env, response, BAD_NONCE).await;
    assert_ne!(fresh, nonce);
}

#[tokio::test]
async fn ageing_nonce_passes_with_a_fresh_one_on_the_response() {
    let options = Options { dpop: "dpop:\n  nonce_step: 1s\n  nonce_window: 2\n".into(), ..Default::default() };
    let (env, key, token) = setup_with(options).await;
    let response = env.dpop_request("GET", "/nonce/x", &key, &token).await;
    let nonce = assert_nonce_challenge(&env, response, NO_NONCE).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let proof = nonce_proof(&env, &key, "/nonce/x", &token, &nonce);
    let response = env.send_dpop("GET", "/nonce/x", &token, &proof).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
    let fresh = header(&response, "dpop-nonce").expect("a fresh DPoP-Nonce on the success");
    assert_ne!(fresh, nonce);
    assert_eq!(header(&response, "cache-control"), Some("no-store"));
    assert!(header(&response, "access-control-expose-headers").unwrap_or_default().contains("DPoP-Nonce"));
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn instances_sharing_a_nonce_secret_accept_each_others_nonces() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write_file(dir.path(), "nonce.secret", "0123456789abcdefghijklmnopqrstuvwxyzABCD\n");
    let shared =
        || Options { dpop: format!("dpop:\n  nonce_secret_file: {}\n", secret.display()), ..Default::default() };
    let (a, key_a, token_a) = setup_with(shared()).await;
    let (b, key_b, token_b) = setup_with(shared()).await;
    let (c, key_c, token_c) = setup().await;

    let response = a.dpop_request("GET", "/nonce/x", &key_a, &token_a).await;
    let nonce = assert_nonce_challenge(&a, response, NO_NONCE).await;

    let proof = nonce_proof(&b, &key_b, "/nonce/x", &token_b, &nonce);
    let response = b.send_dpop("GET", "/nonce/x", &token_b, &proof).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));

    // An instance with its own (random) secret does not.
    let proof = nonce_proof(&c, &key_c, "/nonce/x", &token_c, &nonce);
    let response = c.send_dpop("GET", "/nonce/x", &token_c, &proof).await;
    assert_nonce_challenge(&c, response, BAD_NONCE).await;
}

#[tokio::test]
async fn global_nonce_requirement_applies_to_dpop_requests_only() {
    let (env, key, token) =
        setup_with(Options { dpop: "dpop:\n  nonce: required\n".into(), ..Default::default() }).await;
    let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
    assert_nonce_challenge(&env, response, NO_NONCE).await;
    let response = env.dpop_request("GET", "/any/x", &key, &token).await;
    assert!(header(&response, "dpop-nonce").is_some());
    let want = dpop_challenge("use_dpop_nonce", NO_NONCE);
    assert_rejected_with(response, 401, &["Bearer", &want], "use_dpop_nonce").await;
    assert_eq!(env.upstream.hits(), 0);
    // A certificate-bound token with the Bearer scheme needs no nonce.
    let cert = env.pki.self_signed_client("client");
    let response = env.get("/any/x", Some(&cert), Some(&env.bound_token(&cert))).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "dpop-nonce").is_none());
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn configured_algorithms_drive_acceptance_and_the_algs_challenge() {
    let env =
        Env::start_with(Options { dpop: "dpop:\n  algorithms: [ES384, ES256]\n".into(), ..Default::default() }).await;
    let response = get_with(&env, "/dpop/x", &[], &[]).await;
    assert_rejected(response, 401, r#"DPoP algs="ES384 ES256""#, "unauthorized").await;

    let p384 = Signer::es384("p384");
    let response = env.dpop_request("GET", "/dpop/x", &p384, &env.dpop_token(&p384)).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));

    let ed = Signer::eddsa("ed");
    let response = env.dpop_request("GET", "/dpop/x", &ed, &env.dpop_token(&ed)).await;
    let want = r#"DPoP error="invalid_dpop_proof", error_description="the DPoP proof's algorithm is not accepted", algs="ES384 ES256""#;
    assert_rejected(response, 401, want, "invalid_dpop_proof").await;
    assert_eq!(env.upstream.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// Tokens bound twice
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn token_bound_to_a_key_and_a_certificate_needs_both() {
    let env = Env::start().await;
    let key = Signer::es256("client-key");
    let cert = env.pki.self_signed_client("client");
    let mut claims = env.claims();
    claims["cnf"] = json!({ "jkt": key.jwk_thumbprint(), "x5t#S256": cert.x5t_s256 });
    let token = env.token(&claims);

    let proof = key.dpop_proof("GET", &env.public_url("/dpop/x"), Some(&token));
    let response = env
        .client(Some(&cert))
        .get(env.url("/dpop/x"))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
    assert_eq!(env.upstream.hits(), 1);

    let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
    let want = dpop_challenge("invalid_token", "the token is bound to a client certificate, and none was presented");
    assert_rejected(response, 401, &want, "invalid_token").await;
    assert_eq!(env.upstream.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// Upstream CORS headers and the ageing-nonce refresh
// ---------------------------------------------------------------------------------------

/// A plain-HTTP/1.1 upstream on a loopback port that answers every request `200 ok` with
/// `extra` header lines (each ending in CRLF) and closes; returns its URL.
async fn upstream_answering_with(extra: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let response = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n{extra}\r\nok");
                let _ = tcp.write_all(response.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn fresh_nonce_on_a_success_keeps_the_upstreams_exposed_headers() {
    // The shared Env's upstream cannot send CORS headers, so this gateway gets its own.
    let env = Env::start().await;
    let upstream = upstream_answering_with("X-Request-Id: 42\r\nAccess-Control-Expose-Headers: X-Request-Id\r\n").await;
    let yaml = format!(
        "listen:\n  address: 127.0.0.1:0\n  public_url: https://gateway.test\n  tls: {{ cert: {cert}, key: {key} }}\n\
         issuers:\n  - issuer: {issuer}\n    jwks_uri: {jwks}\n    ca: {ca}\n    audiences: [{AUDIENCE}]\n    algorithms: [ES256]\n\
         dpop:\n  nonce_step: 1s\n  nonce_window: 2\n\
         routes:\n  - {{ name: cors, match: {{ path_prefix: /cors }}, upstream: {upstream}, binding: dpop, nonce: required }}\n",
        cert = env.pki.server_cert_path().display(),
        key = env.pki.server_key_path().display(),
        issuer = env.issuer(),
        jwks = env.jwks.jwks_uri(),
        ca = env.pki.ca_pem_path().display(),
    );
    let config = fapi_gateway::config::Config::from_yaml(&yaml, "cors.yaml", env.pki.dir())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let gateway = fapi_gateway::start(config).await.unwrap();
    let http = client(&env.pki, gateway.local_addr(), None, false);
    let url = gateway_url(gateway.local_addr(), "/cors/x");
    let key = Signer::es256("client-key");
    let token = env.dpop_token(&key);
    let send =
        |proof: String| http.get(&url).header("authorization", format!("DPoP {token}")).header("dpop", proof).send();

    let response = send(key.dpop_proof("GET", &env.public_url("/cors/x"), Some(&token))).await.unwrap();
    assert_eq!(response.status(), 401);
    let nonce = header(&response, "dpop-nonce").unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = send(nonce_proof(&env, &key, "/cors/x", &token, &nonce)).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(header(&response, "dpop-nonce").is_some(), "the nonce is ageing: a fresh one comes with the success");
    assert_eq!(header(&response, "x-request-id"), Some("42"));
    let exposed: Vec<&str> = response
        .headers()
        .get_all("access-control-expose-headers")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(str::trim)
        .collect();
    assert!(exposed.contains(&"DPoP-Nonce"), "{exposed:?}");
    assert!(exposed.contains(&"X-Request-Id"), "the upstream's exposed header was dropped: {exposed:?}");
    gateway.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Replay across a restart (the in-memory store starts empty)
// ---------------------------------------------------------------------------------------

/// A proof for `GET path` with `iat` moved by `offset` seconds and, when given, a nonce.
fn aged_proof(env: &Env, key: &Signer, path: &str, token: &str, offset: i64, nonce: Option<&str>) -> String {
    let (header, mut claims) = proof_parts(key, "GET", &env.public_url(path), token);
    claims["iat"] = json!(now() + offset);
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    key.sign_compact(&header, &claims)
}

#[tokio::test]
async fn a_nonce_any_instance_could_have_minted_does_not_vouch_for_a_proof_older_than_the_start() {
    // With a shared nonce secret, the nonce of a nonce-required route could come from the
    // process before this one: a proof made before the start needs this process's nonce.
    let dir = tempfile::tempdir().unwrap();
    let secret = write_file(dir.path(), "nonce.secret", "0123456789abcdefghijklmnopqrstuvwxyzABCD\n");
    let options = Options { dpop: format!("dpop:\n  nonce_secret_file: {}\n", secret.display()), ..Default::default() };
    let (env, key, token) = setup_with(options).await;
    let response = env.dpop_request("GET", "/nonce/x", &key, &token).await;
    let shared = assert_nonce_challenge(&env, response, NO_NONCE).await;

    let proof = aged_proof(&env, &key, "/nonce/x", &token, -20, Some(&shared));
    let response = env.send_dpop("GET", "/nonce/x", &token, &proof).await;
    let here = assert_nonce_challenge(&env, response, AFTER_RESTART).await;
    assert_ne!(here, shared);

    let proof = aged_proof(&env, &key, "/nonce/x", &token, -20, Some(&here));
    let response = env.send_dpop("GET", "/nonce/x", &token, &proof).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
    // It was remembered: the same proof again is a replay.
    let response = env.send_dpop("GET", "/nonce/x", &token, &proof).await;
    assert_rejected(
        response,
        401,
        &dpop_challenge("invalid_dpop_proof", "the DPoP proof was already used"),
        "invalid_dpop_proof",
    )
    .await;
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn restart_guard_skew_asks_every_proof_of_the_first_seconds_for_a_nonce() {
    let options = Options { dpop: "dpop:\n  replay:\n    restart_guard: skew\n".into(), ..Default::default() };
    let (env, key, token) = setup_with(options).await;
    // Made now, after the start — but a client whose clock ran 10 s ahead before a restart
    // made proofs like it, so it needs a nonce for the first max_future + 5 s.
    let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
    let nonce = assert_nonce_challenge(&env, response, AFTER_RESTART).await;
    let proof = aged_proof(&env, &key, "/dpop/x", &token, 0, Some(&nonce));
    let response = env.send_dpop("GET", "/dpop/x", &token, &proof).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
}

#[tokio::test]
async fn a_proof_made_after_the_start_needs_no_nonce_by_default() {
    let (env, key, token) = setup().await;
    let response = env.dpop_request("GET", "/dpop/x", &key, &token).await;
    assert_eq!(response.status(), 200, "{:?}", challenge(&response));
    assert!(header(&response, "dpop-nonce").is_none());
}
