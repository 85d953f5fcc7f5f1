//! The oidc-provider harness (`tests/common/oidc_provider.rs`, `tests/as/`) end to end, the
//! way the gateway's browser login mode will use a FAPI 2.0 authorization server: discovery,
//! PAR with `private_key_jwt` + PKCE + `dpop_jkt` + JARM, the front channel (auto interaction
//! or the development forms), the JARM callback, the DPoP-bound code exchange with the
//! `use_dpop_nonce` retry, refresh-token rotation, revocation and RP-initiated logout; and
//! `tls_client_auth` on the `mtls_endpoint_aliases`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::oidc_provider::{
    AsClient, AsOptions, DEFAULT_RESOURCE, OidcProvider, client_assertion, client_assertion_params, form, pkce_pair,
    query_param, unverified_claims,
};
use common::{Signer, TestPki, now, random_id};
use reqwest::Url;
use serde_json::{Value, json};

const CLIENT_ID: &str = "gateway";
const REDIRECT_URI: &str = "https://gateway.test/login/callback";
const POST_LOGOUT_URI: &str = "https://gateway.test/logged-out";
const SCOPE: &str = "openid accounts:read";

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().unwrap_or_else(|| panic!("not an array: {value}")).iter().filter_map(Value::as_str).collect()
}

/// The PAR body of one login: everything but client authentication.
fn par_params(state: &str, nonce: &str, challenge: &str, dpop_jkt: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("redirect_uri", REDIRECT_URI.into()),
        ("scope", SCOPE.into()),
        ("state", state.into()),
        ("nonce", nonce.into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
        ("response_mode", "jwt".into()),
        ("dpop_jkt", dpop_jkt.into()),
    ]
}

