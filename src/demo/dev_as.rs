//! The demo's development authorization server: mints ES256 `at+jwt` access tokens bound
//! to a client certificate (RFC 8705) or a DPoP key (RFC 9449), and signs its other JWTs
//! (JARM responses, ID tokens) and the demo clients' DPoP proofs;
//! [`super::dev_as_server`] serves its endpoints over HTTPS and [`super::dev_as_flow`] runs
//! its authorization-code flow. Development only: its key lives in `certs/dev-issuer.key`
//! (PKCS#8 PEM), which is public. Every signature is made by [`SigningKey`].

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use super::DemoError;
use crate::jose::{Alg, SigningKey, b64url_encode, sha256};

/// The issuer identifier the bundled `gateway.yaml` trusts: the server's own origin, so that
/// its metadata can be discovered from it (RFC 8414 §3).
pub const ISSUER: &str = "https://localhost:9443";
const KID: &str = "dev-issuer-1";
const TOKEN_LIFETIME_SECS: i64 = 600;
/// The algorithm of the issuer's key and of the demo clients' DPoP keys.
pub const ALG: Alg = Alg::Es256;

/// A fresh key for a demo client's DPoP proofs (or a new issuer key).
pub fn generate_key() -> Result<SigningKey, DemoError> {
    Ok(SigningKey::generate(ALG)?)
}

/// The issuer key's JWKS entry: its public JWK with `kid`, `alg` and `use`.
pub fn jwks_entry(key: &SigningKey) -> Value {
    let mut jwk = key.public_jwk();
    jwk["kid"] = json!(KID);
    jwk["alg"] = json!(key.alg().name());
    jwk["use"] = json!("sig");
    jwk
}

/// A DPoP proof by `key` for `method url`, bound to `token`, with an optional server nonce.
pub fn dpop_proof(
    key: &SigningKey,
    method: &str,
    url: &str,
    token: &str,
    nonce: Option<&str>,
) -> Result<String, DemoError> {
    let mut jti = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut jti);
    let mut claims = json!({
        "jti": b64url_encode(&jti), "htm": method, "htu": url, "iat": crate::jose::unix_now(),
        "ath": b64url_encode(&sha256(token.as_bytes())),
    });
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    Ok(key.sign_compact(&json!({"typ": "dpop+jwt", "jwk": key.public_jwk()}), &claims)?)
}

/// The login client the development AS registers for `fapi-gateway dev-as`: the bundled
/// `gateway.yaml`'s `login:` entry (a test keeps them equal). The demo registers whatever its
/// configuration's entry says.
pub struct DemoLogin {
    pub client_id: &'static str,
    pub redirect_uri: &'static str,
    pub post_logout_redirect_uri: &'static str,
}

pub const DEMO_LOGIN: DemoLogin = DemoLogin {
    client_id: "demo-web",
    redirect_uri: "https://localhost:8443/auth/callback",
    post_logout_redirect_uri: "https://localhost:8443/app/",
};

/// The user every token of the development issuer is for.
pub const SUBJECT: &str = "alice";

/// Mints access tokens as the development issuer.
pub struct DevIssuer {
    key: SigningKey,
    issuer: String,
    audience: String,
}

impl DevIssuer {
    /// The issuer `issuer` (the tokens' `iss`) with the PKCS#8 PEM key in `key_file`
    /// (`certs/dev-issuer.key`).
    pub fn new(key_file: &Path, issuer: &str, audience: &str) -> Result<Self, DemoError> {
        Ok(DevIssuer {
            key: SigningKey::from_pkcs8_pem_file(ALG, key_file)?,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        })
    }

    /// Its issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// An access token for `scope`, bound as `cnf` says.
    pub fn token(&self, scope: &str, cnf: Value) -> Result<String, DemoError> {
        self.token_for("demo-client", scope, cnf)
    }

    /// An access token for the client `client_id`.
    pub fn token_for(&self, client_id: &str, scope: &str, cnf: Value) -> Result<String, DemoError> {
        let now = crate::jose::unix_now();
        let mut jti = [0u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut jti);
        let claims = json!({
            "iss": self.issuer, "aud": self.audience, "sub": SUBJECT, "client_id": client_id,
            "iat": now, "exp": now + TOKEN_LIFETIME_SECS, "jti": b64url_encode(&jti), "scope": scope, "cnf": cnf,
        });
        Ok(self.key.sign_compact(&json!({"typ": "at+jwt", "kid": KID}), &claims)?)
    }

    /// Any other JWT of the issuer (a JARM response, an ID token): `claims` signed with its
    /// key, the header naming `kid` and `typ` when given.
    pub fn sign(&self, typ: Option<&str>, claims: &Value) -> Result<String, DemoError> {
        let mut header = json!({"kid": KID});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        Ok(self.key.sign_compact(&header, claims)?)
    }

    /// A token bound to the client certificate with this DER encoding.
    pub fn mtls_token(&self, scope: &str, cert_der: &[u8]) -> Result<String, DemoError> {
        self.token(scope, json!({"x5t#S256": b64url_encode(&sha256(cert_der))}))
    }

