//! Test PKI: a server CA with one server certificate, and a client CA that issues
//! mTLS client certificates. Everything is generated with rcgen at test time and the
//! files the gateway needs are written into a temporary directory owned by [`TestPki`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

/// DNS name the gateway is reached by in tests (see [`super::client`]).
pub const GATEWAY_HOST: &str = "gateway.test";

/// A client certificate and its private key.
#[derive(Clone, Debug)]
pub struct ClientCert {
    /// PEM of the leaf certificate.
    pub cert_pem: String,
    /// PEM of the PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: String,
    /// DER of the leaf certificate.
    pub der: Vec<u8>,
    /// RFC 8705 `x5t#S256`: base64url (no padding) SHA-256 of `der`.
    pub x5t_s256: String,
}

impl ClientCert {
    fn new(cert_pem: String, der: Vec<u8>, key: &KeyPair) -> ClientCert {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        ClientCert { cert_pem, key_pem: key.serialize_pem(), x5t_s256: URL_SAFE_NO_PAD.encode(digest.as_ref()), der }
    }

    /// The certificate as a reqwest identity (reqwest's rustls backend wants the key
    /// and the certificate in a single PEM buffer).
    pub fn identity(&self) -> reqwest::Identity {
        let pem = format!("{}\n{}", self.key_pem, self.cert_pem);
        reqwest::Identity::from_pem(pem.as_bytes()).expect("client identity PEM")
    }

    /// The certificate chain (leaf only) in rustls form.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.der.clone())]
    }

    /// The private key in rustls form.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("client key PEM")
    }
}

/// Server CA + server certificate + client CA, written to a temporary directory.
pub struct TestPki {
    dir: TempDir,
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client_ca: CertifiedIssuer<'static, KeyPair>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).expect("write PKI file");
}

impl TestPki {
    /// Generates all keys and certificates (ECDSA P-256) and writes `ca.pem`,
    /// `server.pem`, `server.key` and `client-ca.pem` into a fresh temp dir.
    pub fn new() -> TestPki {
        let dir = TempDir::new().expect("temp dir");

        let ca = CertifiedIssuer::self_signed(
            ca_params("fapi-gateway test server CA"),
            KeyPair::generate().expect("CA key"),
        )
        .expect("server CA");

        let server_key = KeyPair::generate().expect("server key");
        let mut server_params =
            CertificateParams::new(vec![GATEWAY_HOST.to_owned(), "localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server SANs");
        server_params.distinguished_name = dn(GATEWAY_HOST);
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.use_authority_key_identifier_extension = true;
        let server_cert = server_params.signed_by(&server_key, &ca).expect("server cert");

        let client_ca = CertifiedIssuer::self_signed(
            ca_params("fapi-gateway test client CA"),
            KeyPair::generate().expect("client CA key"),
        )
        .expect("client CA");

        let pki = TestPki {
            ca_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_ca,
            dir,
        };
        write(pki.dir(), "ca.pem", &pki.ca_pem);
        write(pki.dir(), "server.pem", &pki.server_cert_pem);
        write(pki.dir(), "server.key", &pki.server_key_pem);
        write(pki.dir(), "client-ca.pem", &pki.client_ca.pem());
        pki
    }

    /// The temporary directory holding the PKI files (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// CA that signed the server certificate (trust anchor for clients of the gateway
    /// and of the JWKS server).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }

    pub fn server_cert_path(&self) -> PathBuf {
        self.dir().join("server.pem")
    }

    /// PKCS#8 PEM.
    pub fn server_key_path(&self) -> PathBuf {
        self.dir().join("server.key")
    }

    /// CA that signs client certificates ([`TestPki::ca_signed_client`]).
    pub fn client_ca_pem_path(&self) -> PathBuf {
        self.dir().join("client-ca.pem")
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn client_ca_pem(&self) -> String {
        self.client_ca.pem()
    }

    /// A self-signed client certificate (RFC 8705 `self_signed_tls_client_auth`).
    pub fn self_signed_client(&self, cn: &str) -> ClientCert {
        let key = KeyPair::generate().expect("client key");
        let cert = client_params(cn).self_signed(&key).expect("self-signed client");
        ClientCert::new(cert.pem(), cert.der().to_vec(), &key)
    }

    /// A client certificate issued by the client CA, with the clientAuth EKU.
    pub fn ca_signed_client(&self, cn: &str) -> ClientCert {
        let key = KeyPair::generate().expect("client key");
        let mut params = client_params(cn);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.client_ca).expect("client cert");
        ClientCert::new(cert.pem(), cert.der().to_vec(), &key)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    /// TLS acceptor with the server certificate (ALPN `h2`, `http/1.1`), for in-test
    /// HTTPS servers such as the JWKS server.
    pub fn server_tls_acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }

    /// The rustls server configuration behind [`TestPki::server_tls_acceptor`].
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = vec![CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).expect("server cert")];
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).expect("key");
        let mut config = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server TLS config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A rustls client config trusting only the test CA, presenting `identity` when
    /// given and offering exactly the ALPN protocols in `alpn`.
    pub fn rustls_client_config(&self, identity: Option<&ClientCert>, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA PEM")).expect("CA root");
        let builder = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(id) => builder.with_client_auth_cert(id.cert_chain(), id.private_key()).expect("client auth cert"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }

    /// A tokio-rustls connector over [`TestPki::rustls_client_config`], for raw TLS tests.
    pub fn tls_connector(&self, identity: Option<&ClientCert>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(Arc::new(self.rustls_client_config(identity, alpn)))
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
