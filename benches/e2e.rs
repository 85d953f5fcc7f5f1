//! End-to-end load benchmark: real TLS, keep-alive connections, a client certificate, DPoP
//! proofs generated before the timed phase. In one run it measures
//!   (a) the upstream directly (proves the load generator is not the bottleneck),
//!   (b) nginx as a plain mTLS-terminating reverse proxy, one worker (when installed:
//!       `apt-get install -y nginx`),
//!   (c) the gateway on an mTLS-bound route (warm token cache),
//!   (d) the gateway on a DPoP route with the in-memory replay store,
//!   (d') the same with the Redis replay store (when `redis-server` is installed),
//!   (b log)/(c log) nginx (`access_log … combined buffer=64k`) and the gateway (`info`, the
//!       default access log) with their access logs on, written to files,
//!   (b h2)/(c h2) nginx and the gateway over HTTP/2, 8 concurrent streams per connection
//!       (the independent benchmark's `--http2 --streams 8`),
//!   (e) the single-core ES256 verify rate,
//! and prints requests/s, p50/p99/p99.9 and the ratios between them.
//!
//! The gateway runs as its own process (the release binary, one worker thread), and nginx
//! with one worker, each pinned to CPU 0 with `taskset` when available; this process (the
//! load generator) pins itself to CPU 1, with the upstream: nginx (`return 200 "ok"`, one
//! worker, its own process, as in `../shared/bench/run.sh`) when installed, else a hyper
//! server inside this process (`E2E_UPSTREAM=inprocess` forces that).
//!
//! Run: `cargo bench --bench e2e`. Knobs: `E2E_SECONDS` (default 4 per scenario),
//! `E2E_CONNECTIONS` (default 32), `E2E_ROUNDS` (default 3): the scenarios run interleaved,
//! round after round, and the summary reports medians and the median of per-round ratios.
//! `E2E_IDLE_CONNECTIONS` (default 10 000) for (f); `E2E_GATEWAY_BIN` runs another gateway
//! binary (a profiling build); `E2E_BASELINE_BIN` adds (c0)/(d0)/(c0 h2), the same routes
//! on another gateway binary (an earlier build) in the same rounds, with the ratios between
//! them;
//! `E2E_PERF_DIR` records `perf` profiles of (c), (d) and (c h2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fapi_gateway::jose::{Alg, SigningKey};
use harness::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::net::TcpStream;

/// The gateway binary on CPU 0 with one worker thread.
fn start_gateway(config: &Path, port: u16) -> Child {
    let binary = std::env::var("E2E_GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fapi-gateway").to_string());
    start_gateway_binary(&binary, config, port)
}

/// `binary` as a gateway on CPU 0 with one worker thread.
fn start_gateway_binary(binary: &str, config: &Path, port: u16) -> Child {
    let log = std::env::var("E2E_GATEWAY_LOG").unwrap_or_else(|_| "warn".into());
    let child = gateway_command(binary, config, &log).spawn().unwrap();
    wait_for_port(port);
    child
}

/// The gateway with its default access log (`info`, one line per request) written to
/// `log` — a file, as a production gateway's stderr goes to a file or a pipe.
fn start_gateway_logging(config: &Path, port: u16, log: &Path) -> Child {
    let binary = std::env::var("E2E_GATEWAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_fapi-gateway").to_string());
    let file = std::fs::File::create(log).unwrap();
    let child = gateway_command(&binary, config, "info").stderr(file).spawn().unwrap();
    wait_for_port(port);
    child
}

