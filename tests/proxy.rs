//! The proxy path end to end through real TLS: header hygiene, routing refusals, size and
//! time limits, upstream failures, HTTP/2, slow clients and graceful shutdown.
//!
//! Some requests cannot be written with reqwest (dot segments are normalised away, hop-by-hop
//! headers are dropped over HTTP/2, bodies cannot be streamed without its `stream` feature),
//! so those go through a raw TLS connection and a small HTTP/1.1 response reader.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::raw::{
    assert_closed_by_gateway, find, parse_response, raw_connect_with_sni, raw_connect_without_sni, read_until_close,
};
use common::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A reqwest client like the harness one, but limited to HTTP/1.1 (so the `Host` header and
/// hop-by-hop headers travel as written).
fn h1_client(env: &Env) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(env.pki.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .resolve(GATEWAY_HOST, env.addr)
        .http1_only()
        .tls_certs_only([ca])
        .build()
        .unwrap()
}

fn der_header(der: &[u8]) -> String {
    format!(":{}:", base64::engine::general_purpose::STANDARD.encode(der))
}

/// Headers the client may not choose for the upstream: the gateway's own, and hop-by-hop.
const SPOOFED: [(&str, &str); 12] = [
    ("client-cert", ":AAAA:"),
    ("client-cert-chain", ":AAAA:"),
    ("x-fapi-subject", "admin"),
    ("x-fapi-client-id", "evil-client"),
    ("x-fapi-scopes", "admin"),
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-host", "evil"),
    ("x-forwarded-proto", "http"),
    ("forwarded", "for=6.6.6.6"),
    ("proxy-authorization", "Basic x"),
    ("x-custom", "1"),
    ("x-also-custom", "two words"),
];

/// Asserts what the upstream must see on a request made by 127.0.0.1 through
/// `gateway.test`: the gateway's forwarding headers, once each, and none of the spoofed ones.
fn assert_clean_forwarding(seen: &Recorded) {
    let one = |name: &str| {
        let values: Vec<_> = seen.headers.get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values[0].to_str().unwrap().to_string()
    };
    assert_eq!(one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(one("x-forwarded-proto"), "https");
    assert_eq!(one("x-forwarded-host"), "gateway.test");
    assert_eq!(one("forwarded"), r#"for=127.0.0.1;proto=https;host="gateway.test""#);
    for name in [
        "client-cert",
        "client-cert-chain",
        "x-fapi-subject",
        "x-fapi-client-id",
        "x-fapi-scopes",
        "proxy-authorization",
    ] {
        assert!(!seen.headers.contains_key(name), "{name} reached the upstream: {:?}", seen.headers);
    }
    assert_eq!(one("x-custom"), "1");
    assert_eq!(one("x-also-custom"), "two words");
}

// ---------------------------------------------------------------------------------------
// Header hygiene
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn public_route_strips_hop_by_hop_and_spoofed_headers_over_http1() {
    let env = Env::start().await;
    let mut request = format!(
        "GET /public/x?a=1&b=two%20words&c=%2e%2e/../y&d HTTP/1.1\r\n\
         Host: {GATEWAY_HOST}:{}\r\n\
         Connection: x-drop\r\n\
         X-Drop: 1\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Connection: keep-alive\r\n",
        env.addr.port()
    );
    for (name, value) in SPOOFED {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let response = raw_exchange(&env, request.as_bytes()).await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("x-upstream"), Some("yes"));
    assert_eq!(response.body, b"upstream-ok");

    assert_eq!(env.upstream.hits(), 1);
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/public/x?a=1&b=two%20words&c=%2e%2e/../y&d");
    assert_clean_forwarding(&seen);
    for name in ["x-drop", "keep-alive", "te", "proxy-connection"] {
        assert!(!seen.headers.contains_key(name), "hop-by-hop {name} reached the upstream: {:?}", seen.headers);
    }
    assert!(
        seen.headers.get_all("connection").iter().all(|v| !v.to_str().unwrap().contains("x-drop")),
        "{:?}",
        seen.headers
    );
    // The upstream is addressed as itself, not as the gateway's public host.
    assert_eq!(seen.headers["host"], env.upstream.addr().to_string());
}

#[tokio::test]
async fn public_route_replaces_spoofed_headers_over_http2() {
    let env = Env::start().await;
    let mut request = env.h2_client(None).get(env.url("/public/x?q=1"));
    for (name, value) in SPOOFED {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "upstream-ok");
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.uri, "/public/x?q=1");
    assert_clean_forwarding(&seen);
}

#[tokio::test]
async fn identity_route_forwards_the_real_certificate_instead_of_a_spoofed_one() {
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("real-client");
    let token = env.bound_token(&cert);
    let response = env
        .client(Some(&cert))
        .get(env.url("/identity/me"))
        .bearer_auth(&token)
        .header("client-cert", ":AAAA:")
        .header("client-cert-chain", ":AAAA:")
        .header("x-fapi-subject", "admin")
        .header("x-fapi-scopes", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    let certs: Vec<_> = seen.headers.get_all("client-cert").iter().collect();
    assert_eq!(certs, [der_header(&cert.der).as_str()]);
    assert!(!seen.headers.contains_key("client-cert-chain"));
    let subjects: Vec<_> = seen.headers.get_all("x-fapi-subject").iter().collect();
    assert_eq!(subjects, ["user-1"]);
    let scopes: Vec<_> = seen.headers.get_all("x-fapi-scopes").iter().collect();
    assert_eq!(scopes, ["accounts:read"]);
}

#[tokio::test]
async fn public_route_never_forwards_the_client_certificate() {
    let env = Env::start().await;
    let cert = env.pki.self_signed_client("c");
    let response = env.get("/public/x", Some(&cert), None).await;
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    assert!(!seen.headers.contains_key("client-cert"), "{seen:?}");
}

// ---------------------------------------------------------------------------------------
// Routing refusals
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unmatched_requests_are_404_json() {
    let env = Env::start().await;
    // `/PUBLIC/x` is no longer here: prefixes match case-insensitively (tests/routing.rs).
    for path in ["/nowhere", "/publicity", "/public-x/y", "/"] {
        let response = env.get(path, None, None).await;
        assert_rejected(response, 404, "", "not_found").await;
    }
    // `/echo` takes only POST and PUT: another method is 405 (with `Allow`), not 404.
    let response = env.client(None).get(env.url("/echo")).send().await.unwrap();
    assert_rejected(response, 405, "", "method_not_allowed").await;
    assert_eq!(env.upstream.hits(), 0);
    // The prefix itself, and anything below it on a segment boundary, matches.
    for path in ["/public", "/public/", "/public/a/b"] {
        assert_eq!(env.get(path, None, None).await.status(), 200, "{path}");
    }
    assert_eq!(env.upstream.hits(), 3);
}

#[tokio::test]
async fn host_header_other_than_the_tls_server_name_is_421() {
    let env = Env::start().await;
    let client = h1_client(&env);
    let response = client.get(env.url("/public/x")).header("host", "other.test").send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_rejected(response, 421, "", "misdirected_request").await;
    let response = client
        .get(env.url("/public/x"))
        .header("host", format!("other.test:{}", env.addr.port()))
        .send()
        .await
        .unwrap();
    assert_rejected(response, 421, "", "misdirected_request").await;
    assert_eq!(env.upstream.hits(), 0);
    // Host names compare case-insensitively and without the port.
    let response = client
        .get(env.url("/public/x"))
        .header("host", format!("GATEWAY.Test:{}", env.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn host_bound_route_cannot_be_reached_with_another_server_name() {
    // The `partner` route is bound to host partner.test; the SNI check runs before routing.
    let env = Env::start().await;
    let response = h1_client(&env).get(env.url("/public/x")).header("host", "partner.test").send().await.unwrap();
    assert_rejected(response, 421, "", "misdirected_request").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn host_bound_route_wins_over_a_hostless_one_for_its_host() {
    // SNI and Host partner.test: `/public/x` is the partner route (mTLS-protected), not the
    // public one.
    let env = Env::start().await;
    let mut tls = raw_connect_with_sni(&env, "partner.test").await;
    tls.write_all(b"GET /public/x HTTP/1.1\r\nHost: partner.test\r\n\r\n").await.unwrap();
    let response = read_response(&mut tls).await.unwrap();
    assert_eq!(response.status, 401, "{response:?}");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(env.upstream.hits(), 0);
    // The same path for gateway.test is the public route.
    assert_eq!(raw_get(&env, "/public/x").await.status, 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn ambiguous_paths_are_400_and_never_forwarded() {
    let env = Env::start().await;
    for path in [
        "/public/../mtls/x",
        "/public/./x",
        "/public/..",
        "/public/%2e%2e/mtls",
        "/public/%2E%2e/mtls",
        "/public/.%2e/mtls",
        "/public%2F..%2Fmtls/x",
        "/public/%5c..%5cmtls",
    ] {
        let response = raw_get(&env, path).await;
        assert_eq!(response.status, 400, "{path}: {response:?}");
        response.assert_gateway_error(400, "invalid_request");
    }
    assert_eq!(env.upstream.hits(), 0);
    // Dots inside a segment are ordinary characters.
    for path in ["/public/v1.2/file.tar.gz", "/public/...x", "/public/%20x"] {
        assert_eq!(raw_get(&env, path).await.status, 200, "{path}");
    }
    assert_eq!(env.upstream.hits(), 3);
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.uri, "/public/%20x");
}

// ---------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

#[tokio::test]
async fn declared_body_over_the_limit_is_413_and_never_forwarded() {
    let env = Env::start().await;
    let response = env.client(None).post(env.url("/echo")).body(payload(1025)).send().await.unwrap();
    assert_rejected(response, 413, "", "payload_too_large").await;
    let response = h1_client(&env).post(env.url("/echo")).body(payload(4096)).send().await.unwrap();
    assert_rejected(response, 413, "", "payload_too_large").await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn body_of_exactly_the_limit_is_accepted() {
    let env = Env::start().await;
    let body = payload(1024);
    let response = env.client(None).put(env.url("/echo")).body(body.clone()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), body.as_slice());
}

/// `POST path` with a chunked body of `total` bytes in 256-byte chunks, no Content-Length.
fn chunked_post(path: &str, total: usize) -> Vec<u8> {
    let mut request =
        format!("POST {path} HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\nTransfer-Encoding: chunked\r\n\r\n").into_bytes();
    let body = payload(total);
    for chunk in body.chunks(256) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

#[tokio::test]
async fn streamed_body_over_the_limit_is_413() {
    // No Content-Length: the gateway can only count while it forwards. This upstream reads
    // the whole body before answering, so the gateway notices first.
    let env = Env::start().await;
    let response = raw_exchange(&env, &chunked_post("/public/upload", 2048)).await.expect("an answer");
    response.assert_gateway_error(413, "payload_too_large");
    // Whatever reached the upstream stayed within the limit.
    for request in env.upstream.requests() {
        assert!(request.body.len() <= 1024, "{} bytes", request.body.len());
    }
}

#[tokio::test]
async fn body_crossing_the_limit_after_the_upstream_answered_is_cut_off() {
    // `/echo` answers 200 as soon as the request head arrives and streams the body back. A
    // body that crosses the limit only after that cannot get a 413 any more; the gateway
    // must stop forwarding at the limit and must not finish the 200 as if all went well.
    let env = Env::start().await;
    let mut tls = raw_connect(&env).await;
    let request = chunked_post("/echo", 2048);
    let head_end = find(&request, b"\r\n\r\n").unwrap() + 4;
    // The head and two 256-byte chunks (`100\r\n`, 256 bytes, `\r\n` each).
    let (first, rest) = request.split_at(head_end + 2 * (5 + 256 + 2));
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    tokio::time::timeout(Duration::from_secs(10), async {
        while parse_response(&buf, false).is_none_or(|r| r.body.len() < 512) {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the first 512 bytes are echoed");
    let response = parse_response(&buf, false).unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, payload(512));

    // The rest takes the body to 2048 bytes; the gateway may stop reading part-way.
    let _ = tls.write_all(rest).await;
    let _ = tls.flush().await;
    read_until_close(&mut tls, &mut buf).await;
    let response = parse_response(&buf, true).unwrap();
    assert!(!response.complete, "a complete 200 for an oversized body ({} bytes)", response.body.len());
    assert!(response.body.len() <= 1024, "{} bytes echoed", response.body.len());
    assert_eq!(response.body, payload(response.body.len()));
    let seen = env.upstream.last().unwrap();
    assert!(seen.body.len() <= 1024, "{} bytes forwarded", seen.body.len());
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn body_streams_to_the_upstream_and_back() {
    let env = Env::start().await;
    let body = payload(1000);
    let response = env
        .client(None)
        .post(env.url("/echo/x"))
        .header("content-type", "application/octet-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.bytes().await.unwrap().as_ref(), body.as_slice());
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.uri, "/echo/x");
    assert_eq!(seen.body, body);
    assert_eq!(seen.headers["content-type"], "application/octet-stream");
}

#[tokio::test]
async fn chunked_body_within_the_limit_streams_through() {
    let env = Env::start().await;
    let response = raw_exchange(&env, &chunked_post("/echo", 1000)).await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.complete);
    assert_eq!(response.body, payload(1000));
    assert_eq!(env.upstream.last().unwrap().body, payload(1000));
}

// ---------------------------------------------------------------------------------------
// Upstream failures and passthrough
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unreachable_upstream_is_502_json() {
    let env = Env::start().await;
    let response = env.get("/refused/x", None, None).await;
    assert_rejected(response, 502, "", "bad_gateway").await;
}

#[tokio::test]
async fn upstream_slower_than_the_route_timeout_is_504_json() {
    let env = Env::start().await;
    let response = env.get("/slow", None, None).await;
    assert_rejected(response, 504, "", "gateway_timeout").await;
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn upstream_status_and_body_pass_through_unchanged() {
    let env = Env::start().await;
    for code in [418u16, 503, 401] {
        let response = env.get(&format!("/status/{code}"), None, None).await;
        assert_eq!(response.status().as_u16(), code);
        assert_eq!(response.headers()["x-upstream"], "yes");
        // The upstream's answers are not dressed up as the gateway's own.
        assert!(!response.headers().contains_key("www-authenticate"));
        assert_eq!(response.text().await.unwrap(), format!("status {code}"));
    }
    assert_eq!(env.upstream.hits(), 3);
}

#[tokio::test]
async fn http2_requests_are_proxied() {
    let env = Env::start().await;
    let response = env.h2_client(None).get(env.url("/public/x?y=1")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.text().await.unwrap(), "upstream-ok");
    assert_eq!(env.upstream.hits(), 1);
    assert_eq!(env.upstream.last().unwrap().uri, "/public/x?y=1");
}

// ---------------------------------------------------------------------------------------
// Client limits
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_request_head_is_431_over_http1() {
    let env = Env::start().await;
    let request = format!("GET /public/x HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    let response = raw_exchange(&env, request.as_bytes()).await.expect("an answer");
    assert_eq!(response.status, 431, "{response:?}");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn oversized_request_head_is_431_over_http2() {
    let env = Env::start().await;
    let result = env.h2_client(None).get(env.url("/public/x")).header("x-big", "a".repeat(20 * 1024)).send().await;
    match result {
        Ok(response) => {
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            assert_eq!(response.status(), 431);
        }
        // The client may refuse to send what the server's SETTINGS said it will not take.
        Err(e) => assert!(!e.is_timeout(), "{e:?}"),
    }
    assert_eq!(env.upstream.hits(), 0);
}

fn short_header_timeout() -> Options {
    Options { limits: "  max_body_bytes: 1024\n  header_read_timeout: 1s\n".into(), ..Default::default() }
}

#[tokio::test]
async fn stalled_request_head_is_cut_off() {
    let env = Env::start_with(short_header_timeout()).await;
    let mut tls = raw_connect(&env).await;
    tls.write_all(format!("GET /public/x HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\n").as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    assert_closed_by_gateway(&mut tls).await;
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_cut_off() {
    // After a complete exchange, waiting for the next request is bounded by `idle_timeout`
    // (the connection is parked meanwhile; `header_read_timeout` starts with the next head).
    let env = Env::start_with(Options {
        limits: "  max_body_bytes: 1024\n  header_read_timeout: 1s\n  idle_timeout: 2s\n".into(),
        ..Default::default()
    })
    .await;
    let mut tls = raw_connect(&env).await;
    tls.write_all(format!("GET /public/x HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let response = read_response(&mut tls).await.unwrap();
    assert_eq!(response.status, 200);
    assert_closed_by_gateway(&mut tls).await;
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn stalled_head_after_an_idle_pause_is_cut_off() {
    // The next request head starts after the connection was parked, then stalls.
    let env = Env::start_with(short_header_timeout()).await;
    let mut tls = raw_connect(&env).await;
    tls.write_all(format!("GET /public/x HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\n\r\n").as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut tls).await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tls.write_all(format!("GET /public/y HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\n").as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    assert_closed_by_gateway(&mut tls).await;
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn silent_connection_after_handshake_is_cut_off() {
    let env = Env::start_with(short_header_timeout()).await;
    let mut tls = raw_connect(&env).await;
    assert_closed_by_gateway(&mut tls).await;
}

// ---------------------------------------------------------------------------------------
// Requests without SNI
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn without_sni_the_host_header_is_used_for_forwarding() {
    // Clients that connect by IP address send no SNI; there is nothing to compare Host with.
    let env = Env::start().await;
    let mut tls = raw_connect_without_sni(&env).await;
    tls.write_all(b"GET /public/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let response = read_response(&mut tls).await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-host"], "127.0.0.1");
    assert_eq!(seen.headers["forwarded"], r#"for=127.0.0.1;proto=https;host="127.0.0.1""#);
}

#[tokio::test]
async fn host_header_cannot_inject_a_forwarded_element() {
    let env = Env::start().await;
    let mut tls = raw_connect_without_sni(&env).await;
    tls.write_all(b"GET /public/x HTTP/1.1\r\nHost: a\", for=6.6.6.6;proto=https;host=\"b\r\n\r\n").await.unwrap();
    let response = read_response(&mut tls).await.expect("an answer");
    assert_eq!(response.status, 400, "{response:?}");
    assert_eq!(env.upstream.hits(), 0);
}

// ---------------------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn after_shutdown_new_connections_are_refused() {
    let mut env = Env::start().await;
    let client = env.client(None);
    let response = client.get(env.url("/status/200")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "status 200");
    env.gateway.take().unwrap().shutdown().await;
    let error = TcpStream::connect(env.addr).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(client.get(env.url("/status/200")).send().await.is_err());
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let mut env = Env::start().await;
    let client = env.client(None);
    let url = env.url("/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    // Wait until the request is with the upstream, i.e. really in flight.
    for _ in 0..500 {
        if env.upstream.hits() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(env.upstream.hits(), 1, "the request never reached the upstream");
    let shutdown = tokio::spawn(env.gateway.take().unwrap().shutdown());
    let response = in_flight.await.unwrap().expect("the in-flight request is answered");
    assert_rejected(response, 504, "", "gateway_timeout").await;
    shutdown.await.unwrap();
    let error = TcpStream::connect(env.addr).await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn https_upstream_is_verified_against_upstream_ca() {
    init();
    let pki = TestPki::new();
    // The JWKS server is an HTTPS server with the test CA's certificate: use it as upstream.
    let https_upstream = JwksServer::start(&pki, vec![Signer::es256("k").public_jwk()]).await;
    let yaml = |ca: &str| {
        format!(
            "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
             routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: {}, auth: none {ca} }}\n",
            pki.server_cert_path().display(),
            pki.server_key_path().display(),
            https_upstream.issuer(),
        )
    };
    let with_ca = format!(", upstream_ca: {}", pki.ca_pem_path().display());
    let config = fapi_gateway::config::Config::from_yaml(&yaml(&with_ca), "t.yaml", pki.dir()).unwrap();
    let gateway = fapi_gateway::start(config).await.unwrap();
    let response = client(&pki, gateway.local_addr(), None, false)
        .get(gateway_url(gateway.local_addr(), "/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("\"keys\""));
    assert_eq!(https_upstream.jwks_hits(), 1);

    // Without the CA the upstream's certificate is not trusted: 502, nothing served.
    let config = fapi_gateway::config::Config::from_yaml(&yaml(""), "t.yaml", pki.dir()).unwrap();
    let untrusting = fapi_gateway::start(config).await.unwrap();
    let response = client(&pki, untrusting.local_addr(), None, false)
        .get(gateway_url(untrusting.local_addr(), "/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(https_upstream.jwks_hits(), 1);
}
