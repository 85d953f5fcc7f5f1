//! The development authorization server's HTTPS endpoints, for the demo and for
//! `fapi-gateway dev-as`:
//!
//! - `GET /jwks`: the issuer's public key set;
//! - `GET /.well-known/oauth-authorization-server` (and `/.well-known/openid-configuration`,
//!   the same): RFC 8414 metadata (its `issuer` is the tokens' `iss`; the endpoints are on
//!   the origin the request came to);
//! - `POST /token`: the client-credentials grant (RFC 6749 §4.4) for any client. With a valid
//!   `DPoP` proof (RFC 9449 §5) the token is bound to the proof's key (`cnf.jkt`); else with a
//!   TLS client certificate it is bound to that certificate (RFC 8705 §3, `cnf."x5t#S256"`);
//!   with neither it is refused, since the gateway accepts only bound tokens;
//! - with a registered login client, the authorization-code flow of [`super::dev_as_flow`]:
//!   `POST /par`, `GET`/`POST /authorize`, the code and refresh grants at `POST /token`,
//!   `POST /revoke`, `GET /logout`.
//!
//! Development only: every client gets a token, and the issuer's key is public.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::dev_as::DevIssuer;
use super::dev_as_flow::CodeFlow;
use crate::jose::{Alg, CompactJws, PublicKey, b64url_encode, sha256, unix_now};

/// Scopes granted when the request names none: everything the bundled routes ask for.
pub const DEFAULT_SCOPE: &str = "accounts:read payments:write";
/// How far a token request's DPoP proof `iat` may be from now.
const PROOF_WINDOW_SECS: i64 = 60;
const MAX_FORM_BYTES: usize = 8 * 1024;

/// What the server answers for.
pub struct DevServer {
    pub issuer: Arc<DevIssuer>,
    /// The authorization-code flow, when a login client is registered.
    pub flow: Option<CodeFlow>,
}

/// Serves the endpoints over TLS on `listener` until the process ends. `tls` should ask for
/// (but not require) a client certificate, so that certificate-bound tokens can be issued.
pub fn serve(server: Arc<DevServer>, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, server) = (acceptor.clone(), server.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let client_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (server, client_cert) = (server.clone(), client_cert.clone());
                    async move { Ok::<_, Infallible>(answer(&server, request, client_cert.as_deref()).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
}

pub(super) type Response = hyper::Response<Full<Bytes>>;

async fn answer(
    server: &DevServer,
    request: hyper::Request<hyper::body::Incoming>,
    client_cert: Option<&[u8]>,
) -> Response {
    let origin = match request.headers().get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("https://{host}"),
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "a Host header is required"),
    };
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or("").to_string();
    let flow = server.flow.as_ref();
    let read_form = || async {
        match Limited::new(body, MAX_FORM_BYTES).collect().await {
            Ok(body) => Ok(body.to_bytes()),
            Err(_) => Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the request body is too large")),
        }
    };
    match (parts.method.clone(), parts.uri.path(), flow) {
        (Method::GET, "/jwks", _) => json_response(StatusCode::OK, server.issuer.jwks()),
        (Method::GET, "/.well-known/oauth-authorization-server" | "/.well-known/openid-configuration", _) => {
            json_response(StatusCode::OK, metadata(server, &origin))
        }
        (Method::POST, "/token", _) => match read_form().await {
            Ok(form) if !matches!(grant_type(&form).as_deref(), Some("authorization_code" | "refresh_token")) => {
                token(&server.issuer, &parts.headers, &form, client_cert, &format!("{origin}/token"))
            }
            Ok(form) => flow.map_or_else(
                || oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "no login client"),
                |flow| flow.token(&parts.headers, &form, &format!("{origin}/token")),
            ),
            Err(refusal) => refusal,
        },
        (Method::POST, "/par", Some(flow)) => match read_form().await {
            Ok(form) => flow.push(&form),
            Err(refusal) => refusal,
        },
        (Method::GET, "/authorize", Some(flow)) => flow.authorize(&query),
        (Method::POST, "/authorize", Some(flow)) => match read_form().await {
            Ok(form) => flow.decide(&form),
            Err(refusal) => refusal,
        },
        (Method::POST, "/revoke", Some(flow)) => match read_form().await {
            Ok(form) => flow.revoke(&form),
            Err(refusal) => refusal,
        },
        (Method::GET, "/logout", Some(flow)) => flow.end_session(&query),
        (_, "/token" | "/par" | "/revoke", _) => {
            oauth_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "use POST")
        }
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"}).to_string()),
    }
}

