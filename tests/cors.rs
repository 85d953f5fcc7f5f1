//! CORS for browser DPoP clients (`routes[].cors`), through real TLS: preflights from an
//! allowed origin are answered by the gateway (or passed to the upstream when configured)
//! and never reach authentication; other origins get no CORS headers; every answer of the
//! route — refusals included, so a page can read `WWW-Authenticate` and `DPoP-Nonce` — names
//! the allowed origin and varies by `Origin`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const APP: &str = "https://app.test";

/// The common routes plus two with `cors:` (the extra text continues the route list).
async fn start() -> Env {
    let upstream = "{up}";
    let routes = format!(
        "  - name: cors\n    match: {{ path_prefix: /cors, methods: [GET, POST] }}\n    upstream: {upstream}\n    binding: dpop\n    cors:\n      allowed_origins: [{APP}, \"https://Other.test:8443\"]\n      allowed_headers: [X-Trace]\n      exposed_headers: [X-Request-Id]\n      max_age: 5m\n\
         \x20 - name: cors-upstream\n    match: {{ path_prefix: /cors-up }}\n    upstream: {upstream}\n    binding: dpop\n    cors:\n      allowed_origins: [{APP}]\n      preflight: upstream\n"
    );
    Env::start_with(Options { dpop: routes, ..Options::default() }).await
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn preflight(env: &Env, path: &str, origin: &str, method: &str) -> reqwest::Response {
    env.client(None)
        .request(reqwest::Method::OPTIONS, env.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header("access-control-request-headers", "authorization, dpop")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_allowed_preflight_is_answered_by_the_gateway() {
    let env = start().await;
    let response = preflight(&env, "/cors/accounts", APP, "POST").await;
    assert_eq!(response.status(), 204);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&response, "access-control-allow-methods"), Some("GET, POST"));
    assert_eq!(header(&response, "access-control-allow-headers"), Some("authorization, dpop, content-type, x-trace"));
    assert_eq!(header(&response, "access-control-max-age"), Some("300"));
    let vary: Vec<&str> = response.headers().get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(vary.contains(&"Origin"), "{vary:?}");
    assert!(response.headers().get("access-control-allow-credentials").is_none());
    // Origins compare as origins: scheme and host in any case, the default port implied.
    let other = preflight(&env, "/cors/accounts", "https://other.TEST:8443", "GET").await;
    assert_eq!(other.status(), 204);
    assert_eq!(header(&other, "access-control-allow-origin"), Some("https://other.TEST:8443"));
    assert_eq!(env.upstream.hits(), 0, "a preflight never reaches the upstream");
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let env = start().await;
    for origin in ["https://evil.test", "null", "https://app.test.evil.test", "http://app.test"] {
        let response = preflight(&env, "/cors/accounts", origin, "GET").await;
        assert_eq!(response.status(), 403, "{origin}");
        assert!(header(&response, "access-control-allow-origin").is_none(), "{origin}");
        let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "cors_origin_refused");
    }
    // A method the route does not take: no preflight answer, the usual 405.
    let response = preflight(&env, "/cors/accounts", APP, "DELETE").await;
    assert_eq!(response.status(), 405);
    assert!(header(&response, "access-control-allow-origin").is_none());
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn refusals_and_answers_name_the_allowed_origin_so_the_page_can_read_them() {
    let env = start().await;
    // A refusal: the challenge is readable cross-origin.
    let refused = env.client(None).get(env.url("/cors/accounts")).header("origin", APP).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&refused, "access-control-expose-headers"), Some("WWW-Authenticate, DPoP-Nonce, X-Request-Id"));
    assert!(header(&refused, "www-authenticate").unwrap().starts_with("DPoP"));
    // An admitted request: the upstream's own CORS headers are replaced.
    let key = Signer::es256("cors-client");
    let token = env.dpop_token(&key);
    let proof = key.dpop_proof("GET", &env.public_url("/cors/accounts"), Some(&token));
    let ok = env
        .client(None)
        .get(env.url("/cors/accounts"))
        .header("origin", APP)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof)
        .header("x-reply-header", "access-control-allow-origin: *")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "access-control-allow-origin"), Some(APP), "never the upstream's `*`");
    assert_eq!(env.upstream.hits(), 1);
    // Another origin: no CORS headers, but the answer still varies by Origin.
    let other =
        env.client(None).get(env.url("/cors/accounts")).header("origin", "https://evil.test").send().await.unwrap();
    assert_eq!(other.status(), 401);
    assert!(header(&other, "access-control-allow-origin").is_none());
    let vary: Vec<&str> = other.headers().get_all("vary").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(vary.contains(&"Origin"), "{vary:?}");
}