    /// A token bound to a DPoP key.
    pub fn dpop_token(&self, scope: &str, key: &SigningKey) -> Result<String, DemoError> {
        self.token(scope, json!({"jkt": key.thumbprint_b64()}))
    }

    /// The public key set served at `/jwks`.
    pub fn jwks(&self) -> String {
        json!({"keys": [jwks_entry(&self.key)]}).to_string()
    }

    /// How long the tokens it mints live.
    pub fn lifetime_secs(&self) -> i64 {
        TOKEN_LIFETIME_SECS
    }
}

/// Where the development issuer listens by default (the bundled `gateway.yaml` names it).
pub const ADDRESS: &str = "127.0.0.1:9443";

/// Binds the development issuer's listener.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, DemoError> {
    tokio::net::TcpListener::bind(address).await.map_err(|e| {
        DemoError::Setup(format!(
            "cannot listen on {address} for the development authorization server: {e} (is something else using it?)"
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jose::{CompactJws, PublicKey};

    fn parse(token: &str) -> (CompactJws<'_>, Value) {
        let jws = CompactJws::parse(token, 16 * 1024).unwrap();
        let claims = serde_json::from_slice(jws.payload()).unwrap();
        (jws, claims)
    }

    #[test]
    fn the_checked_in_issuer_key_still_loads_and_matches_its_jwks() {
        let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
        let issuer = DevIssuer::new(&certs.join("dev-issuer.key"), ISSUER, "https://api.localhost").unwrap();
        let file = std::fs::read_to_string(certs.join("dev-issuer-jwks.json")).unwrap();
        let published: Value = serde_json::from_str(&file).unwrap();
        assert_eq!(published["keys"][0], jwks_entry(&issuer.key));
        assert_eq!(serde_json::from_str::<Value>(&issuer.jwks()).unwrap(), published);

        let token = issuer.mtls_token("accounts:read", b"certificate").unwrap();
        let (jws, claims) = parse(&token);
        assert_eq!(Value::Object(jws.header().clone()), json!({"alg": "ES256", "typ": "at+jwt", "kid": KID}));
        assert_eq!(claims["cnf"], json!({"x5t#S256": b64url_encode(&sha256(b"certificate"))}));
        let key = PublicKey::from_jwk(published["keys"][0].as_object().unwrap()).unwrap();
        assert_eq!(jws.verify_with(Alg::Es256, &key), Ok(()));

        // What the demo writes for a new issuer key is what it always kept there: the
        // checked-in key exported again is the file, byte for byte.
        let pem = std::fs::read_to_string(certs.join("dev-issuer.key")).unwrap();
        assert_eq!(issuer.key.to_pkcs8_pem().unwrap(), pem);
    }

    #[test]
    fn dev_as_registers_the_bundled_login_client() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = crate::config::Config::from_yaml(super::super::BUNDLED_CONFIG, "gateway.yaml", repo).unwrap();
        assert_eq!(config.issuers[0].issuer, ISSUER, "the resource side trusts the development AS");
        let login = &config.logins[0];
        assert_eq!(login.issuer, ISSUER, "the login discovers the development AS");
        assert_eq!(
            (login.client_id.as_str(), login.redirect_uri.as_str(), login.post_logout_redirect_uri.as_deref()),
            (DEMO_LOGIN.client_id, DEMO_LOGIN.redirect_uri, Some(DEMO_LOGIN.post_logout_redirect_uri))
        );
    }

    #[test]
    fn dpop_tokens_and_proofs_name_the_client_key() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("dev-issuer.key");
        std::fs::write(&key_file, generate_key().unwrap().to_pkcs8_pem().unwrap()).unwrap();
        let issuer = DevIssuer::new(&key_file, ISSUER, "https://api.localhost").unwrap();
        let client = generate_key().unwrap();

        let token = issuer.dpop_token("payments:write", &client).unwrap();
        let (jws, claims) = parse(&token);
        assert_eq!(claims["cnf"], json!({"jkt": client.thumbprint_b64()}));
        assert_eq!(jws.verify_with(Alg::Es256, issuer.key.public_key()), Ok(()));

        let proof = dpop_proof(&client, "GET", "https://localhost/payments/1", &token, Some("n-1")).unwrap();
        let (jws, claims) = parse(&proof);
        assert_eq!(jws.header_str("typ"), Some("dpop+jwt"));
        assert_eq!(jws.alg(), Ok(Alg::Es256));
        let jwk = jws.header()["jwk"].as_object().unwrap();
        assert_eq!(Value::Object(jwk.clone()), client.public_jwk());
        assert_eq!(jws.verify_with(Alg::Es256, &PublicKey::from_jwk(jwk).unwrap()), Ok(()));
        assert_eq!(claims["ath"], json!(b64url_encode(&sha256(token.as_bytes()))));
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(
            (claims["htm"].as_str(), claims["htu"].as_str()),
            (Some("GET"), Some("https://localhost/payments/1"))
        );
    }
}
