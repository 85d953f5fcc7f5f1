//! Opaque access tokens checked by introspection (RFC 7662, RFC 9701 signed answers).
//!
//! Against a real oidc-provider issuing opaque DPoP-bound tokens (client credentials): the
//! gateway discovers the endpoint, authenticates with `private_key_jwt` or
//! `tls_client_auth` (on the mTLS alias), enforces `cnf.jkt` itself, caches active answers
//! for `cache_ttl` (a revocation shows after it), and answers 503 while the AS is down.
//! Against a scripted introspection endpoint over HTTPS: `client_secret_basic`, `cnf`
//! `x5t#S256`, every unusable answer (status, shape, `active`, `aud`, `exp`, `token_type`,
//! slowness) and the negative cache; a JWT never reaches the endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::oidc_provider::{AsClient, AsOptions, OidcProvider, client_assertion_params, dpop_proof, form};
use common::*;
use fapi_gateway::jose::{Alg, SigningKey};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

const APP: &str = "app";
const RS: &str = "gateway-rs";
const SCOPE: &str = "accounts:read";

fn client(pki: &TestPki, gateway: &fapi_gateway::GatewayHandle, cert: Option<&ClientCert>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .resolve(GATEWAY_HOST, gateway.local_addr())
        .tls_certs_only([ca]);
    if let Some(cert) = cert {
        builder = builder.identity(cert.identity());
    }
    builder.build().unwrap()
}

async fn start_gateway(pki: &TestPki, yaml: &str) -> fapi_gateway::GatewayHandle {
    let config = fapi_gateway::config::Config::from_yaml(yaml, "gateway.yaml", pki.dir())
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    fapi_gateway::start(config).await.expect("gateway starts")
}

fn listen_yaml(pki: &TestPki) -> String {
    format!(
        "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {}, client_auth: optional }} }}\n",
        pki.server_cert_path().display(),
        pki.server_key_path().display(),
    )
}

/// Checks a refusal: the status, a challenge of `scheme` naming `error`, the same `error` in
/// the JSON body; returns the body.
async fn refused(response: reqwest::Response, status: u16, scheme: &str, error: &str) -> Value {
    assert_eq!(response.status(), status);
    let challenge = challenge(&response);
    assert!(challenge.starts_with(&format!("{scheme} ")), "{challenge}");
    assert!(challenge.contains(&format!("error=\"{error}\"")), "{challenge}");
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], error, "{body}");
    body
}

// ---------------------------------------------------------------------------------------
// Against oidc-provider
// ---------------------------------------------------------------------------------------

struct RealAs {
    pki: TestPki,
    provider: OidcProvider,
    upstream: Upstream,
    app_key: Signer,
    rs_key: SigningKey,
}

impl RealAs {
    /// oidc-provider with opaque tokens, the app (client credentials, DPoP) and the
    /// gateway's own client `RS` (`rs_client` decides how it authenticates).
    async fn start(rs_client: impl FnOnce(&TestPki, Value) -> AsClient) -> RealAs {
        init();
        let pki = TestPki::new();
        let app_key = Signer::es256("app-1");
        let rs_key = SigningKey::generate(Alg::Es256).unwrap();
        let mut rs_jwk = rs_key.public_jwk();
        rs_jwk["kid"] = json!("rs-1");
        let app = AsClient::private_key_jwt(APP, app_key.public_jwk(), "https://app.test/cb")
            .with("grant_types", json!(["client_credentials"]))
            .with("response_types", json!([]))
            .with("redirect_uris", json!([]));
        let rs = rs_client(&pki, rs_jwk);
        let options = AsOptions { opaque_access_tokens: true, ..AsOptions::default() }.client(app).client(rs);
        let provider = OidcProvider::start(&pki, options).await;
        let upstream = Upstream::start().await;
        RealAs { pki, provider, upstream, app_key, rs_key }
    }

    fn rs_private_key_jwt(_: &TestPki, jwk: Value) -> AsClient {
        AsClient::private_key_jwt(RS, jwk, "https://rs.test/cb")
            .with("grant_types", json!([]))
            .with("response_types", json!([]))
            .with("redirect_uris", json!([]))
    }

