//! `/metrics` as an operator scrapes it (issue 14.8): build information, process metrics,
//! series present at 0 before their first event, latency buckets that cover the route
//! timeouts, TLS handshake failures by reason, reloads, and certificate expiry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use fapi_gateway::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn scrape(env: &Env) -> String {
    let addr = env.gateway.as_ref().unwrap().admin_addr().expect("admin listener");
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let response = client.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the sample line that begins with `series` (a name, with its labels if any)
/// followed by a space.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Scrapes until `series` has `want` (the gateway counts a failed handshake in the
/// connection's task, after the client has seen the failure); the last scrape.
async fn scrape_until(env: &Env, series: &str, want: f64) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = scrape(env).await;
        if value(&text, series) == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text
}

/// The rcgen default `notAfter` (the test PKI's certificates keep it).
fn rcgen_default_not_after() -> f64 {
    rcgen::CertificateParams::default().not_after.unix_timestamp() as f64
}

#[tokio::test]
async fn a_fresh_gateway_reports_build_process_and_zeroed_series() {
    let env = Env::start_with(Options {
        admin: true,
        tls_extra: "    client_ca: {client_ca}\n".into(),
        ..Default::default()
    })
    .await;
    let text = scrape(&env).await;

    // Build information.
    let version = env!("CARGO_PKG_VERSION");
    let build = text.lines().find(|l| l.starts_with("fapi_gateway_build_info{")).expect("build_info line");
    assert!(build.starts_with(&format!(r#"fapi_gateway_build_info{{version="{version}",revision=""#)), "{build}");
    assert!(build.ends_with("} 1"), "{build}");

    // Process metrics, unprefixed, with plausible values.
    let cpu = value(&text, "process_cpu_seconds_total").expect("process_cpu_seconds_total");
    let resident = value(&text, "process_resident_memory_bytes").expect("process_resident_memory_bytes");
    let virtual_bytes = value(&text, "process_virtual_memory_bytes").expect("process_virtual_memory_bytes");
    let open = value(&text, "process_open_fds").expect("process_open_fds");
    let max = value(&text, "process_max_fds").expect("process_max_fds");
    let start = value(&text, "process_start_time_seconds").expect("process_start_time_seconds");
    assert!(cpu > 0.0, "{cpu}");
    assert!(resident > 1024.0 * 1024.0 && virtual_bytes >= resident, "{resident} {virtual_bytes}");
    assert!(open > 0.0 && max >= open, "{open} {max}");
    let now = unix_now();
    assert!(start > now - 86_400.0 && start <= now + 1.0, "{start} vs {now}");

    // Series that exist before their first event.
    for series in [
        r#"fapi_gateway_upstream_errors_total{route="refused",status="502",reason="upstream_unavailable"}"#,
        r#"fapi_gateway_upstream_errors_total{route="refused",status="504",reason="upstream_timeout"}"#,
        r#"fapi_gateway_upstream_errors_total{route="bearer",status="502",reason="upstream_unavailable"}"#,
        r#"fapi_gateway_tls_handshake_failures_total{reason="not_tls"}"#,
        r#"fapi_gateway_tls_handshake_failures_total{reason="bad_certificate"}"#,
        r#"fapi_gateway_tls_handshake_failures_total{reason="timeout"}"#,
        r#"fapi_gateway_tls_handshake_failures_total{reason="peer_closed"}"#,
        r#"fapi_gateway_config_reloads_total{result="success"}"#,
        r#"fapi_gateway_config_reloads_total{result="failure"}"#,
        r#"fapi_gateway_dpop_replay_refusals_total{reason="replayed"}"#,
        "fapi_gateway_draining",
    ] {
        assert_eq!(value(&text, series), Some(0.0), "`{series}` at 0 in:\n{text}");
    }
    let loaded = value(&text, "fapi_gateway_config_last_reload_success_timestamp_seconds").expect("last reload");
    assert!(loaded > now - 600.0 && loaded <= now + 1.0, "{loaded} vs {now}");

    // The latency histograms reach past the default route timeout (30 s).
    let top = text
        .lines()
        .filter(|l| l.starts_with("fapi_gateway_upstream_duration_seconds_bucket{") && l.contains(r#"route="bearer""#))
        .filter_map(|l| l.split(r#"le=""#).nth(1)?.split('"').next()?.parse::<f64>().ok())
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max);
    assert!(top >= 30.0, "top finite bucket {top}");
    assert!(text.contains(r#"fapi_gateway_gateway_duration_seconds_bucket{le="52.4288",route="mtls"} 0"#), "{text}");

    // Certificate expiry: the generated certificates' notAfter.
    let server = format!(
        r#"fapi_gateway_certificate_expiry_timestamp_seconds{{kind="server",name="{}"}}"#,
        env.pki.server_cert_path().display()
    );
    let client_ca = format!(
        r#"fapi_gateway_certificate_expiry_timestamp_seconds{{kind="client_ca",name="{}"}}"#,
        env.pki.client_ca_pem_path().display()
    );
    assert_eq!(value(&text, &server), Some(rcgen_default_not_after()), "{text}");
    assert_eq!(value(&text, &client_ca), Some(rcgen_default_not_after()), "{text}");
}

#[tokio::test]
async fn failed_handshakes_are_counted_by_reason() {
    let env = Env::start_with(Options {
        admin: true,
        tls_extra: "    client_ca: {client_ca}\n".into(),
        listen_extra: "  handshake_timeout: 1s\n".into(),
        ..Default::default()
    })
    .await;
    let series = |reason: &str| format!(r#"fapi_gateway_tls_handshake_failures_total{{reason="{reason}"}}"#);

    // Plain HTTP to the TLS port.
    let mut tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    tcp.write_all(b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
    let text = scrape_until(&env, &series("not_tls"), 1.0).await;
    assert_eq!(value(&text, &series("not_tls")), Some(1.0), "{text}");

    // A client certificate that does not chain to client_ca.
    let stranger = env.pki.self_signed_client("stranger");
    let config = env.pki.rustls_client_config(Some(&stranger), &[b"http/1.1"]);
    if let Ok(mut tls) = common::raw::try_connect(env.addr, config, GATEWAY_HOST).await {
        // TLS 1.3: the client is done before the server has judged its certificate; the
        // refusal arrives as an alert on the first read.
        let _ = tls.write_all(b"GET /public/x HTTP/1.1\r\nHost: gateway.test\r\n\r\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut sink)).await;
    }
    let text = scrape_until(&env, &series("bad_certificate"), 1.0).await;
    assert_eq!(value(&text, &series("bad_certificate")), Some(1.0), "{text}");

    // A certificate from client_ca is accepted, and not counted.
    let member = env.pki.ca_signed_client("member");
    assert_eq!(env.get("/public/x", Some(&member), None).await.status(), 200);

    // A client that connects and closes; one that connects and sends nothing.
    drop(tokio::net::TcpStream::connect(env.addr).await.unwrap());
    let text = scrape_until(&env, &series("peer_closed"), 1.0).await;
    assert_eq!(value(&text, &series("peer_closed")), Some(1.0), "{text}");
    let silent = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let text = scrape_until(&env, &series("timeout"), 1.0).await;
    assert_eq!(value(&text, &series("timeout")), Some(1.0), "{text}");
    drop(silent);

    assert_eq!(value(&text, &series("not_tls")), Some(1.0), "{text}");
    assert_eq!(value(&text, &series("bad_certificate")), Some(1.0), "{text}");
    assert_eq!(value(&text, &series("other")), Some(0.0), "{text}");
}

/// A PEM file with two self-signed certificates expiring at `first` and `second`
/// (y, m, d); returns the path and the earlier instant.
fn two_certificates(dir: &std::path::Path, first: (i32, u8, u8), second: (i32, u8, u8)) -> (std::path::PathBuf, f64) {
    let mut pem = String::new();
    let mut earliest = f64::MAX;
    for (y, m, d) in [first, second] {
        let mut params = rcgen::CertificateParams::new(vec!["upstream.test".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(y, m, d);
        earliest = earliest.min(params.not_after.unix_timestamp() as f64);
        let key = rcgen::KeyPair::generate().unwrap();
        pem.push_str(&params.self_signed(&key).unwrap().pem());
    }
    (write_file(dir, "upstream-ca.pem", &pem), earliest)
}

#[tokio::test]
async fn reloads_are_counted_and_refresh_certificate_expiry() {
    let env = Env::start_with(Options { admin: true, ..Default::default() }).await;
    let gateway = env.gateway.as_ref().unwrap();
    let success = r#"fapi_gateway_config_reloads_total{result="success"}"#;
    let failure = r#"fapi_gateway_config_reloads_total{result="failure"}"#;
    let loaded = "fapi_gateway_config_last_reload_success_timestamp_seconds";
    let upstream_ca = r#"fapi_gateway_certificate_expiry_timestamp_seconds{kind="upstream_ca",name="added"}"#;
    let before = scrape(&env).await;
    let started = value(&before, loaded).unwrap();
    assert_eq!(value(&before, upstream_ca), None);

    // A good reload: a new route with an upstream CA file of two certificates.
    let (ca, earliest) = two_certificates(env.pki.dir(), (2040, 1, 1), (2031, 7, 15));
    let added = format!(
        "{}  - {{ name: added, match: {{ path_prefix: /added }}, upstream: {}, upstream_ca: {}, auth: none }}\n",
        env.yaml,
        env.upstream.url(),
        ca.display()
    );
    gateway.reload(Config::from_yaml(&added, "t.yaml", env.pki.dir()).unwrap()).await.unwrap();
    let text = scrape(&env).await;
    assert_eq!(value(&text, success), Some(1.0), "{text}");
    assert_eq!(value(&text, failure), Some(0.0), "{text}");
    assert!(value(&text, loaded).unwrap() >= started);
    assert_eq!(value(&text, upstream_ca), Some(earliest), "the earlier of the file's two: {text}");
    assert_eq!(earliest, 1_941_840_000.0, "2031-07-15T00:00:00Z");
    assert_eq!(
        value(&text, r#"fapi_gateway_upstream_errors_total{route="added",status="504",reason="upstream_timeout"}"#),
        Some(0.0)
    );

    // Refused reloads: one the handle refuses, one the caller found invalid (SIGHUP's path).
    let moved = env.yaml.replace("address: 127.0.0.1:0", "address: 127.0.0.1:1");
    assert!(gateway.reload(Config::from_yaml(&moved, "t.yaml", env.pki.dir()).unwrap()).await.is_err());
    gateway.record_reload_failure();
    let text = scrape(&env).await;
    assert_eq!(value(&text, success), Some(1.0), "{text}");
    assert_eq!(value(&text, failure), Some(2.0), "{text}");
    assert_eq!(value(&text, upstream_ca), Some(earliest), "a refused reload changes nothing");

    // Back to the first configuration: the removed route's CA is no longer reported.
    gateway.reload(Config::from_yaml(&env.yaml, "t.yaml", env.pki.dir()).unwrap()).await.unwrap();
    let text = scrape(&env).await;
    assert_eq!(value(&text, success), Some(2.0), "{text}");
    assert_eq!(value(&text, upstream_ca), None, "{text}");
    let server = format!(
        r#"fapi_gateway_certificate_expiry_timestamp_seconds{{kind="server",name="{}"}}"#,
        env.pki.server_cert_path().display()
    );
    assert_eq!(value(&text, &server), Some(rcgen_default_not_after()));
}

#[tokio::test]
async fn latency_buckets_cover_the_longest_route_timeout() {
    let env = Env::start_with(Options { admin: true, ..Default::default() }).await;
    let yaml = format!(
        "{}  - {{ name: patient, match: {{ path_prefix: /patient }}, upstream: {}, timeout: 2m, auth: none }}\n",
        env.yaml,
        env.upstream.url()
    );
    drop(env.gateway);
    let config = Config::from_yaml(&yaml, "t.yaml", env.pki.dir()).unwrap();
    let gateway = fapi_gateway::start(config).await.unwrap();
    let admin = gateway.admin_addr().unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let text = client.get(format!("http://{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    let top = text
        .lines()
        .filter(|l| l.starts_with("fapi_gateway_upstream_duration_seconds_bucket{") && l.contains(r#"route="patient""#))
        .filter_map(|l| l.split(r#"le=""#).nth(1)?.split('"').next()?.parse::<f64>().ok())
        .filter(|le| le.is_finite())
        .fold(0.0, f64::max);
    assert!(top >= 120.0, "top finite bucket {top}");
    gateway.shutdown().await;
}
