//! The demo's development authorization server: mints ES256 `at+jwt` access tokens bound
//! to a client certificate (RFC 8705) or a DPoP key (RFC 9449), signs DPoP proofs for the
//! demo clients, and serves its JWKS over HTTPS. Development only: its key lives in
//! `certs/dev-issuer.key`, which is public.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use super::DemoError;
use crate::jose::{b64url_encode, sha256};

/// The issuer identifier the bundled `gateway.yaml` trusts.
pub const ISSUER: &str = "https://issuer.localhost";
const KID: &str = "dev-issuer-1";

/// An ES256 key: the issuer's, or a demo client's DPoP key.
pub struct Es256Key {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl Es256Key {
    pub fn generate() -> Result<Self, DemoError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DemoError::Setup("cannot generate a key".into()))?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    pub fn from_pem_file(path: &Path) -> Result<Self, DemoError> {
        let key = PrivateKeyDer::from_pem_file(path)
            .map_err(|e| DemoError::Setup(format!("cannot read {}: {e}", path.display())))?;
        Self::from_pkcs8(key.secret_der())
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, DemoError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| DemoError::Setup("not a P-256 PKCS#8 key".into()))?;
        Ok(Es256Key { pair, rng: SystemRandom::new() })
    }

    /// The public JWK (RFC 7638 members only).
    pub fn jwk(&self) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"crv": "P-256", "kty": "EC", "x": b64url_encode(&p[1..33]), "y": b64url_encode(&p[33..65])})
    }

    /// RFC 7638 thumbprint, base64url.
    pub fn thumbprint(&self) -> String {
        b64url_encode(&sha256(self.jwk().to_string().as_bytes()))
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> Result<String, DemoError> {
        let input = format!(
            "{}.{}",
            b64url_encode(header.to_string().as_bytes()),
            b64url_encode(claims.to_string().as_bytes())
        );
        let signature =
            self.pair.sign(&self.rng, input.as_bytes()).map_err(|_| DemoError::Setup("signing failed".into()))?;
        Ok(format!("{input}.{}", b64url_encode(signature.as_ref())))
    }

    /// A DPoP proof for `method url`, bound to `token`, with an optional server nonce.
    pub fn dpop_proof(&self, method: &str, url: &str, token: &str, nonce: Option<&str>) -> Result<String, DemoError> {
        let mut jti = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut jti);
        let mut claims = json!({
            "jti": b64url_encode(&jti), "htm": method, "htu": url, "iat": crate::jose::unix_now(),
            "ath": b64url_encode(&sha256(token.as_bytes())),
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        self.sign(&json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()}), &claims)
    }
}

/// Mints access tokens as the development issuer.
pub struct DevIssuer {
    key: Es256Key,
    audience: String,
}

impl DevIssuer {
    pub fn new(key_file: &Path, audience: &str) -> Result<Self, DemoError> {
        Ok(DevIssuer { key: Es256Key::from_pem_file(key_file)?, audience: audience.to_string() })
    }

    /// An access token for `scope`, bound as `cnf` says.
    pub fn token(&self, scope: &str, cnf: Value) -> Result<String, DemoError> {
        let now = crate::jose::unix_now();
        let mut jti = [0u8; 12];
        let _ = aws_lc_rs::rand::fill(&mut jti);
        let claims = json!({
            "iss": ISSUER, "aud": self.audience, "sub": "alice", "client_id": "demo-client",
            "iat": now, "exp": now + 600, "jti": b64url_encode(&jti), "scope": scope, "cnf": cnf,
        });
        self.key.sign(&json!({"alg": "ES256", "typ": "at+jwt", "kid": KID}), &claims)
    }

    /// A token bound to the client certificate with this DER encoding.
    pub fn mtls_token(&self, scope: &str, cert_der: &[u8]) -> Result<String, DemoError> {
        self.token(scope, json!({"x5t#S256": b64url_encode(&sha256(cert_der))}))
    }

    /// A token bound to a DPoP key.
    pub fn dpop_token(&self, scope: &str, key: &Es256Key) -> Result<String, DemoError> {
        self.token(scope, json!({"jkt": key.thumbprint()}))
    }

    fn jwks(&self) -> String {
        let mut jwk = self.key.jwk();
        jwk["kid"] = json!(KID);
        jwk["alg"] = json!("ES256");
        jwk["use"] = json!("sig");
        json!({"keys": [jwk]}).to_string()
    }

    /// Serves `GET /jwks` over HTTPS on `listener` until the process ends.
    pub fn serve_jwks(self: &Arc<Self>, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
        let body = Bytes::from(self.jwks());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, body) = (acceptor.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |_request| {
                        let body = body.clone();
                        async move {
                            let mut response = hyper::Response::new(Full::new(body));
                            response
                                .headers_mut()
                                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
    }
}

/// Where the development issuer serves its JWKS (the bundled `gateway.yaml` names it).
pub const JWKS_ADDRESS: &str = "127.0.0.1:9443";

/// Binds the JWKS listener.
pub async fn bind_jwks() -> Result<tokio::net::TcpListener, DemoError> {
    let address: SocketAddr = JWKS_ADDRESS.parse().map_err(|_| DemoError::Setup("bad address".into()))?;
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| DemoError::Setup(format!("cannot listen on {address} for the development issuer: {e}")))
}
