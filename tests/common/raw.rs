//! Raw HTTP/1.1 over TLS, for requests an HTTP client library would not send as written
//! (dot segments and percent-escapes are normalised, hop-by-hop headers are dropped, bodies
//! cannot be streamed by hand) and for connection-level tests.
//!
//! - Connecting: [`connect`] / [`raw_connect`] (SNI `gateway.test`, ALPN `http/1.1`),
//!   [`raw_connect_without_sni`], [`raw_connect_with_sni`], and [`tls_config`] +
//!   [`try_connect`] for a chosen ALPN and TLS versions.
//! - Reading: [`read_response`] (until the response is complete), [`read_until_close`] (until
//!   the connection ends), [`parse_response`] / [`parse_response_to`] over bytes read so far.
//! - One-shot exchanges: [`raw_exchange`], [`raw_get`], [`raw_request`].
//! - Connection ends: [`closed_within`], [`assert_closed_by_gateway`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::gateway::Env;
use super::pki::{ClientCert, GATEWAY_HOST, TestPki};

/// A client TLS connection to the gateway.
pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

// ---------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------

/// A root store holding the test CA.
fn test_ca_roots(pki: &TestPki) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A rustls client config that trusts only the test CA, offers `alpn` and only the TLS
/// `versions`, and presents no client certificate.
pub fn tls_config(
    pki: &TestPki,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(test_ca_roots(pki))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Opens a TCP connection to `addr` and completes a TLS handshake with `config`, asking for
/// server name `sni` (an IP address sends no SNI). Errors are returned, not unwrapped.
pub async fn try_connect(addr: SocketAddr, config: rustls::ClientConfig, sni: &'static str) -> std::io::Result<Tls> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    connector.connect(ServerName::try_from(sni).unwrap(), tcp).await
}

/// A TLS connection to the gateway at `addr` with SNI `gateway.test`, ALPN `http/1.1`,
/// presenting `identity` when given.
pub async fn connect(pki: &TestPki, addr: SocketAddr, identity: Option<&ClientCert>) -> Tls {
    try_connect(addr, pki.rustls_client_config(identity, &[b"http/1.1"]), GATEWAY_HOST).await.unwrap()
}

/// A TLS connection to the gateway with SNI `gateway.test`, ALPN `http/1.1`.
pub async fn raw_connect(env: &Env) -> Tls {
    connect(&env.pki, env.addr, None).await
}

/// A TLS connection to the gateway by IP address: rustls sends no SNI then.
pub async fn raw_connect_without_sni(env: &Env) -> Tls {
    try_connect(env.addr, env.pki.rustls_client_config(None, &[b"http/1.1"]), "127.0.0.1").await.unwrap()
}

/// Verifies the server's chain against the test CA as `gateway.test`, whatever SNI the
/// client sent (the gateway has one certificate; this lets a test send another SNI).
#[derive(Debug)]
pub struct VerifyAsGatewayHost(pub Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for VerifyAsGatewayHost {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(GATEWAY_HOST).unwrap();
        self.0.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A TLS connection to the gateway that asks for server name `sni` (ALPN `http/1.1`); the
/// certificate is still verified as `gateway.test`.
pub async fn raw_connect_with_sni(env: &Env, sni: &'static str) -> Tls {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(test_ca_roots(&env.pki)), provider.clone())
        .build()
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(VerifyAsGatewayHost(verifier)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    try_connect(env.addr, config, sni).await.unwrap()
}

// ---------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------

/// An HTTP/1.1 response read off a raw connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body arrived in full (by Content-Length, the last chunk, or connection close
    /// when neither framing was used; a response to HEAD has none and is complete).
    pub complete: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("JSON body ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts a gateway-made JSON error response: `status`, `Cache-Control: no-store`,
    /// `Content-Type: application/json`, no `x-upstream` header (the recording upstream sets
    /// it on all it answers), and a body with `error` and a string `error_description`.
    pub fn assert_gateway_error(&self, status: u16, error: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.header("cache-control"), Some("no-store"), "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        assert!(self.header("x-upstream").is_none(), "{self:?}");
        let body = self.json();
        assert_eq!(body["error"], error, "{body}");
        assert!(body["error_description"].is_string(), "{body}");
    }
}

/// The first position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked body; `(body, saw_last_chunk)`.
pub fn dechunk(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(data, b"\r\n") else {
            return (body, false);
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (body, false);
        };
        let start = eol + 2;
        if size == 0 {
            return (body, true);
        }
        if data.len() < start + size + 2 {
            body.extend_from_slice(&data[start..data.len().min(start + size)]);
            return (body, false);
        }
        body.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// Parses `buf` as one response to a request other than HEAD; `None` until the head is
/// complete. `eof`: the connection has ended, so a body without framing is complete.
pub fn parse_response(buf: &[u8], eof: bool) -> Option<RawResponse> {
    parse_response_to("GET", buf, eof)
}

/// Parses `buf` as one response to a `method` request; `None` until the head is complete.
/// The body is framed by Content-Length, else by chunked Transfer-Encoding, else by the end
/// of the connection (`eof`); a response to HEAD has no body.
pub fn parse_response_to(method: &str, buf: &[u8], eof: bool) -> Option<RawResponse> {
    let head_end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &buf[head_end + 4..];
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let (body, complete) = if method.eq_ignore_ascii_case("HEAD") {
        (Vec::new(), true)
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().unwrap();
        (rest[..rest.len().min(len)].to_vec(), rest.len() >= len)
    } else if get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        dechunk(rest)
    } else {
        (rest.to_vec(), eof)
    };
    Some(RawResponse { status, headers, body, complete })
}

/// Reads one response (to a request other than HEAD): until its body is complete, or the
/// connection ends (a read error, such as a TCP reset or a missing TLS close_notify, counts
/// as the end). `None` when the connection ended before a whole response head arrived.
/// Panics after 10 s.
pub async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Option<RawResponse> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(response) = parse_response(&buf, false)
                && response.complete
            {
                return Some(response);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return parse_response(&buf, true),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the gateway answers or closes within 10 s")
}

/// Appends everything read from `stream` to `buf` until the connection ends (a read error,
/// such as a TCP reset or a missing TLS close_notify, counts as the end). Panics after 10 s.
pub async fn read_until_close(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) {
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("the gateway ends the connection within 10 s")
}

// ---------------------------------------------------------------------------------------
// One-shot exchanges
// ---------------------------------------------------------------------------------------

/// Sends `request` on a fresh raw connection and reads the answer ([`read_response`]).
pub async fn raw_exchange(env: &Env, request: &[u8]) -> Option<RawResponse> {
    let mut tls = raw_connect(env).await;
    tls.write_all(request).await.unwrap();
    tls.flush().await.unwrap();
    read_response(&mut tls).await
}

/// `GET path` on a fresh raw HTTP/1.1 connection with `Host: gateway.test`.
pub async fn raw_get(env: &Env, path: &str) -> RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\n\r\n");
    raw_exchange(env, request.as_bytes()).await.unwrap_or_else(|| panic!("no response to GET {path}"))
}

/// Sends `method target` with `Host: gateway.test`, `Connection: close` and `extra` header
/// lines on a fresh TLS connection to `addr` ([`connect`], presenting `identity` when given)
/// and reads the response up to the end of the connection ([`read_until_close`]: the
/// gateway must close it within 10 s).
pub async fn raw_request(
    pki: &TestPki,
    addr: SocketAddr,
    identity: Option<&ClientCert>,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
) -> RawResponse {
    let mut tls = connect(pki, addr, identity).await;
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {GATEWAY_HOST}\r\nConnection: close\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = Vec::new();
    read_until_close(&mut tls, &mut buf).await;
    parse_response_to(method, &buf, true)
        .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(&buf)))
}

// ---------------------------------------------------------------------------------------
// Connection ends
// ---------------------------------------------------------------------------------------

/// True when the peer closes the connection (or resets it) within `limit`; whatever it sends
/// before is read and ignored.
pub async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Waits (at most 5 s) for the gateway to end a connection; fails if it is still open.
/// Closing is the expected answer; anything said first must be an error status (408).
pub async fn assert_closed_by_gateway(tls: &mut Tls) {
    let mut buf = [0u8; 1024];
    let read = tls.read(&mut buf);
    let outcome = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the gateway must close a stalled connection within 5 s");
    if let Ok(n @ 1..) = outcome {
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
}
