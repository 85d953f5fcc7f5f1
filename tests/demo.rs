//! `fapi-gateway demo` and `fapi-gateway dev-as` as a new user runs them: from the
//! repository, from any other folder (the bundled gateway.yaml goes to the data folder or
//! `--dir`, never the current folder), refusing before it writes anything, and the demo's
//! development authorization server handing out certificate- and DPoP-bound tokens to a
//! standard client (openid-client). The demo's ports are fixed (the bundled gateway.yaml),
//! so these tests take turns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fapi-gateway");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SCENARIOS: [&str; 6] = [
    "mTLS client with its own certificate",
    "stolen mTLS token, thief's certificate",
    "DPoP client (after use_dpop_nonce)",
    "the same DPoP proof replayed",
    "stolen DPoP token, thief's own key",
    "DPoP token downgraded to Bearer",
];

/// The login story's steps (a scripted browser against the bundled `login:` entry).
const LOGIN_STORY: [&str; 10] = [
    "browser: API call before logging in",
    "login: PAR, then 303 to the AS",
    "AS: consent page, Allow",
    "forged JARM response (attacker's key)",
    "genuine JARM response: session",
    "the same JARM response replayed",
    "API call through the session",
    "API call without X-CSRF (cross-site)",
    "logout",
    "the session cookie after logout",
];

