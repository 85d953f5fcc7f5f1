//! Upstream keep-alive connections: reuse, bodies read to their end before a connection is
//! reused, abandoned responses not reused, upstreams that close idle connections, and
//! parallel requests, requests on a connection the upstream closes as they arrive. The
//! upstreams here count the TCP connections they accept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::raw::{connect, find};
use common::*;
use fapi_gateway::GatewayHandle;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// A hyper upstream counting accepted connections. `/bytes/N` answers N bytes, `/empty`
/// 204, `/wait` after 200 ms, anything else `ok`.
async fn counting_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let path = request.uri().path().to_string();
                    let mut response = hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<usize>().ok()) {
                        *response.body_mut() = Full::new(Bytes::from(vec![b'x'; n]));
                    } else if path == "/empty" {
                        *response.status_mut() = hyper::StatusCode::NO_CONTENT;
                        *response.body_mut() = Full::new(Bytes::new());
                    } else if path == "/wait" {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    (addr, connections)
}

/// Reads from `tcp` into `pending` until it holds a whole request head; `false` when the
/// peer closed first.
async fn read_head(tcp: &mut tokio::net::TcpStream, pending: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    while find(pending, b"\r\n\r\n").is_none() {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// An upstream that answers one request per connection and then closes it without saying
/// so (no `Connection: close`): every pooled connection is stale by the next request.
async fn closing_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if !read_head(&mut tcp, &mut Vec::new()).await {
                    return;
                }
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nclosed").await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, connections)
}

/// An upstream whose first connection answers one request, then takes the next request and
/// closes without an answer — what an upstream's keep-alive timeout does to a request that
/// crosses its FIN. Later connections answer `again` to every request. Records
/// `<connection> <method> <path>` for each request head it reads.
async fn closing_on_second_request_upstream() -> (SocketAddr, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, log) = (connections.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let index = count.fetch_add(1, Ordering::SeqCst) + 1;
            let log = log.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                for served in 0.. {
                    if !read_head(&mut tcp, &mut pending).await {
                        return;
                    }
                    let end = find(&pending, b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&pending[..end]).to_string();
                    pending.drain(..end);
                    let line = head.lines().next().unwrap_or_default().rsplit_once(' ').map(|(l, _)| l.to_string());
                    log.lock().unwrap().push(format!("{index} {}", line.unwrap_or_default()));
                    if index == 1 && served == 1 {
                        let _ = tcp.shutdown().await;
                        return;
                    }
                    let body: &[u8] = if index == 1 { b"first" } else { b"again" };
                    let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    let _ = tcp.write_all(&[response.as_bytes(), body].concat()).await;
                    // Request bodies are not looked at: the tests send none, or give up.
                }
            });
        }
    });
    (addr, connections, seen)
}

async fn gateway_to(pki: &TestPki, upstream: SocketAddr) -> GatewayHandle {
    gateway_with_timeout(pki, upstream, "30s").await
}

async fn gateway_with_timeout(pki: &TestPki, upstream: SocketAddr, timeout: &str) -> GatewayHandle {
    gateway_with(pki, upstream, timeout, "").await
}

/// A gateway in front of `upstream` with the route `timeout` and extra top-level YAML.
async fn gateway_with(pki: &TestPki, upstream: SocketAddr, timeout: &str, extra: &str) -> GatewayHandle {
    init();
    let yaml = format!(
        "listen: {{ address: 127.0.0.1:0, public_url: https://gateway.test, tls: {{ cert: {}, key: {} }} }}\n\
         routes:\n  - {{ name: r, match: {{ path_prefix: / }}, upstream: http://{upstream}, auth: none, timeout: {timeout} }}\n\
         {extra}\n",
        pki.server_cert_path().display(),
        pki.server_key_path().display(),
    );
    let config = fapi_gateway::config::Config::from_yaml(&yaml, "t.yaml", pki.dir()).unwrap();
    fapi_gateway::start(config).await.unwrap()
}

/// A test PKI, a gateway in front of `upstream` and an HTTP/1.1-or-h2 client for it.
async fn setup(upstream: SocketAddr) -> (TestPki, GatewayHandle, reqwest::Client) {
    let pki = TestPki::new();
    let gateway = gateway_to(&pki, upstream).await;
    let http = client(&pki, gateway.local_addr(), None, false);
    (pki, gateway, http)
}

