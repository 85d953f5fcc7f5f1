//! Behind a TLS-terminating proxy (RFC 9440): a real haproxy terminates the client's mTLS
//! and passes the certificate on as `Client-Cert`; the gateway, trusting that proxy's
//! address (`listen.trusted_proxies`), binds tokens to the forwarded certificate. Spoofing
//! attempts from untrusted peers, malformed headers from trusted ones and the proxy's own
//! certificate never bind anything.
//!
//! The proxy connects from 127.0.0.2 (haproxy's `source`), the trusted address; test
//! clients connect directly from 127.0.0.1 (untrusted) or, posing as the proxy, from
//! 127.0.0.2.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;

const PROXY_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const HAPROXY_MISSING: &str = "these tests need haproxy: `apt-get install -y haproxy` (.ci/run installs it)";

/// `haproxy` on the PATH, else Debian's `/usr/sbin/haproxy` (not on a user's PATH).
fn haproxy() -> Command {
    let on_path = Command::new("haproxy").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    Command::new(if on_path { "haproxy" } else { "/usr/sbin/haproxy" })
}

fn haproxy_installed() -> bool {
    haproxy().arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

#[test]
fn haproxy_is_installed() {
    assert!(haproxy_installed(), "{HAPROXY_MISSING}");
}

/// A haproxy terminating mTLS on a loopback port and forwarding to the gateway over TLS,
/// from 127.0.0.2, with the client's certificate in `Client-Cert`; stopped on drop.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(pki: &TestPki, gateway: SocketAddr) -> Haproxy {
        Haproxy::start_with(pki, gateway, "").await
    }

    /// With `server_extra` on the backend's server line (e.g. `send-proxy-v2`).
    async fn start_with(pki: &TestPki, gateway: SocketAddr, server_extra: &str) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("edge.pem");
        let combined = std::fs::read_to_string(pki.server_cert_path()).unwrap()
            + &std::fs::read_to_string(pki.server_key_path()).unwrap();
        std::fs::write(&pem, combined).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n  maxconn 200\n\
                 defaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\n\
                 frontend edge\n  bind 127.0.0.1:{port} ssl crt {pem} verify optional ca-file {ca} crt-ignore-err all ca-ignore-err all alpn http/1.1\n\
                 \x20 http-request del-header Client-Cert\n\
                 \x20 http-request del-header Client-Cert-Chain\n\
                 \x20 http-request set-header Client-Cert :%[ssl_c_der,base64]: if {{ ssl_c_used }}\n\
                 \x20 default_backend gateway\n\
                 backend gateway\n  server gw 127.0.0.1:{gw} ssl verify none sni str(gateway.test) source {PROXY_SOURCE} {server_extra}\n",
                pem = pem.display(),
                ca = pki.client_ca_pem_path().display(),
                gw = gateway.port(),
            ),
        )
        .unwrap();
        let check = haproxy().arg("-c").arg("-f").arg(&config).output().expect(HAPROXY_MISSING);
        assert!(check.status.success(), "haproxy -c: {}", String::from_utf8_lossy(&check.stderr));
        let child = haproxy()
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(HAPROXY_MISSING);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Haproxy { child, addr, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gateway trusting 127.0.0.2 (and, with `extra`, more `trusted_proxies` keys).
async fn gateway(extra: &str) -> Env {
    Env::start_with(Options {
        listen_extra: format!("  trusted_proxies:\n    addresses: [127.0.0.2/32]\n{extra}"),
        ..Options::default()
    })
    .await
}

/// A client of `addr` presenting `cert`, connecting from `source`.
fn client_from(env: &Env, cert: Option<&ClientCert>, source: IpAddr) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(env.pki.ca_pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .resolve(GATEWAY_HOST, "127.0.0.1:0".parse().unwrap())
        .local_address(source)
        .tls_certs_only([ca]);
    if let Some(cert) = cert {
        builder = builder.identity(cert.identity());
    }
    builder.build().unwrap()
}

fn header_value(cert: &ClientCert) -> String {
    format!(":{}:", base64::engine::general_purpose::STANDARD.encode(&cert.der))
}

#[tokio::test]
async fn through_haproxy_tokens_bind_to_the_forwarded_certificate() {
    if !haproxy_installed() {
        return;
    }
    let env = gateway("").await;
    let edge = Haproxy::start(&env.pki, env.addr).await;
    let (client, thief) = (env.pki.self_signed_client("client"), env.pki.self_signed_client("thief"));
    let token = env.bound_token(&client);
    let via_edge = |cert: Option<&ClientCert>, path: &str| {
        let request = client_from(&env, cert, IpAddr::V4(Ipv4Addr::LOCALHOST)).get(gateway_url(edge.addr, path));
        request.header("authorization", format!("Bearer {token}")).send()
    };
    assert_eq!(via_edge(Some(&client), "/mtls/x").await.unwrap().status(), 200);
    assert_rejected(
        via_edge(Some(&thief), "/mtls/x").await.unwrap(),
        401,
        r#"Bearer error="invalid_token", error_description="the client certificate does not match the one the token is bound to""#,
        "invalid_token",
    )
    .await;
    let none = via_edge(None, "/mtls/x").await.unwrap();
    assert_eq!(none.status(), 401);
    // forward_client_cert: the upstream gets the client's certificate, not the proxy's.
    assert_eq!(via_edge(Some(&client), "/identity/x").await.unwrap().status(), 200);
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.headers["client-cert"].to_str().unwrap(), header_value(&client));
    assert_eq!(env.upstream.hits(), 2, "only the legitimate requests reached the upstream");
}

