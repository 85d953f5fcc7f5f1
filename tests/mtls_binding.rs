//! RFC 8705 certificate-bound tokens through real TLS: the token's `cnf."x5t#S256"` must be
//! the thumbprint of this connection's client certificate, whatever the route says.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn bound_token_with_its_certificate_reaches_upstream() {
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("legit-client");
    let token = env.bound_token(&cert);
    let response = env.get("/mtls/accounts?x=1", Some(&cert), Some(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.text().await.unwrap(), "upstream-ok");
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.uri, "/mtls/accounts?x=1");
    assert_eq!(seen.headers["authorization"], format!("Bearer {token}"));
}

#[tokio::test]
async fn stolen_token_with_another_certificate_is_refused() {
    let env = Env::start().await;
    let victim = env.pki.self_signed_client("victim");
    let thief = env.pki.self_signed_client("thief");
    let token = env.bound_token(&victim);
    let response = env.get("/mtls/accounts", Some(&thief), Some(&token)).await;
    assert_rejected(
        response,
        401,
        r#"Bearer error="invalid_token", error_description="the client certificate does not match the one the token is bound to""#,
        "invalid_token",
    )
    .await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn bound_token_without_any_certificate_is_refused() {
    let env = Env::start().await;
    let victim = env.pki.self_signed_client("victim");
    let token = env.bound_token(&victim);
    let response = env.get("/mtls/accounts", None, Some(&token)).await;
    assert_rejected(
        response,
        401,
        r#"Bearer error="invalid_token", error_description="the token is bound to a client certificate, and none was presented""#,
        "invalid_token",
    )
    .await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn bound_token_is_held_to_its_binding_on_a_bearer_route() {
    let env = Env::start().await;
    let victim = env.pki.self_signed_client("victim");
    let thief = env.pki.self_signed_client("thief");
    let token = env.bound_token(&victim);
    let response = env.get("/bearer/x", Some(&thief), Some(&token)).await;
    assert_eq!(response.status(), 401);
    assert!(challenge(&response).contains(r#"error="invalid_token""#));
    let ok = env.get("/bearer/x", Some(&victim), Some(&token)).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn unbound_token_is_refused_on_mtls_and_any_routes_but_passes_on_bearer() {
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("c");
    let token = env.bearer_token();
    let error =
        r#"Bearer error="invalid_token", error_description="this resource requires a sender-constrained access token""#;
    let response = env.get("/mtls/a", Some(&cert), Some(&token)).await;
    assert_rejected(response, 401, error, "invalid_token").await;
    // `any` routes also offer the DPoP scheme.
    let response = env.get("/any/a", Some(&cert), Some(&token)).await;
    assert_rejected_with(response, 401, &[error, r#"DPoP algs="ES256 PS256 EdDSA""#], "invalid_token").await;
    assert_eq!(env.upstream.hits(), 0);
    let response = env.get("/bearer/a", None, Some(&token)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn dpop_bound_token_sent_as_bearer_is_refused() {
    let env = Env::start().await;
    let mut claims = env.claims();
    claims["cnf"] = json!({"jkt": Signer::es256("dpop").jwk_thumbprint()});
    let token = env.token(&claims);
    let response = env.get("/bearer/a", None, Some(&token)).await;
    assert_rejected(
        response,
        401,
        r#"Bearer error="invalid_token", error_description="a DPoP-bound token must be sent with the DPoP scheme and a proof""#,
        "invalid_token",
    )
    .await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn ca_signed_certificate_binds_as_well_over_http2() {
    let env = Env::start().await;
    let cert = env.pki.ca_signed_client("ca-client");
    let token = env.bound_token(&cert);
    let response = env.h2_client(Some(&cert)).get(env.url("/any/x")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn thumbprint_is_the_sha256_of_the_presented_certificate() {
    // The identity route forwards the verified certificate (RFC 9440); its SHA-256 must be
    // the thumbprint the token was bound to.
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("c");
    let token = env.bound_token(&cert);
    let response = env.get("/identity/me", Some(&cert), Some(&token)).await;
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    let header = seen.headers["client-cert"].to_str().unwrap().to_string();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD.decode(header.trim_matches(':')).unwrap();
    assert_eq!(der, cert.der);
    assert_eq!(seen.headers["x-fapi-subject"], "user-1");
    assert_eq!(seen.headers["x-fapi-client-id"], "client-1");
    assert_eq!(seen.headers["x-fapi-scopes"], "accounts:read");
}

#[tokio::test]
async fn required_client_auth_refuses_handshakes_without_certificate() {
    let env = Env::start_with(Options { client_auth: "required", ..Default::default() }).await;
    let error = env.client(None).get(env.url("/public/x")).send().await;
    assert!(error.is_err(), "handshake without a certificate must fail");
    let cert = env.pki.self_signed_client("c");
    let ok = env.get("/public/x", Some(&cert), None).await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn client_ca_rejects_certificates_from_elsewhere() {
    let env = Env::start_with(Options {
        client_auth: "required",
        tls_extra: "    client_ca: {client_ca}\n".into(),
        ..Default::default()
    })
    .await;
    let stranger = env.pki.self_signed_client("stranger");
    assert!(env.client(Some(&stranger)).get(env.url("/public/x")).send().await.is_err());
    let member = env.pki.ca_signed_client("member");
    let token = env.bound_token(&member);
    let ok = env.get("/mtls/x", Some(&member), Some(&token)).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn unvouched_client_certificate_is_never_forwarded() {
    // A public route with forward_client_cert and no client_ca: nothing vouches for a
    // self-signed certificate, so the upstream must not receive it as RFC 9440 Client-Cert.
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("CN=Bank X");
    let response = env.get("/open-cert/x", Some(&cert), None).await;
    assert_eq!(response.status(), 200);
    assert!(!env.upstream.last().unwrap().headers.contains_key("client-cert"));
}

#[tokio::test]
async fn ca_verified_client_certificate_is_forwarded_on_a_public_route() {
    let env = Env::start_with(Options {
        client_auth: "optional",
        tls_extra: "    client_ca: {client_ca}\n".into(),
        ..Default::default()
    })
    .await;
    let cert = env.pki.ca_signed_client("member");
    let response = env.get("/open-cert/x", Some(&cert), None).await;
    assert_eq!(response.status(), 200);
    let header = env.upstream.last().unwrap().headers["client-cert"].to_str().unwrap().to_string();
    use base64::Engine as _;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(header.trim_matches(':')).unwrap(), cert.der);
}

#[tokio::test]
async fn unknown_confirmation_method_is_refused() {
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("c");
    let mut claims = env.claims();
    claims["cnf"] = json!({"kid": "some-key"});
    let response = env.get("/bearer/x", Some(&cert), Some(&env.token(&claims))).await;
    assert_rejected(
        response,
        401,
        r#"Bearer error="invalid_token", error_description="the token is bound by a confirmation method this gateway cannot verify""#,
        "invalid_token",
    )
    .await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn malformed_or_empty_cnf_is_refused() {
    let env = Env::start().await;
    for cnf in [json!({"x5t#S256": "not-a-thumbprint"}), json!({}), json!(null)] {
        let mut claims = env.claims();
        claims["cnf"] = cnf.clone();
        let response = env.get("/bearer/x", None, Some(&env.token(&claims))).await;
        assert_rejected(
            response,
            401,
            r#"Bearer error="invalid_token", error_description="the access token's cnf claim is malformed""#,
            "invalid_token",
        )
        .await;
    }
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn underscore_spellings_of_identity_headers_are_removed() {
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("c");
    let token = env.bound_token(&cert);
    let response = env
        .client(Some(&cert))
        .get(env.url("/identity/me"))
        .bearer_auth(&token)
        .header("x_fapi_subject", "admin")
        .header("client_cert", ":ZXZpbA==:")
        .header("x_forwarded_for", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    for spoofed in ["x_fapi_subject", "client_cert", "x_forwarded_for"] {
        assert!(!seen.headers.contains_key(spoofed), "{spoofed} reached the upstream");
    }
    assert_eq!(seen.headers["x-fapi-subject"], "user-1");
}
