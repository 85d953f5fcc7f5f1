//! `fapi-gateway demo`: the whole story on loopback in one command. It starts a
//! development authorization server ([`dev_as`]), an echo upstream and the gateway on the
//! bundled `gateway.yaml` and `certs/`, then plays, as real clients over real TLS:
//! a legitimate mTLS client, a thief with the stolen token and another certificate, a
//! legitimate DPoP client (with the server nonce), a replayed proof, a thief with the
//! stolen DPoP token and its own key, and the DPoP token downgraded to `Bearer`. It prints
//! what each got, then (unless `--once`) ready-to-paste `curl` commands, and serves until
//! Ctrl-C. Development only.

pub mod dev_as;
pub mod dev_certs;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::Config;
use dev_as::{DevIssuer, dpop_proof};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] crate::StartError),
    #[error(transparent)]
    Key(#[from] crate::jose::SignError),
}

/// One played scenario.
pub struct Scenario {
    pub name: &'static str,
    pub expected: u16,
    pub got: u16,
    pub challenge: String,
}

/// A client identity: certificate chain and key, read from `certs/`.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    fn load(cert: &Path, key: &Path) -> Result<Self, DemoError> {
        let read = |p: &Path, e: String| DemoError::Setup(format!("cannot read {}: {e}", p.display()));
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| read(cert, e.to_string()))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, e.to_string()))?;
        Ok(Identity { chain, key })
    }

    fn der(&self) -> &[u8] {
        self.chain.first().map_or(&[], |c| c.as_ref())
    }
}

/// A minimal HTTPS client: one request per connection, trusting only the dev CA.
struct Client {
    roots: Arc<rustls::RootCertStore>,
    gateway: SocketAddr,
}

/// A response as the demo reports it.
struct Answer {
    status: u16,
    challenge: String,
    nonce: Option<String>,
}

impl Client {
    async fn send(
        &self,
        path: &str,
        identity: Option<&Identity>,
        headers: &[(&str, String)],
    ) -> Result<Answer, DemoError> {
        let err = |e: String| DemoError::Setup(format!("demo client: {e}"));
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(self.roots.clone());
        let config = match identity {
            Some(id) => {
                builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key()).map_err(|e| err(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.gateway).await.map_err(|e| err(e.to_string()))?;
        let name = ServerName::try_from("localhost").map_err(|e| err(e.to_string()))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| err(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| err(e.to_string()))?;
        tokio::spawn(connection);
        let mut request = hyper::Request::get(path).header("host", format!("localhost:{}", self.gateway.port()));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| err(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| err(e.to_string()))?;
        let status = response.status().as_u16();
        let header = |n: &str| {
            response.headers().get_all(n).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ")
        };
        let challenge = header("www-authenticate");
        let nonce = response.headers().get("dpop-nonce").and_then(|v| v.to_str().ok()).map(str::to_string);
        let _ = response.into_body().collect().await;
        Ok(Answer { status, challenge, nonce })
    }
}

/// Starts the echo upstream the bundled routes forward to: it answers with what reached it.
async fn start_echo(address: SocketAddr) -> Result<(), DemoError> {
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        DemoError::Setup(format!("cannot listen on {address} for the echo upstream: {e} (is something else using it?)"))
    })?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let seen =
                        |n: &str| request.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                    let body = serde_json::json!({
                        "upstream": "echo",
                        "method": request.method().as_str(),
                        "path": request.uri().path(),
                        "x-fapi-subject": seen("x-fapi-subject"),
                        "x-fapi-client-id": seen("x-fapi-client-id"),
                        "x-fapi-scopes": seen("x-fapi-scopes"),
                        "client-cert": if request.headers().contains_key("client-cert") { "present" } else { "-" },
                    });
                    let mut response = hyper::Response::new(Full::new(Bytes::from(format!("{body}\n"))));
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    Ok(())
}

