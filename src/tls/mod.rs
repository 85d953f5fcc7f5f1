//! TLS material, all on the aws-lc-rs provider: PEM certificate and key loading, the one
//! crypto provider, and the RFC 8705 certificate thumbprint.
//!
//! The two sides live apart, so that what fetches keys never depends on the listener:
//! - [`server`]: the listener's rustls configuration and client-certificate policy;
//! - [`client`]: outbound TLS (JWKS fetches, `https://` upstreams, later the login mode's
//!   calls to the authorization server).
//!
//! [`validity`] reads a certificate's `notAfter`, for the certificate-expiry metric.

pub mod client;
pub mod server;
pub mod validity;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
}
