//! The client's certificate behind a TLS-terminating proxy (RFC 9440): on a connection from
//! a trusted proxy (`listen.trusted_proxies`, decided once per connection), each request's
//! `Client-Cert` header — the certificate as an RFC 8941 byte sequence, `:<base64 DER>:` — is
//! the client's certificate, for `cnf."x5t#S256"` binding and for `forward_client_cert`; the
//! proxy's own TLS certificate never is. A malformed or repeated header from a trusted proxy
//! is a 400, never a request that silently goes on unbound. From any other peer the header
//! is removed before forwarding, as today, or refused (`from_others: reject`).

use base64::Engine as _;
use http::HeaderMap;

use super::connection::{ClientCertificate, ConnectionInfo};
use crate::answer::Rejection;
use crate::config::Listener;
use crate::proxy::headers::{CLIENT_CERT, CLIENT_CERT_CHAIN};

/// A forwarded certificate larger than this is refused (a leaf is a few KiB).
const MAX_CERT_HEADER: usize = 16 * 1024;

/// The request's certificate from a trusted proxy's `Client-Cert`; `None` when the peer is
/// not one or sent none.
pub fn resolve(
    listen: &Listener,
    conn: &ConnectionInfo,
    headers: &HeaderMap,
) -> Result<Option<ClientCertificate>, Rejection> {
    if !conn.via_trusted_proxy {
        let sent = headers.contains_key(CLIENT_CERT) || headers.contains_key(CLIENT_CERT_CHAIN);
        if sent && listen.trusted_proxies.as_ref().is_some_and(|t| t.reject_from_others) {
            return Err(Rejection::BadRequest {
                reason: "forwarded_cert_untrusted",
                description: "Client-Cert is accepted only from the trusted proxies (listen.trusted_proxies)".into(),
            });
        }
        return Ok(None);
    }
    let mut values = headers.get_all(CLIENT_CERT).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return match headers.contains_key(CLIENT_CERT) {
            true => Err(malformed("more than one Client-Cert header")),
            false => Ok(None),
        };
    };
    let der = parse(value.as_bytes())
        .ok_or_else(|| malformed("Client-Cert is not a certificate as an RFC 9440 byte sequence (:base64 DER:)"))?;
    Ok(Some(ClientCertificate { thumbprint: crate::tls::certificate_thumbprint(&der), der }))
}

/// `:<base64>:` → DER of something shaped like a certificate.
fn parse(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() > MAX_CERT_HEADER {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?.trim();
    let inner = text.strip_prefix(':')?.strip_suffix(':')?;
    let engine = base64::engine::general_purpose::STANDARD;
    let der = engine.decode(inner).or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(inner)).ok()?;
    // A certificate's outer structure, up to its validity, must read: not a mere blob.
    crate::tls::validity::not_after(&der).ok()?;
    Some(der)
}

fn malformed(description: &'static str) -> Rejection {
    Rejection::BadRequest { reason: "forwarded_cert_malformed", description: description.into() }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn certificate() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["client.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn a_byte_sequence_of_a_certificate_parses() {
        let der = certificate();
        let value = format!(":{}:", base64::engine::general_purpose::STANDARD.encode(&der));
        assert_eq!(parse(value.as_bytes()), Some(der.clone()));
        let unpadded = format!(":{}:", base64::engine::general_purpose::STANDARD_NO_PAD.encode(&der));
        assert_eq!(parse(unpadded.as_bytes()), Some(der));
    }

    #[test]
    fn anything_else_is_refused() {
        let der = certificate();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        for bad in [
            b64.clone(),                                  // no colons
            format!(":{b64}"),                            // one colon
            format!(":{}:", &b64[..b64.len() / 2]),       // truncated
            ":aGVsbG8gd29ybGQ=:".to_string(),             // base64, not a certificate
            format!(":{}:", b64.replace('A', "-")),       // the URL alphabet is not RFC 8941's
            "-----BEGIN CERTIFICATE-----".to_string(),    // PEM (nginx's $ssl_client_cert)
            format!(":{}:", "A".repeat(MAX_CERT_HEADER)), // too large
        ] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:.40}");
        }
    }
}
