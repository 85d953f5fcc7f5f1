//! Route selection end to end through real TLS: non-canonical paths are refused (400), prefixes
//! match case-insensitively, and a method a route does not take is 405 with `Allow` instead of
//! falling through to a less specific (public) route. Nothing refused reaches the upstream.
//!
//! reqwest (through the `url` crate) normalises paths such as `/%61ccounts` or `//accounts`,
//! so those requests go out on a raw TLS connection as written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use fapi_gateway::GatewayHandle;
use serde_json::json;

// ---------------------------------------------------------------------------------------
// The reviewer's configuration: a protected GET-only `/accounts` under a public `/`
// ---------------------------------------------------------------------------------------

const ISSUER: &str = "https://as.routing.test";

struct Accounts {
    pki: TestPki,
    signer: Signer,
    upstream: Upstream,
    gateway: GatewayHandle,
}

impl Accounts {
    async fn start() -> Accounts {
        init();
        let pki = TestPki::new();
        let signer = Signer::es256("routing-key");
        let jwks = write_file(pki.dir(), "jwks.json", &json!({ "keys": [signer.public_jwk()] }).to_string());
        let upstream = Upstream::start().await;
        let yaml = format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {cert}, key: {key} }} }}\n\
             issuers:\n  - {{ issuer: {ISSUER}, jwks_file: {jwks}, audiences: [{AUDIENCE}] }}\n\
             routes:\n\
             \x20 - {{ name: accounts, match: {{ path_prefix: /accounts, methods: [GET] }}, upstream: {up}, binding: mtls }}\n\
             \x20 - {{ name: open, match: {{ path_prefix: / }}, upstream: {up}, auth: none }}\n",
            cert = pki.server_cert_path().display(),
            key = pki.server_key_path().display(),
            jwks = jwks.display(),
            up = upstream.url(),
        );
        let config = fapi_gateway::config::Config::from_yaml(&yaml, "t.yaml", pki.dir())
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let gateway = fapi_gateway::start(config).await.expect("gateway starts");
        Accounts { pki, signer, upstream, gateway }
    }

    /// A token bound to `cert`.
    fn bound_token(&self, cert: &ClientCert) -> String {
        let mut c = claims(ISSUER, AUDIENCE);
        c["cnf"] = json!({ "x5t#S256": cert.x5t_s256 });
        self.signer.jwt(&c)
    }

    async fn send(
        &self,
        identity: Option<&ClientCert>,
        method: &str,
        target: &str,
        extra: &[(&str, &str)],
    ) -> RawResponse {
        raw_request(&self.pki, self.gateway.local_addr(), identity, method, target, extra).await
    }
}

#[tokio::test]
async fn reviewer_requests_without_a_token_never_reach_the_upstream() {
    let gw = Accounts::start().await;
    // Non-canonical spellings of `/accounts/1`: refused before routing.
    for target in ["/%61ccounts/1", "/accounts;jsessionid=x/1", "//accounts/1"] {
        let response = gw.send(None, "GET", target, &[]).await;
        response.assert_gateway_error(400, "invalid_request");
        assert_eq!(gw.upstream.hits(), 0, "GET {target}");
    }
    // Another case of the protected prefix lands on the protected route, whose spelling it
    // does not match: refused outright, never the public catch-all.
    let response = gw.send(None, "GET", "/ACCOUNTS/1", &[]).await;
    response.assert_gateway_error(400, "invalid_request");
    // HEAD is taken where GET is: the protected route again, not the public catch-all.
    let response = gw.send(None, "HEAD", "/accounts/1", &[]).await;
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("www-authenticate"), Some("Bearer"), "{response:?}");
    assert!(response.header("x-upstream").is_none(), "{response:?}");
    // Methods the route does not take are 405, not handed to the public catch-all.
    for method in ["POST", "DELETE"] {
        let response = gw.send(None, method, "/accounts/1", &[("content-length", "0")]).await;
        response.assert_gateway_error(405, "method_not_allowed");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{method}: {response:?}");
        assert!(response.header("www-authenticate").is_none(), "{method}: {response:?}");
    }
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn reviewer_requests_with_a_token_are_still_405_or_400() {
    // A valid token does not open a method or a spelling the route does not take.
    let gw = Accounts::start().await;
    let cert = gw.pki.self_signed_client("client-1");
    let auth = format!("Bearer {}", gw.bound_token(&cert));
    let auth = [("authorization", auth.as_str()), ("content-length", "0")];
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let response = gw.send(Some(&cert), method, "/accounts/1", &auth).await;
        response.assert_gateway_error(405, "method_not_allowed");
        assert_eq!(response.header("allow"), Some("GET, HEAD"), "{method}");
    }
    for target in ["/%61ccounts/1", "/accounts;jsessionid=x/1", "//accounts/1", "/accounts//1", "/accounts/%31"] {
        gw.send(Some(&cert), "GET", target, &auth).await.assert_gateway_error(400, "invalid_request");
    }
    assert_eq!(gw.upstream.hits(), 0);
}

