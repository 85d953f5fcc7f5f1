//! What the end-to-end benchmarks share (`e2e`, `soak`): the fixture (a CA, server and client
//! certificates, an issuer key with its JWKS file, an mTLS-bound and a DPoP-bound token, a
//! DPoP key), the gateway configuration, child processes pinned to a CPU, the in-process
//! upstream, and the closed-loop load generator ([`run`]) over keep-alive TLS connections.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use fapi_gateway::jose::{Alg, SigningKey};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

pub const HOST: &str = "gateway.test";

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref().to_vec()
}

/// Certificates, keys and tokens for one run, written to a temp dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ca_der: CertificateDer<'static>,
    pub client_cert: CertificateDer<'static>,
    pub client_key: PrivateKeyDer<'static>,
    pub mtls_token: String,
    pub dpop_token: String,
    pub dpop_key: SigningKey,
}

pub fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap().signed_by(&server_key, &ca).unwrap();
    std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap().self_signed(&client_key).unwrap();
    let issuer = SigningKey::generate(Alg::Es256).unwrap();
    let mut jwk = issuer.public_jwk();
    jwk["kid"] = json!("k1");
    std::fs::write(dir.path().join("jwks.json"), json!({"keys": [jwk]}).to_string()).unwrap();
    let claims = |cnf: serde_json::Value| {
        json!({"iss": "https://as.bench", "aud": "https://api.bench", "sub": "u", "client_id": "c", "iat": now(),
               "exp": now() + 3600, "jti": "j", "scope": "accounts:read", "cnf": cnf})
    };
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"});
    let x5t = B64.encode(sha256(client.der()));
    let dpop_key = SigningKey::generate(Alg::Es256).unwrap();
    Fixture {
        ca_der: ca.der().clone(),
        client_cert: client.der().clone(),
        client_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der())),
        mtls_token: issuer.sign_compact(&header, &claims(json!({"x5t#S256": x5t}))).unwrap(),
        dpop_token: issuer.sign_compact(&header, &claims(json!({"jkt": dpop_key.thumbprint_b64()}))).unwrap(),
        dpop_key,
        dir,
    }
}

/// Writes the benchmarks' gateway configuration (see [`gateway_yaml`]) into the fixture's
/// directory; `replay` is the `dpop.replay` value.
pub fn write_config(fx: &Fixture, upstream: SocketAddr, port: u16, replay: &str) -> PathBuf {
    let path = fx.dir.path().join(format!("gateway-{port}.yaml"));
    std::fs::write(&path, gateway_yaml(upstream, port, replay, "", "")).unwrap();
    path
}

/// The gateway configuration of the benchmarks: the fixture's certificate and issuer, a
/// `dpop` route and an `mtls` route to `upstream`; `dpop_extra` is more lines of the
/// `dpop:` section (indented by two spaces), `extra` more top-level sections.
pub fn gateway_yaml(upstream: SocketAddr, port: u16, replay: &str, dpop_extra: &str, extra: &str) -> String {
    format!(
        "listen:\n  address: 127.0.0.1:{port}\n  public_url: https://{HOST}\n  tls: {{ cert: server.pem, key: server.key }}\n\
         issuers:\n  - {{ issuer: https://as.bench, jwks_file: jwks.json, audiences: [https://api.bench] }}\n\
         dpop:\n  replay: {replay}\n{dpop_extra}\
         routes:\n\
         \x20 - {{ name: mtls, match: {{ path_prefix: /mtls }}, upstream: http://{upstream}, binding: mtls }}\n\
         \x20 - {{ name: dpop, match: {{ path_prefix: /dpop }}, upstream: http://{upstream}, binding: dpop }}\n{extra}"
    )
}

pub fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `program` pinned to `cpu` when `taskset` is available.
pub fn pinned(cpu: &str, program: &str) -> Command {
    if has("taskset") {
        let mut c = Command::new("taskset");
        c.args(["-c", cpu, program]);
        c
    } else {
        Command::new(program)
    }
}

