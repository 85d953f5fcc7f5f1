//! RFC 9068 access-token validation through the running gateway: one test per rejection
//! path, each asserting the status, the exact `WWW-Authenticate` challenge, the JSON error
//! and that the upstream was not reached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::json;

fn invalid_token(description: &str) -> String {
    format!(r#"Bearer error="invalid_token", error_description="{description}""#)
}

async fn assert_invalid_token(env: &Env, token: &str, description: &str) {
    let response = env.get("/bearer/x", None, Some(token)).await;
    assert_rejected(response, 401, &invalid_token(description), "invalid_token").await;
    assert_eq!(env.upstream.hits(), 0, "a rejected request must not reach the upstream");
}

#[tokio::test]
async fn no_credentials_get_a_bare_challenge() {
    let env = Env::start().await;
    let response = env.get("/bearer/x", None, None).await;
    assert_rejected(response, 401, "Bearer", "unauthorized").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn valid_unbound_token_passes_a_bearer_route_and_is_forwarded() {
    let env = Env::start().await;
    let token = env.bearer_token();
    let response = env.get("/bearer/x", None, Some(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.upstream.last().unwrap().headers["authorization"], format!("Bearer {token}"));
}

#[tokio::test]
async fn scheme_is_case_insensitive() {
    let env = Env::start().await;
    let token = env.bearer_token();
    let response = env
        .client(None)
        .get(env.url("/bearer/x"))
        .header("authorization", format!("bEaReR {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn expired_token_is_refused() {
    let env = Env::start().await;
    let mut claims = env.claims();
    claims["exp"] = json!(now() - 60);
    assert_invalid_token(&env, &env.token(&claims), "the access token has expired").await;
}

#[tokio::test]
async fn token_without_exp_is_refused() {
    let env = Env::start().await;
    let mut claims = env.claims();
    claims.as_object_mut().unwrap().remove("exp");
    assert_invalid_token(&env, &env.token(&claims), "the access token has no exp claim").await;
}

#[tokio::test]
async fn token_issued_far_in_the_future_is_refused() {
    let env = Env::start().await;
    let mut claims = env.claims();
    claims["iat"] = json!(now() + 120);
    assert_invalid_token(&env, &env.token(&claims), "the access token was issued in the future").await;
    let mut claims = env.claims();
    claims["nbf"] = json!(now() + 120);
    assert_invalid_token(&env, &env.token(&claims), "the access token is not valid yet").await;
}

#[tokio::test]
async fn slightly_future_iat_is_accepted() {
    let env = Env::start().await;
    let mut claims = env.claims();
    claims["iat"] = json!(now() + 8);
    let response = env.get("/bearer/x", None, Some(&env.token(&claims))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let env = Env::start().await;
    let mut claims = env.claims();
    claims["aud"] = json!("https://other-api.test");
    assert_invalid_token(&env, &env.token(&claims), "the access token is not meant for this resource (aud)").await;
}

#[tokio::test]
async fn unknown_issuer_is_refused() {
    let env = Env::start().await;
    let mut claims = env.claims();
    claims["iss"] = json!("https://evil.test");
    assert_invalid_token(&env, &env.token(&claims), "the access token's issuer is not trusted").await;
}

#[tokio::test]
async fn signature_by_another_key_is_refused() {
    let env = Env::start().await;
    let forger = Signer::es256("key-1");
    assert_invalid_token(&env, &forger.jwt(&env.claims()), "the access token's signature is invalid").await;
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let env = Env::start().await;
    let token = env.bearer_token();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = env.claims();
    claims["scope"] = json!("accounts:read admin");
    let forged = format!("{}.{}.{}", parts[0], b64(claims.to_string()), parts[2]);
    assert_invalid_token(&env, &forged, "the access token's signature is invalid").await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let env = Env::start().await;
    let header = json!({"alg": "none", "typ": "at+jwt", "kid": "key-1"});
    let unsigned = format!("{}.{}.", b64(header.to_string()), b64(env.claims().to_string()));
    assert_invalid_token(&env, &unsigned, "the access token is not a well-formed JWT").await;
    let with_junk = format!("{unsigned}AAAA");
    assert_invalid_token(
        &env,
        &with_junk,
        "the access token's algorithm `none` is not accepted (none, HMAC and unknown names never are)",
    )
    .await;
}

#[tokio::test]
async fn hmac_token_keyed_with_the_public_key_is_refused() {
    let env = Env::start().await;
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": "key-1"});
    let input = format!("{}.{}", b64(header.to_string()), b64(env.claims().to_string()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, env.signer.public_jwk().to_string().as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", b64(tag.as_ref()));
    assert_invalid_token(
        &env,
        &token,
        "the access token's algorithm `HS256` is not accepted (none, HMAC and unknown names never are)",
    )
    .await;
}

#[tokio::test]
async fn algorithm_outside_the_issuer_list_is_refused() {
    let env = Env::start_with(Options {
        issuer_extra: "    jwks_cache: { refetch_interval: 1s }\n".into(),
        ..Default::default()
    })
    .await;
    let es384 = Signer::es384("key-384");
    env.jwks.set_keys(vec![env.signer.public_jwk(), es384.public_jwk()]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // The refusal names the token's algorithm and the issuer's list (issue 14.3).
    assert_invalid_token(
        &env,
        &es384.jwt(&env.claims()),
        "the access token's algorithm `ES384` is not accepted (this issuer's `algorithms` are ES256 PS256 EdDSA)",
    )
    .await;
}

#[tokio::test]
async fn ps256_and_eddsa_tokens_are_accepted() {
    let env = Env::start_with(Options {
        issuer_extra: "    jwks_cache: { refetch_interval: 1s }\n".into(),
        ..Default::default()
    })
    .await;
    let ps = Signer::ps256("key-ps");
    let ed = Signer::eddsa("key-ed");
    env.jwks.set_keys(vec![env.signer.public_jwk(), ps.public_jwk(), ed.public_jwk()]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for signer in [&ps, &ed] {
        let response = env.get("/bearer/x", None, Some(&signer.jwt(&env.claims()))).await;
        assert_eq!(response.status(), 200, "{}", signer.alg());
    }
    assert_eq!(env.upstream.hits(), 2);
}

#[tokio::test]
async fn typ_jwt_is_refused_by_default() {
    let env = Env::start().await;
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "key-1"});
    let token = env.signer.sign_compact(&header, &env.claims());
    // The `typ` seen and the accepted ones (Keycloak's `JWT`: issue 14.3).
    assert_invalid_token(
        &env,
        &token,
        "the access token's typ `JWT` is not accepted (this issuer's `typ` values are at+jwt)",
    )
    .await;
    let header = json!({"alg": "ES256", "kid": "key-1"});
    let token = env.signer.sign_compact(&header, &env.claims());
    assert_invalid_token(&env, &token, "the access token has no typ header (this issuer's `typ` values are at+jwt)")
        .await;
}

#[tokio::test]
async fn typ_jwt_is_accepted_when_the_issuer_allows_it() {
    let env = Env::start_with(Options { issuer_extra: "    typ: [at+jwt, JWT]\n".into(), ..Default::default() }).await;
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "key-1"});
    let token = env.signer.sign_compact(&header, &env.claims());
    assert_eq!(env.get("/bearer/x", None, Some(&token)).await.status(), 200);
    let header = json!({"alg": "ES256", "typ": "application/AT+JWT", "kid": "key-1"});
    let token = env.signer.sign_compact(&header, &env.claims());
    assert_eq!(env.get("/bearer/x", None, Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn crit_header_is_refused() {
    let env = Env::start().await;
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "key-1", "crit": ["exp"]});
    let token = env.signer.sign_compact(&header, &env.claims());
    assert_invalid_token(&env, &token, "the access token has a critical header the gateway does not understand").await;
}

#[tokio::test]
async fn keys_named_inside_the_token_are_never_fetched() {
    let env = Env::start().await;
    let attacker = Signer::es256("evil");
    let attacker_jwks = JwksServer::start(&env.pki, vec![attacker.public_jwk()]).await;
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "evil", "jku": attacker_jwks.jwks_uri(), "x5u": attacker_jwks.jwks_uri(), "jwk": attacker.public_jwk()});
    let token = attacker.sign_compact(&header, &env.claims());
    assert_invalid_token(&env, &token, "no signing key of the issuer matches the access token").await;
    assert_eq!(attacker_jwks.jwks_hits(), 0);
}

#[tokio::test]
async fn oversized_and_malformed_tokens_are_refused() {
    let env = Env::start().await;
    let huge = format!("{}.{}.{}", "a".repeat(4400), "b".repeat(4400), "c".repeat(4400));
    assert_invalid_token(&env, &huge, "the access token is too large").await;
    for junk in ["abc", "a.b", "a.b.c.d", "eyJhbGciOiJFUzI1NiJ9.bm90LWpzb24.c2ln"] {
        assert_invalid_token(&env, junk, "the access token is not a well-formed JWT").await;
    }
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request() {
    let env = Env::start().await;
    let token = env.bearer_token();
    let response = env
        .client(None)
        .get(env.url("/bearer/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_rejected(
        response,
        400,
        r#"Bearer error="invalid_request", error_description="exactly one Authorization header is allowed""#,
        "invalid_request",
    )
    .await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn token_in_query_is_a_bad_request() {
    let env = Env::start().await;
    let token = env.bearer_token();
    let response = env.get(&format!("/bearer/x?access_token={token}"), None, Some(&token)).await;
    assert_rejected(
        response,
        400,
        r#"Bearer error="invalid_request", error_description="access tokens are accepted only in the Authorization header""#,
        "invalid_request",
    )
    .await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn other_schemes_get_a_bare_challenge() {
    let env = Env::start().await;
    let response =
        env.client(None).get(env.url("/bearer/x")).header("authorization", "Basic dXNlcjpwYXNz").send().await.unwrap();
    // RFC 6750 §3.1: an unsupported method gets the challenge without error information.
    assert_rejected(response, 401, "Bearer", "unauthorized").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn missing_scope_is_forbidden_with_the_scope_attribute() {
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("c");
    let token = env.bound_token(&cert);
    let response = env.get("/scoped/pay", Some(&cert), Some(&token)).await;
    assert_rejected(
        response,
        403,
        r#"Bearer error="insufficient_scope", error_description="the access token lacks the scope `payments:write`", scope="accounts:read payments:write""#,
        "insufficient_scope",
    )
    .await;
    assert_eq!(env.upstream.hits(), 0);
    let mut claims = env.claims();
    claims["cnf"] = json!({"x5t#S256": cert.x5t_s256});
    claims["scp"] = json!(["accounts:read", "payments:write"]);
    claims.as_object_mut().unwrap().remove("scope");
    let response = env.get("/scoped/pay", Some(&cert), Some(&env.token(&claims))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn validated_tokens_are_cached() {
    let env = Env::start().await;
    let token = env.bearer_token();
    for _ in 0..5 {
        assert_eq!(env.get("/bearer/x", None, Some(&token)).await.status(), 200);
    }
    // The key set was fetched once at start-up; nothing else needed the issuer.
    assert_eq!(env.jwks.jwks_hits(), 1);
    assert_eq!(env.upstream.hits(), 5);
}

#[tokio::test]
async fn key_of_the_wrong_type_for_the_alg_is_refused() {
    // The kid names the issuer's EC key, but the header claims PS256.
    let env = Env::start().await;
    let header = json!({"alg": "PS256", "typ": "at+jwt", "kid": "key-1"});
    let token = env.signer.sign_compact(&header, &env.claims());
    assert_invalid_token(&env, &token, "no signing key of the issuer matches the access token").await;
}

#[tokio::test]
async fn missing_rfc9068_claims_are_refused() {
    let env = Env::start().await;
    for claim in ["sub", "client_id", "iat", "jti"] {
        let mut claims = env.claims();
        claims.as_object_mut().unwrap().remove(claim);
        assert_invalid_token(&env, &env.token(&claims), &format!("the access token has no {claim} claim")).await;
    }
}

#[tokio::test]
async fn required_claims_can_be_relaxed_per_issuer() {
    let env =
        Env::start_with(Options { issuer_extra: "    required_claims: [sub]\n".into(), ..Default::default() }).await;
    let mut claims = env.claims();
    claims.as_object_mut().unwrap().remove("client_id");
    assert_eq!(env.get("/bearer/x", None, Some(&env.token(&claims))).await.status(), 200);
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_expires() {
    // No leeway, so the expiry is exactly `exp`; the window the first request must land in is
    // three whole seconds (not a leeway remainder), and the keys are fetched beforehand, so a
    // slow machine does not turn the first request into a refusal.
    let env = Env::start_with(Options { issuer_extra: "    leeway: 0s\n".into(), ..Default::default() }).await;
    assert_eq!(env.get("/bearer/x", None, Some(&env.bearer_token())).await.status(), 200);
    let mut claims = env.claims();
    let exp = now() + 3;
    claims["exp"] = json!(exp);
    let token = env.token(&claims);
    assert_eq!(env.get("/bearer/x", None, Some(&token)).await.status(), 200);
    while now() <= exp {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let response = env.get("/bearer/x", None, Some(&token)).await;
    assert_rejected(
        response,
        401,
        r#"Bearer error="invalid_token", error_description="the access token has expired""#,
        "invalid_token",
    )
    .await;
    assert_eq!(env.upstream.hits(), 2);
}

#[tokio::test]
async fn percent_encoded_token_parameter_in_the_query_is_refused() {
    let env = Env::start().await;
    let token = env.bearer_token();
    let response = env.get("/bearer/x?access%5Ftoken=stolen", None, Some(&token)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(env.upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// The per-connection memo of the last validated token
// ---------------------------------------------------------------------------------------

async fn bearer_get(client: &reqwest::Client, env: &Env, token: &str) -> reqwest::Response {
    client.get(env.url("/bearer/x")).header("authorization", format!("Bearer {token}")).send().await.unwrap()
}

#[tokio::test]
async fn a_connection_remembers_only_the_exact_token_it_validated() {
    let env = Env::start().await;
    let token = env.bearer_token();
    let client = env.client(None);
    for _ in 0..3 {
        assert_eq!(bearer_get(&client, &env, &token).await.status(), 200);
    }
    // The same connection with the signature's last character changed: validated afresh.
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let response = bearer_get(&client, &env, &tampered).await;
    assert_eq!(response.status(), 401);
    assert_eq!(bearer_get(&client, &env, &token).await.status(), 200);
    assert_eq!(env.upstream.hits(), 4);
}

#[tokio::test]
async fn a_reload_forgets_tokens_remembered_by_open_connections() {
    let env = Env::start().await;
    let token = env.bearer_token();
    let client = env.client(None);
    assert_eq!(bearer_get(&client, &env, &token).await.status(), 200);
    // The new configuration no longer accepts the token's audience; the connection that
    // just used the token is still open.
    let yaml = env.yaml.replace(&format!("audiences: [{AUDIENCE}]"), "audiences: [https://another.test]");
    assert_ne!(yaml, env.yaml);
    let config = fapi_gateway::config::Config::from_yaml(&yaml, "reloaded.yaml", env.pki.dir()).unwrap();
    env.gateway.as_ref().unwrap().reload(config).await.unwrap();
    let response = bearer_get(&client, &env, &token).await;
    assert_eq!(response.status(), 401);
    assert_eq!(env.upstream.hits(), 1);
}
