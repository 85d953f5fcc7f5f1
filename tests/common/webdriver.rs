//! A real headless Chromium driven over W3C WebDriver (Debian's `chromium` and
//! `chromium-driver`), for the login mode's browser test: a few commands over HTTP to a
//! `chromedriver` this module starts on a loopback port and stops on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How to install what this needs.
pub const CHROMIUM_MISSING: &str = "the browser test needs Chromium and its driver: \
     `apt-get install -y chromium chromium-driver` (.ci/run installs them)";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose `host` names resolve to 127.0.0.1,
    /// accepting the test certificates.
    pub async fn start(hosts: &[&str]) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run chromedriver ({e}): {CHROMIUM_MISSING}"));
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let rules: Vec<String> = hosts.iter().map(|h| format!("MAP {h} 127.0.0.1")).collect();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--host-resolver-rules={}", rules.join(", ")),
        ];
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": { "binary": binary, "args": args },
        }}});
        let created = send_json(http.post(format!("{base}/session")), Some(&capabilities)).await;
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created} ({CHROMIUM_MISSING})"))
            .to_string();
        Browser { driver, base, session, http, _profile: profile }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let answer = send_json(self.http.request(method, url), body.as_ref()).await;
        if answer["value"].get("error").is_some() {
            panic!("WebDriver {path}: {answer}");
        }
        answer["value"].clone()
    }

    /// Navigates and waits for the page to load (following every redirect).
    pub async fn go(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn current_url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` in the page; it calls `done(value)` (its last argument) when finished.
    pub async fn run_async(&self, script: &str) -> Value {
        let body = json!({ "script": format!("const done = arguments[arguments.length - 1]; {script}"), "args": [] });
        self.command(reqwest::Method::POST, "/execute/async", Some(body)).await
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": [] }))).await
    }
}

/// Sends `body` as JSON (reqwest's `json` feature is off) and parses the JSON answer.
async fn send_json(request: reqwest::RequestBuilder, body: Option<&Value>) -> Value {
    let request = match body {
        Some(body) => request.header("content-type", "application/json").body(body.to_string()),
        None => request,
    };
    let text = request.send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("WebDriver answered {text:?}: {e}"))
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Close Chromium through the driver first (killing the driver would orphan it).
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://").to_string();
        if let Ok(mut tcp) = std::net::TcpStream::connect(&address) {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if tcp.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