/// `binary` as a gateway on CPU 0 with one worker thread, logging at `log`
/// (`FAPI_GATEWAY_LOG`); stdout discarded, stderr inherited (the caller may pipe it).
pub fn gateway_command(binary: &str, config: &Path, log: &str) -> Command {
    let mut command = pinned("0", binary);
    command
        .args(["--config", config.to_str().unwrap(), "--workers", "1"])
        .env("FAPI_GATEWAY_LOG", log)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// Stops a child with SIGTERM and waits for it. nginx's master process only takes its
/// workers down on a signal it can handle; SIGKILL would leave them orphaned and running.
pub fn stop(mut child: Child) {
    let terminated = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().is_ok_and(|s| s.success());
    if !terminated {
        let _ = child.kill();
    }
    let _ = child.wait();
}

pub fn wait_for_port(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on port {port}");
}

pub async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                // The response head nginx's `return 200 "ok"` sends (as the upstream of
                // ../shared/bench/run.sh does): hyper adds `Date` and `Content-Length`; the
                // proxies parse, check and pass on the rest, `Connection` being hop-by-hop.
                let service = service_fn(|_req| async {
                    let response = hyper::Response::builder()
                        .header("server", "nginx/1.22.1")
                        .header("content-type", "text/plain")
                        .header("connection", "keep-alive")
                        .body(Full::new(Bytes::from_static(b"ok")))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    addr
}

/// How one scenario's requests are made.
#[derive(Clone)]
pub enum Load {
    /// Plain HTTP to the upstream.
    Upstream,
    /// TLS with the client certificate, `Authorization: Bearer`.
    Mtls { token: String },
    /// TLS, `Authorization: DPoP` and one pre-generated proof per request.
    Dpop { token: String, proofs: Arc<Vec<String>>, next: Arc<std::sync::atomic::AtomicUsize> },
}

pub struct Outcome {
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_us: Vec<u32>,
    /// The serving process's CPU time per request, user and system, in µs.
    pub cpu_us: Option<(f64, f64)>,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies_us[i]) / 1000.0
    }
}

/// User and system CPU time of a process (all its threads) in clock ticks (1/100 s).
pub fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

pub fn tls_connector(fx: &Fixture, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(fx.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![fx.client_cert.clone()], fx.client_key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// How the load generator speaks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection.
    Http1,
    /// HTTP/2 (ALPN `h2`), this many concurrent streams per connection (the independent
    /// benchmark's `--http2 --streams 8`).
    Http2 { streams: usize },
}

/// One connection's request sender.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    Http2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn open(addr: SocketAddr, load: &Load, protocol: Protocol, connector: &tokio_rustls::TlsConnector) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        match (load, protocol) {
            (Load::Upstream, _) => {
                let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
                tokio::spawn(c);
                Sender::Http1(s)
            }
            (_, Protocol::Http1) => {
                let tls = connector.connect(ServerName::try_from(HOST).unwrap(), tcp).await.unwrap();
                let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
                tokio::spawn(c);
                Sender::Http1(s)
            }
            (_, Protocol::Http2 { .. }) => {
                let tls = connector.connect(ServerName::try_from(HOST).unwrap(), tcp).await.unwrap();
                let (s, c) =
                    hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .unwrap();
                tokio::spawn(c);
                Sender::Http2(s)
            }
        }
    }

    /// One sender per concurrent stream: HTTP/1.1 has just the one.
    fn streams(self, streams: usize) -> Vec<Sender> {
        match self {
            Sender::Http1(_) => vec![self],
            Sender::Http2(sender) => (0..streams).map(|_| Sender::Http2(sender.clone())).collect(),
        }
    }

    async fn send(
        &mut self,
        request: hyper::Request<Empty<Bytes>>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(sender) => sender.send_request(request).await,
            Sender::Http2(sender) => sender.send_request(request).await,
        }
    }
}