fn grant_type(form: &[u8]) -> Option<String> {
    form_urlencoded::parse(form).find(|(name, _)| name == "grant_type").map(|(_, value)| value.into_owned())
}

fn metadata(server: &DevServer, origin: &str) -> String {
    let mut metadata = json!({
        "issuer": server.issuer.issuer(),
        "token_endpoint": format!("{origin}/token"),
        "jwks_uri": format!("{origin}/jwks"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["none", "self_signed_tls_client_auth"],
        "dpop_signing_alg_values_supported": ["ES256", "PS256", "EdDSA"],
        "tls_client_certificate_bound_access_tokens": true,
    });
    if server.flow.is_some() {
        let login = json!({
            "authorization_endpoint": format!("{origin}/authorize"),
            "pushed_authorization_request_endpoint": format!("{origin}/par"),
            "require_pushed_authorization_requests": true,
            "revocation_endpoint": format!("{origin}/revoke"),
            "end_session_endpoint": format!("{origin}/logout"),
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["jwt", "query.jwt", "query"],
            "authorization_signing_alg_values_supported": ["ES256"],
            "authorization_response_iss_parameter_supported": true,
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "none", "self_signed_tls_client_auth"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "request_object_signing_alg_values_supported": ["ES256"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "scopes_supported": ["openid", "accounts:read", "payments:write"],
            "subject_types_supported": ["public"],
        });
        for (name, value) in login.as_object().into_iter().flatten() {
            metadata[name] = value.clone();
        }
    }
    metadata.to_string()
}

/// The client-credentials grant.
fn token(
    issuer: &DevIssuer,
    headers: &HeaderMap,
    form: &[u8],
    client_cert: Option<&[u8]>,
    token_url: &str,
) -> Response {
    let mut grant_type = None;
    let mut scope = None;
    for (name, value) in form_urlencoded::parse(form) {
        match name.as_ref() {
            "grant_type" => grant_type = Some(value.into_owned()),
            "scope" => scope = Some(value.into_owned()),
            _ => {}
        }
    }
    if grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this development server knows grant_type=client_credentials (and authorization_code and refresh_token for its login client)",
        );
    }
    let scope = scope.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| DEFAULT_SCOPE.to_string());
    let (cnf, token_type) = match proof_of_possession(headers, token_url) {
        Err(refusal) => return refusal.into_response(),
        Ok(Some(proof)) => (json!({ "jkt": proof.jkt }), "DPoP"),
        Ok(None) => match client_cert {
            Some(der) => (json!({ "x5t#S256": b64url_encode(&sha256(der)) }), "Bearer"),
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "present a TLS client certificate (for a certificate-bound token) or a DPoP proof (for a DPoP-bound token)",
                );
            }
        },
    };
    match issuer.token(&scope, cnf) {
        Ok(access_token) => json_response(
            StatusCode::OK,
            json!({"access_token": access_token, "token_type": token_type, "expires_in": issuer.lifetime_secs(), "scope": scope})
                .to_string(),
        ),
        Err(_) => oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "cannot sign the token"),
    }
}

/// A token request's checked DPoP proof.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TokenProof {
    /// The RFC 7638 thumbprint of its key.
    pub jkt: String,
    pub nonce: Option<String>,
}

/// The request's DPoP proof, checked; `None` without one; a refusal when there are several
/// or it is bad.
pub(super) fn proof_of_possession(headers: &HeaderMap, token_url: &str) -> Result<Option<TokenProof>, Refusal> {
    let mut proofs = headers.get_all("dpop").iter();
    match (proofs.next(), proofs.next()) {
        (Some(_), Some(_)) => {
            Err(Refusal::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", "send exactly one DPoP header"))
        }
        (Some(proof), None) => proof_thumbprint(proof, token_url)
            .map(Some)
            .map_err(|why| Refusal::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why)),
        (None, _) => Ok(None),
    }
}

