//! The host a request names (RFC 9112 §3.2, RFC 9113 §8.3.1): exactly one valid `Host` on
//! HTTP/1.1, refused with 400 before routing otherwise, so that no request can skip a
//! host-bound route by naming no host, two hosts or a malformed one; routes and forwarded
//! headers see the canonical host.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::raw::{raw_connect_with_sni, raw_exchange, read_response};
use common::*;
use tokio::io::AsyncWriteExt as _;

async fn refused(env: &Env, request: &str) {
    let response = raw_exchange(env, request.as_bytes()).await.unwrap_or_else(|| panic!("no answer to {request:?}"));
    response.assert_gateway_error(400, "invalid_request");
    assert_eq!(env.upstream.hits(), 0, "{request:?} reached the upstream");
}

#[tokio::test]
async fn http11_requests_without_exactly_one_valid_host_are_400() {
    let env = Env::start().await;
    refused(&env, "GET /public/x HTTP/1.1\r\n\r\n").await;
    refused(&env, "GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nHost: gateway.test\r\n\r\n").await;
    refused(&env, "GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nHost: partner.test\r\n\r\n").await;
    for host in ["gateway.test..", "gateway..test", ".gateway.test", "gateway.test:x", "gateway.test:1:2", "[::1"] {
        refused(&env, &format!("GET /public/x HTTP/1.1\r\nHost: {host}\r\n\r\n")).await;
    }
    let response = raw_exchange(&env, b"GET /public/x HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(response.json()["error_description"], "the request must name its host (Host or :authority)");
}

#[tokio::test]
async fn no_host_cannot_skip_a_host_bound_route() {
    // SNI partner.test and no Host: before, the host-bound (protected) route was skipped and
    // the public catch-all served the request.
    let env = Env::start().await;
    let mut tls = raw_connect_with_sni(&env, "partner.test").await;
    tls.write_all(b"GET /public/x HTTP/1.1\r\n\r\n").await.unwrap();
    let response = read_response(&mut tls).await.unwrap();
    response.assert_gateway_error(400, "invalid_request");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn the_canonical_host_is_routed_and_forwarded() {
    let env = Env::start().await;
    let response =
        raw_exchange(&env, b"GET /public/x HTTP/1.1\r\nHost: GATEWAY.test.:443\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-host"], "gateway.test");
    let forwarded = seen.headers["forwarded"].to_str().unwrap();
    assert!(forwarded.ends_with(r#"host="gateway.test""#), "{forwarded}");
    // HTTP/1.0 may name no host; it is routed as hostless.
    let response = raw_exchange(&env, b"GET /public/x HTTP/1.0\r\n\r\n").await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
}
