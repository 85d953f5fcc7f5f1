//! Development certificates for the demo, generated into `certs/` when absent: a CA, the
//! gateway's server certificate (`localhost`, `127.0.0.1`), the CA-less client certificates
//! of the legitimate client and of the thief, and the development issuer's signing key with
//! its JWKS. Never for production: anything generated here is as public as the repository.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::DemoError;

fn fail(e: impl std::fmt::Display) -> DemoError {
    DemoError::Setup(format!("cannot generate development certificates: {e}"))
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<(), DemoError> {
    std::fs::write(dir.join(name), contents)
        .map_err(|e| DemoError::Setup(format!("cannot write {}: {e}", dir.join(name).display())))
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Creates whatever the demo needs in `dir` that is missing; returns the files written. The
/// server certificate names `localhost`, `gateway.localhost`, `127.0.0.1` and `extra_hosts`
/// (host names or IP addresses, e.g. the service names of a compose file); an existing one is
/// kept as it is.
pub fn ensure(dir: &Path, extra_hosts: &[String]) -> Result<Vec<&'static str>, DemoError> {
    std::fs::create_dir_all(dir).map_err(|e| DemoError::Setup(format!("cannot create {}: {e}", dir.display())))?;
    let missing = |names: &[&str]| names.iter().any(|n| !dir.join(n).exists());
    let mut written = Vec::new();
    if missing(&["ca.pem", "server.pem", "server.key"]) {
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = dn("fapi-gateway development CA (NOT FOR PRODUCTION)");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(fail)?).map_err(fail)?;
        let server_key = KeyPair::generate().map_err(fail)?;
        let mut names = vec!["localhost".to_string(), "gateway.localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(extra_hosts.iter().filter(|h| !names.contains(h)).cloned().collect::<Vec<_>>());
        let mut params = CertificateParams::new(names).map_err(fail)?;
        params.distinguished_name = dn("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.signed_by(&server_key, &ca).map_err(fail)?;
        write(dir, "ca.pem", &ca.pem())?;
        write(dir, "server.pem", &server.pem())?;
        write(dir, "server.key", &server_key.serialize_pem())?;
        written.extend(["ca.pem", "server.pem", "server.key"]);
    }
    for (cn, cert, key) in [("demo-client", "client.pem", "client.key"), ("thief", "thief.pem", "thief.key")] {
        if missing(&[cert, key]) {
            let pair = KeyPair::generate().map_err(fail)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn(cn);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let certificate = params.self_signed(&pair).map_err(fail)?;
            write(dir, cert, &certificate.pem())?;
            write(dir, key, &pair.serialize_pem())?;
            written.extend([cert, key]);
        }
    }
    if missing(&["dev-issuer.key", "dev-issuer-jwks.json"]) {
        let key = super::dev_as::generate_key()?;
        write(dir, "dev-issuer.key", &key.to_pkcs8_pem()?)?;
        let jwk = super::dev_as::jwks_entry(&key);
        write(dir, "dev-issuer-jwks.json", &serde_json::json!({ "keys": [jwk] }).to_string())?;
        written.extend(["dev-issuer.key", "dev-issuer-jwks.json"]);
    }
    if missing(&["login-client.key"]) {
        write(dir, "login-client.key", &super::dev_as::generate_key()?.to_pkcs8_pem()?)?;
        written.push("login-client.key");
    }
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn everything_missing_is_generated_and_usable() {
        let dir = std::env::temp_dir().join(format!("fapi-dev-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = ensure(&dir, &[]).unwrap();
        assert_eq!(written.len(), 10);
        let tls = crate::config::ServerTls {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_auth: crate::config::ClientAuth::Optional,
            client_ca: None,
        };
        crate::tls::server::server_config(&tls).unwrap();
        assert!(ensure(&dir, &[]).unwrap().is_empty(), "nothing is regenerated when present");
        std::fs::remove_file(dir.join("thief.key")).unwrap();
        assert_eq!(ensure(&dir, &[]).unwrap(), vec!["thief.pem", "thief.key"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_generated_issuer_key_matches_its_jwks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure(dir.path(), &[]).unwrap().contains(&"dev-issuer.key"));
        let issuer =
            super::super::dev_as::DevIssuer::new(&dir.path().join("dev-issuer.key"), "https://i", "https://a").unwrap();
        let token = issuer.mtls_token("s", b"cert").unwrap();
        let jwks = std::fs::read_to_string(dir.path().join("dev-issuer-jwks.json")).unwrap();
        let jwks: serde_json::Value = serde_json::from_str(&jwks).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], "dev-issuer-1");
        assert_eq!(jwks["keys"][0]["alg"], "ES256");
        let key = crate::jose::PublicKey::from_jwk(jwks["keys"][0].as_object().unwrap()).unwrap();
        let jws = crate::jose::CompactJws::parse(&token, 8192).unwrap();
        assert_eq!(jws.verify_with(crate::jose::Alg::Es256, &key), Ok(()));
    }
}