/// nginx terminating TLS (any client certificate, like the gateway; HTTP/2 offered by ALPN)
/// and proxying to the upstream over keep-alive connections: the baseline of a plain mTLS
/// reverse proxy. With `access_log`, it logs every request in the `combined` format through
/// a 64 KiB buffer (into the fixture's directory), as a production nginx would.
fn start_nginx(fx: &Fixture, upstream: SocketAddr, port: u16, access_log: bool) -> Option<Child> {
    if !has("nginx") {
        return None;
    }
    let dir = fx.dir.path();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx-{port}.pid;\nerror_log {d}/nginx-error-{port}.log warn;\n\
         worker_rlimit_nofile 30000;\nevents {{ worker_connections 20000; }}\n\
         http {{\n  {log};\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           upstream up {{ server {upstream}; keepalive 256; }}\n  client_header_buffer_size 4k;\n\
           server {{\n    listen 127.0.0.1:{port} ssl http2;\n    ssl_certificate {d}/server.pem;\n\
             ssl_certificate_key {d}/server.key;\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
             ssl_verify_client optional_no_ca;\n    keepalive_requests 1000000;\n\
             location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\n",
        d = dir.display(),
        log = if access_log {
            format!("access_log {}/nginx-access-{port}.log combined buffer=64k", dir.display())
        } else {
            "access_log off".into()
        },
    );
    let path = dir.join(format!("nginx-{port}.conf"));
    std::fs::write(&path, conf).unwrap();
    let child = pinned("0", "nginx").args(["-c", path.to_str().unwrap()]).stdout(Stdio::null()).spawn().ok()?;
    wait_for_port(port);
    Some(child)
}

/// nginx as the upstream, one worker on CPU 1 beside the load generator, answering
/// `return 200 "ok"` with its usual response head — the upstream of `../shared/bench/run.sh`.
/// A separate process, so each request wakes it across the two processes on that CPU, as a
/// real upstream is woken; the in-process upstream shares this process's runtime with the
/// load generator and hides that cost.
fn start_nginx_upstream(fx: &Fixture) -> Option<(Child, SocketAddr)> {
    if !has("nginx") {
        return None;
    }
    let dir = fx.dir.path();
    let port = free_port();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx-upstream.pid;\nerror_log {d}/nginx-upstream-error.log warn;\n\
         worker_rlimit_nofile 30000;\n\
         events {{ worker_connections 8192; multi_accept on; }}\n\
         http {{\n  access_log off;\n  keepalive_timeout 300s;\n  keepalive_requests 100000000;\n\
           client_body_temp_path {d}/up-body;\n  proxy_temp_path {d}/up-proxy;\n  fastcgi_temp_path {d}/up-fastcgi;\n\
           uwsgi_temp_path {d}/up-uwsgi;\n  scgi_temp_path {d}/up-scgi;\n\
           server {{\n    listen 127.0.0.1:{port} backlog=4096;\n\
             location / {{ default_type text/plain; return 200 \"ok\"; }}\n  }}\n}}\n",
        d = dir.display()
    );
    let path = dir.join("nginx-upstream.conf");
    std::fs::write(&path, conf).unwrap();
    let child = pinned("1", "nginx").args(["-c", path.to_str().unwrap()]).stdout(Stdio::null()).spawn().ok()?;
    wait_for_port(port);
    Some((child, format!("127.0.0.1:{port}").parse().unwrap()))
}

/// nginx's worker: the only child of its master process (waits for it to be forked).
fn nginx_worker(master: u32) -> Option<u32> {
    for _ in 0..100 {
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).ok()?;
        if let Some(worker) = children.split_whitespace().next() {
            return worker.parse().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// How many connections this process may hold open: the soft descriptor limit, less room
/// for everything else.
fn descriptor_budget() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1024);
    soft.saturating_sub(512)
}

/// (f) Memory with idle keep-alive connections: `count` TLS connections with the client
/// certificate, each makes one mTLS request and then stays open, idle. Returns the serving
/// process's resident size before and with them, in KiB, and how many were open.
async fn idle_connections_rss(
    fx: &Fixture,
    addr: SocketAddr,
    pid: u32,
    count: usize,
    admin_port: Option<u16>,
) -> (u64, u64, usize, String) {
    let connector = tls_connector(fx, b"http/1.1");
    let token = fx.mtls_token.clone();
    let before = rss_kib(pid).unwrap_or(0);
    let mut open = Vec::with_capacity(count);
    let mut started = 0;
    while started < count {
        let batch = (count - started).min(256);
        started += batch;
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..batch {
            let (connector, token) = (connector.clone(), token.clone());
            tasks.spawn(async move {
                let tcp = TcpStream::connect(addr).await.ok()?;
                let tls = connector.connect(ServerName::try_from(HOST).unwrap(), tcp).await.ok()?;
                let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.ok()?;
                tokio::spawn(connection);
                if std::env::var("E2E_IDLE_NOREQ").is_ok() {
                    return Some(sender);
                }
                let request = hyper::Request::get("/mtls/x")
                    .header("host", HOST)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let response = sender.send_request(request).await.ok()?;
                let ok = response.status() == 200;
                response.into_body().collect().await.ok()?;
                ok.then_some(sender)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Some(sender)) = joined {
                open.push(sender);
            }
        }
    }
    // Past the gateway's park delay (1 s), so idle connections are measured idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let with = rss_kib(pid).unwrap_or(0);
    let still_open = open.iter().filter(|s| !s.is_closed()).count();
    let states = match admin_port {
        Some(port) => connection_states(port).await,
        None => String::new(),
    };
    (before, with, still_open, states)
}

/// `fapi_gateway_connections{state=…}` from the gateway's admin listener, as one line.
async fn connection_states(admin_port: u16) -> String {
    let Ok(tcp) = TcpStream::connect(("127.0.0.1", admin_port)).await else { return "admin unreachable".into() };
    let Ok((mut sender, connection)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await else {
        return "admin unreachable".into();
    };
    tokio::spawn(connection);
    let request = hyper::Request::get("/metrics").header("host", "admin").body(Empty::<Bytes>::new()).unwrap();
    let Ok(response) = sender.send_request(request).await else { return "admin unreachable".into() };
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix("fapi_gateway_connections{"))
        .map(|l| l.replace("state=", "").replace(['"', '}'], ""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report_memory(name: &str, (before, with, open, states): &(u64, u64, usize, String)) {
    println!(
        "{name:<28} {:>7.1} MiB with {open} idle connections ({:.1} MiB before them; {:.1} KiB per connection)",
        *with as f64 / 1024.0,
        *before as f64 / 1024.0,
        with.saturating_sub(*before) as f64 / (*open).max(1) as f64
    );
    if !states.is_empty() {
        println!("{:<28} connections by state then: {states}", "");
    }
}

fn es256_verify_rate() -> f64 {
    let key = SigningKey::generate(Alg::Es256).unwrap();
    let message = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1In0";
    let signature = key.sign(message).unwrap();
    // The public key as the gateway holds it: a prepared aws-lc-rs `ParsedPublicKey`.
    let public = key.public_key();
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        public.verify(Alg::Es256, message, &signature).unwrap();
    }
    f64::from(n) / t.elapsed().as_secs_f64()
}

fn report(name: &str, o: &Outcome) {
    let cpu = o.cpu_us.map_or(String::new(), |(user, sys)| format!("  cpu/req {user:.1} us user + {sys:.1} us sys"));
    println!(
        "  {name:<26} {:>10.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  ({} ok, {} errors){cpu}",
        o.rps(),
        o.percentile(0.50),
        o.percentile(0.99),
        o.percentile(0.999),
        o.requests,
        o.errors
    );
}

/// The serving process's CPU time per request (user + system), in µs; NaN when unknown.
fn cpu_total(o: &Outcome) -> f64 {
    o.cpu_us.map_or(f64::NAN, |(user, sys)| user + sys)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One scenario's outcomes over the rounds.
#[derive(Default)]
struct Series(Vec<Outcome>);

impl Series {
    fn rps(&self) -> f64 {
        median(self.0.iter().map(Outcome::rps).collect())
    }

    fn p(&self, q: f64) -> f64 {
        median(self.0.iter().map(|o| o.percentile(q)).collect())
    }

    /// The median over rounds of this scenario's rate divided by `other`'s in the same round:
    /// adjacent measurements share the machine's mood, so the ratio moves less than the rates.
    fn ratio(&self, other: &Series) -> f64 {
        median(self.0.iter().zip(&other.0).map(|(a, b)| a.rps() / b.rps()).collect())
    }

    fn summary(&self, name: &str) {
        let cpu: Vec<(f64, f64)> = self.0.iter().filter_map(|o| o.cpu_us).collect();
        let cpu = if cpu.is_empty() {
            String::new()
        } else {
            let user = median(cpu.iter().map(|c| c.0).collect());
            let sys = median(cpu.iter().map(|c| c.1).collect());
            format!("  cpu/req {user:.1} us user + {sys:.1} us sys")
        };
        println!(
            "{name:<28} {:>10.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  (median of {}){cpu}",
            self.rps(),
            self.p(0.50),
            self.p(0.99),
            self.p(0.999),
            self.0.len()
        );
    }
}

/// With `E2E_PERF_DIR` set (and `perf` installed), records a CPU profile of the gateway
/// during the first round of a scenario: `perf record -e cpu-clock -g` into
/// `$E2E_PERF_DIR/<name>.data` (the cpu-clock event works on VMs without hardware counters).
/// It samples the gateway's CPU (0) system-wide rather than attaching to its pid: on this
/// VM kind `perf record -p` records no samples at all. `perf report --pid <pid>` keeps the
/// gateway's own samples; the pid is printed.
fn profile(pid: u32, name: &str, seconds: u64) -> Option<Child> {
    let dir = std::env::var("E2E_PERF_DIR").ok()?;
    if !has("perf") {
        return None;
    }
    let output = Path::new(&dir).join(format!("{name}.data"));
    println!("profiling the gateway (pid {pid}) on CPU 0 into {}", output.display());
    Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-g", "-q", "-a", "-C", "0", "-o"])
        .arg(&output)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

fn finish_profile(perf: Option<Child>) {
    if let Some(mut child) = perf {
        let _ = child.wait();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let seconds: u64 = env_or("E2E_SECONDS", 4);
    let connections: usize = env_or("E2E_CONNECTIONS", 32);
    let rounds: usize = env_or("E2E_ROUNDS", 3).max(1);
    let duration = Duration::from_secs(seconds);
    if has("taskset") {
        let _ =
            Command::new("taskset").args(["-pc", "1", &std::process::id().to_string()]).stdout(Stdio::null()).status();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async move {
        let fx = fixture();
        // nginx as the upstream when installed (as in ../shared/bench/run.sh), else the
        // in-process one (`E2E_UPSTREAM=inprocess` forces it).
        let nginx_upstream = if std::env::var("E2E_UPSTREAM").is_ok_and(|v| v == "inprocess") {
            None
        } else {
            start_nginx_upstream(&fx)
        };
        let upstream = match &nginx_upstream {
            Some((_, addr)) => *addr,
            None => start_upstream().await,
        };
        println!(
            "upstream: {}",
            if nginx_upstream.is_some() { "nginx, 1 worker on CPU 1 (return 200)" } else { "in-process hyper server" }
        );
        println!(
            "e2e: {connections} keep-alive connections, {seconds} s per scenario, {rounds} interleaved rounds; \
             gateway and nginx: 1 worker on CPU 0"
        );
        let nginx_port = free_port();
        let nginx = start_nginx(&fx, upstream, nginx_port, false);
        if nginx.is_none() {
            println!("(b) skipped: nginx is not installed (apt-get install -y nginx)");
        }
        let port = free_port();
        let gateway = start_gateway(&write_config(&fx, upstream, port, "{ store: memory }"), port);
        // (b log), (c log): both proxies with their access logs on, written to files.
        let nginx_logging_port = free_port();
        let nginx_logging = nginx.as_ref().and_then(|_| start_nginx(&fx, upstream, nginx_logging_port, true));
        let logging_port = free_port();
        let gateway_logging = start_gateway_logging(
            &write_config(&fx, upstream, logging_port, "{ store: memory }"),
            logging_port,
            &fx.dir.path().join("gateway-access.log"),
        );
        let h2 = Protocol::Http2 { streams: 8 };
        // (c0): another gateway binary (an earlier build) on the same route, measured in the
        // same rounds, for before/after comparisons within one run.
        let baseline = std::env::var("E2E_BASELINE_BIN").ok().map(|binary| {
            let port = free_port();
            (start_gateway_binary(&binary, &write_config(&fx, upstream, port, "{ store: memory }"), port), port)
        });
        let redis = if has("redis-server") {
            let redis_port = free_port();
            let redis = pinned("1", "redis-server")
                .args(["--port", &redis_port.to_string(), "--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            wait_for_port(redis_port);
            let port = free_port();
            let replay = format!("{{ store: redis, url: \"redis://127.0.0.1:{redis_port}/0\" }}");
            let gateway = start_gateway(&write_config(&fx, upstream, port, &replay), port);
            Some((redis, gateway, port))
        } else {
            println!("(d') skipped: redis-server is not installed (apt-get install -y redis-server)");
            None
        };
        let at = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
        let mtls_load = || Load::Mtls { token: fx.mtls_token.clone() };
        // Proofs carry `iat`, so each round signs its own just before it runs (off the clock).
        let dpop_load = || Load::Dpop {
            token: fx.dpop_token.clone(),
            proofs: Arc::new(proofs(&fx, 25_000 * seconds as usize)),
            next: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        };
        let (mut direct, mut via_nginx, mut mtls, mut dpop, mut dpop_redis) =
            (Series::default(), Series::default(), Series::default(), Series::default(), Series::default());
        let (mut baseline_mtls, mut baseline_dpop, mut baseline_h2) =
            (Series::default(), Series::default(), Series::default());
        let (mut nginx_logged, mut mtls_logged) = (Series::default(), Series::default());
        let (mut nginx_h2, mut mtls_h2) = (Series::default(), Series::default());
        for round in 1..=rounds {
            println!("round {round}/{rounds}");
            let o = run(&fx, upstream, None, Load::Upstream, connections, duration).await;
            report("(a) upstream direct", &o);
            direct.0.push(o);
            if let Some(child) = &nginx {
                let o = run(&fx, at(nginx_port), nginx_worker(child.id()), mtls_load(), connections, duration).await;
                report("(b) nginx mTLS proxy", &o);
                via_nginx.0.push(o);
            }
            let perf = (round == 1).then(|| profile(gateway.id(), "mtls", seconds)).flatten();
            let o = run(&fx, at(port), Some(gateway.id()), mtls_load(), connections, duration).await;
            finish_profile(perf);
            report("(c) gateway mTLS route", &o);
            mtls.0.push(o);
            let perf = (round == 1).then(|| profile(gateway.id(), "dpop", seconds)).flatten();
            let o = run(&fx, at(port), Some(gateway.id()), dpop_load(), connections, duration).await;
            finish_profile(perf);
            report("(d) gateway DPoP, memory", &o);
            dpop.0.push(o);
            if let Some(child) = &nginx_logging {
                let o = run(&fx, at(nginx_logging_port), nginx_worker(child.id()), mtls_load(), connections, duration)
                    .await;
                report("(b log) nginx, access log", &o);
                nginx_logged.0.push(o);
            }
            let o = run(&fx, at(logging_port), Some(gateway_logging.id()), mtls_load(), connections, duration).await;
            report("(c log) gateway, access log", &o);
            mtls_logged.0.push(o);
            if let Some(child) = &nginx {
                let o = run_over(&fx, at(nginx_port), nginx_worker(child.id()), mtls_load(), h2, connections, duration)
                    .await;
                report("(b h2) nginx, HTTP/2 x8", &o);
                nginx_h2.0.push(o);
            }
            let perf = (round == 1).then(|| profile(gateway.id(), "mtls-h2", seconds)).flatten();
            let o = run_over(&fx, at(port), Some(gateway.id()), mtls_load(), h2, connections, duration).await;
            finish_profile(perf);
            report("(c h2) gateway, HTTP/2 x8", &o);
            mtls_h2.0.push(o);
            if let Some((child, baseline_port)) = &baseline {
                let o = run(&fx, at(*baseline_port), Some(child.id()), mtls_load(), connections, duration).await;
                report("(c0) baseline mTLS route", &o);
                baseline_mtls.0.push(o);
                let o = run(&fx, at(*baseline_port), Some(child.id()), dpop_load(), connections, duration).await;
                report("(d0) baseline DPoP, memory", &o);
                baseline_dpop.0.push(o);
                let o =
                    run_over(&fx, at(*baseline_port), Some(child.id()), mtls_load(), h2, connections, duration).await;
                report("(c0 h2) baseline, HTTP/2 x8", &o);
                baseline_h2.0.push(o);
            }
            if let Some((_, redis_gateway, redis_gateway_port)) = &redis {
                let o = run(&fx, at(*redis_gateway_port), Some(redis_gateway.id()), dpop_load(), connections, duration)
                    .await;
                report("(d') gateway DPoP, Redis", &o);
                dpop_redis.0.push(o);
            }
        }
        if let Some(child) = nginx {
            stop(child);
        }
        stop(gateway);
        if let Some(child) = nginx_logging {
            stop(child);
        }
        stop(gateway_logging);
        if let Some((child, _)) = baseline {
            stop(child);
        }
        if let Some((redis, gateway, _)) = redis {
            stop(gateway);
            stop(redis);
        }

        // (f) Memory: a fresh gateway (no replay or token entries from the load above), then
        // nginx, each holding the same number of idle keep-alive connections.
        let idle_count = env_or("E2E_IDLE_CONNECTIONS", 10_000).min(descriptor_budget());
        let port = free_port();
        let admin_port = free_port();
        let config = write_config(&fx, upstream, port, "{ store: memory }");
        let yaml = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{yaml}admin:\n  address: 127.0.0.1:{admin_port}\n")).unwrap();
        let fresh = start_gateway(&config, port);
        let gateway_memory = idle_connections_rss(&fx, at(port), fresh.id(), idle_count, Some(admin_port)).await;
        stop(fresh);
        let nginx_memory = match start_nginx(&fx, upstream, nginx_port, false) {
            Some(child) => {
                let worker = nginx_worker(child.id()).unwrap_or(child.id());
                let memory = idle_connections_rss(&fx, at(nginx_port), worker, idle_count, None).await;
                stop(child);
                Some(memory)
            }
            None => None,
        };
        if let Some((child, _)) = nginx_upstream {
            stop(child);
        }

        let verify_rate = median((0..rounds).map(|_| es256_verify_rate()).collect());
        println!();
        direct.summary("(a) upstream direct");
        if !via_nginx.0.is_empty() {
            via_nginx.summary("(b) nginx mTLS proxy");
        }
        mtls.summary("(c) gateway mTLS route");
        dpop.summary("(d) gateway DPoP, memory");
        if !dpop_redis.0.is_empty() {
            dpop_redis.summary("(d') gateway DPoP, Redis");
        }
        if !nginx_logged.0.is_empty() {
            nginx_logged.summary("(b log) nginx, access log");
        }
        mtls_logged.summary("(c log) gateway, access log");
        if !nginx_h2.0.is_empty() {
            nginx_h2.summary("(b h2) nginx, HTTP/2 x8");
        }
        mtls_h2.summary("(c h2) gateway, HTTP/2 x8");
        if !baseline_mtls.0.is_empty() {
            baseline_mtls.summary("(c0) baseline mTLS route");
            baseline_dpop.summary("(d0) baseline DPoP, memory");
            baseline_h2.summary("(c0 h2) baseline, HTTP/2 x8");
        }
        println!("(e) ES256 verifies, one core  {verify_rate:>10.0} /s");
        report_memory("(f) gateway resident size", &gateway_memory);
        if let Some(memory) = nginx_memory {
            report_memory("(f) nginx worker resident", &memory);
        }
        // The physical limit of a DPoP request: nginx's proxying plus one signature verify
        // (the gateway's own mTLS rate stands in when nginx is not installed).
        let base = if via_nginx.0.is_empty() { &mtls } else { &via_nginx };
        let limits: Vec<f64> = base.0.iter().map(|o| 1.0 / (1.0 / o.rps() + 1.0 / verify_rate)).collect();
        let dpop_vs_limit = median(dpop.0.iter().zip(&limits).map(|(o, limit)| o.rps() / limit).collect());
        println!();
        println!("ratios (median over rounds of the ratio within each round):");
        if via_nginx.0.is_empty() {
            println!("upstream direct / gateway mTLS      {:>6.2} x  (load generator headroom)", direct.ratio(&mtls));
        } else {
            println!(
                "upstream direct / nginx             {:>6.2} x  (load generator headroom)",
                direct.ratio(&via_nginx)
            );
            println!("gateway mTLS / nginx                {:>6.2} x  (target >= 0.95)", mtls.ratio(&via_nginx));
            println!(
                "p99 gateway mTLS - nginx            {:>+6.2} ms (target <= +0.5)",
                median(mtls.0.iter().zip(&via_nginx.0).map(|(g, n)| g.percentile(0.99) - n.percentile(0.99)).collect())
            );
        }
        println!(
            "DPoP / limit                        {dpop_vs_limit:>6.2} x  (limit {:.0} req/s; target >= 0.90)",
            median(limits)
        );
        if !nginx_logged.0.is_empty() {
            println!(
                "gateway / nginx, access logs on     {:>6.2} x  (target >= 0.95)",
                mtls_logged.ratio(&nginx_logged)
            );
            println!("gateway / nginx, HTTP/2 x8          {:>6.2} x  (target >= 1.00)", mtls_h2.ratio(&nginx_h2));
        }
        println!(
            "access log cost, gateway            {:>+6.2} us/req (target <= +1; CPU with the log on - off)",
            median(mtls_logged.0.iter().zip(&mtls.0).map(|(on, off)| cpu_total(on) - cpu_total(off)).collect())
        );
        if !dpop_redis.0.is_empty() {
            println!("DPoP Redis / DPoP memory            {:>6.2} x  (target >= 0.85)", dpop_redis.ratio(&dpop));
        }
        if !baseline_mtls.0.is_empty() {
            println!("gateway mTLS / baseline mTLS        {:>6.2} x  (E2E_BASELINE_BIN)", mtls.ratio(&baseline_mtls));
            println!("gateway DPoP / baseline DPoP        {:>6.2} x", dpop.ratio(&baseline_dpop));
            println!("gateway HTTP/2 / baseline HTTP/2    {:>6.2} x", mtls_h2.ratio(&baseline_h2));
        }
        println!(
            "gateway RSS, {} idle connections  {:>6.1} MiB (target <= 64)",
            gateway_memory.2,
            gateway_memory.1 as f64 / 1024.0
        );
    });
}
