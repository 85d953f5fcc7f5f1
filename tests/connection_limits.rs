//! At `max_connections`, idle keep-alive connections give way to new clients (issue 15.1):
//! the longest-idle parked connection is closed gracefully instead of the newcomer waiting
//! for an idle client's `idle_timeout` (5 min by default) — what nginx does with its
//! reusable connections. Busy connections and ones that never sent a request are kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::raw::{closed_within, raw_connect};
use common::*;
use tokio::io::AsyncWriteExt as _;

async fn get_on(tls: &mut Tls) -> RawResponse {
    tls.write_all(b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n\r\n").await.unwrap();
    read_response(tls).await.unwrap()
}

fn limited(max_connections: usize) -> Options {
    Options {
        limits: format!("  max_body_bytes: 1024\n  max_connections: {max_connections}\n  idle_timeout: 300s\n"),
        ..Default::default()
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_are_reclaimed_oldest_first_for_new_clients() {
    let env = Env::start_with(limited(3)).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut tls = raw_connect(&env).await;
        assert_eq!(get_on(&mut tls).await.status, 200);
        idle.push(tls);
        // Park order is the order of these requests.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every slot is held by an idle client; a new one is served within a second or two.
    let mut newcomer = tokio::time::timeout(Duration::from_secs(3), async {
        let mut tls = raw_connect(&env).await;
        let response = get_on(&mut tls).await;
        (tls, response)
    })
    .await
    .expect("a new client must not wait for idle_timeout");
    assert_eq!(newcomer.1.status, 200);
    // The oldest idle connection made room; the two younger ones are still served.
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)).await, "the longest-idle connection was closed");
    assert_eq!(get_on(&mut idle[2]).await.status, 200);
    assert_eq!(get_on(&mut newcomer.0).await.status, 200);
}

#[tokio::test]
async fn connections_that_never_sent_a_request_are_not_reclaimed() {
    let env = Env::start_with(limited(1)).await;
    let _silent = raw_connect(&env).await;
    let second = tokio::time::timeout(Duration::from_millis(800), raw_connect(&env)).await;
    assert!(second.is_err(), "a connection that has not sent its first request keeps its slot");
}

#[tokio::test]
async fn one_client_address_cannot_take_every_slot_when_capped() {
    let env = Env::start_with(Options {
        limits: "  max_body_bytes: 1024\n  max_connections: 100\n  max_connections_per_client: 2\n".into(),
        ..Default::default()
    })
    .await;
    let mut first = raw_connect(&env).await;
    let _second = raw_connect(&env).await;
    // The third from 127.0.0.1 is closed at accept: its handshake fails.
    let config = env.pki.rustls_client_config(None, &[b"http/1.1"]);
    let third = common::raw::try_connect(env.addr, config.clone(), GATEWAY_HOST).await;
    assert!(third.is_err(), "a third connection from one address is refused");
    assert_eq!(get_on(&mut first).await.status, 200, "the capped address's own connections still work");
    drop(first);
    // A closed connection gives its place back (the gateway notices the close first).
    let fourth = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(tls) = common::raw::try_connect(env.addr, config.clone(), GATEWAY_HOST).await {
                return tls;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(fourth.is_ok(), "a freed place is taken again");
}

/// The HTTP/2 SETTINGS the gateway opens a connection with, as (identifier, value) pairs.
async fn server_h2_settings(env: &Env) -> Vec<(u16, u32)> {
    use tokio::io::AsyncReadExt as _;
    let config = raw::tls_config(&env.pki, &[b"h2"], rustls::DEFAULT_VERSIONS);
    let mut tls = raw::try_connect(env.addr, config, GATEWAY_HOST).await.unwrap();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload).await.unwrap();
    payload
        .chunks_exact(6)
        .map(|p| (u16::from_be_bytes([p[0], p[1]]), u32::from_be_bytes([p[2], p[3], p[4], p[5]])))
        .collect()
}

#[tokio::test]
async fn http2_connections_announce_the_stream_limit() {
    const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    let env = Env::start().await;
    assert!(server_h2_settings(&env).await.contains(&(MAX_CONCURRENT_STREAMS, 100)), "the default");
    let env = Env::start_with(Options {
        limits: "  max_body_bytes: 1024\n  max_concurrent_streams: 7\n".into(),
        ..Default::default()
    })
    .await;
    assert!(server_h2_settings(&env).await.contains(&(MAX_CONCURRENT_STREAMS, 7)));
}