#[tokio::test]
async fn reviewer_configuration_still_serves_canonical_requests() {
    let gw = Accounts::start().await;
    let cert = gw.pki.self_signed_client("client-1");
    let auth = format!("Bearer {}", gw.bound_token(&cert));
    let auth = [("authorization", auth.as_str())];
    for (method, target) in
        [("GET", "/accounts/1"), ("HEAD", "/accounts/1"), ("GET", "/accounts/1?x=1"), ("GET", "/accounts")]
    {
        let response = gw.send(Some(&cert), method, target, &auth).await;
        assert_eq!(response.status, 200, "{method} {target}: {response:?}");
        assert_eq!(response.header("x-upstream"), Some("yes"));
        let seen = gw.upstream.last().unwrap();
        assert_eq!((seen.method.as_str(), seen.uri.as_str()), (method, target), "forwarded as written");
    }
    assert_eq!(gw.upstream.hits(), 4);
    // Everything outside `/accounts` (on a segment boundary) is the public catch-all, any method.
    for (method, target) in [("GET", "/"), ("DELETE", "/accountsx/1"), ("POST", "/other"), ("GET", "/a/%20b?x=;//")] {
        let response = gw.send(None, method, target, &[("content-length", "0")]).await;
        assert_eq!(response.status, 200, "{method} {target}: {response:?}");
    }
    assert_eq!(gw.upstream.hits(), 8);
    assert_eq!(gw.upstream.last().unwrap().uri, "/a/%20b?x=;//");
}

// ---------------------------------------------------------------------------------------
// The harness configuration
// ---------------------------------------------------------------------------------------

async fn env_get(env: &Env, target: &str) -> RawResponse {
    raw_request(&env.pki, env.addr, None, "GET", target, &[]).await
}

#[tokio::test]
async fn non_canonical_paths_are_400_and_never_forwarded() {
    let env = Env::start().await;
    for target in [
        // Empty segments.
        "//public/x",
        "/public//x",
        "/public/x//",
        "//",
        // Path parameters.
        "/public;x",
        "/public;a=b/x",
        "/public/x;jsessionid=1",
        "/mtls;/x",
        // Percent-encoded unreserved characters, in either hex case.
        "/%70ublic/x",
        "/publi%63/x",
        "/%6Dtls/x",
        "/%6dtls/x",
        "/public/%41",
        "/public/%7e",
        "/public/%2D",
        "/public/%5f",
        "/public/%30",
        // Malformed escapes.
        "/public/%zz",
        "/public/%4",
        "/public/%",
        "/public/%g1/x",
    ] {
        let response = env_get(&env, target).await;
        response.assert_gateway_error(400, "invalid_request");
        let description = response.json()["error_description"].as_str().unwrap().to_string();
        assert!(description.starts_with("the request path"), "{target}: {description}");
    }
    assert_eq!(env.upstream.hits(), 0);
    // The canonical forms still pass, and so does whatever sits in the query.
    for target in ["/public", "/public/", "/public/x/", "/public/%20x%3B%C3%A9", "/public/x?a=%61&b=;&c=//"] {
        let response = env_get(&env, target).await;
        assert_eq!(response.status, 200, "{target}: {response:?}");
        assert_eq!(env.upstream.last().unwrap().uri, target);
    }
    assert_eq!(env.upstream.hits(), 5);
}

#[tokio::test]
async fn paths_in_another_letter_case_are_refused() {
    let env = Env::start().await;
    // `/MTLS/x` lands on the mTLS route in another letter case: refused, never forwarded.
    for target in ["/MTLS/x", "/Mtls", "/mTLS/"] {
        let response = env_get(&env, target).await;
        response.assert_gateway_error(400, "invalid_request");
    }
    assert_eq!(env.upstream.hits(), 0);
    // The segment boundary still holds whatever the case.
    env_get(&env, "/MTLSx").await.assert_gateway_error(404, "not_found");
    env_get(&env, "/PUBLICITY").await.assert_gateway_error(404, "not_found");
    assert_eq!(env.upstream.hits(), 0);
    // Even on a public route: a case-sensitive upstream would serve another resource.
    env_get(&env, "/PUBLIC/x").await.assert_gateway_error(400, "invalid_request");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn method_a_route_does_not_take_is_405_with_allow() {
    let env = Env::start().await;
    // `/echo` takes POST and PUT only.
    for method in ["GET", "HEAD", "DELETE", "PATCH", "OPTIONS"] {
        let response = raw_request(&env.pki, env.addr, None, method, "/echo/x", &[]).await;
        assert_eq!(response.status, 405, "{method}: {response:?}");
        assert_eq!(response.header("allow"), Some("POST, PUT"), "{method}");
        assert_eq!(response.header("cache-control"), Some("no-store"));
        if method != "HEAD" {
            response.assert_gateway_error(405, "method_not_allowed");
        }
    }
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn method_not_allowed_over_http2() {
    let env = Env::start().await;
    let response = env.h2_client(None).delete(env.url("/ECHO")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.headers()["allow"], "POST, PUT");
    assert_rejected(response, 405, "", "method_not_allowed").await;
    let response = env.h2_client(None).get(env.url("/%70ublic/x")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_rejected(response, 400, "", "invalid_request").await;
    assert_eq!(env.upstream.hits(), 0);
}
