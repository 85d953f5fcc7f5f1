//! A real `redis-server` for the shared-replay-store tests: started on an ephemeral loopback
//! port without persistence, stopped (killed) on drop. `.ci/run` installs the package.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// What to do when `redis-server` is missing: said once per test binary, by its
/// `redis_server_is_installed` test, which fails; the tests that need the server return
/// early instead of each failing with the same panic.
pub const MISSING: &str = "redis-server is not installed, and the shared-replay tests need a real one: \
     `apt-get install -y redis-server` (or set REDIS_SERVER to its path); .ci/run installs it";

/// Whether `redis-server` runs here (checked once per test binary).
pub fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED
        .get_or_init(|| Command::new(binary()).arg("--version").output().is_ok_and(|output| output.status.success()))
}

/// For a test that needs Redis: `true` (with a one-line note) when it must stop because
/// redis-server is missing. The binary's `redis_server_is_installed` test fails then.
pub fn missing() -> bool {
    let missing = !installed();
    if missing {
        eprintln!("not run: redis-server is missing (see the failure of redis_server_is_installed)");
    }
    missing
}

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Extra `redis-server` arguments (TLS, password).
    extra: Vec<String>,
    tls: bool,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = RedisServer { port, child: None, extra: Vec::new(), tls: false };
        server.restart().await;
        server
    }

    /// A TLS-only server (certificate of `pki`, for `localhost`) that demands `password`.
    pub async fn start_tls(pki: &super::TestPki, password: &str) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let path = |p: std::path::PathBuf| p.display().to_string();
        let extra = vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(pki.server_cert_path()),
            "--tls-key-file".into(),
            path(pki.server_key_path()),
            "--tls-ca-cert-file".into(),
            path(pki.ca_pem_path()),
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            password.to_string(),
        ];
        let mut server = RedisServer { port, child: None, extra, tls: true };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.kill();
        let plain_port = if self.tls { "0".to_string() } else { self.port.to_string() };
        let child = Command::new(binary())
            .args(["--port", &plain_port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it with `apt-get install -y redis-server`")
            });
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string())
}

/// A `redis-server` (or Sentinel) started with arbitrary arguments in its own folder, for
/// the cluster and Sentinel tests; killed on drop.
pub struct RedisProcess {
    pub port: u16,
    child: Option<Child>,
    args: Vec<String>,
    dir: std::path::PathBuf,
}

impl RedisProcess {
    /// `redis-server --port PORT --bind 127.0.0.1 --dir DIR ARGS…` on a free port.
    pub async fn start(dir: &std::path::Path, args: &[String]) -> RedisProcess {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut process = RedisProcess { port, child: None, args: args.to_vec(), dir };
        process.restart().await;
        process
    }

    /// A Sentinel on a free port watching `master_port` as `name` (quorum 1, a primary is
    /// down after 1 s).
    pub async fn sentinel(dir: &std::path::Path, name: &str, master_port: u16) -> RedisProcess {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {name} 1000\nsentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut process = RedisProcess { port, child: None, args: vec!["--sentinel".into()], dir };
        process.spawn(&[conf.display().to_string()]).await;
        process
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and folder (a cluster node keeps its nodes.conf).
    pub async fn restart(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.display().to_string();
        let lead = ["--port", &port, "--bind", "127.0.0.1", "--dir", &dir, "--save", "", "--appendonly", "no"];
        self.spawn(&lead.map(str::to_string)).await;
    }

    async fn spawn(&mut self, lead: &[String]) {
        self.kill();
        let child = Command::new(binary())
            .args(lead)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server ({e}): {MISSING}"));
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    /// `redis-cli -p PORT ARGS…`, its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -h 127.0.0.1 -p PORT ARGS…`, its standard output (trimmed).
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): it comes with redis-server (redis-tools)"));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