    /// An opaque DPoP-bound token for the app's key, by client credentials.
    async fn dpop_token(&self) -> String {
        let token_endpoint = self.provider.endpoint("token_endpoint");
        let issuer = self.provider.issuer().to_string();
        let body = || {
            let mut pairs = vec![
                ("grant_type", "client_credentials".to_string()),
                ("scope", SCOPE.to_string()),
                ("resource", common::oidc_provider::DEFAULT_RESOURCE.to_string()),
            ];
            pairs.extend(client_assertion_params(&self.app_key, APP, &issuer));
            form(pairs)
        };
        let answer =
            self.provider.post_form(self.provider.http(), &token_endpoint, &body, Some((&self.app_key, None))).await;
        assert_eq!(answer.status, 200, "{answer}\n{}", self.provider.log());
        assert_eq!(answer.str("token_type"), "DPoP");
        let token = answer.str("access_token").to_string();
        assert_eq!(token.matches('.').count(), 0, "an opaque token, not a JWT");
        token
    }

    async fn revoke(&self, token: &str) {
        let issuer = self.provider.issuer().to_string();
        let body = || {
            let mut pairs = vec![("token", token.to_string())];
            pairs.extend(client_assertion_params(&self.app_key, APP, &issuer));
            form(pairs)
        };
        let url = self.provider.endpoint("revocation_endpoint");
        let answer = self.provider.post_form(self.provider.http(), &url, &body, None).await;
        assert_eq!(answer.status, 200, "{answer}");
    }

    async fn gateway(&self, introspection: &str) -> fapi_gateway::GatewayHandle {
        let key_path = write_file(self.pki.dir(), "rs.key", &self.rs_key.to_pkcs8_pem().unwrap());
        let yaml = format!(
            "{listen}issuers:\n  - issuer: {issuer}\n    discovery: true\n    ca: {ca}\n    audiences: [{aud}]\n    introspection: {{ client_id: {RS}, client_key: {key}, client_key_id: rs-1, {introspection} }}\n\
             routes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: {up}, binding: dpop, scopes: [{SCOPE}] }}\n",
            listen = listen_yaml(&self.pki),
            issuer = self.provider.issuer(),
            ca = self.pki.ca_pem_path().display(),
            aud = common::oidc_provider::DEFAULT_RESOURCE,
            key = key_path.display(),
            up = self.upstream.url(),
        );
        start_gateway(&self.pki, &yaml).await
    }

    async fn call(&self, gateway: &fapi_gateway::GatewayHandle, token: &str, proof: bool) -> reqwest::Response {
        let mut request = client(&self.pki, gateway, None)
            .get(gateway_url(gateway.local_addr(), "/api/accounts"))
            .header("authorization", format!("DPoP {token}"));
        if proof {
            let htu = format!("https://{GATEWAY_HOST}/api/accounts");
            request = request.header("dpop", dpop_proof(&self.app_key, "GET", &htu, None, Some(token)));
        }
        request.send().await.unwrap()
    }
}

