//! The demo's HTTPS client: one request per connection over real TLS, trusting only the
//! development CA, with an optional client certificate. What the scripted clients of
//! [`super`] and [`super::browser`] send and read.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::DemoError;

/// A client identity: certificate chain and key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A request as the demo sends it.
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// The server's `host[:port]` (the Host header and the TLS server name's host).
    pub host: &'a str,
    /// Path and query.
    pub target: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub body: Option<Vec<u8>>,
}

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// Every value of `name`, joined with `, `.
    pub fn header(&self, name: &str) -> String {
        self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends requests to servers whose certificates the development CA signed.
pub struct DemoHttp {
    roots: Arc<rustls::RootCertStore>,
}

impl DemoHttp {
    pub fn new(roots: rustls::RootCertStore) -> DemoHttp {
        DemoHttp { roots: Arc::new(roots) }
    }

    /// Sends `request` to `address` over a new TLS connection.
    pub async fn send(
        &self,
        address: SocketAddr,
        identity: Option<&Identity>,
        request: Outgoing<'_>,
    ) -> Result<Reply, DemoError> {
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
        let tcp = tokio::net::TcpStream::connect(address).await.map_err(|e| err(format!("{address}: {e}")))?;
        let server_name = request.host.rsplit_once(':').map_or(request.host, |(host, _)| host).to_string();
        let name = ServerName::try_from(server_name).map_err(|e| err(e.to_string()))?;
        let tls = connector.connect(name, tcp).await.map_err(|e| err(e.to_string()))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| err(e.to_string()))?;
        tokio::spawn(connection);
        let mut builder =
            hyper::Request::builder().method(request.method).uri(request.target).header("host", request.host);
        for (name, value) in request.headers {
            builder = builder.header(*name, value.as_str());
        }
        let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
        let outgoing = builder.body(body).map_err(|e| err(e.to_string()))?;
        let response = sender.send_request(outgoing).await.map_err(|e| err(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| err(e.to_string()))?.to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body })
    }
}
