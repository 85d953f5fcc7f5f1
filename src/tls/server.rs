//! The listener's TLS: certificate and key, TLS 1.3 preferred with 1.2 allowed, ALPN `h2`
//! and `http/1.1`, and the client-certificate policy. Without a `client_ca`,
//! [`AnyClientCert`] accepts any certificate — self-signed included, as RFC 8705 §6.2
//! expects of a resource server that uses mTLS only for proof of possession — while rustls
//! still verifies the handshake signature, so the client proves it holds the certificate's
//! private key.
//!
//! Only the listener side (`server`, `lifecycle`) uses this module; nothing that fetches keys
//! or forwards requests does.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::{TlsError, load_certs, load_key, provider};
use crate::config::{ClientAuth, ServerTls};

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
