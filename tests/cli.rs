//! The `fapi-gateway` command: `check-config` prints a summary of a valid file and refuses
//! an invalid one with one actionable line and exit code 2; the run mode refuses an invalid
//! configuration before anything listens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_fapi-gateway");

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The command with a clean environment for the variables it reads.
fn gateway() -> Command {
    let mut command = Command::new(BIN);
    command.env_remove("FAPI_GATEWAY_CONFIG").env_remove("FAPI_GATEWAY_LOG");
    command
}

fn check_config(file: &Path) -> Output {
    gateway().arg("check-config").arg(file).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Asserts exit code 2 and a single-line error on stderr mentioning every one of `needles`,
/// and that nothing claims success on stdout.
fn assert_refused(output: &Output, needles: &[&str]) -> String {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected on stderr: {err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} missing from {err:?}");
    }
    assert!(!stdout(output).contains("OK"), "{}", stdout(output));
    err
}

/// A valid configuration in the PKI's temp dir: the PKI's server certificate and key, one
/// issuer with a JWKS file, a protected and a public route. Returns its path.
fn write_valid_config(pki: &TestPki, port: u16) -> PathBuf {
    let jwks = serde_json::json!({ "keys": [Signer::es256("k").public_jwk()] });
    let jwks_path = write_file(pki.dir(), "jwks.json", &jwks.to_string());
    let text = valid_config_text(pki, port, &jwks_path);
    write_file(pki.dir(), "gateway.yaml", &text)
}

fn valid_config_text(pki: &TestPki, port: u16, jwks: &Path) -> String {
    format!(
        r#"listen:
  address: 127.0.0.1:{port}
  public_url: https://gateway.test
  tls:
    cert: {cert}
    key: {key}
issuers:
  - issuer: https://as.test
    jwks_file: {jwks}
    audiences: [https://api.test]
routes:
  - name: accounts
    match: {{ path_prefix: /accounts, methods: [GET] }}
    upstream: http://127.0.0.1:9
    binding: mtls
    scopes: [accounts:read]
  - name: open-data
    match: {{ path_prefix: /open }}
    upstream: http://127.0.0.1:9
    auth: none
"#,
        cert = pki.server_cert_path().display(),
        key = pki.server_key_path().display(),
        jwks = jwks.display(),
    )
}

/// Waits for `child` to exit (at most `limit`), killing it and failing otherwise.
fn wait_for_exit(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("the gateway was still running after {limit:?}; stderr: {}", stderr(&output));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn run_with_config(file: &Path) -> Output {
    let child = gateway()
        .arg("--config")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_exit(child, Duration::from_secs(10))
}

fn assert_port_free(port: u16) {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("port {port} is taken after the gateway exited: {e}"));
}

// ---------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------

#[test]
fn check_config_accepts_a_valid_file_and_summarises_its_routes() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let output = check_config(&file);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}{}", stderr(&output));
    assert!(out.contains(&format!("{}: OK", file.display())), "{out}");
    let route = |name: &str| {
        out.lines()
            .find(|l| l.starts_with("route") && l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no summary line for route {name}: {out}"))
            .to_string()
    };
    let accounts = route("accounts");
    assert!(accounts.contains("/accounts"), "{accounts}");
    assert!(accounts.contains("[GET]"), "{accounts}");
    assert!(accounts.contains("http://127.0.0.1:9"), "{accounts}");
    assert!(accounts.contains("binding: mtls, scopes: accounts:read"), "{accounts}");
    let open = route("open-data");
    assert!(open.contains("/open"), "{open}");
    assert!(open.contains("auth: none"), "{open}");
    assert!(out.contains("https://as.test"), "{out}");
}

#[test]
fn check_config_reads_the_file_from_config_flag_or_environment() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let output = gateway().arg("--config").arg(&file).arg("check-config").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("{}: OK", file.display())));
    let output = gateway().env("FAPI_GATEWAY_CONFIG", &file).arg("check-config").output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains(&format!("{}: OK", file.display())));
}

#[test]
fn check_config_shows_scopes_as_written() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let text = std::fs::read_to_string(&file).unwrap().replace("scopes: [accounts:read]", "scopes: [Accounts:Read]");
    std::fs::write(&file, text).unwrap();
    let output = check_config(&file);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.contains("scopes: Accounts:Read"), "{out}");
}

