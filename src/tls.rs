//! TLS for both sides of the gateway, all on the aws-lc-rs provider.
//!
//! Server side: certificate and key loading, TLS 1.3 preferred with 1.2 allowed, ALPN `h2`
//! and `http/1.1`, and the client-certificate policy of the listener. Without a
//! `client_ca`, [`AnyClientCert`] accepts any certificate — self-signed included, as
//! RFC 8705 §6.2 expects of a resource server that uses mTLS only for proof of possession —
//! while rustls still verifies the handshake signature, so the client proves it holds the
//! certificate's private key.
//!
//! Client side: [`client_config`] for JWKS fetches and `https://` upstreams, trusting the
//! system roots plus an optional extra CA file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::config::{ClientAuth, ServerTls};

/// Why TLS material could not be loaded. Each variant names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {reason} (expected PEM `CERTIFICATE` blocks)")]
    Certificates { path: PathBuf, reason: String },
    #[error("{path} contains no certificate (expected PEM `CERTIFICATE` blocks)")]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key from {path}: {reason} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)")]
    PrivateKey { path: PathBuf, reason: String },
    #[error("certificate {cert} and key {key} cannot be used together: {reason}")]
    CertKeyMismatch { cert: PathBuf, key: PathBuf, reason: String },
    #[error("client CA {path} is unusable: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("`client_auth: none` cannot be combined with `client_ca`")]
    CaWithoutClientAuth,
}

/// The one crypto provider used everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates { path: path.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::PrivateKey { path: path.to_path_buf(), reason: e.to_string() })
}

/// Builds the listener's rustls configuration.
pub fn server_config(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let certs = load_certs(&tls.cert)?;
    let key = load_key(&tls.key)?;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match (tls.client_auth, &tls.client_ca) {
        (ClientAuth::None, None) => None,
        (ClientAuth::None, Some(_)) => return Err(TlsError::CaWithoutClientAuth),
        (mode, Some(ca)) => Some(ca_verifier(ca, mode == ClientAuth::Required, provider.clone())?),
        (mode, None) => Some(Arc::new(AnyClientCert {
            mandatory: mode == ClientAuth::Required,
            algorithms: provider.signature_verification_algorithms,
        })),
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::CertKeyMismatch {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            reason: e.to_string(),
        })?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| TlsError::CertKeyMismatch {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        reason: e.to_string(),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn ca_verifier(
    ca: &Path,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa { path: ca.to_path_buf(), reason: e.to_string() })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if mandatory { builder } else { builder.allow_unauthenticated() };
    builder.build().map_err(|e| TlsError::ClientCa { path: ca.to_path_buf(), reason: e.to_string() })
}

/// Accepts any client certificate for RFC 8705 binding; the handshake signature is still
/// verified, so the peer holds the certificate's key. Trust comes from the access token's
/// `cnf."x5t#S256"`, never from this verifier.
pub struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for AnyClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyClientCert").field("mandatory", &self.mandatory).finish()
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS client configuration trusting the system roots plus `extra_ca` (PEM), for JWKS
/// fetches and `https://` upstreams. ALPN is left to the connector.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(system_roots().roots.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Certificates { path: path.to_path_buf(), reason: e.to_string() })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Certificates {
            path: extra_ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The operating system's trust anchors, read once. Unreadable entries are skipped (a
/// machine without a CA bundle simply trusts only the configured CA files).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(loaded.certs);
        roots
    })
}

/// RFC 8705 §3.1 `x5t#S256`: SHA-256 over the DER of the client's end-entity certificate.
pub fn certificate_thumbprint(der: &[u8]) -> [u8; 32] {
    crate::jose::sha256(der)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// RFC 8705 Appendix A, Figures 5 and 6.
    const RFC8705_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBBjCBrAIBAjAKBggqhkjOPQQDAjAPMQ0wCwYDVQQDDARtdGxzMB4XDTE4MTAx
ODEyMzcwOVoXDTIyMDUwMjEyMzcwOVowDzENMAsGA1UEAwwEbXRsczBZMBMGByqG
SM49AgEGCCqGSM49AwEHA0IABNcnyxwqV6hY8QnhxxzFQ03C7HKW9OylMbnQZjjJ
/Au08/coZwxS7LfA4vOLS9WuneIXhbGGWvsDSb0tH6IxLm8wCgYIKoZIzj0EAwID
SQAwRgIhAP0RC1E+vwJD/D1AGHGzuri+hlV/PpQEKTWUVeORWz83AiEA5x2eXZOV
bUlJSGQgjwD5vaUaKlLR50Q2DmFfQj1L+SY=
-----END CERTIFICATE-----
";

    #[test]
    fn rfc8705_appendix_a_thumbprint() {
        let der = CertificateDer::from_pem_slice(RFC8705_CERT.as_bytes()).unwrap();
        let thumbprint = certificate_thumbprint(der.as_ref());
        assert_eq!(crate::jose::b64url_encode(&thumbprint), "A4DtL2JmUMhAsvJj5tKyn64SqzmuXbMrJa0n761y5v0");
    }

    #[test]
    fn missing_and_empty_pem_files_are_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("fapi-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = load_certs(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not pem").unwrap();
        assert!(matches!(load_certs(&empty).unwrap_err(), TlsError::NoCertificate { .. }));
        assert!(load_key(&empty).unwrap_err().to_string().contains("empty.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn client_ca_without_client_auth_is_refused() {
        let tls = ServerTls {
            cert: "certs/server.pem".into(),
            key: "certs/server.key".into(),
            client_auth: ClientAuth::None,
            client_ca: Some("certs/ca.pem".into()),
        };
        assert!(matches!(server_config(&tls).unwrap_err(), TlsError::CaWithoutClientAuth));
    }

    #[test]
    fn mismatched_certificate_and_key_are_refused() {
        let tls = ServerTls {
            cert: "certs/server.pem".into(),
            key: "certs/client.key".into(),
            client_auth: ClientAuth::Optional,
            client_ca: None,
        };
        let e = server_config(&tls).unwrap_err();
        assert!(matches!(e, TlsError::CertKeyMismatch { .. }), "{e}");
    }
}