#[tokio::test]
async fn client_cert_from_an_untrusted_peer_binds_nothing() {
    let env = gateway("").await;
    let (client, thief) = (env.pki.self_signed_client("client"), env.pki.self_signed_client("thief"));
    let token = env.bound_token(&client);
    // A thief on 127.0.0.1 claims the client's certificate in the header: ignored (and
    // removed), its own TLS certificate counts.
    let spoofed = client_from(&env, Some(&thief), IpAddr::V4(Ipv4Addr::LOCALHOST))
        .get(env.url("/identity/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("client-cert", header_value(&client))
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 401);
    // The legitimate client directly: its TLS certificate, and the header it sent is not
    // what reaches the upstream.
    let direct = client_from(&env, Some(&client), IpAddr::V4(Ipv4Addr::LOCALHOST))
        .get(env.url("/identity/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("client-cert", header_value(&thief))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(env.upstream.last().unwrap().headers["client-cert"].to_str().unwrap(), header_value(&client));
}

#[tokio::test]
async fn with_from_others_reject_a_spoofed_header_is_a_400() {
    let env = gateway("    from_others: reject\n").await;
    let client = env.pki.self_signed_client("client");
    let token = env.bound_token(&client);
    let spoofed = client_from(&env, Some(&client), IpAddr::V4(Ipv4Addr::LOCALHOST))
        .get(env.url("/mtls/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("client-cert", header_value(&client))
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 400);
    let body: serde_json::Value = serde_json::from_str(&spoofed.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(env.upstream.hits(), 0);
}

#[tokio::test]
async fn from_a_trusted_peer_a_malformed_header_is_a_400_and_its_own_certificate_never_counts() {
    let env = gateway("").await;
    let client = env.pki.self_signed_client("client");
    let token = env.bound_token(&client);
    let as_proxy = |cert: Option<&ClientCert>| client_from(&env, cert, PROXY_SOURCE);
    for bad in ["not-a-certificate", ":aGVsbG8=:", "-----BEGIN CERTIFICATE-----"] {
        let response = as_proxy(None)
            .get(env.url("/mtls/x"))
            .header("authorization", format!("Bearer {token}"))
            .header("client-cert", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: serde_json::Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(body["error_description"].as_str().unwrap().contains("Client-Cert"), "{body}");
    }
    // Two headers: refused, not one picked.
    let twice = as_proxy(None)
        .get(env.url("/mtls/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("client-cert", header_value(&client))
        .header("client-cert", header_value(&client))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    // The proxy presenting the client's certificate itself, without the header: the
    // proxy's TLS certificate is not the client's.
    let own = as_proxy(Some(&client)).get(env.url("/mtls/x")).header("authorization", format!("Bearer {token}"));
    assert_eq!(own.send().await.unwrap().status(), 401);
    // The well-formed header from the trusted peer binds.
    let good = as_proxy(None)
        .get(env.url("/mtls/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("client-cert", header_value(&client))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn a_proxy_trusted_by_its_certificate() {
    // `certificates` only: from any address, a peer presenting the proxy certificate is
    // trusted; one presenting another certificate is not.
    let proxy_cert = TestPki::new().self_signed_client("edge-proxy");
    let env = Env::start_with(Options {
        listen_extra: format!("  trusted_proxies:\n    certificates: [{}]\n", proxy_cert.x5t_s256),
        ..Options::default()
    })
    .await;
    let (client, thief) = (env.pki.self_signed_client("client"), env.pki.self_signed_client("thief"));
    let token = env.bound_token(&client);
    let send = |tls_cert: &ClientCert| {
        client_from(&env, Some(tls_cert), IpAddr::V4(Ipv4Addr::LOCALHOST))
            .get(env.url("/mtls/x"))
            .header("authorization", format!("Bearer {token}"))
            .header("client-cert", header_value(&client))
            .send()
    };
    assert_eq!(send(&proxy_cert).await.unwrap().status(), 200, "the proxy forwards the client's certificate");
    assert_eq!(send(&thief).await.unwrap().status(), 401, "a thief is no proxy");
    assert_eq!(env.upstream.hits(), 1);
}

#[tokio::test]
async fn with_proxy_protocol_the_client_address_comes_from_the_balancer() {
    if !haproxy_installed() {
        return;
    }
    let env = Env::start_with(Options {
        listen_extra:
            "  trusted_proxies:\n    addresses: [127.0.0.2/32]\n  proxy_protocol:\n    from: [127.0.0.2/32]\n".into(),
        admin: true,
        ..Options::default()
    })
    .await;
    let edge = Haproxy::start_with(&env.pki, env.addr, "send-proxy-v2").await;
    let client = env.pki.self_signed_client("client");
    let token = env.bound_token(&client);
    // The client calls haproxy from 127.0.0.3; haproxy calls the gateway from 127.0.0.2.
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let response = client_from(&env, Some(&client), from)
        .get(gateway_url(edge.addr, "/mtls/x"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.3", "the client's address, from the PROXY header");
    assert_eq!(seen.headers["forwarded"].to_str().unwrap().split(';').next(), Some("for=127.0.0.3"));

    // Posing as the balancer without the header: the connection is refused and counted.
    let no_header = client_from(&env, Some(&client), PROXY_SOURCE).get(env.url("/public/x")).send().await;
    assert!(no_header.is_err(), "no PROXY header from a trusted address: {no_header:?}");
    let admin = env.gateway.as_ref().unwrap().admin_addr().unwrap();
    let metrics = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"fapi_gateway_tls_handshake_failures_total{reason="proxy_protocol"} 1"#), "{metrics}");
    // A direct client from an untrusted address sends no header and is served as ever.
    let direct = client_from(&env, None, IpAddr::V4(Ipv4Addr::LOCALHOST)).get(env.url("/public/x")).send().await;
    assert_eq!(direct.unwrap().status(), 200);
    assert_eq!(env.upstream.last().unwrap().headers["x-forwarded-for"], "127.0.0.1");
}

/// A PROXY protocol v2 header for a TCP/IPv4 client.
fn proxy_header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(client), SocketAddr::V4(server)) = (client, server) else { panic!("IPv4 only") };
    let mut header = vec![0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 12];
    header.extend_from_slice(&client.ip().octets());
    header.extend_from_slice(&server.ip().octets());
    header.extend_from_slice(&client.port().to_be_bytes());
    header.extend_from_slice(&server.port().to_be_bytes());
    header
}

/// `GET /identity/x` with `token`, over TLS presenting `identity`, on a connection from
/// 127.0.0.2 that starts with a PROXY header for 198.51.100.7; with `forged`, a
/// `Client-Cert` naming `claimed`. The status code.
async fn through_a_layer_4_balancer(
    env: &Env,
    identity: &ClientCert,
    token: &str,
    forged: Option<&ClientCert>,
) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(PROXY_SOURCE, 0)).unwrap();
    let mut tcp = socket.connect(env.addr).await.unwrap();
    tcp.write_all(&proxy_header("198.51.100.7:40000".parse().unwrap(), env.addr)).await.unwrap();
    let connector = env.pki.tls_connector(Some(identity), &[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from(GATEWAY_HOST).unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let forged = forged.map(|c| format!("Client-Cert: {}\r\n", header_value(c))).unwrap_or_default();
    let request = format!(
        "GET /identity/x HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\nAuthorization: Bearer {token}\r\n{forged}Connection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).split(' ').nth(1).unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_layer_4_balancer_sends_the_address_but_is_never_trusted_with_client_cert() {
    // An NLB-style balancer passes TLS through: the gateway terminates the client's mTLS
    // itself. `proxy_protocol.from` lists it, `trusted_proxies` does not: a client behind
    // it that sends `Client-Cert` naming another's certificate binds nothing.
    let env = Env::start_with(Options {
        listen_extra: "  proxy_protocol:\n    from: [127.0.0.2/32]\n".into(),
        ..Options::default()
    })
    .await;
    let (victim, thief) = (env.pki.self_signed_client("victim"), env.pki.self_signed_client("thief"));
    let token = env.bound_token(&victim);
    assert_eq!(through_a_layer_4_balancer(&env, &thief, &token, Some(&victim)).await, "401");
    assert_eq!(through_a_layer_4_balancer(&env, &victim, &token, None).await, "200", "its own TLS certificate binds");
    let seen = env.upstream.last().unwrap();
    assert_eq!(seen.headers["x-forwarded-for"], "198.51.100.7");
    assert_eq!(seen.headers["client-cert"].to_str().unwrap(), header_value(&victim));
    assert_eq!(env.upstream.hits(), 1);
}

#[test]
fn bad_trusted_proxies_settings_are_refused_with_the_key() {
    let pki = TestPki::new();
    let error = |section: &str| {
        let yaml = format!(
            "listen:\n  address: 127.0.0.1:0\n  public_url: https://gateway.test\n  tls: {{ cert: {}, key: {} }}\n  trusted_proxies:\n{section}\
             routes:\n  - {{ name: r, match: {{ path_prefix: /r }}, upstream: http://127.0.0.1:9, auth: none }}\n",
            pki.server_cert_path().display(),
            pki.server_key_path().display()
        );
        fapi_gateway::config::Config::from_yaml(&yaml, "t.yaml", pki.dir()).unwrap_err().to_string()
    };
    for (section, expected) in [
        ("    addresses: [10.0.0.0/33]\n", "listen.trusted_proxies.addresses[0]"),
        ("    addresses: [lb.internal]\n", "not an IP address or CIDR block"),
        ("    certificates: [abc]\n", "listen.trusted_proxies.certificates[0]"),
        ("    from_others: drop\n", "from_others"),
        ("    {}\n", "give the proxies"),
        ("    addresses: [10.0.0.1]\n  proxy_protocol:\n    from: []\n", "listen.proxy_protocol.from"),
        ("    addresses: [10.0.0.1]\n  proxy_protocol:\n    from: [10.0.0.0/8x]\n", "listen.proxy_protocol.from[0]"),
    ] {
        let e = error(section);
        assert!(e.contains(expected), "{section}: {e}");
    }
}