#[test]
fn check_config_names_file_line_column_and_key_of_an_unknown_key() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let text =
        std::fs::read_to_string(&file).unwrap().replace("    binding: mtls\n", "    binding: mtls\n    bindng: mtls\n");
    let line = text.lines().position(|l| l == "    bindng: mtls").unwrap() + 1;
    std::fs::write(&file, &text).unwrap();
    let output = check_config(&file);
    let location = format!("{}:{line}:5", file.display());
    let err = assert_refused(&output, &[&location, "bindng"]);
    assert!(err.contains("routes[0]"), "{err}");
}

#[test]
fn check_config_on_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.yaml");
    let output = check_config(&file);
    assert_refused(&output, &[&file.display().to_string()]);
}

#[test]
fn check_config_names_a_missing_tls_key_file() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let missing = pki.dir().join("missing.key");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&pki.server_key_path().display().to_string(), &missing.display().to_string());
    std::fs::write(&file, text).unwrap();
    let output = check_config(&file);
    assert_refused(&output, &[&missing.display().to_string()]);
}

#[test]
fn repository_gateway_yaml_passes_check_config() {
    let file = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml"));
    assert!(file.exists(), "{} does not exist", file.display());
    let output = check_config(file);
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("OK"));
}

// ---------------------------------------------------------------------------------------
// Run mode
// ---------------------------------------------------------------------------------------

#[test]
fn run_refuses_an_invalid_config_with_exit_code_2_before_listening() {
    let pki = TestPki::new();
    let port = free_port();
    let file = write_valid_config(&pki, port);
    let text =
        std::fs::read_to_string(&file).unwrap().replace("  public_url:", "  public_ur1: https://x.test\n  public_url:");
    std::fs::write(&file, text).unwrap();
    let output = run_with_config(&file);
    assert_refused(&output, &[&format!("{}:3:", file.display()), "public_ur1"]);
    assert_port_free(port);
}

#[test]
fn run_refuses_a_missing_tls_key_before_listening() {
    let pki = TestPki::new();
    let port = free_port();
    let file = write_valid_config(&pki, port);
    let missing = pki.dir().join("missing.key");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&pki.server_key_path().display().to_string(), &missing.display().to_string());
    std::fs::write(&file, text).unwrap();
    let output = run_with_config(&file);
    let err = stderr(&output);
    // main.rs documents 1 for "failed to start" and 2 for "invalid configuration";
    // check-config says 2 for the same file.
    assert!(matches!(output.status.code(), Some(1 | 2)), "{:?}: {err}", output.status);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert_port_free(port);
}

#[test]
fn missing_jwks_file_is_refused_by_check_config_and_at_start() {
    let pki = TestPki::new();
    let port = free_port();
    let file = write_valid_config(&pki, port);
    std::fs::remove_file(pki.dir().join("jwks.json")).unwrap();
    let jwks = pki.dir().join("jwks.json").display().to_string();
    let output = check_config(&file);
    assert_refused(&output, &["issuer https://as.test", &jwks]);
    let output = run_with_config(&file);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains(&jwks), "{}", stderr(&output));
    assert_port_free(port);
}

#[test]
fn unusable_upstream_ca_is_refused_by_check_config() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("    binding: mtls\n", "    binding: mtls\n    upstream_ca: /nonexistent/ca.pem\n");
    std::fs::write(&file, text).unwrap();
    assert_refused(&check_config(&file), &["route accounts", "/nonexistent/ca.pem"]);
}

#[test]
fn a_port_in_use_is_named_in_one_line() {
    let pki = TestPki::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let file = write_valid_config(&pki, port);
    let output = run_with_config(&file);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    let line = err.lines().find(|l| l.starts_with("error:")).expect("an error line");
    assert!(line.contains(&format!("127.0.0.1:{port}")) && line.contains("another process"), "{err}");
}

#[test]
fn a_certificate_and_key_that_do_not_match_are_named() {
    let pki = TestPki::new();
    let port = free_port();
    let file = write_valid_config(&pki, port);
    let other = pki.self_signed_client("other");
    let other_key = write_file(pki.dir(), "other.key", &other.key_pem);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace(&pki.server_key_path().display().to_string(), &other_key.display().to_string());
    std::fs::write(&file, text).unwrap();
    let output = run_with_config(&file);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("cannot be used together") && err.contains("other.key"), "{err}");
    assert_port_free(port);
}