#[tokio::test]
async fn an_opaque_dpop_token_passes_with_its_proof_and_revocation_shows_after_the_cache_ttl() {
    let real = RealAs::start(RealAs::rs_private_key_jwt).await;
    let token = real.dpop_token().await;
    let gateway = real.gateway("cache_ttl: 2s").await;

    let response = real.call(&gateway, &token, true).await;
    assert_eq!(response.status(), 200, "{}\n{}", response.text().await.unwrap(), real.provider.log());
    assert_eq!(real.upstream.hits(), 1);

    // The binding is the gateway's to check (RFC 9449 §6.2): no proof, no entry; nor as Bearer.
    let response = real.call(&gateway, &token, false).await;
    refused(response, 401, "DPoP", "invalid_dpop_proof").await;
    let response = client(&real.pki, &gateway, None)
        .get(gateway_url(gateway.local_addr(), "/api/accounts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(real.upstream.hits(), 1, "nothing refused reached the upstream");

    // Revoked at the AS: the cached answer serves until cache_ttl, then the AS says inactive.
    real.revoke(&token).await;
    let response = real.call(&gateway, &token, true).await;
    assert_eq!(response.status(), 200, "within cache_ttl the cached answer holds");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let response = real.call(&gateway, &token, true).await;
    let body = refused(response, 401, "DPoP", "invalid_token").await;
    assert!(body["error_description"].as_str().unwrap().contains("not active"), "{body}");

    // A token the AS never issued.
    let response = real.call(&gateway, "made-up-opaque-token", true).await;
    refused(response, 401, "DPoP", "invalid_token").await;
    assert_eq!(real.upstream.hits(), 2);
}

#[tokio::test]
async fn signed_introspection_answers_rfc_9701_are_verified_with_the_issuers_keys() {
    let real = RealAs::start(RealAs::rs_private_key_jwt).await;
    let token = real.dpop_token().await;
    let gateway = real.gateway("response: jwt").await;
    let response = real.call(&gateway, &token, true).await;
    assert_eq!(response.status(), 200, "{}\n{}", response.text().await.unwrap(), real.provider.log());
}

#[tokio::test]
async fn tls_client_auth_introspects_on_the_mtls_alias() {
    let real = RealAs::start(|_, _| {
        AsClient::tls_client_auth(RS, &format!("CN={RS}"), "https://rs.test/cb")
            .with("grant_types", json!([]))
            .with("response_types", json!([]))
            .with("redirect_uris", json!([]))
    })
    .await;
    let token = real.dpop_token().await;
    let cert = real.pki.ca_signed_client(RS);
    let cert_path = write_file(real.pki.dir(), "rs.pem", &cert.cert_pem);
    let key_path = write_file(real.pki.dir(), "rs-cert.key", &cert.key_pem);
    let yaml = format!(
        "{listen}issuers:\n  - issuer: {issuer}\n    discovery: true\n    ca: {ca}\n    audiences: [{aud}]\n    introspection: {{ client_id: {RS}, client_auth: tls_client_auth, client_cert: {cert}, client_cert_key: {key} }}\n\
         routes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: {up}, binding: dpop }}\n",
        listen = listen_yaml(&real.pki),
        issuer = real.provider.issuer(),
        ca = real.pki.ca_pem_path().display(),
        aud = common::oidc_provider::DEFAULT_RESOURCE,
        cert = cert_path.display(),
        key = key_path.display(),
        up = real.upstream.url(),
    );
    let gateway = start_gateway(&real.pki, &yaml).await;
    let response = real.call(&gateway, &token, true).await;
    assert_eq!(response.status(), 200, "{}\n{}", response.text().await.unwrap(), real.provider.log());
}

#[tokio::test]
async fn the_as_down_is_503_with_retry_after_and_nothing_reaches_the_upstream() {
    let real = RealAs::start(RealAs::rs_private_key_jwt).await;
    let token = real.dpop_token().await;
    let gateway = real.gateway("timeout: 1s").await;
    let RealAs { pki, provider, upstream, app_key, .. } = real;
    drop(provider);
    let htu = format!("https://{GATEWAY_HOST}/api/accounts");
    let response = client(&pki, &gateway, None)
        .get(gateway_url(gateway.local_addr(), "/api/accounts"))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", dpop_proof(&app_key, "GET", &htu, None, Some(&token)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Against a scripted endpoint
// ---------------------------------------------------------------------------------------

/// What the scripted endpoint answers, and what it saw.
#[derive(Default)]
struct Script {
    status: Mutex<u16>,
    body: Mutex<String>,
    delay: Mutex<Duration>,
    hits: AtomicUsize,
    last_authorization: Mutex<Option<String>>,
    last_form: Mutex<String>,
}

struct ScriptedAs {
    port: u16,
    script: Arc<Script>,
}

impl ScriptedAs {
    async fn start(pki: &TestPki) -> ScriptedAs {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Script { status: Mutex::new(200), ..Script::default() });
        let acceptor = pki.server_tls_acceptor();
        let shared = script.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let script = shared.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |request: Request<Incoming>| {
                        let script = script.clone();
                        async move {
                            script.hits.fetch_add(1, Ordering::SeqCst);
                            *script.last_authorization.lock().unwrap() =
                                request.headers().get("authorization").map(|v| v.to_str().unwrap().to_string());
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            *script.last_form.lock().unwrap() = String::from_utf8_lossy(&body).into_owned();
                            let delay = *script.delay.lock().unwrap();
                            tokio::time::sleep(delay).await;
                            let status = *script.status.lock().unwrap();
                            let text = script.body.lock().unwrap().clone();
                            let response = Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(text)))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        ScriptedAs { port, script }
    }

    fn answer(&self, status: u16, body: &Value) {
        self.answer_text(status, &body.to_string());
    }

    fn answer_text(&self, status: u16, body: &str) {
        *self.script.status.lock().unwrap() = status;
        *self.script.body.lock().unwrap() = body.to_string();
    }

    fn hits(&self) -> usize {
        self.script.hits.load(Ordering::SeqCst)
    }
}

const ISSUER: &str = "https://as.test";

struct Scripted {
    pki: TestPki,
    endpoint: ScriptedAs,
    upstream: Upstream,
    gateway: fapi_gateway::GatewayHandle,
    jwt_signer: Signer,
}

impl Scripted {
    async fn start() -> Scripted {
        Scripted::start_with("").await
    }

    /// With more `introspection` options, e.g. `response: jwt, `.
    async fn start_with(options: &str) -> Scripted {
        init();
        let pki = TestPki::new();
        let endpoint = ScriptedAs::start(&pki).await;
        let upstream = Upstream::start().await;
        let jwt_signer = Signer::es256("k1");
        let jwks = write_file(pki.dir(), "jwks.json", &json!({ "keys": [jwt_signer.public_jwk()] }).to_string());
        let secret = write_file(pki.dir(), "introspection.secret", "s3cret:with/odd chars\n");
        let yaml = format!(
            "{listen}issuers:\n  - issuer: {ISSUER}\n    jwks_file: {jwks}\n    ca: {ca}\n    audiences: [{AUDIENCE}]\n    introspection: {{ {options}endpoint: https://localhost:{port}/introspect, client_id: {RS}, client_auth: client_secret_basic, client_secret_file: {secret}, timeout: 1s, inactive_cache_ttl: 30s }}\n\
             routes:\n  - {{ name: api, match: {{ path_prefix: /api }}, upstream: {up}, binding: mtls }}\n",
            listen = listen_yaml(&pki),
            jwks = jwks.display(),
            ca = pki.ca_pem_path().display(),
            port = endpoint.port,
            secret = secret.display(),
            up = upstream.url(),
        );
        let gateway = start_gateway(&pki, &yaml).await;
        Scripted { pki, endpoint, upstream, gateway, jwt_signer }
    }

    async fn call(&self, token: &str, cert: Option<&ClientCert>) -> reqwest::Response {
        client(&self.pki, &self.gateway, cert)
            .get(gateway_url(self.gateway.local_addr(), "/api/x"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

fn active(cert: &ClientCert) -> Value {
    json!({
        "active": true, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 300, "client_id": APP,
        "scope": SCOPE, "cnf": { "x5t#S256": cert.x5t_s256 },
    })
}

#[tokio::test]
async fn client_secret_basic_and_a_certificate_bound_answer() {
    let s = Scripted::start().await;
    let cert = s.pki.ca_signed_client("client-1");
    s.endpoint.answer(200, &active(&cert));

    let response = s.call("opaque-1", Some(&cert)).await;
    assert_eq!(response.status(), 200);
    // RFC 6749 §2.3.1: id and secret form-urlencoded, then base64.
    use base64::Engine as _;
    let basic = s.endpoint.script.last_authorization.lock().unwrap().clone().unwrap();
    let decoded = base64::engine::general_purpose::STANDARD.decode(basic.strip_prefix("Basic ").unwrap()).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), format!("{RS}:s3cret%3Awith%2Fodd+chars"));
    let sent = s.endpoint.script.last_form.lock().unwrap().clone();
    assert_eq!(sent, "token=opaque-1&token_type_hint=access_token");

    // Cached: the second request does not ask again.
    assert_eq!(s.call("opaque-1", Some(&cert)).await.status(), 200);
    assert_eq!(s.endpoint.hits(), 1);

    // Another certificate: the binding fails (the answer's cnf is the gateway's to enforce).
    let other = s.pki.ca_signed_client("client-2");
    let response = s.call("opaque-1", Some(&other)).await;
    refused(response, 401, "Bearer", "invalid_token").await;
    assert_eq!(s.upstream.hits(), 2);
}

#[tokio::test]
async fn unusable_answers_are_503_and_refused_claims_are_401() {
    let s = Scripted::start().await;
    let cert = s.pki.ca_signed_client("client-1");
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        format!("opaque-{n}")
    };
    // The endpoint fails or answers something else: the gateway cannot decide.
    for (status, body) in [
        (500, json!({ "error": "server_error" })),
        (401, json!({ "error": "invalid_client" })),
        (200, json!(["not", "an", "object"])),
        (200, json!({ "active": "true" })),
        (200, json!({ "iss": ISSUER })),
    ] {
        s.endpoint.answer(status, &body);
        let response = s.call(&fresh(), Some(&cert)).await;
        assert_eq!(response.status(), 503, "answer {status} {body}");
        assert_eq!(response.headers()["retry-after"], "5");
    }
    // Too slow (timeout: 1s).
    *s.endpoint.script.delay.lock().unwrap() = Duration::from_millis(1500);
    s.endpoint.answer(200, &active(&cert));
    assert_eq!(s.call(&fresh(), Some(&cert)).await.status(), 503);
    *s.endpoint.script.delay.lock().unwrap() = Duration::ZERO;

    // Active, but not for this gateway or not any more: invalid_token, with the reason.
    let mut cases = Vec::new();
    let mut answer = active(&cert);
    answer["aud"] = json!("https://other.api");
    cases.push((answer, "not meant for this resource"));
    let mut answer = active(&cert);
    answer["exp"] = json!(now() - 60);
    cases.push((answer, "expired"));
    let mut answer = active(&cert);
    answer.as_object_mut().unwrap().remove("exp");
    cases.push((answer, "no exp"));
    let mut answer = active(&cert);
    answer["iss"] = json!("https://another.as");
    cases.push((answer, "issuer is not trusted"));
    // RFC 9449 §6.2: a DPoP-bound token's token_type is DPoP.
    let mut answer = active(&cert);
    answer["cnf"] = json!({ "jkt": s.jwt_signer.jwk_thumbprint() });
    answer["token_type"] = json!("Bearer");
    cases.push((answer, "cnf"));
    for (answer, says) in cases {
        s.endpoint.answer(200, &answer);
        let response = s.call(&fresh(), Some(&cert)).await;
        let body = refused(response, 401, "Bearer", "invalid_token").await;
        assert!(body["error_description"].as_str().unwrap().contains(says), "{answer}: {body}");
    }
    assert_eq!(s.upstream.hits(), 0, "nothing refused reached the upstream");
}

#[tokio::test]
async fn inactive_answers_are_cached_and_jwts_never_reach_the_endpoint() {
    let s = Scripted::start().await;
    let cert = s.pki.ca_signed_client("client-1");
    s.endpoint.answer(200, &json!({ "active": false }));
    for _ in 0..3 {
        let response = s.call("revoked-token", Some(&cert)).await;
        let body = refused(response, 401, "Bearer", "invalid_token").await;
        assert!(body["error_description"].as_str().unwrap().contains("not active"), "{body}");
    }
    assert_eq!(s.endpoint.hits(), 1, "inactive_cache_ttl keeps the answer");

    // A JWT goes the JWT way (here: signed by the issuer's key, bound to the certificate).
    let mut claims = claims(ISSUER, AUDIENCE);
    claims["cnf"] = json!({ "x5t#S256": cert.x5t_s256 });
    let token = s.jwt_signer.jwt(&claims);
    assert_eq!(s.call(&token, Some(&cert)).await.status(), 200);
    let forged = Signer::es256("k1").jwt(&claims);
    assert_eq!(s.call(&forged, Some(&cert)).await.status(), 401);
    assert_eq!(s.endpoint.hits(), 1, "no JWT was introspected");
}

#[test]
fn config_refuses_what_cannot_work() {
    let pki = TestPki::new();
    let base = |introspection: &str, extra_issuer: &str| {
        format!(
            "{listen}issuers:\n  - issuer: {ISSUER}\n    jwks_file: jwks.json\n    audiences: [a]\n    introspection: {introspection}\n{extra_issuer}\
             routes:\n  - {{ name: api, match: {{ path_prefix: / }}, upstream: http://127.0.0.1:1, binding: mtls }}\n",
            listen = listen_yaml(&pki),
        )
    };
    let cases = [
        ("{ client_id: rs, client_key: k.pem }", "", "introspection.endpoint"),
        ("{ endpoint: http://as.test/i, client_id: rs, client_key: k.pem }", "", "https://"),
        ("{ endpoint: https://as.test/i, client_id: rs }", "", "client_key"),
        ("{ endpoint: https://as.test/i, client_id: rs, client_auth: client_secret_basic }", "", "client_secret_file"),
        (
            "{ endpoint: https://as.test/i, client_id: rs, client_auth: tls_client_auth, client_key: k.pem }",
            "",
            "only used with",
        ),
        (
            "{ endpoint: https://as.test/i, client_id: rs, client_key: k.pem, required_claims: [name] }",
            "",
            "cannot be required",
        ),
        (
            "{ endpoint: https://as.test/i, client_id: rs, client_key: k.pem }",
            "  - { issuer: https://b.test, jwks_file: jwks.json, audiences: [a], introspection: { endpoint: https://b.test/i, client_id: rs, client_key: k.pem } }\n",
            "only one issuer may introspect",
        ),
    ];
    for (introspection, extra, says) in cases {
        let yaml = base(introspection, extra);
        let error = fapi_gateway::config::Config::from_yaml(&yaml, "gateway.yaml", pki.dir())
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{yaml}"))
            .to_string();
        assert!(error.contains(says), "{introspection}: {error}");
    }
}

#[tokio::test]
async fn with_response_jwt_only_an_answer_signed_by_the_issuer_counts() {
    let s = Scripted::start_with("response: jwt, ").await;
    let cert = s.pki.ca_signed_client("client-1");
    let signed = |signer: &Signer, typ: &str, aud: &str| {
        let header = json!({ "alg": "ES256", "kid": "k1", "typ": typ });
        let claims = json!({ "iss": ISSUER, "aud": aud, "iat": now(), "token_introspection": active(&cert) });
        signer.sign_compact(&header, &claims)
    };
    s.endpoint.answer_text(200, &signed(&s.jwt_signer, "token-introspection+jwt", RS));
    assert_eq!(s.call("opaque-a", Some(&cert)).await.status(), 200);
    // The resource's audience names the gateway too (oidc-provider's way).
    s.endpoint.answer_text(200, &signed(&s.jwt_signer, "application/token-introspection+jwt", AUDIENCE));
    assert_eq!(s.call("opaque-b", Some(&cert)).await.status(), 200);

    let forger = Signer::es256("k1");
    for (i, (answer, what)) in [
        (active(&cert).to_string(), "a plain JSON answer"),
        (signed(&forger, "token-introspection+jwt", RS), "signed by another key"),
        (signed(&s.jwt_signer, "at+jwt", RS), "another typ"),
        (signed(&s.jwt_signer, "token-introspection+jwt", "someone-else"), "for another audience"),
    ]
    .into_iter()
    .enumerate()
    {
        s.endpoint.answer_text(200, &answer);
        let response = s.call(&format!("opaque-refused-{i}"), Some(&cert)).await;
        assert_eq!(response.status(), 503, "{what}");
    }
    assert_eq!(s.upstream.hits(), 2);
}