#[tokio::test]
async fn fapi2_login_with_par_jarm_dpop_nonces_refresh_rotation_revocation_and_logout() {
    let pki = TestPki::new();
    let client_key = Signer::es256("gateway-key-1");
    let dpop_key = Signer::es256("dpop");
    let client = AsClient::private_key_jwt(CLIENT_ID, client_key.public_jwk(), REDIRECT_URI)
        .post_logout_redirect_uri(POST_LOGOUT_URI);
    let op = OidcProvider::start(&pki, AsOptions { require_nonce: true, ..AsOptions::default() }.client(client)).await;
    let issuer = op.issuer().to_owned();
    assert_eq!(issuer, format!("https://localhost:{}", op.port()));

    // Discovery: what the login mode relies on.
    let meta = op.metadata();
    assert_eq!(meta["issuer"], issuer);
    assert_eq!(meta["pushed_authorization_request_endpoint"], format!("{issuer}/request"));
    assert_eq!(meta["require_pushed_authorization_requests"], true);
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert!(strings(&meta["dpop_signing_alg_values_supported"]).contains(&"ES256"), "{meta}");
    assert!(strings(&meta["response_modes_supported"]).contains(&"jwt"), "{meta}");
    assert_eq!(meta["authorization_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    assert!(strings(&meta["token_endpoint_auth_methods_supported"]).contains(&"private_key_jwt"));
    for endpoint in ["token_endpoint", "revocation_endpoint", "end_session_endpoint", "jwks_uri"] {
        assert!(op.endpoint(endpoint).starts_with(&issuer), "{endpoint}");
    }
    let par_endpoint = op.endpoint("pushed_authorization_request_endpoint");
    let token_endpoint = op.endpoint("token_endpoint");

    let (verifier, challenge) = pkce_pair();
    let state = random_id();
    let nonce = random_id();
    let thumbprint = dpop_key.jwk_thumbprint();
    let auth = || client_assertion_params(&client_key, CLIENT_ID, &issuer);

    // FAPI 2.0 refuses a client assertion whose `aud` is not the issuer as a string.
    let mut params = par_params(&state, &nonce, &challenge, &thumbprint);
    params.extend([
        ("client_id", CLIENT_ID.into()),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
        ("client_assertion", client_assertion(&client_key, CLIENT_ID, &token_endpoint)),
    ]);
    let body = form(params);
    let refused = op.post_form(op.http(), &par_endpoint, &|| body.clone(), None).await;
    assert_eq!((refused.status, refused.str("error")), (401, "invalid_client"), "{refused}");

    // PKCE is mandatory.
    let without_pkce = || {
        let params = par_params(&state, &nonce, &challenge, &thumbprint);
        form(params.into_iter().filter(|(k, _)| !k.starts_with("code_")).chain(auth()))
    };
    let refused = op.post_form(op.http(), &par_endpoint, &without_pkce, None).await;
    assert_eq!((refused.status, refused.str("error")), (400, "invalid_request"), "{refused}");

    // A front-channel request without PAR gets no code.
    let mut direct = Url::parse(&op.endpoint("authorization_endpoint")).unwrap();
    direct.query_pairs_mut().append_pair("client_id", CLIENT_ID).extend_pairs(par_params(
        &state,
        &nonce,
        &challenge,
        &thumbprint,
    ));
    match op.new_browser().walk(direct.as_str()).await {
        Err(page) => assert_eq!(page.status, 400, "{page}"),
        Ok(callback) => {
            let response = query_param(&callback, "response").expect("JARM error response");
            let claims = op.verify_jwt(&response);
            assert_eq!(claims["error"], "invalid_request", "{claims}");
            assert!(claims.get("code").is_none(), "{claims}");
        }
    }

    // PAR: 201 with a request_uri.
    let pushed = || form(par_params(&state, &nonce, &challenge, &thumbprint).into_iter().chain(auth()));
    let par = op.post_form(op.http(), &par_endpoint, &pushed, None).await;
    assert_eq!(par.status, 201, "{par}");
    let request_uri = par.str("request_uri").to_owned();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"), "{request_uri}");
    let expires_in = par.body["expires_in"].as_i64().unwrap();
    assert!((1..=600).contains(&expires_in), "{expires_in}");

    // Front channel (auto interaction) → the callback with a signed JARM response.
    let callback = op.walk_authorization(&op.authorization_url(CLIENT_ID, &request_uri)).await;
    assert!(callback.starts_with(&format!("{REDIRECT_URI}?")), "{callback}");
    assert_eq!(query_param(&callback, "code"), None, "JARM: the code is inside the JWT only");
    let response = query_param(&callback, "response").expect("response parameter");
    let jarm = op.verify_jwt(&response);
    assert_eq!(jarm["iss"], issuer);
    assert_eq!(jarm["aud"], CLIENT_ID);
    assert_eq!(jarm["state"], state.as_str());
    assert!(jarm["exp"].as_i64().unwrap() > now(), "{jarm}");
    let code = jarm["code"].as_str().expect("code").to_owned();

    // Code exchange with a DPoP proof: the AS demands a nonce first (use_dpop_nonce), once.
    let exchange = || {
        form(
            [
                ("grant_type", "authorization_code".to_owned()),
                ("code", code.clone()),
                ("redirect_uri", REDIRECT_URI.to_owned()),
                ("code_verifier", verifier.clone()),
            ]
            .into_iter()
            .chain(auth()),
        )
    };
    let tokens = op.post_form(op.http(), &token_endpoint, &exchange, Some((&dpop_key, None))).await;
    assert_eq!(tokens.status, 200, "{tokens}\n{}", op.log());
    assert!(tokens.retried_for_nonce, "require_nonce: the first proof had no nonce");
    assert!(op.dpop_nonce().is_some());
    assert_eq!(tokens.str("token_type"), "DPoP");
    assert!(tokens.body["expires_in"].as_i64().unwrap() > 0);
    let access_token = tokens.str("access_token").to_owned();
    let at = op.verify_jwt(&access_token);
    assert_eq!(at["cnf"]["jkt"], thumbprint.as_str(), "{at}");
    assert_eq!(at["iss"], issuer);
    assert_eq!(at["aud"], DEFAULT_RESOURCE);
    assert_eq!(at["sub"], op.account());
    assert_eq!(at["client_id"], CLIENT_ID);
    assert_eq!(at["scope"], "accounts:read", "{at}");
    let id_token = tokens.str("id_token").to_owned();
    let idt = op.verify_jwt(&id_token);
    assert_eq!((&idt["iss"], &idt["aud"], &idt["sub"]), (&json!(issuer), &json!(CLIENT_ID), &json!(op.account())));
    assert_eq!(idt["nonce"], nonce.as_str());
    let refresh_token = tokens.str("refresh_token").to_owned();

    // Refresh with DPoP: a rotated refresh token, an access token bound to the same key.
    let refresh = |rt: &str| {
        form([("grant_type", "refresh_token".to_owned()), ("refresh_token", rt.to_owned())].into_iter().chain(auth()))
    };
    let refreshed =
        op.post_form(op.http(), &token_endpoint, &|| refresh(&refresh_token), Some((&dpop_key, None))).await;
    assert_eq!(refreshed.status, 200, "{refreshed}");
    assert!(!refreshed.retried_for_nonce, "the nonce from the code exchange is still good");
    assert_eq!(refreshed.str("token_type"), "DPoP");
    let rotated = refreshed.str("refresh_token").to_owned();
    assert_ne!(rotated, refresh_token, "rotated");
    let at2 = op.verify_jwt(refreshed.str("access_token"));
    assert_eq!(at2["cnf"]["jkt"], thumbprint.as_str());
    assert_ne!(at2["jti"], at["jti"]);
    // Without a DPoP proof: refused (dpop_bound_access_tokens).
    let bare = op.post_form(op.http(), &token_endpoint, &|| refresh(&rotated), None).await;
    assert_eq!((bare.status, bare.str("error")), (400, "invalid_grant"), "{bare}");
    // The refresh token of a confidential client is not bound to the DPoP key (RFC 9449 §5):
    // a proof with a new key gets an access token bound to that key.
    let new_key = Signer::es256("dpop-2");
    let rekeyed = op.post_form(op.http(), &token_endpoint, &|| refresh(&rotated), Some((&new_key, None))).await;
    assert_eq!(rekeyed.status, 200, "{rekeyed}");
    assert_eq!(op.verify_jwt(rekeyed.str("access_token"))["cnf"]["jkt"], new_key.jwk_thumbprint().as_str());
    let current = rekeyed.str("refresh_token").to_owned();

    // Revocation of the current refresh token: 200; afterwards it no longer refreshes.
    let revocation = op.endpoint("revocation_endpoint");
    let revoke = || {
        let params = [("token", current.clone()), ("token_type_hint", "refresh_token".to_owned())];
        form(params.into_iter().chain(auth()))
    };
    let revoked = op.post_form(op.http(), &revocation, &revoke, None).await;
    assert_eq!(revoked.status, 200, "{revoked}");
    let dead = op.post_form(op.http(), &token_endpoint, &|| refresh(&current), Some((&dpop_key, None))).await;
    assert_eq!((dead.status, dead.str("error")), (400, "invalid_grant"), "{dead}");

    // A second login in the same browser: SSO (the AS session cookie), a new grant. Presenting
    // an already rotated refresh token again revokes the whole grant (oidc-provider's reuse
    // detection): the newest refresh token dies with it.
    let (verifier2, challenge2) = pkce_pair();
    let state2 = random_id();
    let pushed = || form(par_params(&state2, &nonce, &challenge2, &thumbprint).into_iter().chain(auth()));
    let par = op.post_form(op.http(), &par_endpoint, &pushed, None).await;
    assert_eq!(par.status, 201, "{par}");
    let callback = op.walk_authorization(&op.authorization_url(CLIENT_ID, par.str("request_uri"))).await;
    let jarm = op.verify_jwt(&query_param(&callback, "response").expect("response parameter"));
    assert_eq!(jarm["state"], state2.as_str());
    let code2 = jarm["code"].as_str().expect("code").to_owned();
    let exchange2 = || {
        let params = [
            ("grant_type", "authorization_code".to_owned()),
            ("code", code2.clone()),
            ("redirect_uri", REDIRECT_URI.to_owned()),
            ("code_verifier", verifier2.clone()),
        ];
        form(params.into_iter().chain(auth()))
    };
    let tokens2 = op.post_form(op.http(), &token_endpoint, &exchange2, Some((&dpop_key, None))).await;
    assert_eq!(tokens2.status, 200, "{tokens2}");
    let first = tokens2.str("refresh_token").to_owned();
    let next = op.post_form(op.http(), &token_endpoint, &|| refresh(&first), Some((&dpop_key, None))).await;
    assert_eq!(next.status, 200, "{next}");
    let second = next.str("refresh_token").to_owned();
    let reuse = op.post_form(op.http(), &token_endpoint, &|| refresh(&first), Some((&dpop_key, None))).await;
    assert_eq!((reuse.status, reuse.str("error")), (400, "invalid_grant"), "{reuse}");
    let gone = op.post_form(op.http(), &token_endpoint, &|| refresh(&second), Some((&dpop_key, None))).await;
    assert_eq!((gone.status, gone.str("error")), (400, "invalid_grant"), "{gone}");
    assert!(op.log().contains("refresh token already used"), "{}", op.log());

    // The code is single use (oidc-provider also revokes the grant on a replay, RFC 6749 §4.1.2).
    let replay = op.post_form(op.http(), &token_endpoint, &exchange, Some((&dpop_key, None))).await;
    assert_eq!((replay.status, replay.str("error")), (400, "invalid_grant"), "{replay}");

    // RP-initiated logout with the harness's browser (which holds the AS session).
    let mut end_session = Url::parse(&op.endpoint("end_session_endpoint")).unwrap();
    let logout_state = random_id();
    end_session
        .query_pairs_mut()
        .append_pair("id_token_hint", &id_token)
        .append_pair("post_logout_redirect_uri", POST_LOGOUT_URI)
        .append_pair("state", &logout_state);
    let back = op.browser().logout(end_session.as_str()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(back.starts_with(&format!("{POST_LOGOUT_URI}?")), "{back}");
    assert_eq!(query_param(&back, "state").as_deref(), Some(logout_state.as_str()));
}

#[tokio::test]
async fn tls_client_auth_on_the_mtls_aliases_through_the_login_forms() {
    let pki = TestPki::new();
    let cert = pki.ca_signed_client("gateway-mtls");
    let dpop_key = Signer::es256("dpop");
    let client = AsClient::tls_client_auth(CLIENT_ID, "CN=gateway-mtls", REDIRECT_URI);
    let options = AsOptions { auto_interaction: false, account: "bob".into(), ..AsOptions::default() }.client(client);
    let op = OidcProvider::start(&pki, options).await;
    assert!(strings(&op.metadata()["token_endpoint_auth_methods_supported"]).contains(&"tls_client_auth"));
    let par_endpoint = op.mtls_endpoint("pushed_authorization_request_endpoint");
    let token_endpoint = op.mtls_endpoint("token_endpoint");
    assert_ne!(par_endpoint, op.endpoint("pushed_authorization_request_endpoint"));
    let mtls = op.http_with_identity(&cert);

    let (verifier, challenge) = pkce_pair();
    let state = random_id();
    let thumbprint = dpop_key.jwk_thumbprint();
    let mut params = par_params(&state, &random_id(), &challenge, &thumbprint);
    params.push(("client_id", CLIENT_ID.into()));
    let body = form(params);
    // Without the certificate (plain endpoint): the client cannot authenticate.
    let plain = op.endpoint("pushed_authorization_request_endpoint");
    let refused = op.post_form(op.http(), &plain, &|| body.clone(), None).await;
    assert_eq!((refused.status, refused.str("error")), (401, "invalid_client"), "{refused}");
    // A certificate with another subject: refused too.
    let other = op.http_with_identity(&pki.ca_signed_client("someone-else"));
    let refused = op.post_form(&other, &par_endpoint, &|| body.clone(), None).await;
    assert_eq!((refused.status, refused.str("error")), (401, "invalid_client"), "{refused}");

    let par = op.post_form(&mtls, &par_endpoint, &|| body.clone(), None).await;
    assert_eq!(par.status, 201, "{par}\n{}", op.log());
    // The development login and consent forms, filled in by the harness's browser.
    let callback = op.walk_authorization(&op.authorization_url(CLIENT_ID, par.str("request_uri"))).await;
    let jarm = op.verify_jwt(&query_param(&callback, "response").expect("response"));
    assert_eq!((&jarm["iss"], &jarm["state"]), (&json!(op.issuer()), &json!(state)));

    let body = form([
        ("grant_type", "authorization_code"),
        ("code", jarm["code"].as_str().unwrap()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", &verifier),
        ("client_id", CLIENT_ID),
    ]);
    let tokens = op.post_form(&mtls, &token_endpoint, &|| body.clone(), Some((&dpop_key, None))).await;
    assert_eq!(tokens.status, 200, "{tokens}");
    assert!(!tokens.retried_for_nonce, "nonces are optional here");
    assert_eq!(tokens.str("token_type"), "DPoP");
    let at = op.verify_jwt(tokens.str("access_token"));
    assert_eq!((&at["sub"], &at["cnf"]["jkt"]), (&json!("bob"), &json!(thumbprint)), "{at}");
    assert_eq!(unverified_claims(tokens.str("id_token"))["sub"], "bob");
}
