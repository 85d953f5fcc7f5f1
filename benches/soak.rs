//! Soak benchmark (issue 15.10): the gateway under steady load for minutes, with a
//! configuration reload every half minute, its resident size sampled throughout. It passes
//! when every request is answered 2xx and the resident size does not grow beyond a bound
//! once warm.
//!
//! 1. **Peak.** The gateway (release binary, one worker thread, pinned to CPU 0 like `e2e`)
//!    is driven closed-loop — `SOAK_CONNECTIONS` keep-alive TLS connections sending as fast
//!    as answers come, the `e2e` load generator — on the mTLS route and then on the DPoP
//!    route, `SOAK_PEAK_SECONDS` each: the peak rates P_mtls and P_dpop.
//! 2. **Soak.** Open-loop load on **both routes at once** for `SOAK_SECONDS`, each route at
//!    half of `SOAK_LOAD_PERCENT` of its own peak: rate_mtls / P_mtls + rate_dpop / P_dpop =
//!    80 %. The two kinds of request differ about fourfold in cost (a DPoP request verifies
//!    a signature), so this is the mix that keeps the gateway's one core 80 % busy with both
//!    paths in use all the time — every reload then lands on both kinds of request in
//!    flight, and no phase lets one path's memory settle while the other is idle, as
//!    alternating would. Each connection sends on its own fixed schedule (its share of the
//!    rate, staggered), not when its last answer came, so a slow answer does not lower the
//!    offered load: a connection behind schedule sends at once until it has caught up.
//!    HTTP/1.1 has one request in flight per connection, so a route gets `SOAK_CONNECTIONS`
//!    connections, or more so that none sends more than `SOAK_CONNECTION_RATE` requests per
//!    second (100: a 10 ms interval, some twenty times an answer's time on a quiet machine,
//!    so a connection catches up quickly after a slow answer).
//!    Latency is counted from the send; how far sends fell behind their schedule ("lag") is
//!    reported apart, as the generator's own fidelity (a p99 over 100 ms is warned about:
//!    the rates then include catching up).
//! 3. **Reloads.** Every `SOAK_RELOAD_SECONDS` the harness rewrites `gateway.yaml` —
//!    `limits.max_body_bytes` alternates between 1 MiB and 2 MiB (a reload applies it; these
//!    GET requests carry no body) and a comment names the reload — and sends SIGHUP. A
//!    reload counts as done when the gateway logs `configuration reloaded` (its stderr is
//!    read as JSON lines); a `reload refused` line, or no confirmation within 10 s, fails
//!    the run.
//! 4. **Samples.** Every `SOAK_SAMPLE_SECONDS`: the gateway's `VmRSS` (`/proc/<pid>/status`),
//!    its CPU use (100 % = the one core), each route's answered rate, p99 and largest lag in
//!    the interval, non-2xx answers and transport errors, and the DPoP replay store's size
//!    (`fapi_gateway_dpop_replay_entries` from the admin listener).
//!
//! DPoP proofs are unique (`jti` = run id and a counter) and fresh (`iat` when signed): the
//! gateway refuses replays and proofs older than `dpop.max_age`, so they cannot be signed
//! in advance for minutes. A thread of this process (on CPU 1, with the load generator and
//! the upstream) keeps a queue of about a quarter of a second of proofs; a connection that
//! finds it empty signs inline (counted). The peak phase uses proofs signed before it, as
//! `e2e` does, newest first.
//!
//! **Warm-up and the bound.** The in-memory replay store remembers every proof for
//! `dpop.max_age + dpop.max_future + 5 s` (75 s by default) and drops it in slices of an
//! eighth of that, so it — and with it the resident size — grows for about 85 s before it
//! levels off at about rate × 84 s entries (so the default `max_entries`, 1 000 000, holds
//! about 11 800 proofs/s; faster, it refuses proofs with 503, which this run would report).
//! The warm resident size is the first sample at or
//! after `SOAK_WARMUP_SECONDS` (default: that replay window and a slice, rounded up);
//! growth is measured from there, and the run fails when any later sample exceeds the warm
//! size by more than `SOAK_RSS_BOUND_MB` MiB (default 16). `SOAK_DPOP_MAX_AGE` (seconds,
//! default: the gateway's 60) shortens the window, so a short development run reaches the
//! steady state too.
//!
//! The run fails (prints `FAIL`, exits 1) on any non-2xx answer or transport error (a
//! request unanswered for 10 s is one), in the peak phase too, any reload not confirmed, or
//! growth beyond the bound; it warns when the achieved rate is below 95 % of the target or
//! the lag is large. It also prints what the gateway itself counted as non-2xx
//! (`fapi_gateway_requests_total`). Loopback only; the gateway is stopped on exit (SIGTERM,
//! then SIGKILL after 10 s), also when the harness panics; Ctrl-C reaches it too (same
//! process group).
//!
//! Run: `cargo bench --bench soak`. Knobs: `SOAK_SECONDS` (300), `SOAK_LOAD_PERCENT` (80),
//! `SOAK_RELOAD_SECONDS` (30), `SOAK_SAMPLE_SECONDS` (5), `SOAK_RSS_BOUND_MB` (16),
//! `SOAK_WARMUP_SECONDS` (replay window + slice), `SOAK_PEAK_SECONDS` (5),
//! `SOAK_CONNECTIONS` (32), `SOAK_CONNECTION_RATE` (100), `SOAK_DPOP_MAX_AGE` (60),
//! `SOAK_GATEWAY_BIN` (another gateway binary). A short development run:
//! `SOAK_SECONDS=40 SOAK_RELOAD_SECONDS=10 SOAK_SAMPLE_SECONDS=2 SOAK_PEAK_SECONDS=3
//! SOAK_DPOP_MAX_AGE=5 cargo bench --bench soak` (warm after 24 s).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/harness.rs"]
mod harness;