#[test]
fn healthcheck_reports_the_admin_listener() {
    let pki = TestPki::new();
    let port = free_port();
    let admin = free_port();
    let file = write_valid_config(&pki, port);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{text}admin:\n  address: 127.0.0.1:{admin}\n")).unwrap();
    // Nothing listens yet: unhealthy.
    let down = gateway().args(["healthcheck", "--address", &format!("127.0.0.1:{admin}")]).output().unwrap();
    assert_eq!(down.status.code(), Some(1));
    let mut child = gateway().arg("--config").arg(&file).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut healthy = false;
    for _ in 0..100 {
        let up = gateway().args(["healthcheck", "--address", &format!("127.0.0.1:{admin}")]).output().unwrap();
        if up.status.success() {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy, "healthcheck must succeed once the gateway serves /healthz");
}

#[tokio::test]
async fn logs_to_a_pipe_have_no_colour_codes_and_the_last_lines_are_written_at_exit() {
    init();
    let pki = TestPki::new();
    let port = free_port();
    let config = write_valid_config(&pki, port);
    let admin = format!("127.0.0.1:{}", free_port());
    let child = gateway()
        .arg("--config")
        .arg(&config)
        .args(["--admin-address", &admin])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let http = client(&pki, addr, None, false);
    let mut answered = false;
    for _ in 0..100 {
        // The open-data route's upstream refuses connections: 502, and an access line.
        if let Ok(response) = http.get(gateway_url(addr, "/open/x")).send().await {
            assert_eq!(response.status(), 502);
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "gateway up");
    // At once: the access line is still in the log buffer when SIGTERM comes.
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || wait_for_exit(child, Duration::from_secs(10))).await.unwrap();
    let err = stderr(&output);
    assert!(!err.contains('\u{1b}'), "no ANSI escapes when stderr is not a terminal: {err:?}");
    assert!(err.contains("path=\"/open/x\" status=502"), "the access line was written before exit: {err}");
    assert!(err.contains("all connections drained"), "{err}");
    // Values as a person writes them, not Rust's debug text (issue 14.7).
    assert!(err.contains(&format!("admin={admin}")), "{err}");
    for debug_text in ["Some(", "None", "Ok(", "Err(", "{ "] {
        assert!(!err.contains(debug_text), "{debug_text:?} in the log: {err}");
    }
}

#[test]
fn healthcheck_probes_the_admin_listener_of_the_config_it_is_given() {
    // Two configurations, one gateway: a healthcheck of the stopped one's file must fail
    // even though another gateway answers on its own admin port (issue 14.2).
    let pki = TestPki::new();
    let (running_admin, stopped_admin) = (free_port(), free_port());
    let with_admin = |name: &str, admin: u16| {
        let file = write_valid_config(&pki, free_port());
        let text = std::fs::read_to_string(&file).unwrap();
        write_file(pki.dir(), name, &format!("{text}admin:\n  address: 127.0.0.1:{admin}\n"))
    };
    let running = with_admin("running.yaml", running_admin);
    let stopped = with_admin("stopped.yaml", stopped_admin);
    let mut child =
        gateway().arg("--config").arg(&running).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let check = |file: &Path| gateway().arg("--config").arg(file).arg("healthcheck").output().unwrap();
    let mut healthy = false;
    for _ in 0..100 {
        if check(&running).status.success() {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let down = check(&stopped);
    // `--address` takes a host name too.
    let by_name = gateway().args(["healthcheck", "--address", &format!("localhost:{running_admin}")]).output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(healthy, "the running gateway's own file: healthy");
    assert_eq!(down.status.code(), Some(1), "{}", stderr(&down));
    assert!(stderr(&down).contains(&format!("127.0.0.1:{stopped_admin}")), "{}", stderr(&down));
    assert!(by_name.status.success(), "{}", stderr(&by_name));

    // A file without an admin listener cannot be probed: said so, exit 2.
    let plain = write_valid_config(&pki, free_port());
    let refused = check(&plain);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("no admin listener"), "{}", stderr(&refused));
}

#[test]
fn every_config_problem_is_listed_once_with_a_count() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("    binding: mtls\n", "    bindng: mtls\n")
        .replace("    auth: none\n", "    auth: none\n    timeout: 1.5x\n");
    std::fs::write(&file, text + "limits:\n  max_connections: 0\n").unwrap();
    for output in [check_config(&file), run_with_config(&file)] {
        assert_eq!(output.status.code(), Some(2));
        let err = stderr(&output);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(lines[0].starts_with("error: ") && lines[0].contains(":15:5: routes[0].bindng: unknown key"), "{err}");
        assert!(
            lines[1].starts_with("error: ") && lines[1].contains(":21:14: routes[1].timeout: duration `1.5x`"),
            "{err}"
        );
        assert_eq!(lines[2], "2 problems: fix them all, then run check-config again", "{err}");
    }
}

#[test]
fn a_missing_file_names_its_key_and_line() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let key = pki.server_key_path().display().to_string();
    let text = std::fs::read_to_string(&file).unwrap().replace(&key, "/nonexistent/server.key");
    std::fs::write(&file, text).unwrap();
    let expected = format!("error: {}:6:5: listen.tls.key: ", file.display());
    let err = assert_refused(&check_config(&file), &["/nonexistent/server.key"]);
    assert!(err.starts_with(&expected), "{err}");
    let output = run_with_config(&file);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.lines().any(|l| l.starts_with(&expected) && l.contains("/nonexistent/server.key")), "{err}");
}

