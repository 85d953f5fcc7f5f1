//! The development authorization server's HTTPS endpoints, for the demo and for
//! `fapi-gateway dev-as`:
//!
//! - `GET /jwks`: the issuer's public key set;
//! - `GET /.well-known/oauth-authorization-server`: RFC 8414 metadata naming the token
//!   endpoint (its `issuer` is the tokens' `iss`, not this address: configure clients by hand);
//! - `POST /token`: the client-credentials grant (RFC 6749 §4.4) for any client. With a valid
//!   `DPoP` proof (RFC 9449 §5) the token is bound to the proof's key (`cnf.jkt`); else with a
//!   TLS client certificate it is bound to that certificate (RFC 8705 §3, `cnf."x5t#S256"`);
//!   with neither it is refused, since the gateway accepts only bound tokens.
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

use super::dev_as::{DevIssuer, ISSUER};
use crate::jose::{Alg, CompactJws, PublicKey, b64url_encode, sha256, unix_now};

/// Scopes granted when the request names none: everything the bundled routes ask for.
pub const DEFAULT_SCOPE: &str = "accounts:read payments:write";
/// How far a token request's DPoP proof `iat` may be from now.
const PROOF_WINDOW_SECS: i64 = 60;
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Serves the endpoints over TLS on `listener` until the process ends. `tls` should ask for
/// (but not require) a client certificate, so that certificate-bound tokens can be issued.
pub fn serve(issuer: Arc<DevIssuer>, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, issuer) = (acceptor.clone(), issuer.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let client_cert = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (issuer, client_cert) = (issuer.clone(), client_cert.clone());
                    async move { Ok::<_, Infallible>(answer(&issuer, request, client_cert.as_deref()).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
}

type Response = hyper::Response<Full<Bytes>>;

async fn answer(
    issuer: &DevIssuer,
    request: hyper::Request<hyper::body::Incoming>,
    client_cert: Option<&[u8]>,
) -> Response {
    let origin = match request.headers().get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("https://{host}"),
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "a Host header is required"),
    };
    match (request.method().clone(), request.uri().path()) {
        (Method::GET, "/jwks") => json_response(StatusCode::OK, issuer.jwks()),
        (Method::GET, "/.well-known/oauth-authorization-server") => json_response(StatusCode::OK, metadata(&origin)),
        (Method::POST, "/token") => {
            let (parts, body) = request.into_parts();
            match Limited::new(body, MAX_FORM_BYTES).collect().await {
                Ok(body) => token(issuer, &parts.headers, &body.to_bytes(), client_cert, &format!("{origin}/token")),
                Err(_) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the request body is too large"),
            }
        }
        (_, "/token") => oauth_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "use POST"),
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"}).to_string()),
    }
}

fn metadata(origin: &str) -> String {
    json!({
        "issuer": ISSUER,
        "token_endpoint": format!("{origin}/token"),
        "jwks_uri": format!("{origin}/jwks"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["none", "self_signed_tls_client_auth"],
        "dpop_signing_alg_values_supported": ["ES256", "PS256", "EdDSA"],
        "tls_client_certificate_bound_access_tokens": true,
    })
    .to_string()
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
            "this development server knows only grant_type=client_credentials",
        );
    }
    let scope = scope.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| DEFAULT_SCOPE.to_string());
    let mut proofs = headers.get_all("dpop").iter();
    let (cnf, token_type) = match (proofs.next(), proofs.next()) {
        (Some(_), Some(_)) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", "send exactly one DPoP header");
        }
        (Some(proof), None) => match proof_thumbprint(proof, token_url) {
            Ok(jkt) => (json!({ "jkt": jkt }), "DPoP"),
            Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why),
        },
        (None, _) => match client_cert {
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

/// Checks a token request's DPoP proof (RFC 9449 §4.3, without replay tracking) and returns
/// the RFC 7638 thumbprint of its key.
fn proof_thumbprint(proof: &HeaderValue, token_url: &str) -> Result<String, &'static str> {
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
        Some(iat) if (iat - unix_now()).abs() <= PROOF_WINDOW_SECS => Ok(key.thumbprint_b64()),
        Some(_) => Err("the DPoP proof's iat is not within 60 seconds of now"),
        None => Err("the DPoP proof needs a numeric iat"),
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
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
        assert_eq!(proof_thumbprint(&proof(&key, json!({}), json!({})), URL), Ok(key.thumbprint_b64()));
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