async fn get_text(client: &reqwest::Client, gateway: &GatewayHandle, path: &str) -> (u16, String) {
    let response = client.get(gateway_url(gateway.local_addr(), path)).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let (upstream, connections) = counting_upstream().await;
    let (pki, gateway, http) = setup(upstream).await;
    for _ in 0..20 {
        assert_eq!(get_text(&http, &gateway, "/x").await, (200, "ok".to_string()));
    }
    // A second client connection to the gateway still uses the same upstream connection.
    let other = client(&pki, gateway.local_addr(), None, false);
    assert_eq!(get_text(&other, &gateway, "/y").await, (200, "ok".to_string()));
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn responses_without_a_body_give_the_connection_back() {
    let (upstream, connections) = counting_upstream().await;
    let (_pki, gateway, http) = setup(upstream).await;
    for _ in 0..5 {
        assert_eq!(get_text(&http, &gateway, "/empty").await, (204, String::new()));
        let head = http.head(gateway_url(gateway.local_addr(), "/bytes/100")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "100");
        // The HEAD response's announced body was never sent: the next answer is whole.
        assert_eq!(get_text(&http, &gateway, "/bytes/100").await, (200, "x".repeat(100)));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_response_abandoned_half_way_is_not_reused() {
    let pki = TestPki::new();
    let (upstream, connections) = counting_upstream().await;
    let gateway = gateway_to(&pki, upstream).await;
    // Ask for 4 MiB, read the first bytes and go away.
    let mut tls = connect(&pki, gateway.local_addr(), None).await;
    tls.write_all(b"GET /bytes/4194304 HTTP/1.1\r\nhost: gateway.test\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(tls);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The rest of that body is never taken for the next response.
    let http = client(&pki, gateway.local_addr(), None, false);
    for _ in 0..5 {
        assert_eq!(get_text(&http, &gateway, "/bytes/10").await, (200, "x".repeat(10)));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_costs_no_request() {
    let (upstream, connections) = closing_upstream().await;
    let (_pki, gateway, http) = setup(upstream).await;
    for _ in 0..20 {
        assert_eq!(get_text(&http, &gateway, "/x").await, (200, "closed".to_string()));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn parallel_requests_open_connections_that_later_requests_reuse() {
    let pki = TestPki::new();
    let (upstream, connections) = counting_upstream().await;
    let gateway = Arc::new(gateway_to(&pki, upstream).await);
    let batch = || {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let http = client(&pki, gateway.local_addr(), None, false);
                let gateway = gateway.clone();
                tokio::spawn(async move { get_text(&http, &gateway, "/wait").await })
            })
            .collect();
        async move {
            for handle in handles {
                assert_eq!(handle.await.unwrap(), (200, "ok".to_string()));
            }
        }
    };
    batch().await;
    let opened = connections.load(Ordering::SeqCst);
    assert!((2..=6).contains(&opened), "6 requests at once opened {opened} upstream connections");
    batch().await;
    assert_eq!(connections.load(Ordering::SeqCst), opened, "the second batch reused the idle connections");
}

#[tokio::test]
async fn an_idempotent_request_on_a_connection_closed_while_idle_is_sent_again() {
    let (upstream, connections, seen) = closing_on_second_request_upstream().await;
    let (_pki, gateway, http) = setup(upstream).await;
    assert_eq!(get_text(&http, &gateway, "/a").await, (200, "first".to_string()));
    // Idle long enough for the pool to keep a copy of the next request.
    tokio::time::sleep(fapi_gateway::proxy::pool::REPLAY_IF_IDLE_FOR + Duration::from_millis(200)).await;
    assert_eq!(get_text(&http, &gateway, "/b").await, (200, "again".to_string()));
    assert_eq!(*seen.lock().unwrap(), ["1 GET /a", "1 GET /b", "2 GET /b"]);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_post_on_a_connection_closed_while_idle_is_not_sent_again() {
    let (upstream, connections, seen) = closing_on_second_request_upstream().await;
    let (_pki, gateway, http) = setup(upstream).await;
    assert_eq!(get_text(&http, &gateway, "/a").await, (200, "first".to_string()));
    tokio::time::sleep(fapi_gateway::proxy::pool::REPLAY_IF_IDLE_FOR + Duration::from_millis(200)).await;
    let response = http.post(gateway_url(gateway.local_addr(), "/b")).body("payload").send().await.unwrap();
    assert_eq!(response.status(), 502, "a request that is not idempotent is never sent twice");
    assert_eq!(*seen.lock().unwrap(), ["1 GET /a", "1 POST /b"]);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
}

/// An upstream that answers every request with a 100-byte body sent as `pieces` of 10 bytes
/// `gap` apart, then (when `pieces` < 10) sends nothing more and keeps the connection open.
async fn trickling_upstream(pieces: usize, gap: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if !read_head(&mut tcp, &mut Vec::new()).await {
                    return;
                }
                let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n").await;
                for _ in 0..pieces {
                    let _ = tcp.write_all(&[b'x'; 10]).await;
                    tokio::time::sleep(gap).await;
                }
                // Stalled: hold the connection without a word.
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_stalled_upstream_body_is_cut_off() {
    let pki = TestPki::new();
    let upstream = trickling_upstream(3, Duration::from_millis(20)).await;
    let gateway = gateway_with_timeout(&pki, upstream, "300ms").await;
    let http = client(&pki, gateway.local_addr(), None, false);
    let response = http.get(gateway_url(gateway.local_addr(), "/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), response.bytes())
        .await
        .expect("a stalled body must be cut off, not left hanging");
    assert!(body.is_err(), "the client must see the response cut short, not a complete body");
}

#[tokio::test]
async fn a_slow_but_steady_upstream_body_is_not_cut_off() {
    // A byte every 150 ms for 1.5 s with a 300 ms timeout: never a stall.
    let pki = TestPki::new();
    let upstream = trickling_upstream(10, Duration::from_millis(150)).await;
    let gateway = gateway_with_timeout(&pki, upstream, "300ms").await;
    let http = client(&pki, gateway.local_addr(), None, false);
    let response = http.get(gateway_url(gateway.local_addr(), "/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 100);
}

#[tokio::test]
async fn a_client_that_stops_reading_a_response_is_cut_off() {
    // nginx's send_timeout: a blocked response may wait `send_timeout` for the client to read.
    let pki = TestPki::new();
    let (upstream, _) = counting_upstream().await;
    let gateway = gateway_with(&pki, upstream, "30s", "limits: { send_timeout: 1s }").await;
    let mut tls = connect(&pki, gateway.local_addr(), None).await;
    let size = 64 << 20;
    tls.write_all(format!("GET /bytes/{size} HTTP/1.1\r\nhost: gateway.test\r\n\r\n").as_bytes()).await.unwrap();
    // Read nothing for well past the timeout, then whatever is left.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let drain = async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drain).await.expect("the gateway must end the connection");
    assert!(received > 0 && received < size, "cut off after what the sockets held: {received} bytes");
}

#[tokio::test]
async fn an_http2_client_that_stops_reading_a_response_is_cut_off() {
    // HTTP/2 flow control, not the socket, stops the response: the connection's watchdog
    // must notice that no open stream moved for send_timeout.
    let pki = TestPki::new();
    let (upstream, _) = counting_upstream().await;
    let gateway = gateway_with(&pki, upstream, "30s", "limits: { send_timeout: 1s }").await;
    let tcp = tokio::net::TcpStream::connect(gateway.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(GATEWAY_HOST).unwrap();
    let tls = pki.tls_connector(None, &[b"h2"]).connect(name, tcp).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    // The client's HTTP/2 stack keeps running (it answers pings) while nobody reads the body.
    tokio::spawn(connection);
    let size: usize = 64 << 20;
    let request = hyper::Request::get(format!("https://{GATEWAY_HOST}/bytes/{size}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut body = response.into_body();
    let mut received = 0usize;
    let drain = async {
        use http_body_util::BodyExt as _;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => received += frame.data_ref().map_or(0, |d| d.len()),
                Err(_) => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drain).await.expect("the stream must end");
    assert!(received < size, "the gateway must have given up on the unread stream: {received} bytes");
}

/// Reads a `size`-byte response to `GET /bytes/{size}` over HTTP/1.1 in `step`-byte reads
/// with `pause` between them (none: as fast as it can), through a client socket with a
/// 16 KiB receive buffer; the bytes received before the gateway ended the exchange.
async fn read_at_pace(
    pki: &TestPki,
    gateway: &GatewayHandle,
    size: usize,
    step: usize,
    pause: Option<Duration>,
) -> usize {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = socket.connect(gateway.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(GATEWAY_HOST).unwrap();
    let mut tls = pki.tls_connector(None, &[b"http/1.1"]).connect(name, tcp).await.unwrap();
    tls.write_all(format!("GET /bytes/{size} HTTP/1.1\r\nhost: gateway.test\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; step];
    let mut received = 0usize;
    let read = async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
            if received >= size {
                break;
            }
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read).await.expect("the response ends or is cut off");
    received
}

const PACED: &str = "limits: { send_timeout: 1s, min_send_rate: 1000000, socket_send_buffer: 16384 }";

#[tokio::test]
async fn a_client_reading_slower_than_the_minimum_send_rate_is_cut_off() {
    // 16 KiB every 50 ms is ~320 kB/s, a third of the 1 MB/s asked for.
    let pki = TestPki::new();
    let (upstream, _) = counting_upstream().await;
    let gateway = gateway_with(&pki, upstream, "30s", PACED).await;
    let size = 4 << 20;
    let received = read_at_pace(&pki, &gateway, size, 16 * 1024, Some(Duration::from_millis(50))).await;
    assert!(received < size / 2, "cut off within about a window: {received} of {size} bytes");
}

#[tokio::test]
async fn a_client_reading_at_the_minimum_send_rate_gets_the_whole_response() {
    let pki = TestPki::new();
    let (upstream, _) = counting_upstream().await;
    let gateway = gateway_with(&pki, upstream, "30s", PACED).await;
    let size = 4 << 20;
    let received = read_at_pace(&pki, &gateway, size, 64 * 1024, None).await;
    assert!(received > size, "the head and the whole body: {received} bytes");
}

#[tokio::test]
async fn without_a_minimum_rate_a_slow_but_steady_reader_is_served() {
    let pki = TestPki::new();
    let (upstream, _) = counting_upstream().await;
    let gateway = gateway_with(&pki, upstream, "30s", "limits: { send_timeout: 1s, socket_send_buffer: 16384 }").await;
    let size = 1 << 20;
    let received = read_at_pace(&pki, &gateway, size, 16 * 1024, Some(Duration::from_millis(50))).await;
    assert!(received > size, "the head and the whole body: {received} bytes");
}

/// An upstream that answers every request with a `header_bytes`-long `x-big` header.
async fn big_header_upstream(header_bytes: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut tcp, &mut Vec::new()).await {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
                        "a".repeat(header_bytes)
                    );
                    let _ = tcp.write_all(head.as_bytes()).await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_upstream_response_head_over_the_read_ahead_cap_is_a_bad_gateway() {
    let pki = TestPki::new();
    let get = |gateway: GatewayHandle| {
        let pki = &pki;
        async move {
            let mut tls = connect(pki, gateway.local_addr(), None).await;
            tls.write_all(b"GET /x HTTP/1.1\r\nhost: gateway.test\r\n\r\n").await.unwrap();
            read_response(&mut tls).await.unwrap()
        }
    };
    let response = get(gateway_with_timeout(&pki, big_header_upstream(24 * 1024).await, "5s").await).await;
    assert_eq!(response.status, 200, "a 24 KiB head is within the cap");
    assert_eq!(response.header("x-big").map(str::len), Some(24 * 1024));

    // hyper checks the cap when a read leaves the head incomplete: a head may end up to one
    // read past 32 KiB, never much more.
    let response = get(gateway_with_timeout(&pki, big_header_upstream(100 * 1024).await, "5s").await).await;
    assert_eq!((response.status, response.header("x-big").is_some()), (502, false), "a 100 KiB head is refused");
    response.assert_gateway_error(502, "bad_gateway");
}