/// The demo's ports are fixed: one demo at a time.
static PORTS: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    PORTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The command in `cwd`, with `home` as HOME and no variables that would change its choices.
fn gateway(cwd: &Path, home: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(cwd)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .env_remove("FAPI_GATEWAY_CONFIG")
        .env_remove("FAPI_GATEWAY_LOG")
        .env_remove("FAPI_GATEWAY_ADMIN_ADDRESS");
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_scenarios_played(output: &Output) {
    let out = text(&output.stdout);
    assert!(output.status.success(), "demo failed: {out}\n{}", text(&output.stderr));
    for line in SCENARIOS.iter().chain(&LOGIN_STORY) {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    // What the browser saw: the upstream got the session's DPoP token, never the cookie;
    // the forged response was refused for its signature.
    assert!(out.contains("upstream got Authorization: DPoP, DPoP proof: present, cookie: -"), "{out}");
    assert!(out.contains("error: jarm_bad_signature, no session"), "{out}");
    assert!(out.contains("Location: /app/, __Host-fapi-session=…; Path=/; Secure; HttpOnly; SameSite=Lax"), "{out}");
    assert!(out.contains("Every scenario ended as expected"), "{out}");
    assert!(
        out.contains(r#"DPoP error="invalid_dpop_proof", error_description="the DPoP proof was already used""#),
        "{out}"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn demo_once_plays_every_scenario_on_the_repository_files() {
    // The README's first command, in its non-interactive form, on the bundled files.
    let _turn = turn();
    let home = tempfile::tempdir().unwrap();
    let output = gateway(Path::new(REPO), home.path()).args(["demo", "--once"]).output().unwrap();
    assert_scenarios_played(&output);
    assert!(entries(home.path()).is_empty(), "the repository's own files are used: nothing in the data folder");
}

#[test]
fn demo_from_another_folder_uses_the_data_folder_and_leaves_the_current_one_alone() {
    let _turn = turn();
    let (cwd, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // `--workers` after the subcommand (issue 14.11).
    let output = gateway(cwd.path(), home.path()).args(["demo", "--once", "--workers", "1"]).output().unwrap();
    assert_scenarios_played(&output);
    assert!(entries(cwd.path()).is_empty(), "nothing is written into the current folder: {:?}", entries(cwd.path()));
    let data = home.path().join(".local/share/fapi-gateway/demo");
    assert_eq!(
        std::fs::read_to_string(data.join("gateway.yaml")).unwrap(),
        std::fs::read_to_string(Path::new(REPO).join("gateway.yaml")).unwrap(),
        "the bundled gateway.yaml"
    );
    for file in ["ca.pem", "server.pem", "server.key", "client.pem", "thief.pem", "dev-issuer.key", "login-client.key"]
    {
        assert!(data.join("certs").join(file).exists(), "{file} generated");
    }
    let out = text(&output.stdout);
    assert!(out.contains(&format!("demo folder {}", data.display())), "it says where it wrote: {out}");

    // A second run reuses them and still works.
    let again = gateway(cwd.path(), home.path()).args(["demo", "--once"]).output().unwrap();
    assert_scenarios_played(&again);
    assert!(!text(&again.stdout).contains("generated development certificates"), "{}", text(&again.stdout));
}

#[test]
fn demo_dir_holds_its_files_and_xdg_data_home_is_honoured() {
    let _turn = turn();
    let (cwd, home, xdg) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = cwd.path().join("my-demo");
    let output = gateway(cwd.path(), home.path()).args(["demo", "--once", "--dir"]).arg(&dir).output().unwrap();
    assert_scenarios_played(&output);
    assert_eq!(entries(cwd.path()), vec!["my-demo".to_string()]);
    assert_eq!(entries(&dir), vec!["certs".to_string(), "gateway.yaml".to_string()]);
    assert!(entries(home.path()).is_empty());

    let output =
        gateway(cwd.path(), home.path()).env("XDG_DATA_HOME", xdg.path()).args(["demo", "--once"]).output().unwrap();
    assert_scenarios_played(&output);
    assert!(xdg.path().join("fapi-gateway/demo/certs/ca.pem").exists());
    assert!(entries(home.path()).is_empty());
}

#[test]
fn demo_refuses_before_writing_anything() {
    let _turn = turn();
    let (cwd, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // A port of the bundled configuration is taken: nothing is written.
    let taken = std::net::TcpListener::bind("127.0.0.1:8443").unwrap();
    let output = gateway(cwd.path(), home.path()).args(["demo", "--once"]).output().unwrap();
    drop(taken);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let err = text(&output.stderr);
    assert!(err.contains("127.0.0.1:8443") && err.contains("something else"), "{err}");
    assert!(entries(home.path()).is_empty(), "nothing written: {:?}", entries(home.path()));
    assert!(entries(cwd.path()).is_empty());

    // A --config that does not exist: a usage error, nothing written.
    let output = gateway(cwd.path(), home.path()).args(["--config", "mine.yaml", "demo", "--once"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("mine.yaml does not exist"), "{}", text(&output.stderr));
    assert!(entries(home.path()).is_empty() && entries(cwd.path()).is_empty());

    // An invalid configuration in --dir: refused with its line, no certificates written.
    let dir = cwd.path().join("bad");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("gateway.yaml"), "listen: [\n").unwrap();
    let output = gateway(cwd.path(), home.path()).args(["demo", "--once", "--dir"]).arg(&dir).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("gateway.yaml:"), "{}", text(&output.stderr));
    assert_eq!(entries(&dir), vec!["gateway.yaml".to_string()]);
}

/// A running `demo` (not `--once`), stopped with SIGINT when dropped.
struct RunningDemo {
    child: Child,
}

impl RunningDemo {
    /// Starts it in `cwd` and waits for its hints (printed once everything listens).
    fn start(cwd: &Path, home: &Path) -> (RunningDemo, String) {
        let mut child = gateway(cwd, home)
            .args(["demo", "--workers", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut printed = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                printed.push_str(&line);
                printed.push('\n');
                if line.contains("Ctrl-C stops everything") {
                    let _ = tx.send(printed.clone());
                }
            }
        });
        let demo = RunningDemo { child };
        let printed = rx.recv_timeout(Duration::from_secs(60)).expect("the demo printed its hints");
        (demo, printed)
    }
}

impl Drop for RunningDemo {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sh(script: &str, cwd: &Path) -> Output {
    Command::new("bash").arg("-c").arg(script).current_dir(cwd).output().unwrap()
}

#[test]
fn the_printed_curl_hints_work_as_printed() {
    let _turn = turn();
    let (cwd, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_demo, printed) = RunningDemo::start(cwd.path(), home.path());
    // The hints, as a user pastes them: lines starting with two spaces, continuations joined.
    let hints = printed.split("Try it:").nth(1).unwrap().replace("\\\n", " ");
    let commands: Vec<&str> =
        hints.lines().map(str::trim).filter(|l| l.starts_with("TOKEN=") || l.starts_with("curl")).collect();
    assert_eq!(commands.len(), 4, "{hints}");
    let data = home.path().join(".local/share/fapi-gateway/demo/certs");
    assert!(
        commands[0].contains(&data.join("client.pem").display().to_string()),
        "absolute paths outside the cwd: {}",
        commands[0]
    );
    // The certificate-bound token from the development AS, used by its owner: 200 from the
    // upstream, which saw the token's subject.
    let own = sh(&format!("set -e; {}; {}", commands[0], commands[1]), cwd.path());
    assert!(own.status.success(), "{}", text(&own.stderr));
    assert!(text(&own.stdout).contains(r#""x-fapi-subject":"alice""#), "{}", text(&own.stdout));
    // The same token from the thief's certificate: 401 with the mTLS challenge.
    let stolen = sh(&format!("set -e; {}; {}", commands[0], commands[2]), cwd.path());
    let out = text(&stolen.stdout);
    assert!(out.starts_with("HTTP/2 401"), "{out}");
    assert!(out.contains("the client certificate does not match the one the token is bound to"), "{out}");
    let public = sh(commands[3], cwd.path());
    assert!(text(&public.stdout).starts_with("HTTP/2 200"), "{}", text(&public.stdout));
}

/// The folder of the openid-client example with its packages installed (`npm ci`).
fn dpop_client_example() -> PathBuf {
    let dir = Path::new(REPO).join("examples/dpop-client");
    let npm = Command::new("npm").args(["ci", "--silent", "--no-audit", "--no-fund"]).current_dir(&dir).output();
    match npm {
        Ok(out) if out.status.success() => dir,
        Ok(out) => panic!("npm ci in examples/dpop-client failed: {}", text(&out.stderr)),
        Err(e) => panic!("this test needs Node.js 20 and npm (apt-get install -y nodejs npm): {e}"),
    }
}

#[test]
fn a_standard_dpop_client_gets_a_token_from_the_demo_as_and_is_served() {
    let example = dpop_client_example();
    let _turn = turn();
    let home = tempfile::tempdir().unwrap();
    let (_demo, printed) = RunningDemo::start(Path::new(REPO), home.path());
    assert!(printed.contains("examples/dpop-client"), "{printed}");
    let run = |path: &str| {
        Command::new("node")
            .arg("dpop-client.mjs")
            .current_dir(&example)
            .env("NODE_EXTRA_CA_CERTS", Path::new(REPO).join("certs/ca.pem"))
            .env("RESOURCE_PATH", path)
            .output()
            .unwrap()
    };
    // openid-client: a DPoP-bound token from the token endpoint, then the payments route,
    // which demands a server nonce (the client retries by itself).
    let output = run("/payments/1");
    let out = text(&output.stdout);
    assert!(output.status.success(), "{out}\n{}", text(&output.stderr));
    assert!(out.contains("token: dpop (DPoP-bound)") && out.contains("-> 200"), "{out}");
    assert!(out.contains(r#""path":"/payments/1""#), "the upstream answered: {out}");
    // The accounts route wants mTLS-bound tokens: the DPoP token is refused there.
    let output = run("/accounts/1");
    assert!(!output.status.success());
    let out = text(&output.stdout);
    assert!(out.contains("-> 401") && out.contains(r#"error="invalid_token""#), "{out}\n{}", text(&output.stderr));
}

#[test]
fn dev_as_alone_serves_tokens_under_its_extra_host_names() {
    // `fapi-gateway dev-as`, as a compose file runs it: its certificate names the service.
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = Command::new(BIN)
        .args([
            "dev-as",
            "--address",
            &format!("127.0.0.1:{port}"),
            "--host",
            "dev-as",
            "--issuer",
            "https://issuer.test",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It prints its banner once the certificates exist and it listens.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("development authorization server") {
        banner.clear();
        assert!(stdout.read_line(&mut banner).unwrap() > 0, "dev-as ended before its banner");
    }
    let certs = dir.path();
    let curl = |extra: &str| {
        sh(
            &format!(
                "curl -s --max-time 5 --retry 20 --retry-connrefused --retry-delay 0 --resolve dev-as:{port}:127.0.0.1 --cacert {ca} {extra} https://dev-as:{port}/token",
                ca = certs.join("ca.pem").display()
            ),
            certs,
        )
    };
    let with_cert = curl(&format!(
        "--cert {} --key {} -d grant_type=client_credentials",
        certs.join("client.pem").display(),
        certs.join("client.key").display()
    ));
    let without = curl("-d grant_type=client_credentials");
    let wrong_grant = curl("-d grant_type=password");
    let metadata = sh(
        &format!(
            "curl -s --max-time 5 --resolve dev-as:{port}:127.0.0.1 --cacert {ca} https://dev-as:{port}/.well-known/oauth-authorization-server",
            ca = certs.join("ca.pem").display()
        ),
        certs,
    );
    let _ = child.kill();
    let _ = child.wait();
    let body: serde_json::Value = serde_json::from_slice(&with_cert.stdout).unwrap_or_else(|e| {
        panic!("{e}: {} {}", text(&with_cert.stdout), text(&with_cert.stderr));
    });
    assert_eq!(body["token_type"], "Bearer");
    // `--issuer` names the tokens' iss and the metadata's issuer; the metadata has the login
    // flow's endpoints on the origin that was called.
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    assert_eq!(metadata["issuer"], "https://issuer.test");
    assert_eq!(metadata["pushed_authorization_request_endpoint"], format!("https://dev-as:{port}/par"));
    assert_eq!(metadata["require_pushed_authorization_requests"], true);
    assert_eq!(body["scope"], "accounts:read payments:write");
    let payload = body["access_token"].as_str().unwrap().split('.').nth(1).unwrap().to_string();
    let claims: serde_json::Value =
        serde_json::from_slice(&fapi_gateway::jose::b64url_decode(&payload).unwrap()).unwrap();
    assert_eq!(claims["iss"], "https://issuer.test");
    let der = rustls_pki_types_first_cert(&certs.join("client.pem"));
    assert_eq!(
        claims["cnf"]["x5t#S256"],
        fapi_gateway::jose::b64url_encode(&fapi_gateway::jose::sha256(&der)),
        "bound to the client's certificate"
    );
    assert!(text(&without.stdout).contains(r#""error":"invalid_request""#), "{}", text(&without.stdout));
    assert!(text(&wrong_grant.stdout).contains(r#""error":"unsupported_grant_type""#), "{}", text(&wrong_grant.stdout));
}

fn rustls_pki_types_first_cert(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_file_iter(path).unwrap().next().unwrap().unwrap().to_vec()
}

#[allow(dead_code)]
#[path = "common/webdriver.rs"]
mod webdriver;

/// Polls `script` in the page until it returns something `done` accepts (10 s at most).
async fn wait_for(
    browser: &webdriver::Browser,
    script: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = browser.run(script).await;
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "`{script}` gave {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_person_logs_in_with_a_real_browser_at_the_printed_url() {
    // Headless Chromium over WebDriver does what the hint tells a person to do: open the
    // printed URL, Allow on the development AS's consent page, use the app, log out.
    let _turn = turn();
    let (cwd, home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_demo, printed) = RunningDemo::start(cwd.path(), home.path());
    let url = printed
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("https://") && l.contains("/auth/login?return_to="))
        .unwrap_or_else(|| panic!("no login URL among the hints: {printed}"))
        .to_string();
    assert_eq!(url, "https://localhost:8443/auth/login?return_to=/app/");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let browser = webdriver::Browser::start(&["gateway.localhost"]).await;
        let current = || async { browser.current_url().await };
        let text_of = |id: &str| format!("return document.getElementById('{id}').textContent");
        browser.go(&url).await;
        // The gateway pushed the request: only client_id and request_uri are in the URL.
        let consent = current().await;
        assert!(
            consent.starts_with("https://localhost:9443/authorize?client_id=demo-web&request_uri=urn"),
            "{consent}"
        );
        let page = browser.run("return document.body.innerText").await;
        assert!(page.as_str().unwrap().contains("demo-web asks to sign you in as alice"), "{page}");
        browser.run("document.getElementById('allow').click()").await;

        let status =
            wait_for(&browser, &text_of("status"), |v| v.as_str().is_some_and(|s| s.starts_with("Signed in"))).await;
        assert_eq!(current().await, "https://localhost:8443/app/");
        assert!(status.as_str().unwrap().contains("Signed in as alice (scope: openid accounts:read)"), "{status}");
        let cookies = browser.run("return document.cookie").await;
        assert_eq!(cookies, "", "the session cookie is HttpOnly and nothing else is kept");

        browser.run("document.getElementById('call').click()").await;
        let out = wait_for(&browser, &text_of("out"), |v| v.as_str().is_some_and(|s| s.contains("->"))).await;
        let out = out.as_str().unwrap();
        assert!(out.starts_with("GET /app/api/accounts/1 -> 200"), "{out}");
        assert!(out.contains(r#""authorization":"DPoP""#) && out.contains(r#""cookie":"-""#), "{out}");

        browser.run("document.getElementById('logout').click()").await;
        let back = wait_for(&browser, "return location.href", |v| {
            v.as_str().is_some_and(|u| u.starts_with("https://localhost:9443/logout"))
        })
        .await;
        assert!(
            back.as_str().unwrap().contains("post_logout_redirect_uri=https%3A%2F%2Flocalhost%3A8443%2Fapp%2F"),
            "{back}"
        );
        browser.run("document.getElementById('back').click()").await;
        wait_for(&browser, &text_of("status"), |v| v == "Not signed in.").await;
        assert_eq!(current().await, "https://localhost:8443/app/");
    });
}