use std::collections::VecDeque;
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use fapi_gateway::jose::{Alg, SigningKey};
use harness::*;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// The run's settings, from the environment.
struct Knobs {
    seconds: u64,
    load_percent: f64,
    reload_seconds: u64,
    sample_seconds: u64,
    warmup_seconds: u64,
    peak_seconds: u64,
    connections: usize,
    max_connection_rate: f64,
    rss_bound_mib: f64,
    dpop_max_age: Option<u64>,
}

impl Knobs {
    fn from_env() -> Self {
        let dpop_max_age: Option<u64> = std::env::var("SOAK_DPOP_MAX_AGE").ok().and_then(|s| s.parse().ok());
        // The replay store's window (max_age + max_future + 5 s) and one slice of it.
        let window = dpop_max_age.unwrap_or(60) + 10 + 5;
        let default_warmup = (window * 9).div_ceil(8) + 1;
        Knobs {
            seconds: env_or("SOAK_SECONDS", 300).max(1),
            load_percent: env_or("SOAK_LOAD_PERCENT", 80.0),
            reload_seconds: env_or("SOAK_RELOAD_SECONDS", 30).max(1),
            sample_seconds: env_or("SOAK_SAMPLE_SECONDS", 5).max(1),
            warmup_seconds: env_or("SOAK_WARMUP_SECONDS", default_warmup),
            peak_seconds: env_or("SOAK_PEAK_SECONDS", 5).max(1),
            connections: env_or("SOAK_CONNECTIONS", 32).max(1),
            max_connection_rate: env_or("SOAK_CONNECTION_RATE", 100.0_f64).max(1.0),
            rss_bound_mib: env_or("SOAK_RSS_BOUND_MB", 16.0),
            dpop_max_age,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Mtls,
    Dpop,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Route::Mtls => "/mtls/x",
            Route::Dpop => "/dpop/x",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Route::Mtls => "mTLS",
            Route::Dpop => "DPoP",
        }
    }
}

/// Latency buckets 5 µs wide up to 200 ms; the last one holds everything slower.
const BUCKET_US: u64 = 5;
const BUCKETS: usize = 40_000;

struct Histogram {
    counts: Vec<u32>,
    n: u64,
    max: Duration,
}

impl Histogram {
    fn new() -> Self {
        Histogram { counts: vec![0; BUCKETS], n: 0, max: Duration::ZERO }
    }

    fn record(&mut self, d: Duration) {
        let i = (u64::try_from(d.as_micros()).unwrap_or(u64::MAX) / BUCKET_US).min(BUCKETS as u64 - 1);
        self.counts[i as usize] += 1;
        self.n += 1;
        self.max = self.max.max(d);
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
    }