#[test]
fn admin_address_flag_overrides_the_file_for_run_and_healthcheck() {
    let pki = TestPki::new();
    let file = write_valid_config(&pki, free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let child = gateway()
        .arg("--config")
        .arg(&file)
        .env("FAPI_GATEWAY_ADMIN_ADDRESS", &admin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let healthy = loop {
        let probe =
            gateway().args(["healthcheck", "--admin-address", &admin]).arg("--config").arg(&file).output().unwrap();
        if probe.status.success() || Instant::now() > deadline {
            break probe;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // A container's `0.0.0.0:port` is probed on loopback.
    let port = admin.rsplit(':').next().unwrap();
    let unspecified = gateway().args(["healthcheck", "--address", &format!("0.0.0.0:{port}")]).output().unwrap();
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let output = wait_for_exit(child, Duration::from_secs(20));
    assert!(healthy.status.success(), "{}\n{}", stderr(&healthy), stderr(&output));
    assert!(unspecified.status.success(), "{}", stderr(&unspecified));
    assert!(stderr(&output).contains(&admin), "the admin listener is logged on the overriding address");
    // Without the override the file has no admin listener: the healthcheck says so.
    let probe = gateway().arg("healthcheck").arg("--config").arg(&file).output().unwrap();
    assert_eq!(probe.status.code(), Some(2), "{}", stderr(&probe));
}

#[test]
fn version_names_the_git_revision_and_completions_and_manpage_are_generated() {
    let version = stdout(&gateway().arg("--version").output().unwrap());
    // `fapi-gateway 0.2.0 (1a2b3c4d5e6f)`: the crate version and the revision built.
    let expected = format!("fapi-gateway {} (", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected) && version.trim_end().ends_with(')'), "{version}");
    let revision = version.trim_end().trim_end_matches(')').rsplit('(').next().unwrap().to_string();
    assert!(revision == "unknown" || revision.bytes().all(|b| b.is_ascii_hexdigit()), "{revision}");

    let bash = gateway().args(["completions", "bash"]).output().unwrap();
    assert!(bash.status.success());
    for word in ["check-config", "healthcheck", "demo", "dev-as", "--admin-address"] {
        assert!(stdout(&bash).contains(word), "{word} missing from the bash completions");
    }
    let man = gateway().arg("manpage").output().unwrap();
    assert!(man.status.success());
    let man = stdout(&man);
    assert!(man.contains(".TH fapi-gateway 1") && man.contains("FAPI_GATEWAY_LOG"), "{man}");
    // The help says what no subcommand does, and lists signals and exit codes.
    let help = stdout(&gateway().arg("--help").output().unwrap());
    for part in ["Without a subcommand the gateway runs", "SIGHUP", "SIGTERM", "Exit codes:", "NO_COLOR"] {
        assert!(help.contains(part), "{part} missing from --help");
    }
}
