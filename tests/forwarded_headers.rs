//! What reaches the upstream of other proxies' trust headers and of HTTP/2 cookies:
//! vendor certificate, client-address, user and override headers sent by a client are
//! removed (plus the names in `listen.strip_headers`), and HTTP/2 cookie crumbs arrive as
//! one `Cookie` header (RFC 9113 §8.2.3).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const VENDOR: [(&str, &str); 16] = [
    ("x-ssl-client-cert", "-----BEGIN CERTIFICATE-----"),
    ("x-ssl-client-verify", "SUCCESS"),
    ("x-ssl-client-s-dn", "CN=admin"),
    ("ssl-client-cert", "x"),
    ("x-client-cert", "x"),
    ("x-arr-clientcert", "x"),
    ("x-amzn-mtls-clientcert", "x"),
    ("true-client-ip", "10.0.0.1"),
    ("x-client-ip", "10.0.0.1"),
    ("cf-connecting-ip", "10.0.0.1"),
    ("x-original-url", "/admin"),
    ("x-rewrite-url", "/admin"),
    ("x-http-method-override", "DELETE"),
    ("x-remote-user", "admin"),
    ("x-auth-request-user", "admin"),
    ("x_ssl_client_verify", "SUCCESS"),
];

#[tokio::test]
async fn vendor_trust_headers_and_configured_ones_never_reach_the_upstream() {
    let env = Env::start_with(Options {
        listen_extra: "  strip_headers: [X-Internal-Role, x-tenant]\n".into(),
        ..Default::default()
    })
    .await;
    let mut request = env.client(None).get(env.url("/public/x"));
    for (name, value) in VENDOR {
        request = request.header(name, value);
    }
    let request = request.header("x-internal-role", "admin").header("x-tenant", "other").header("x-kept", "1");
    assert_eq!(request.send().await.unwrap().status(), 200);
    let seen = env.upstream.last().unwrap();
    for (name, _) in VENDOR.iter().chain(&[("x-internal-role", ""), ("x-tenant", "")]) {
        assert!(!seen.headers.contains_key(*name), "{name} reached the upstream");
    }
    assert_eq!(seen.headers["x-kept"], "1", "other headers still travel");
}

#[tokio::test]
async fn http2_cookie_crumbs_arrive_as_one_header() {
    let env = Env::start().await;
    let response = env
        .h2_client(None)
        .get(env.url("/public/x"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    let cookies: Vec<_> = seen.headers.get_all("cookie").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert_eq!(cookies, ["a=1; b=2; c=3"]);
}
