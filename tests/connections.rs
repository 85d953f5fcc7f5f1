//! Connection-level defences through real sockets: TLS versions and handshake deadline,
//! HTTP/2 clients that never send a request, idle connections, and the connection limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::raw::{closed_within, read_until_close, tls_config, try_connect};
use common::read_response;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A TLS connection to the gateway (SNI `gateway.test`) offering `alpn` and only the TLS
/// `versions`.
async fn connect(
    env: &Env,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> std::io::Result<Tls> {
    try_connect(env.addr, tls_config(&env.pki, alpn, versions), GATEWAY_HOST).await
}

#[tokio::test]
async fn tls12_clients_are_served_and_tls13_is_preferred() {
    let env = Env::start().await;
    let mut tls12 = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS12]).await.expect("TLS 1.2 handshake");
    assert_eq!(tls12.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    tls12.write_all(b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    read_until_close(&mut tls12, &mut response).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let tls13 = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13, &rustls::version::TLS12]).await.unwrap();
    assert_eq!(tls13.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
}

#[tokio::test]
async fn handshake_that_never_completes_is_cut_off() {
    let env = Env::start_with(Options { listen_extra: "  handshake_timeout: 1s\n".into(), ..Default::default() }).await;
    let mut tcp = TcpStream::connect(env.addr).await.unwrap();
    assert!(closed_within(&mut tcp, Duration::from_secs(5)).await, "a silent TCP client must be dropped");
}

#[tokio::test]
async fn http2_connection_that_never_sends_a_request_is_cut_off() {
    let env = Env::start_with(Options {
        limits: "  max_body_bytes: 1024\n  header_read_timeout: 1s\n".into(),
        ..Default::default()
    })
    .await;
    let mut tls = connect(&env, &[b"h2"], &[&rustls::version::TLS13]).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await, "no preface, no request: must be closed");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn idle_http2_connection_is_closed_gracefully() {
    let env = Env::start_with(Options {
        limits: "  max_body_bytes: 1024\n  idle_timeout: 1s\n".into(),
        ..Default::default()
    })
    .await;
    let tls = connect(&env, &[b"h2"], &[&rustls::version::TLS13]).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request =
        http::Request::get("https://gateway.test/public/x").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // No request for `idle_timeout`: the gateway sends GOAWAY and the connection ends.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(matches!(ended, Ok(Ok(_))), "idle connection must be closed by the gateway");
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn idle_http1_connection_is_closed() {
    let env = Env::start_with(Options {
        limits: "  max_body_bytes: 1024\n  idle_timeout: 1s\n  header_read_timeout: 30s\n".into(),
        ..Default::default()
    })
    .await;
    let mut tls = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]).await.unwrap();
    tls.write_all(b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await, "idle keep-alive connection must be closed");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let env = Env::start_with(Options {
        limits: "  max_body_bytes: 1024\n  max_connections: 1\n".into(),
        ..Default::default()
    })
    .await;
    let first = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]).await.unwrap();
    // The second handshake cannot complete while the only slot is taken.
    let second =
        tokio::time::timeout(Duration::from_millis(500), connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]))
            .await;
    assert!(second.is_err(), "second connection must wait");
    drop(first);
    let third =
        tokio::time::timeout(Duration::from_secs(5), connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13])).await;
    assert!(matches!(third, Ok(Ok(_))), "a freed slot is taken by the next client");
}

/// `GET path` on an open HTTP/1.1 connection, and its response.
async fn get_on(tls: &mut Tls, path: &str) -> RawResponse {
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n").as_bytes()).await.unwrap();
    read_response(tls).await.unwrap()
}

/// `fapi_gateway_connections{state="…"}` from the admin listener.
async fn connections_in_state(env: &Env, state: &str) -> i64 {
    let addr = env.gateway.as_ref().unwrap().admin_addr().expect("admin listener");
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("fapi_gateway_connections{{state=\"{state}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(-1)
}

#[tokio::test]
async fn idle_http1_connection_is_parked_and_serves_its_next_requests() {
    let env = Env::start_with(Options { admin: true, ..Default::default() }).await;
    let mut tls = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]).await.unwrap();
    assert_eq!(get_on(&mut tls, "/public/a").await.status, 200);
    assert_eq!(connections_in_state(&env, "active").await, 1);
    // Idle for longer than the park delay (1 s): only the TLS stream is kept.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!((connections_in_state(&env, "active").await, connections_in_state(&env, "parked").await), (0, 1));
    let second = get_on(&mut tls, "/public/b").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("connection"), None, "the parked connection stays a keep-alive one");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // Two pipelined requests arriving at a parked connection: both answered, in order.
    tls.write_all(
        b"GET /public/c HTTP/1.1\r\nHost: gateway.test\r\n\r\n\
          GET /public/d HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    read_until_close(&mut tls, &mut all).await;
    assert_eq!(String::from_utf8_lossy(&all).matches("HTTP/1.1 200 OK").count(), 2);
    let paths: Vec<String> = env.upstream.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(paths, ["/public/a", "/public/b", "/public/c", "/public/d"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((connections_in_state(&env, "active").await, connections_in_state(&env, "parked").await), (0, 0));
}

#[tokio::test]
async fn parked_connections_close_at_once_on_shutdown() {
    let mut env = Env::start().await;
    let mut tls = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]).await.unwrap();
    assert_eq!(get_on(&mut tls, "/public/a").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let started = std::time::Instant::now();
    env.gateway.take().unwrap().shutdown().await;
    assert!(closed_within(&mut tls, Duration::from_secs(2)).await, "the parked connection is closed");
    // Nothing was in flight: the drain did not wait for the grace period (30 s).
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn with_many_connections_open_an_answered_connection_parks_at_once() {
    // More than max_connections / 20 open: connections park right after each response.
    let env = Env::start_with(Options {
        admin: true,
        limits: "  max_body_bytes: 1024\n  max_connections: 20\n".into(),
        ..Default::default()
    })
    .await;
    let mut first = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]).await.unwrap();
    let mut second = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]).await.unwrap();
    for round in 0..3 {
        for tls in [&mut first, &mut second] {
            let response = get_on(tls, "/public/a").await;
            assert_eq!(response.status, 200, "round {round}");
            assert_eq!(response.header("connection"), None);
        }
        // Well within the 1 s park delay that applies with few connections open.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            (connections_in_state(&env, "active").await, connections_in_state(&env, "parked").await),
            (0, 2),
            "round {round}"
        );
    }
    assert_eq!(env.upstream.hits(), 6);
}

#[tokio::test]
async fn an_unread_request_body_is_never_taken_for_the_next_request() {
    // Parking at once (many connections open) after a refusal that leaves the body unread:
    // the body — here itself a request — must not be served as the connection's next one.
    let env = Env::start_with(Options {
        admin: true,
        limits: "  max_body_bytes: 1024\n  max_connections: 20\n".into(),
        ..Default::default()
    })
    .await;
    let _other = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]).await.unwrap();
    let mut tls = connect(&env, &[b"http/1.1"], &[&rustls::version::TLS13]).await.unwrap();
    let smuggled = b"GET /public/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n";
    let head = format!("POST /mtls/x HTTP/1.1\r\nHost: gateway.test\r\nContent-Length: {}\r\n\r\n", smuggled.len());
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(smuggled).await.unwrap();
    let mut all = Vec::new();
    read_until_close(&mut tls, &mut all).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(env.upstream.requests().iter().all(|r| !r.uri.contains("smuggled")));
}