/// Checks a token request's DPoP proof (RFC 9449 §4.3, without replay tracking) and returns
/// the thumbprint of its key and its nonce.
fn proof_thumbprint(proof: &HeaderValue, token_url: &str) -> Result<TokenProof, &'static str> {
    let proof = proof.to_str().map_err(|_| "the DPoP header is not text")?;
    let jws = CompactJws::parse(proof, 8 * 1024).map_err(|_| "the DPoP proof is not a compact JWS")?;
    if jws.header_str("typ") != Some("dpop+jwt") {
        return Err("the DPoP proof's typ must be dpop+jwt");
    }
    let alg = jws.alg().map_err(|_| "the DPoP proof's alg is not supported")?;
    if !matches!(alg, Alg::Es256 | Alg::Ps256 | Alg::EdDsa) {
        return Err("the DPoP proof's alg must be ES256, PS256 or EdDSA");
    }
    let jwk = jws.header().get("jwk").and_then(Value::as_object).ok_or("the DPoP proof has no jwk header")?;
    if jwk.contains_key("d") {
        return Err("the DPoP proof's jwk must be a public key");
    }
    let key = PublicKey::from_jwk(jwk).map_err(|_| "the DPoP proof's jwk is not a usable public key")?;
    jws.verify_with(alg, &key).map_err(|_| "the DPoP proof's signature does not verify")?;
    let claims: Value = serde_json::from_slice(jws.payload()).map_err(|_| "the DPoP proof's claims are not JSON")?;
    if claims["htm"] != "POST" {
        return Err("the DPoP proof's htm must be POST");
    }
    if claims["htu"].as_str().map(|u| u.split(['?', '#']).next().unwrap_or(u)) != Some(token_url) {
        return Err("the DPoP proof's htu must be this token endpoint's URL");
    }
    if claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err("the DPoP proof needs a jti");
    }
    match claims["iat"].as_i64() {
        Some(iat) if (iat - unix_now()).abs() <= PROOF_WINDOW_SECS => {
            Ok(TokenProof { jkt: key.thumbprint_b64(), nonce: claims["nonce"].as_str().map(str::to_string) })
        }
        Some(_) => Err("the DPoP proof's iat is not within 60 seconds of now"),
        None => Err("the DPoP proof needs a numeric iat"),
    }
}

pub(super) fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An OAuth error answer (RFC 6749 §5.2), before it becomes a response.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
    /// A `DPoP-Nonce` to send with it (RFC 9449 §8).
    dpop_nonce: Option<String>,
}

impl Refusal {
    pub fn new(status: StatusCode, error: &'static str, description: &str) -> Refusal {
        Refusal { status, error, description: description.to_string(), dpop_nonce: None }
    }

    pub fn with_dpop_nonce(mut self, nonce: &str) -> Refusal {
        self.dpop_nonce = Some(nonce.to_string());
        self
    }

    pub fn into_response(self) -> Response {
        let mut response = oauth_error(self.status, self.error, &self.description);
        if let Some(value) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            response.headers_mut().insert("dpop-nonce", value);
        }
        response
    }
}

pub(super) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(status, json!({"error": error, "error_description": description}).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;

    const URL: &str = "https://localhost:9443/token";

    fn proof(key: &SigningKey, header: Value, claims: Value) -> HeaderValue {
        let mut h = json!({"typ": "dpop+jwt", "jwk": key.public_jwk()});
        for (k, v) in header.as_object().unwrap() {
            h[k] = v.clone();
        }
        let mut c = json!({"jti": "j-1", "htm": "POST", "htu": URL, "iat": unix_now()});
        for (k, v) in claims.as_object().unwrap() {
            c[k] = v.clone();
        }
        HeaderValue::from_str(&key.sign_compact(&h, &c).unwrap()).unwrap()
    }

    #[test]
    fn a_good_proof_gives_its_key_thumbprint() {
        let key = SigningKey::generate(Alg::Es256).unwrap();
        assert_eq!(
            proof_thumbprint(&proof(&key, json!({}), json!({"nonce": "n"})), URL),
            Ok(TokenProof { jkt: key.thumbprint_b64(), nonce: Some("n".into()) })
        );
    }

    #[test]
    fn bad_proofs_are_refused_with_their_reason() {
        let key = SigningKey::generate(Alg::Es256).unwrap();
        let cases = [
            (proof(&key, json!({"typ": "JWT"}), json!({})), "typ"),
            (proof(&key, json!({}), json!({"htm": "GET"})), "htm"),
            (proof(&key, json!({}), json!({"htu": "https://elsewhere/token"})), "htu"),
            (proof(&key, json!({}), json!({"iat": unix_now() - 3600})), "iat"),
            (proof(&key, json!({}), json!({"jti": ""})), "jti"),
            (proof(&key, json!({"jwk": {"kty": "EC"}}), json!({})), "jwk"),
            (HeaderValue::from_static("not-a-jws"), "compact JWS"),
        ];
        for (value, word) in cases {
            let why = proof_thumbprint(&value, URL).unwrap_err();
            assert!(why.contains(word), "{why} should mention {word}");
        }
        // Signed by another key than the one in its header.
        let other = SigningKey::generate(Alg::Es256).unwrap();
        let forged = proof(&other, json!({"jwk": key.public_jwk()}), json!({}));
        assert_eq!(proof_thumbprint(&forged, URL), Err("the DPoP proof's signature does not verify"));
    }
}