    /// The `q` quantile in ms (the upper edge of its bucket; the maximum when it falls in
    /// the last bucket); 0 when empty.
    fn quantile_ms(&self, q: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let rank = ((self.n as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                if i == BUCKETS - 1 {
                    break;
                }
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        self.max.as_secs_f64() * 1000.0
    }
}

/// Answers by status class, and requests that got no answer.
#[derive(Default, Clone, Copy)]
struct Counts {
    ok: u64,
    redirect: u64,
    client_error: u64,
    server_error: u64,
    other: u64,
    transport: u64,
}

impl Counts {
    fn answered(&self) -> u64 {
        self.ok + self.non_2xx()
    }

    fn non_2xx(&self) -> u64 {
        self.redirect + self.client_error + self.server_error + self.other
    }

    fn add(&mut self, o: &Counts) {
        self.ok += o.ok;
        self.redirect += o.redirect;
        self.client_error += o.client_error;
        self.server_error += o.server_error;
        self.other += o.other;
        self.transport += o.transport;
    }

    fn count(&mut self, status: u16) {
        match status {
            200..=299 => self.ok += 1,
            300..=399 => self.redirect += 1,
            400..=499 => self.client_error += 1,
            500..=599 => self.server_error += 1,
            _ => self.other += 1,
        }
    }
}

/// One sampling interval of one route.
struct Interval {
    counts: Counts,
    latency: Histogram,
    /// The latest send against its schedule.
    lag_max: Duration,
}

impl Interval {
    fn new() -> Self {
        Interval { counts: Counts::default(), latency: Histogram::new(), lag_max: Duration::ZERO }
    }
}

/// One route's figures: the current sampling interval and the whole soak.
struct RouteStats {
    interval: Interval,
    total: Counts,
    latency: Histogram,
    /// How late sends were against their schedule.
    lag: Histogram,
    /// Non-2xx answers and transport errors by description (at most 10 kinds), for the report.
    examples: Vec<(String, u64)>,
}

impl RouteStats {
    fn new() -> Self {
        RouteStats {
            interval: Interval::new(),
            total: Counts::default(),
            latency: Histogram::new(),
            lag: Histogram::new(),
            examples: Vec::new(),
        }
    }

    fn answered(&mut self, status: u16, latency: Duration, lag: Duration) {
        self.interval.counts.count(status);
        self.interval.latency.record(latency);
        self.interval.lag_max = self.interval.lag_max.max(lag);
        self.lag.record(lag);
    }

    fn failed(&mut self, what: String) {
        self.interval.counts.transport += 1;
        self.example(format!("transport error: {what}"));
    }

    fn example(&mut self, what: String) {
        if let Some((_, n)) = self.examples.iter_mut().find(|(w, _)| *w == what) {
            *n += 1;
        } else if self.examples.len() < 10 {
            self.examples.push((what, 1));
        }
    }

    /// The interval's figures, added to the totals; the next interval starts.
    fn take_interval(&mut self) -> Interval {
        let interval = std::mem::replace(&mut self.interval, Interval::new());
        self.total.add(&interval.counts);
        self.latency.merge(&interval.latency);
        interval
    }
}

/// Fresh, unique DPoP proofs: a queue kept filled by a thread, signed inline when empty.
struct ProofMint {
    key: SigningKey,
    header: Vec<u8>,
    htu: String,
    ath: String,
    run: u64,
    next: AtomicU64,
    queue: Mutex<VecDeque<String>>,
    depth: usize,
    inline: AtomicU64,
}

impl ProofMint {
    fn new(fx: &Fixture, depth: usize) -> Self {
        let der = fx.dpop_key.to_pkcs8_der().unwrap();
        let key = SigningKey::from_pkcs8_der(Alg::Es256, der.secret_pkcs8_der()).unwrap();
        let header = json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_jwk()}).to_string().into_bytes();
        ProofMint {
            key,
            header,
            htu: format!("https://{HOST}/dpop/x"),
            ath: B64.encode(sha256(fx.dpop_token.as_bytes())),
            run: SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64,
            next: AtomicU64::new(0),
            queue: Mutex::new(VecDeque::with_capacity(depth)),
            depth: depth.max(64),
            inline: AtomicU64::new(0),
        }
    }

    fn sign(&self) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let claims = json!({"jti": format!("soak-{:x}-{i:x}", self.run), "htm": "GET", "htu": self.htu,
                            "iat": now(), "ath": self.ath});
        self.key.sign_compact_raw(&self.header, claims.to_string().as_bytes()).unwrap()
    }

    fn take(&self) -> String {
        if let Some(proof) = self.queue.lock().unwrap().pop_front() {
            return proof;
        }
        self.inline.fetch_add(1, Ordering::Relaxed);
        self.sign()
    }

    /// Keeps the queue at `depth` proofs until `stop`.
    fn fill(&self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let missing = self.depth.saturating_sub(self.queue.lock().unwrap().len());
            if missing == 0 {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            for _ in 0..missing.min(64) {
                let proof = self.sign();
                self.queue.lock().unwrap().push_back(proof);
            }
        }
    }
}

/// What the gateway's log said about reloads.
#[derive(Default)]
struct LogWatch {
    reloaded: AtomicU64,
    refused: AtomicU64,
    warnings: AtomicU64,
}

/// Reads the gateway's JSON log lines from `stderr`: counts reloads, prints warnings and
/// errors (and anything that is not JSON) to this process's stderr.
fn watch_log(stderr: std::process::ChildStderr, watch: Arc<LogWatch>) {
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                eprintln!("gateway: {line}");
                continue;
            };
            let level = entry["level"].as_str().unwrap_or("");
            let message = entry["fields"]["message"].as_str().unwrap_or("");
            if message == "configuration reloaded" {
                watch.reloaded.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if message.starts_with("reload refused") {
                watch.refused.fetch_add(1, Ordering::SeqCst);
            }
            if level == "WARN" || level == "ERROR" {
                watch.warnings.fetch_add(1, Ordering::SeqCst);
                eprintln!("gateway {level}: {message} {}", entry["fields"]);
            }
        }
    });
}