/// Sends requests one after the other on `sender` until `deadline`; (ok, errors, latencies).
async fn drive(mut sender: Sender, load: Load, deadline: Instant) -> (usize, usize, Vec<u32>) {
    let (mut ok, mut errors, mut latencies) = (0usize, 0usize, Vec::with_capacity(100_000));
    while Instant::now() < deadline {
        let path = match &load {
            Load::Dpop { .. } => "/dpop/x",
            _ => "/mtls/x",
        };
        // HTTP/2 carries the authority in the URI (`:authority`), HTTP/1.1 in `Host`.
        let builder = match &sender {
            Sender::Http2(_) => hyper::Request::get(format!("https://{HOST}{path}")),
            Sender::Http1(_) => hyper::Request::get(path).header("host", HOST),
        };
        let request = match &load {
            Load::Upstream => builder,
            Load::Mtls { token } => builder.header("authorization", format!("Bearer {token}")),
            Load::Dpop { token, proofs, next } => {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(proof) = proofs.get(i) else { break };
                builder.header("authorization", format!("DPoP {token}")).header("dpop", proof.as_str())
            }
        }
        .body(Empty::<Bytes>::new())
        .unwrap();
        let t = Instant::now();
        match sender.send(request).await {
            Ok(response) => {
                let good = response.status() == 200;
                let _ = response.into_body().collect().await;
                if good {
                    ok += 1;
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    errors += 1;
                }
            }
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    (ok, errors, latencies)
}

/// Drives `addr` with `connections` keep-alive HTTP/1.1 connections for `duration`; `server`
/// is the serving process, whose CPU time per request is reported when given.
pub async fn run(
    fx: &Fixture,
    addr: SocketAddr,
    server: Option<u32>,
    load: Load,
    connections: usize,
    duration: Duration,
) -> Outcome {
    run_over(fx, addr, server, load, Protocol::Http1, connections, duration).await
}

/// [`run`] over `protocol`: with HTTP/2, each connection carries `streams` requests at once.
pub async fn run_over(
    fx: &Fixture,
    addr: SocketAddr,
    server: Option<u32>,
    load: Load,
    protocol: Protocol,
    connections: usize,
    duration: Duration,
) -> Outcome {
    let (alpn, streams): (&[u8], usize) = match protocol {
        Protocol::Http1 => (b"http/1.1", 1),
        Protocol::Http2 { streams } => (b"h2", streams.max(1)),
    };
    let connector = tls_connector(fx, alpn);
    let cpu_before = server.and_then(cpu_ticks);
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (connector, load) = (connector.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let sender = Sender::open(addr, &load, protocol, &connector).await;
            let streams: Vec<_> = sender
                .streams(streams)
                .into_iter()
                .map(|sender| tokio::spawn(drive(sender, load.clone(), deadline)))
                .collect();
            let mut totals = (0usize, 0usize, Vec::new());
            for stream in streams {
                let (ok, errors, latencies) = stream.await.unwrap();
                totals.0 += ok;
                totals.1 += errors;
                totals.2.extend(latencies);
            }
            totals
        }));
    }
    let mut outcome =
        Outcome { requests: 0, errors: 0, elapsed: Duration::ZERO, latencies_us: Vec::new(), cpu_us: None };
    for task in tasks {
        let (ok, errors, latencies) = task.await.unwrap();
        outcome.requests += ok;
        outcome.errors += errors;
        outcome.latencies_us.extend(latencies);
    }
    outcome.elapsed = started.elapsed().min(duration.max(Duration::from_millis(1)));
    if let (Some(before), Some(after)) = (cpu_before, server.and_then(cpu_ticks)) {
        // One tick is 10 ms; per request in µs.
        let per_request = |ticks: u64| ticks as f64 * 10_000.0 / outcome.requests.max(1) as f64;
        outcome.cpu_us = Some((per_request(after.0 - before.0), per_request(after.1 - before.1)));
    }
    outcome.latencies_us.sort_unstable();
    outcome
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

pub fn proofs(fx: &Fixture, count: usize) -> Vec<String> {
    let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": fx.dpop_key.public_jwk()});
    let ath = B64.encode(sha256(fx.dpop_token.as_bytes()));
    let iat = now();
    (0..count)
        .map(|i| {
            fx.dpop_key
                .sign_compact(
                    &header,
                    &json!({"jti": format!("{i:x}-{iat}"), "htm": "GET", "htu": format!("https://{HOST}/dpop/x"), "iat": iat, "ath": ath}),
                )
                .unwrap()
        })
        .collect()
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}
