//! Draining as a load balancer sees it (issue 14.4), end to end through SIGTERM to the
//! binary: `/readyz` answers 503 from the signal on; with `limits.shutdown_delay` new
//! connections are still accepted and served for that long; then the TLS port refuses
//! connections while the admin listener keeps answering until the in-flight request has
//! finished; the process then exits 0.
//!
//! The in-flight request waits at an upstream that answers only when the test releases it,
//! so no step depends on how long a request takes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// A plain-HTTP upstream: `/held…` is answered only after [`HeldUpstream::release`] (each
/// arrival is reported on `arrived`); anything else at once.
struct HeldUpstream {
    addr: SocketAddr,
    arrived: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
}

impl HeldUpstream {
    async fn start() -> HeldUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (arrived_tx, arrived) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve_one(tcp, arrived_tx.clone(), released.clone()));
            }
        });
        HeldUpstream { addr, arrived, release }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (at most 10 s) until a held request has reached the upstream.
    async fn wait_for_held_request(&mut self) {
        tokio::time::timeout(Duration::from_secs(10), self.arrived.recv())
            .await
            .expect("the held request reaches the upstream")
            .unwrap();
    }

    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// One request per connection (`Connection: close`).
async fn serve_one(mut tcp: TcpStream, arrived: mpsc::UnboundedSender<()>, mut released: watch::Receiver<bool>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let held = head.split(|&b| b == b' ').nth(1).is_some_and(|path| path.starts_with(b"/held"));
    if held {
        let _ = arrived.send(());
        let _ = released.wait_for(|r| *r).await;
    }
    let body: &[u8] = if held { b"held" } else { b"ok" };
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(body).await;
    let _ = tcp.shutdown().await;
}

/// The gateway binary, killed if a test ends before it exits.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Gateway {
    /// Starts the binary with one public route to `upstream` and `limits` (YAML lines,
    /// indented by 2), and waits (at most 10 s) until `/readyz` answers 200.
    async fn start(pki: &TestPki, upstream: &HeldUpstream, limits: &str) -> Gateway {
        let (port, admin_port) = (free_port(), free_port());
        let yaml = format!(
            "listen:\n  address: 127.0.0.1:{port}\n  public_url: https://gateway.test\n  tls: {{ cert: {}, key: {} }}\n\
             admin:\n  address: 127.0.0.1:{admin_port}\n\
             limits:\n{limits}\
             routes:\n  - {{ name: public, match: {{ path_prefix: / }}, upstream: {}, auth: none }}\n",
            pki.server_cert_path().display(),
            pki.server_key_path().display(),
            upstream.url()
        );
        let path = write_file(pki.dir(), "gateway.yaml", &yaml);
        let child = Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
            .args(["--config", path.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gateway = Gateway {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            admin: format!("127.0.0.1:{admin_port}").parse().unwrap(),
        };
        let mut up = false;
        for _ in 0..200 {
            if gateway.readyz().await.is_some_and(|(status, _)| status == 200) {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "the gateway becomes ready");
        gateway
    }

    fn admin_client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().unwrap()
    }

    /// `/readyz`: status and JSON body, or `None` when the admin port does not answer.
    async fn readyz(&self) -> Option<(u16, Value)> {
        let response = Self::admin_client().get(format!("http://{}/readyz", self.admin)).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, serde_json::from_str(&response.text().await.ok()?).ok()?))
    }

    async fn healthz(&self) -> Option<u16> {
        Self::admin_client()
            .get(format!("http://{}/healthz", self.admin))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Polls `/readyz` (at most 10 s) until it answers 503; its body.
    async fn readyz_unavailable(&self) -> Value {
        for _ in 0..200 {
            if let Some((503, body)) = self.readyz().await {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("/readyz never answered 503");
    }

    /// Polls (at most 20 s) until the TLS port refuses TCP connections.
    async fn wait_until_refusing(&self) {
        for _ in 0..400 {
            if TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the TLS port kept accepting connections");
    }

    /// Waits (at most 20 s) for the process to exit; its status.
    async fn exit_status(&mut self) -> std::process::ExitStatus {
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not exit");
    }

    /// Starts `GET /held/…` on a connection of its own; its status when it completes.
    fn held_request(&self, pki: &TestPki) -> tokio::task::JoinHandle<Option<u16>> {
        let http = client(pki, self.addr, None, false);
        let url = gateway_url(self.addr, "/held/in-flight");
        tokio::spawn(async move { http.get(url).send().await.ok().map(|r| r.status().as_u16()) })
    }
}

fn assert_draining(body: &Value) {
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["draining"], true, "{body}");
}

#[tokio::test]
async fn with_a_shutdown_delay_the_gateway_keeps_serving_while_readyz_is_503_then_drains() {
    init();
    let pki = TestPki::new();
    let mut upstream = HeldUpstream::start().await;
    // Long enough that the checks of the delay (a few local requests) fit in it comfortably.
    let mut gateway = Gateway::start(&pki, &upstream, "  shutdown_delay: 5s\n  shutdown_grace: 30s\n").await;
    let in_flight = gateway.held_request(&pki);
    upstream.wait_for_held_request().await;

    gateway.sigterm();
    assert_draining(&gateway.readyz_unavailable().await);
    // Still accepting: a new client, a new TLS connection, served.
    let fresh = client(&pki, gateway.addr, None, false);
    let response = fresh.get(gateway_url(gateway.addr, "/public/x")).send().await.expect("accepted during the delay");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");

    // After the delay: no new connections, while the admin listener still tells the
    // balancer that this instance is draining, for as long as the request is in flight.
    gateway.wait_until_refusing().await;
    let (status, body) = gateway.readyz().await.expect("the admin listener answers during the drain");
    assert_eq!(status, 503);
    assert_draining(&body);
    assert_eq!(gateway.healthz().await, Some(200));
    assert!(!in_flight.is_finished(), "the held request is still in flight");

    upstream.release();
    assert_eq!(in_flight.await.unwrap(), Some(200), "the in-flight request completes");
    assert!(gateway.exit_status().await.success());
}

#[tokio::test]
async fn without_a_shutdown_delay_readyz_is_503_and_admin_up_while_requests_drain() {
    init();
    let pki = TestPki::new();
    let mut upstream = HeldUpstream::start().await;
    let mut gateway = Gateway::start(&pki, &upstream, "  shutdown_grace: 30s\n").await;
    let in_flight = gateway.held_request(&pki);
    upstream.wait_for_held_request().await;

    gateway.sigterm();
    gateway.wait_until_refusing().await;
    let (status, body) = gateway.readyz().await.expect("the admin listener answers during the drain");
    assert_eq!(status, 503);
    assert_draining(&body);
    let metrics = Gateway::admin_client()
        .get(format!("http://{}/metrics", gateway.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.lines().any(|l| l == "fapi_gateway_draining 1"), "{metrics}");
    assert!(!in_flight.is_finished(), "the held request is still in flight");

    upstream.release();
    assert_eq!(in_flight.await.unwrap(), Some(200), "the in-flight request completes");
    assert!(gateway.exit_status().await.success());
    assert!(TcpStream::connect(gateway.admin).await.is_err(), "the admin listener closes with the process");
}