/// The gateway process; stopped when dropped (SIGTERM, SIGKILL after 10 s), also on a panic.
struct Gateway {
    child: Option<Child>,
    pid: u32,
}

impl Gateway {
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The gateway configuration for the `n`th reload (0: at start): `limits.max_body_bytes`
/// alternates between 1 MiB and 2 MiB.
fn soak_yaml(upstream: SocketAddr, port: u16, admin_port: u16, max_age: Option<u64>, n: u64) -> String {
    let dpop = max_age.map_or(String::new(), |s| format!("  max_age: {s}s\n"));
    let body = if n.is_multiple_of(2) { 1 << 20 } else { 2 << 20 };
    let extra =
        format!("admin:\n  address: 127.0.0.1:{admin_port}\nlimits:\n  max_body_bytes: {body}\n# soak reload {n}\n");
    gateway_yaml(upstream, port, "{ store: memory }", &dpop, &extra)
}

/// The admin listener's `/metrics` text (empty when unreachable or slower than 2 s).
async fn metrics_text(admin_port: u16) -> String {
    tokio::time::timeout(Duration::from_secs(2), fetch_metrics(admin_port)).await.unwrap_or_default()
}

async fn fetch_metrics(admin_port: u16) -> String {
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", admin_port)).await else { return String::new() };
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await else {
        return String::new();
    };
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics").header("host", "admin").body(Empty::<Bytes>::new()).unwrap();
    let Ok(response) = sender.send_request(request).await else { return String::new() };
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of the unlabelled metric `name`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Requests the gateway itself counted with a status other than 2xx, by `route status reason`.
fn gateway_non_2xx(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("fapi_gateway_requests_total{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            let value: f64 = value.trim().parse().ok()?;
            let status = labels.split(',').find_map(|kv| kv.strip_prefix("status=\""))?.trim_end_matches('"');
            (!status.starts_with('2') && value > 0.0).then(|| (labels.replace('"', ""), value))
        })
        .collect()
}

async fn connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> Result<SendRequest<Empty<Bytes>>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let tls = connector.connect(ServerName::try_from(HOST).unwrap(), tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A request without an answer this long counts as a transport error (its connection is
/// dropped), so a stuck gateway cannot stall the run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// When one open-loop connection sends: every `interval` from `first` until `deadline`.
struct Schedule {
    first: Instant,
    interval: Duration,
    deadline: Instant,
}

/// What every connection of one route needs.
#[derive(Clone)]
struct RouteClient {
    route: Route,
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    /// `Bearer <token>` or `DPoP <token>`.
    authorization: String,
    /// Proofs, on the DPoP route.
    mint: Option<Arc<ProofMint>>,
    stats: Arc<Mutex<RouteStats>>,
}

/// One open-loop connection on `client.route` (opened beforehand: `sender`), sending on `schedule`
/// and reconnecting after a transport error.
async fn drive(client: RouteClient, schedule: Schedule, mut sender: Option<SendRequest<Empty<Bytes>>>) {
    let RouteClient { route, addr, connector, authorization, mint, stats } = client;
    for k in 0u32.. {
        let due = schedule.first + schedule.interval * k;
        if due >= schedule.deadline {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let failure = |what: String| stats.lock().unwrap().failed(what);
        if sender.is_none() {
            match connect(&connector, addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    failure(e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        if let Err(e) = s.ready().await {
            failure(format!("connection closed: {e}"));
            sender = None;
            continue;
        }
        let mut request =
            hyper::Request::get(route.path()).header("host", HOST).header("authorization", &authorization);
        if let Some(mint) = &mint {
            request = request.header("dpop", mint.take());
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let sent = Instant::now();
        let exchange = async {
            let response = s.send_request(request).await.map_err(|e| format!("request: {e}"))?;
            let status = response.status();
            let www = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or("?").to_string());
            let body = response.into_body().collect().await.map_err(|e| format!("response body: {e}"))?;
            Ok::<_, String>((status, www, body.to_bytes()))
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")));
        let latency = sent.elapsed();
        match answer {
            Ok((status, www, body)) => {
                let mut s = stats.lock().unwrap();
                s.answered(status.as_u16(), latency, sent.saturating_duration_since(due));
                if !status.is_success() {
                    let body = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    s.example(format!("{status} www-authenticate={www:?} body={body:?}"));
                }
            }
            Err(e) => {
                failure(e);
                sender = None;
            }
        }
    }
}

/// One row of the table.
struct Sample {
    t: f64,
    rss_kib: Option<u64>,
    replay_entries: Option<f64>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The gateway under test and what it runs against.
struct Setup {
    fx: Fixture,
    upstream: SocketAddr,
    addr: SocketAddr,
    admin_port: u16,
    config: std::path::PathBuf,
    gateway: Gateway,
    log: Arc<LogWatch>,
}

impl Setup {
    /// The fixture, the upstream, and the gateway (`SOAK_GATEWAY_BIN` or this build's) with
    /// its admin listener, logging JSON at `warn` and its reloads at `info`.
    async fn start(knobs: &Knobs) -> Self {
        let fx = fixture();
        let upstream = start_upstream().await;
        let (port, admin_port) = (free_port(), free_port());
        let config = fx.dir.path().join("gateway.yaml");
        std::fs::write(&config, soak_yaml(upstream, port, admin_port, knobs.dpop_max_age, 0)).unwrap();
        let binary =
            std::env::var("SOAK_GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fapi-gateway").to_string());
        let mut command = gateway_command(&binary, &config, "warn,fapi_gateway::lifecycle::run=info");
        command.args(["--log-format", "json"]).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let log = Arc::new(LogWatch::default());
        watch_log(child.stderr.take().unwrap(), log.clone());
        let gateway = Gateway { pid: child.id(), child: Some(child) };
        wait_for_port(port);
        wait_for_port(admin_port);
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Setup { fx, upstream, addr, admin_port, config, gateway, log }
    }

    fn pid(&self) -> u32 {
        self.gateway.pid
    }
}

/// The closed-loop peak rates of the mTLS and the DPoP route, and the errors seen.
async fn measure_peaks(setup: &Setup, knobs: &Knobs) -> (f64, f64, usize) {
    let (fx, pid) = (&setup.fx, setup.pid());
    let seconds = Duration::from_secs(knobs.peak_seconds);
    let mtls = Load::Mtls { token: fx.mtls_token.clone() };
    let mtls = run(fx, setup.addr, Some(pid), mtls, knobs.connections, seconds).await;
    // Signed before the phase, each with its own `iat`, and used newest first: the proofs a
    // phase gets to are the last signed, so they stay within a short `max_age` too.
    let mint = ProofMint::new(fx, 0);
    let mut signed: Vec<String> = (0..25_000 * knobs.peak_seconds).map(|_| mint.sign()).collect();
    signed.reverse();
    let dpop = Load::Dpop {
        token: fx.dpop_token.clone(),
        proofs: Arc::new(signed),
        next: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    let dpop = run(fx, setup.addr, Some(pid), dpop, knobs.connections, seconds).await;
    for (route, o) in [(Route::Mtls, &mtls), (Route::Dpop, &dpop)] {
        println!(
            "peak {} route (closed-loop) {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  ({} errors)",
            route.name(),
            o.rps(),
            o.percentile(0.5),
            o.percentile(0.99),
            o.errors
        );
    }
    (mtls.rps(), dpop.rps(), mtls.errors + dpop.errors)
}

/// How many connections carry `rate` requests per second: `SOAK_CONNECTIONS`, or more so
/// that none sends more than `SOAK_CONNECTION_RATE` requests per second. HTTP/1.1 has one
/// request in flight per connection, so a connection keeps its schedule only while answers
/// take less than its interval.
fn connections_for(knobs: &Knobs, rate: f64) -> usize {
    knobs.connections.max((rate / knobs.max_connection_rate).ceil() as usize)
}

/// The open-loop load while it runs.
struct SoakLoad {
    start: Instant,
    deadline: Instant,
    tasks: tokio::task::JoinSet<()>,
    stats: [Arc<Mutex<RouteStats>>; 2],
    mint: Arc<ProofMint>,
    minter: (std::thread::JoinHandle<()>, Arc<AtomicBool>),
}

impl SoakLoad {
    /// Opens the connections of each route ([`connections_for`]) and starts sending: `rates`
    /// (mTLS, DPoP) in requests per second, for `knobs.seconds`.
    async fn start(setup: &Setup, knobs: &Knobs, rates: [f64; 2]) -> Self {
        let counts = rates.map(|rate| connections_for(knobs, rate));
        let fx = &setup.fx;
        let mint = Arc::new(ProofMint::new(fx, (rates[1] / 4.0) as usize));
        let stop = Arc::new(AtomicBool::new(false));
        let minter = {
            let (mint, stop) = (mint.clone(), stop.clone());
            std::thread::spawn(move || mint.fill(&stop))
        };
        // The proof queue fills, and every connection opens, before the clock starts (a
        // connection that fails here is counted when its first send tries again).
        let filling = Instant::now() + Duration::from_secs(5);
        while mint.queue.lock().unwrap().len() < mint.depth && Instant::now() < filling {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let connector = tls_connector(fx, b"http/1.1");
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..counts[0] + counts[1] {
            let (connector, addr) = (connector.clone(), setup.addr);
            opening.spawn(async move { connect(&connector, addr).await.ok() });
        }
        let mut senders = Vec::with_capacity(counts[0] + counts[1]);
        while let Some(sender) = opening.join_next().await {
            senders.push(sender.unwrap());
        }
        let start = Instant::now() + Duration::from_millis(100);
        let deadline = start + Duration::from_secs(knobs.seconds);
        let stats = [Arc::new(Mutex::new(RouteStats::new())), Arc::new(Mutex::new(RouteStats::new()))];
        let clients = [
            (Route::Mtls, format!("Bearer {}", fx.mtls_token), None),
            (Route::Dpop, format!("DPoP {}", fx.dpop_token), Some(mint.clone())),
        ];
        let mut tasks = tokio::task::JoinSet::new();
        for (k, (route, authorization, mint)) in clients.into_iter().enumerate() {
            let stats = stats[k].clone();
            let client =
                RouteClient { route, addr: setup.addr, connector: connector.clone(), authorization, mint, stats };
            let (n, rate) = (counts[k], rates[k]);
            let interval = Duration::from_secs_f64(n as f64 / rate.max(1.0));
            for i in 0..n {
                let schedule = Schedule { first: start + interval.mul_f64(i as f64 / n as f64), interval, deadline };
                tasks.spawn(drive(client.clone(), schedule, senders.pop().flatten()));
            }
        }
        SoakLoad { start, deadline, tasks, stats, mint, minter: (minter, stop) }
    }

    /// Waits for every connection to finish and stops the proof thread; answers that came
    /// after the last sample count in the totals.
    async fn finish(mut self) -> ([RouteStats; 2], u64) {
        while self.tasks.join_next().await.is_some() {}
        self.minter.1.store(true, Ordering::Relaxed);
        let _ = self.minter.0.join();
        let [mtls, dpop] = self.stats.map(|s| {
            let mut s = Arc::into_inner(s).unwrap().into_inner().unwrap();
            s.take_interval();
            s
        });
        ([mtls, dpop], self.mint.inline.load(Ordering::Relaxed))
    }
}

/// What one reload came to.
struct Reload {
    confirmed: bool,
    /// From SIGHUP to the log line (or to giving up).
    took: Duration,
}

/// Every `knobs.reload_seconds` from `start` until `deadline`: the next configuration
/// written, SIGHUP, and up to 10 s for the gateway to log `configuration reloaded`.
fn spawn_reloads(
    setup: &Setup,
    knobs: &Knobs,
    start: Instant,
    deadline: Instant,
) -> tokio::task::JoinHandle<Vec<Reload>> {
    let (log, config, pid) = (setup.log.clone(), setup.config.clone(), setup.pid());
    let (upstream, port, admin_port) = (setup.upstream, setup.addr.port(), setup.admin_port);
    let (every, max_age) = (Duration::from_secs(knobs.reload_seconds), knobs.dpop_max_age);
    tokio::spawn(async move {
        let mut done = Vec::new();
        for n in 1u32.. {
            let at = start + every * n;
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
            std::fs::write(&config, soak_yaml(upstream, port, admin_port, max_age, u64::from(n))).unwrap();
            let (reloaded, refused) = (log.reloaded.load(Ordering::SeqCst), log.refused.load(Ordering::SeqCst));
            let signalled = Instant::now();
            let _ = Command::new("kill").args(["-HUP", &pid.to_string()]).status();
            let mut confirmed = false;
            while signalled.elapsed() < Duration::from_secs(10) && log.refused.load(Ordering::SeqCst) == refused {
                if log.reloaded.load(Ordering::SeqCst) > reloaded {
                    confirmed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            done.push(Reload { confirmed, took: signalled.elapsed() });
        }
        done
    })
}

/// Prints a row every `knobs.sample_seconds` until the load's deadline.
async fn sample(setup: &Setup, knobs: &Knobs, load: &SoakLoad) -> Vec<Sample> {
    let pid = setup.pid();
    println!(
        "{:>5} {:>8} {:>5} {:>10} {:>7} {:>7} {:>10} {:>7} {:>7} {:>7} {:>6} {:>7} {:>7}",
        "t s",
        "RSS MiB",
        "CPU %",
        "mTLS req/s",
        "p99 ms",
        "lag ms",
        "DPoP req/s",
        "p99 ms",
        "lag ms",
        "non-2xx",
        "errors",
        "replay",
        "reloads"
    );
    let mut samples = Vec::new();
    let every = Duration::from_secs(knobs.sample_seconds);
    let mut last = (load.start, cpu_ticks(pid));
    for j in 1u32.. {
        let at = (load.start + every * j).min(load.deadline);
        tokio::time::sleep_until(at.into()).await;
        let now = Instant::now();
        let (rss, ticks) = (rss_kib(pid), cpu_ticks(pid));
        let replay = metric(&metrics_text(setup.admin_port).await, "fapi_gateway_dpop_replay_entries");
        let seconds = now.duration_since(last.0).as_secs_f64();
        // Clock ticks are 1/100 s: ticks per second is the CPU use in per cent.
        let cpu = match (last.1, ticks) {
            (Some(a), Some(b)) => format!("{:.0}", (b.0 + b.1 - a.0 - a.1) as f64 / seconds),
            _ => "-".into(),
        };
        last = (now, ticks);
        let m = load.stats[0].lock().unwrap().take_interval();
        let d = load.stats[1].lock().unwrap().take_interval();
        let t = now.duration_since(load.start).as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{t:>5.0} {:>8} {cpu:>5} {:>10.0} {:>7.2} {:>7.1} {:>10.0} {:>7.2} {:>7.1} {:>7} {:>6} {:>7} {:>7}",
            rss.map_or("gone".into(), |k| format!("{:.1}", mib(k))),
            m.counts.answered() as f64 / seconds,
            m.latency.quantile_ms(0.99),
            ms(m.lag_max),
            d.counts.answered() as f64 / seconds,
            d.latency.quantile_ms(0.99),
            ms(d.lag_max),
            m.counts.non_2xx() + d.counts.non_2xx(),
            m.counts.transport + d.counts.transport,
            replay.map_or("-".into(), |r| format!("{r:.0}")),
            setup.log.reloaded.load(Ordering::SeqCst),
        );
        samples.push(Sample { t, rss_kib: rss, replay_entries: replay });
        if at >= load.deadline {
            return samples;
        }
    }
    samples
}

fn main() {
    let knobs = Knobs::from_env();
    if has("taskset") {
        let _ =
            Command::new("taskset").args(["-pc", "1", &std::process::id().to_string()]).stdout(Stdio::null()).status();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    if !runtime.block_on(soak(knobs)) {
        std::process::exit(1);
    }
}

/// The whole run; true when it passed.
async fn soak(knobs: Knobs) -> bool {
    let mut setup = Setup::start(&knobs).await;
    let rss_idle = rss_kib(setup.pid()).unwrap_or(0);
    println!(
        "soak: {} s at {}% of the peak, both routes at once; reload every {} s, \
         sample every {} s, warm-up {} s, bound +{} MiB; gateway: 1 worker on CPU 0, pid {}",
        knobs.seconds,
        knobs.load_percent,
        knobs.reload_seconds,
        knobs.sample_seconds,
        knobs.warmup_seconds,
        knobs.rss_bound_mib,
        setup.pid(),
    );
    if knobs.warmup_seconds >= knobs.seconds {
        println!("note: the warm-up ({} s) is not shorter than the soak: growth is not judged", knobs.warmup_seconds);
    }
    let (peak_mtls, peak_dpop, peak_errors) = measure_peaks(&setup, &knobs).await;
    let rss_after_peak = rss_kib(setup.pid()).unwrap_or(0);
    let share = knobs.load_percent / 100.0 / 2.0;
    let targets = [peak_mtls * share, peak_dpop * share];
    println!(
        "target: mTLS {:.0} req/s over {} connections + DPoP {:.0} req/s over {} connections \
         ({:.0}% of each peak: {}% of the gateway's capacity)",
        targets[0],
        connections_for(&knobs, targets[0]),
        targets[1],
        connections_for(&knobs, targets[1]),
        share * 100.0,
        knobs.load_percent
    );
    println!();
    let load = SoakLoad::start(&setup, &knobs, targets).await;
    let reloads = spawn_reloads(&setup, &knobs, load.start, load.deadline);
    let samples = sample(&setup, &knobs, &load).await;
    let (stats, inline_proofs) = load.finish().await;
    let reloads = reloads.await.unwrap();
    // What the gateway itself counted, before it stops.
    let counted_non_2xx = gateway_non_2xx(&metrics_text(setup.admin_port).await);
    setup.gateway.stop();

    println!();
    println!("peak (closed-loop)            mTLS {peak_mtls:.0} req/s, DPoP {peak_dpop:.0} req/s");
    let elapsed = knobs.seconds as f64;
    let mut warnings = Vec::new();
    for ((route, target), s) in [Route::Mtls, Route::Dpop].into_iter().zip(targets).zip(&stats) {
        let achieved = s.total.answered() as f64 / elapsed;
        println!(
            "{:<4} achieved / target        {achieved:.0} / {target:.0} req/s ({:.1} %)  p50 {:.2} ms  p99 {:.2} ms  \
             p99.9 {:.2} ms  max {:.1} ms;  sends behind schedule p99 {:.2} ms, max {:.1} ms",
            route.name(),
            100.0 * achieved / target,
            s.latency.quantile_ms(0.5),
            s.latency.quantile_ms(0.99),
            s.latency.quantile_ms(0.999),
            s.latency.max.as_secs_f64() * 1000.0,
            s.lag.quantile_ms(0.99),
            s.lag.max.as_secs_f64() * 1000.0,
        );
        println!(
            "{:<4} answers                  {} 2xx, {} 3xx, {} 4xx, {} 5xx, {} other; {} transport errors",
            route.name(),
            s.total.ok,
            s.total.redirect,
            s.total.client_error,
            s.total.server_error,
            s.total.other,
            s.total.transport
        );
        for (example, n) in &s.examples {
            println!("     {n} × {example}");
        }
        if s.lag.quantile_ms(0.99) > 100.0 {
            warnings.push(format!(
                "{} sends fell behind their schedule (p99 {:.0} ms): the gateway or this load generator could not \
                 keep up for a while, and the rates above include catching up",
                route.name(),
                s.lag.quantile_ms(0.99)
            ));
        }
        if achieved < 0.95 * target {
            warnings.push(format!("the {} route got {achieved:.0} req/s, below 95 % of {target:.0}", route.name()));
        }
    }
    for (labels, value) in &counted_non_2xx {
        println!("gateway counted               {value:.0} × {labels}");
    }
    println!("DPoP proofs signed inline     {inline_proofs} (the queue ran empty)");
    let confirmed = reloads.iter().filter(|r| r.confirmed).count();
    let slowest = reloads.iter().map(|r| r.took).max().unwrap_or_default();
    println!(
        "reloads                       {} signalled, {confirmed} confirmed (`configuration reloaded`), {} refused; \
         slowest confirmation {:.0} ms",
        reloads.len(),
        setup.log.refused.load(Ordering::SeqCst),
        slowest.as_secs_f64() * 1000.0
    );
    println!("gateway warnings/errors       {}", setup.log.warnings.load(Ordering::SeqCst));

    let warm_from = knobs.warmup_seconds as f64 - 0.5;
    let warm = samples.iter().find(|s| s.t >= warm_from);
    let (warm_kib, end_kib) = (warm.and_then(|s| s.rss_kib), samples.last().and_then(|s| s.rss_kib));
    let highest_after_warm = samples.iter().filter(|s| s.t >= warm_from).filter_map(|s| s.rss_kib).max();
    let peak_kib = samples.iter().filter_map(|s| s.rss_kib).max().unwrap_or(0);
    let kib_or_dash = |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1}", mib(k)));
    println!(
        "RSS                           idle {:.1} MiB, after the peak phase {:.1} MiB, warm (t = {} s) {} MiB, \
         peak {:.1} MiB, end {} MiB",
        mib(rss_idle),
        mib(rss_after_peak),
        warm.map_or("-".into(), |s| format!("{:.0}", s.t)),
        kib_or_dash(warm_kib),
        mib(peak_kib),
        kib_or_dash(end_kib),
    );
    let replay_at = |s: Option<&Sample>| s.and_then(|s| s.replay_entries).map_or("-".into(), |r| format!("{r:.0}"));
    println!("replay entries                warm {}, end {}", replay_at(warm), replay_at(samples.last()));

    let mut failures = Vec::new();
    match (warm_kib, highest_after_warm, end_kib) {
        _ if knobs.warmup_seconds >= knobs.seconds => {
            println!("RSS growth after warm-up      not judged (warm-up ≥ soak)")
        }
        (Some(warm), Some(highest), Some(end)) => {
            let growth = mib(highest) - mib(warm);
            println!(
                "RSS growth after warm-up      end {:+.1} MiB, highest {growth:+.1} MiB (bound +{} MiB)",
                mib(end) - mib(warm),
                knobs.rss_bound_mib
            );
            if growth > knobs.rss_bound_mib {
                failures.push(format!("RSS grew {growth:.1} MiB after warm-up (bound {} MiB)", knobs.rss_bound_mib));
            }
        }
        _ => failures.push("the gateway's resident size could not be read (did it exit?)".into()),
    }
    let non_2xx: u64 = stats.iter().map(|s| s.total.non_2xx()).sum();
    let transport: u64 = stats.iter().map(|s| s.total.transport).sum();
    if non_2xx > 0 {
        failures.push(format!("{non_2xx} non-2xx answers"));
    }
    if transport > 0 {
        failures.push(format!("{transport} transport errors"));
    }
    if peak_errors > 0 {
        failures.push(format!("{peak_errors} errors in the peak phase"));
    }
    if confirmed < reloads.len() {
        failures.push(format!("{} of {} reloads not confirmed", reloads.len() - confirmed, reloads.len()));
    }
    for warning in &warnings {
        println!("WARN: {warning}");
    }
    if failures.is_empty() {
        println!("PASS");
        true
    } else {
        println!("FAIL: {}", failures.join("; "));
        false
    }
}