/// Runs the demo on `config_path` (the bundled `gateway.yaml`). Returns the scenarios
/// played; with `once` it returns right after them, else it serves until Ctrl-C.
pub async fn run(config_path: &Path, once: bool) -> Result<Vec<Scenario>, DemoError> {
    let base = config_path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let certs = base.join("certs");
    let generated = dev_certs::ensure(&certs)?;
    if !generated.is_empty() {
        println!("generated development certificates in {}: {}", certs.display(), generated.join(", "));
    }
    let config = Config::load(config_path)?;
    let origin = config.listen.public_url.to_string().trim_end_matches('/').to_string();
    let audience = config.issuers.first().and_then(|i| i.audiences.first()).cloned().unwrap_or_else(|| origin.clone());
    let upstream: SocketAddr = config
        .routes
        .first()
        .and_then(|r| r.upstream.authority())
        .and_then(|a| a.as_str().parse().ok())
        .ok_or_else(|| DemoError::Setup("the first route's upstream must be an IP:port for the demo".into()))?;

    // 1. The development authorization server and the echo upstream.
    let issuer = Arc::new(DevIssuer::new(&certs.join("dev-issuer.key"), &audience)?);
    let as_tls = crate::tls::server::server_config(&crate::config::ServerTls {
        cert: certs.join("server.pem"),
        key: certs.join("server.key"),
        client_auth: crate::config::ClientAuth::None,
        client_ca: None,
    })
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    issuer.serve_jwks(dev_as::bind_jwks().await?, as_tls);
    start_echo(upstream).await?;

    // 2. The gateway, on the bundled configuration.
    let gateway = crate::start(config).await?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.join("ca.pem"))
        .map_err(|e| DemoError::Setup(format!("cannot read certs/ca.pem: {e}")))?
        .flatten()
    {
        roots.add(cert).map_err(|e| DemoError::Setup(e.to_string()))?;
    }
    let client = Client { roots: Arc::new(roots), gateway: gateway.local_addr() };

    // 3. The story.
    let legit = Identity::load(&certs.join("client.pem"), &certs.join("client.key"))?;
    let thief = Identity::load(&certs.join("thief.pem"), &certs.join("thief.key"))?;
    let mut played = Vec::new();
    let mut play = |name: &'static str, expected: u16, answer: &Answer| {
        played.push(Scenario { name, expected, got: answer.status, challenge: answer.challenge.clone() });
    };
    let mtls_token = issuer.mtls_token("accounts:read", legit.der())?;
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    play(
        "mTLS client with its own certificate",
        200,
        &client.send("/accounts/1", Some(&legit), &bearer(&mtls_token)).await?,
    );
    play(
        "stolen mTLS token, thief's certificate",
        401,
        &client.send("/accounts/1", Some(&thief), &bearer(&mtls_token)).await?,
    );

    let dpop_key = dev_as::generate_key()?;
    let dpop_token = issuer.dpop_token("payments:write", &dpop_key)?;
    let url = format!("{origin}/payments/1");
    let dpop = |proof: String| vec![("authorization", format!("DPoP {dpop_token}")), ("dpop", proof)];
    // The payments route requires a server nonce: the first try fetches it.
    let first = client.send("/payments/1", None, &dpop(dpop_proof(&dpop_key, "GET", &url, &dpop_token, None)?)).await?;
    let nonce = first.nonce.clone();
    let proof = dpop_proof(&dpop_key, "GET", &url, &dpop_token, nonce.as_deref())?;
    play("DPoP client (after use_dpop_nonce)", 200, &client.send("/payments/1", None, &dpop(proof.clone())).await?);
    play("the same DPoP proof replayed", 401, &client.send("/payments/1", None, &dpop(proof)).await?);
    let thief_key = dev_as::generate_key()?;
    let stolen = dpop_proof(&thief_key, "GET", &url, &dpop_token, nonce.as_deref())?;
    play("stolen DPoP token, thief's own key", 401, &client.send("/payments/1", None, &dpop(stolen)).await?);
    play("DPoP token downgraded to Bearer", 401, &client.send("/payments/1", None, &bearer(&dpop_token)).await?);

    print_table(&played);
    if once {
        gateway.shutdown().await;
        return Ok(played);
    }
    let fresh = issuer.mtls_token("accounts:read", legit.der())?;
    let port = gateway.local_addr().port();
    println!(
        "\nThe gateway keeps running on https://localhost:{port} (admin: {}). Try it:\n",
        gateway.admin_addr().map_or("-".into(), |a| a.to_string())
    );
    println!(
        "  curl --cacert certs/ca.pem --cert certs/client.pem --key certs/client.key \\\n       -H 'Authorization: Bearer {fresh}' \\\n       https://localhost:{port}/accounts/1\n"
    );
    println!("  # the same token from another certificate is refused:");
    println!(
        "  curl -i --cacert certs/ca.pem --cert certs/thief.pem --key certs/thief.key \\\n       -H 'Authorization: Bearer {fresh}' \\\n       https://localhost:{port}/accounts/1\n"
    );
    println!("  curl -i --cacert certs/ca.pem https://localhost:{port}/public/hello");
    println!("\nCtrl-C stops everything.");
    let _ = tokio::signal::ctrl_c().await;
    gateway.shutdown().await;
    Ok(played)
}

fn print_table(played: &[Scenario]) {
    println!("\n{:<40} {:>8} {:>4}  WWW-Authenticate", "scenario", "expected", "got");
    println!("{}", "-".repeat(110));
    for s in played {
        let mark = if s.expected == s.got { " " } else { "!" };
        println!(
            "{:<40} {:>8} {:>4}{mark} {}",
            s.name,
            s.expected,
            s.got,
            if s.challenge.is_empty() { "-" } else { &s.challenge }
        );
    }
    let failed = played.iter().filter(|s| s.expected != s.got).count();
    if failed == 0 {
        println!("\nEvery scenario ended as expected: stolen tokens are useless.");
    } else {
        println!("\n{failed} scenario(s) did not end as expected (marked !).");
    }
}