#[tokio::test]
async fn with_preflight_upstream_the_upstream_answers_unauthenticated() {
    let env = start().await;
    let response = preflight(&env, "/cors-up/x", APP, "GET").await;
    assert_eq!(response.status(), 200, "the upstream's answer");
    assert!(header(&response, "access-control-allow-origin").is_none(), "the gateway adds nothing");
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.method, "OPTIONS");
    assert!(seen.headers.get("authorization").is_none());
    // From another origin the gateway still refuses it.
    let evil = preflight(&env, "/cors-up/x", "https://evil.test", "GET").await;
    assert_eq!(evil.status(), 403);
    assert_eq!(env.upstream.hits(), 1);
    // Credentials a "preflight" carries never reach the upstream unchecked…
    let with_token = env
        .client(None)
        .request(reqwest::Method::OPTIONS, env.url("/cors-up/x"))
        .header("origin", APP)
        .header("access-control-request-method", "GET")
        .header("authorization", "DPoP forged.token.here")
        .header("dpop", "forged.proof")
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);
    let seen = env.upstream.last().unwrap();
    assert!(seen.headers.get("authorization").is_none() && seen.headers.get("dpop").is_none(), "{:?}", seen.headers);
    // …and one with a body is no preflight: it is authenticated like any request.
    let with_body = env
        .client(None)
        .request(reqwest::Method::OPTIONS, env.url("/cors-up/x"))
        .header("origin", APP)
        .header("access-control-request-method", "GET")
        .body("do something")
        .send()
        .await
        .unwrap();
    assert_eq!(with_body.status(), 401);
    assert_eq!(env.upstream.hits(), 2);
}

#[tokio::test]
async fn routes_without_cors_are_unchanged() {
    let env = start().await;
    let response = preflight(&env, "/dpop/x", APP, "GET").await;
    assert_eq!(response.status(), 401, "a preflight on a route without cors: is an unauthenticated request");
    assert!(header(&response, "access-control-allow-origin").is_none());
    let plain = env.client(None).get(env.url("/dpop/x")).header("origin", APP).send().await.unwrap();
    assert!(plain.headers().get("vary").is_none());
}

#[test]
fn bad_cors_settings_are_refused_with_the_key() {
    let pki = TestPki::new();
    let error = |cors: &str| {
        let yaml = format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
             routes:\n  - name: r\n    match: {{ path_prefix: /r }}\n    upstream: http://127.0.0.1:9\n    auth: none\n    cors:\n{cors}",
            pki.server_cert_path().display(),
            pki.server_key_path().display()
        );
        fapi_gateway::config::Config::from_yaml(&yaml, "t.yaml", pki.dir()).unwrap_err().to_string()
    };
    for (cors, expected) in [
        ("      allowed_origins: [\"*\"]\n", "routes[0].cors.allowed_origins"),
        ("      allowed_origins: [https://app.test/path]\n", "is not an origin"),
        ("      allowed_origins: [\"https://*.app.test\"]\n", "no wildcard"),
        ("      allowed_origins: []\n", "at least one origin"),
        ("      allowed_origins: [https://app.test]\n      allowed_headers: [\"bad header\"]\n", "not a header name"),
        ("      allowed_origins: [https://app.test]\n      max_age: 2d\n", "routes[0].cors.max_age"),
        ("      allowed_origins: [https://app.test]\n      preflight: nobody\n", "preflight"),
    ] {
        let e = error(cors);
        assert!(e.contains(expected), "{cors}: {e}");
    }
}
