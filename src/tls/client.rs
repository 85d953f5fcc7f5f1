//! Outbound TLS: a client configuration trusting the system roots plus an optional extra
//! CA file, for JWKS fetches, `https://` upstreams and, later, calls to authorization
//! servers. ALPN is left to the caller.

use std::path::Path;
use std::sync::OnceLock;

use rustls::RootCertStore;

use super::{TlsError, load_certs, provider};

/// A TLS client configuration trusting the system roots plus `extra_ca` (PEM), for JWKS
/// fetches and `https://` upstreams. ALPN is left to the connector.
pub fn client_config(extra_ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    Ok(builder(extra_ca)?.with_no_client_auth())
}

/// [`client_config`] presenting the certificate chain and key of these PEM files (RFC 8705
/// `tls_client_auth` at an authorization server).
pub fn client_config_with_identity(
    extra_ca: Option<&Path>,
    cert: &Path,
    key: &Path,
) -> Result<rustls::ClientConfig, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = super::load_key(key)?;
    builder(extra_ca)?.with_client_auth_cert(chain, key_der).map_err(|e| TlsError::CertKeyMismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        reason: e.to_string(),
    })
}

fn builder(
    extra_ca: Option<&Path>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(system_roots().roots.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert).map_err(|e| TlsError::Certificates { path: path.to_path_buf(), reason: e.to_string() })?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Certificates {
            path: extra_ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots))
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
