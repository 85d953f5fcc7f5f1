//! Opaque access tokens: the issuer's RFC 7662 introspection endpoint decides, and the
//! answer is held to the same checks as a JWT's claims.
//!
//! The gateway authenticates as a client (`private_key_jwt`, `tls_client_auth` or
//! `client_secret_basic`) and posts `token` with `token_type_hint=access_token`. An answer
//! must be `200` with `active: true`, then goes through [`check_claims`] like a JWT payload:
//! `iss` (the issuer itself when the answer leaves it out), `aud`, `exp`, the
//! introspection's `required_claims` (none by default), and `cnf` — which the gateway enforces itself (RFC 9449 §6.2, RFC 8705
//! §3.2: the AS does not check the binding). A `token_type` must be `Bearer`, or `DPoP` with a
//! `cnf.jkt` (RFC 9449 §6.2); anything else (`refresh_token`, say) is no access token. With `response: jwt` the answer is an RFC 9701
//! JWT signed by the issuer (its keys, its `algorithms`, `typ: token-introspection+jwt`,
//! `aud` = our `client_id` or one of our audiences), and an unsigned answer is refused.
//!
//! Whatever stops the gateway from getting an answer — the AS down, slow, answering
//! something else, `max_concurrent` calls already waiting — is [`TokenError::IntrospectionUnavailable`]
//! (503 with `Retry-After`), never an accepted token. Active answers are cached by the
//! validator (by the token's SHA-256, at most `cache_ttl`, never past `exp`); refusals
//! (inactive, or an answer that fails the checks) here for `inactive_cache_ttl`. The token, the answer and the client's secret are never
//! logged.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use tokio::sync::{OnceCell, Semaphore};

use super::claims::{check_claims, parse_claims};
use super::{MAX_TOKEN_BYTES, TokenError, ValidatedToken};
use crate::auth::jwks::IssuerKeys;
use crate::config::{Introspection, IntrospectionAuth, IntrospectionFormat, Issuer};
use crate::jose::{self, Alg, CompactJws, SigningKey};
use crate::secret::Secret;

/// Answers larger than this are refused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Inactive answers remembered at most (a flood of made-up tokens cannot grow it further).
const MAX_INACTIVE_ENTRIES: u64 = 100_000;
/// RFC 9701 §5: the media type of a signed introspection answer, and its `typ`.
const JWT_MEDIA_TYPE: &str = "application/token-introspection+jwt";
const JWT_TYP: &str = "token-introspection+jwt";

/// Why the introspection client cannot be set up: named files that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectionSetupError {
    #[error("introspection.client_key {path}: {reason}")]
    ClientKey { path: String, reason: String },
    #[error("introspection.client_secret_file {path}: {reason}")]
    Secret { path: String, reason: String },
    #[error("introspection: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// How each call authenticates.
enum Credentials {
    Assertion {
        key: SigningKey,
        kid: Option<String>,
    },
    /// The TLS client certificate (configured on the HTTPS client).
    Certificate,
    /// The `Authorization: Basic …` value.
    Basic(Secret<HeaderValue>),
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One issuer's introspection client.
pub struct Introspector {
    issuer: Issuer,
    settings: Introspection,
    keys: Arc<IssuerKeys>,
    client: HttpsClient,
    credentials: Credentials,
    /// The endpoint, configured or found in the metadata once.
    endpoint: OnceCell<Uri>,
    in_flight: Semaphore,
    /// Tokens the issuer called inactive, or whose answer failed the checks, and why.
    refused: moka::sync::Cache<[u8; 32], TokenError>,
}

impl Introspector {
    /// The client of `issuer`'s introspection, if it has one; reads the key or secret file.
    pub fn new(issuer: &Issuer, keys: Arc<IssuerKeys>) -> Result<Option<Introspector>, IntrospectionSetupError> {
        let Some(settings) = issuer.introspection.clone() else {
            return Ok(None);
        };
        let ca = issuer.ca.as_deref();
        let (tls, credentials) = match &settings.client_auth {
            IntrospectionAuth::PrivateKeyJwt { key, kid } => {
                let key_error =
                    |reason: String| IntrospectionSetupError::ClientKey { path: key.display().to_string(), reason };
                let pem = std::fs::read(key).map_err(|e| key_error(e.to_string()))?;
                let signing = [Alg::Es256, Alg::Ps256, Alg::EdDsa]
                    .into_iter()
                    .find_map(|alg| SigningKey::from_pkcs8_pem(alg, &pem).ok())
                    .ok_or_else(|| key_error("not a PKCS#8 PEM key for ES256, PS256 or EdDSA".into()))?;
                (crate::tls::client::client_config(ca)?, Credentials::Assertion { key: signing, kid: kid.clone() })
            }
            IntrospectionAuth::TlsClientAuth { cert, key } => {
                (crate::tls::client::client_config_with_identity(ca, cert, key)?, Credentials::Certificate)
            }
            IntrospectionAuth::ClientSecretBasic { secret_file } => {
                let secret_error = |reason: String| IntrospectionSetupError::Secret {
                    path: secret_file.display().to_string(),
                    reason,
                };
                let text = std::fs::read_to_string(secret_file).map_err(|e| secret_error(e.to_string()))?;
                let secret = text.trim_end_matches(['\r', '\n']);
                if secret.is_empty() {
                    return Err(secret_error("the file is empty".into()));
                }
                let basic = basic_authorization(&settings.client_id, secret)
                    .ok_or_else(|| secret_error("the secret cannot go in an HTTP header".into()))?;
                (crate::tls::client::client_config(ca)?, Credentials::Basic(Secret::new(basic)))
            }
        };
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
        let endpoint = OnceCell::new_with(settings.endpoint.clone());
        let refused = moka::sync::Cache::builder()
            .max_capacity(MAX_INACTIVE_ENTRIES)
            .time_to_live(settings.inactive_cache_ttl.max(Duration::from_millis(1)))
            .build();
        // Answers are held to the issuer's policy, with the introspection's own required members.
        let answers = Issuer { required_claims: settings.required_claims.clone(), ..issuer.clone() };
        Ok(Some(Introspector {
            issuer: answers,
            in_flight: Semaphore::new(settings.max_concurrent),
            settings,
            keys,
            client: Client::builder(TokioExecutor::new()).build(connector),
            credentials,
            endpoint,
            refused,
        }))
    }

    /// How long an active answer may be reused (the validator also stops at `exp`).
    pub fn cache_ttl(&self) -> Duration {
        self.settings.cache_ttl
    }

    /// Asks the issuer about `token` (whose SHA-256 is `hash`) and checks the answer.
    pub async fn introspect(&self, token: &str, hash: &[u8; 32], now: i64) -> Result<ValidatedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        if let Some(refused) = self.refused.get(hash) {
            return Err(refused);
        }
        let answer = self.ask(token).await.map_err(|reason| {
            tracing::warn!(issuer = %self.issuer.issuer, %reason, "token introspection failed; refusing with 503");
            TokenError::IntrospectionUnavailable
        })?;
        let object = match self.settings.format {
            IntrospectionFormat::Json => {
                jose::strict_json_object(&answer).map_err(|_| self.bad_answer("not a JSON object"))?
            }
            IntrospectionFormat::Jwt => self.verified_jwt_answer(&answer, now).await?,
        };
        match object.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Err(self.remember_refusal(hash, TokenError::Inactive)),
            _ => return Err(self.bad_answer("`active` is not a boolean")),
        }
        let checked = check_token_type(&object).and_then(|()| check_answer(object, &self.issuer, now));
        match checked {
            // Another request may have learnt meanwhile that the token is no longer active.
            Ok(_) if self.refused.contains_key(hash) => Err(self.refused.get(hash).unwrap_or(TokenError::Inactive)),
            Ok(token) => Ok(token),
            Err(refusal) => Err(self.remember_refusal(hash, refusal)),
        }
    }

    /// Remembers why `hash`'s token was refused for `inactive_cache_ttl`, so a client
    /// retrying it does not reach the AS each time.
    fn remember_refusal(&self, hash: &[u8; 32], refusal: TokenError) -> TokenError {
        if !self.settings.inactive_cache_ttl.is_zero() {
            self.refused.insert(*hash, refusal.clone());
        }
        refusal
    }

    fn bad_answer(&self, reason: &str) -> TokenError {
        tracing::warn!(issuer = %self.issuer.issuer, reason, "token introspection answer unusable; refusing with 503");
        TokenError::IntrospectionUnavailable
    }

    /// One call: a permit (waiting at most `timeout`), then the POST within `timeout`.
    async fn ask(&self, token: &str) -> Result<Bytes, String> {
        let timeout = self.settings.timeout;
        let _permit = tokio::time::timeout(timeout, self.in_flight.acquire())
            .await
            .map_err(|_| format!("{} introspection calls already waiting", self.settings.max_concurrent))?
            .map_err(|_| "closed".to_string())?;
        let endpoint = self.endpoint().await?;
        let mut request = Request::post(endpoint.clone()).header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        request = request.header(
            ACCEPT,
            match self.settings.format {
                IntrospectionFormat::Json => "application/json",
                IntrospectionFormat::Jwt => JWT_MEDIA_TYPE,
            },
        );
        let mut pairs = vec![("token", token.to_string()), ("token_type_hint", "access_token".to_string())];
        match &self.credentials {
            Credentials::Basic(value) => request = request.header(AUTHORIZATION, value.expose().clone()),
            Credentials::Certificate => pairs.push(("client_id", self.settings.client_id.clone())),
            Credentials::Assertion { key, kid } => {
                // `aud` = the issuer identifier, as the login mode's (FAPI 2.0 §5.3.3.1-5).
                let assertion = crate::jose::assertion::client_assertion(
                    key,
                    kid.as_deref(),
                    &self.settings.client_id,
                    &self.issuer.issuer,
                    None,
                )
                .map_err(|e| format!("cannot sign the client assertion: {e}"))?;
                pairs.push(("client_id", self.settings.client_id.clone()));
                pairs.push(("client_assertion_type", crate::jose::assertion::ASSERTION_TYPE.to_string()));
                pairs.push(("client_assertion", assertion));
            }
        }
        let form = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let request = request.body(Full::new(Bytes::from(form))).map_err(|e| e.to_string())?;
        let work = async {
            let response = self.client.request(request).await.map_err(|e| crate::diagnostics::error_chain(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(format!("POST {endpoint}: status {status}"));
            }
            Ok(body)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("POST {endpoint}: timed out after {timeout:?}"))?
    }

    /// The configured endpoint, or the one the issuer's metadata names (found once; a
    /// failed discovery is tried again on the next call).
    async fn endpoint(&self) -> Result<&Uri, String> {
        self.endpoint
            .get_or_try_init(|| async {
                let mtls = matches!(self.credentials, Credentials::Certificate);
                discover_endpoint(&self.client, &self.issuer.issuer, mtls, self.settings.timeout).await
            })
            .await
    }

    /// RFC 9701 §5: the answer is a JWS by the issuer, `typ` `token-introspection+jwt`,
    /// `iss` the issuer, `aud` our client id; its `token_introspection` member is the answer.
    async fn verified_jwt_answer(&self, answer: &[u8], now: i64) -> Result<Map<String, Value>, TokenError> {
        let text = std::str::from_utf8(answer).map_err(|_| self.bad_answer("not a JWT"))?.trim();
        let jws = CompactJws::parse(text, MAX_ANSWER_BYTES).map_err(|_| self.bad_answer("not a JWT"))?;
        let alg = jws.alg().map_err(|_| self.bad_answer("its alg is not accepted"))?;
        if !self.issuer.algorithms.contains(&alg) {
            return Err(self.bad_answer("its alg is not one of the issuer's algorithms"));
        }
        if jws.header_str("typ").map(crate::config::normalise_typ).as_deref() != Some(JWT_TYP) {
            return Err(self.bad_answer("its typ is not token-introspection+jwt"));
        }
        let kid = jws.header_str("kid");
        let set = self.keys.key_set(kid, alg).await.map_err(|_| self.bad_answer("no key of the issuer verifies it"))?;
        if !set.candidates(kid, alg).any(|key| jws.verify_with(alg, key).is_ok()) {
            return Err(self.bad_answer("its signature is invalid"));
        }
        let mut claims = jose::strict_json_object(jws.payload()).map_err(|_| self.bad_answer("malformed claims"))?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.issuer.as_str()) {
            return Err(self.bad_answer("its iss is not the issuer"));
        }
        // The resource server is named by our client id or by one of our audiences
        // (oidc-provider names the token's audience).
        let ours = |aud: &str| aud == self.settings.client_id || self.issuer.audiences.iter().any(|a| a == aud);
        let for_us = match claims.get("aud") {
            Some(Value::String(aud)) => ours(aud),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(ours),
            _ => false,
        };
        if !for_us {
            return Err(self.bad_answer("its aud is neither our client_id nor one of our audiences"));
        }
        let max_future = i64::try_from(self.issuer.max_future.as_secs()).unwrap_or(i64::MAX);
        if claims.get("iat").and_then(Value::as_i64).is_some_and(|iat| iat > now.saturating_add(max_future)) {
            return Err(self.bad_answer("it was issued in the future"));
        }
        match claims.remove("token_introspection") {
            Some(Value::Object(inner)) => Ok(inner),
            _ => Err(self.bad_answer("it has no token_introspection object")),
        }
    }
}

/// RFC 7662 §2.2 `token_type`, when given, names an access token's scheme (`Bearer`, or
/// `DPoP` with a `cnf.jkt`, RFC 9449 §6.2): anything else — a refresh token, say — is not
/// an access token, and a DPoP token must be bound.
fn check_token_type(object: &Map<String, Value>) -> Result<(), TokenError> {
    let jkt = object.get("cnf").and_then(|c| c.get("jkt")).is_some();
    match object.get("token_type") {
        None => Ok(()),
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") && !jkt => Ok(()),
        Some(Value::String(t)) if t.eq_ignore_ascii_case("dpop") && jkt => Ok(()),
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("dpop") => {
            Err(TokenError::BadConfirmation)
        }
        Some(other) => Err(TokenError::NotAccessToken(super::shown(other.as_str().unwrap_or("(not a string)")))),
    }
}

/// An active answer's members as claims: the issuer's `iss` when the answer has none
/// (RFC 7662 makes it optional; the endpoint is the issuer's own), then [`check_claims`].
fn check_answer(mut object: Map<String, Value>, issuer: &Issuer, now: i64) -> Result<ValidatedToken, TokenError> {
    object.entry("iss").or_insert_with(|| Value::String(issuer.issuer.clone()));
    let bytes = serde_json::to_vec(&object).map_err(|_| TokenError::Malformed)?;
    check_claims(parse_claims(&bytes)?, issuer, now)
}

/// RFC 6749 §2.3.1: id and secret form-urlencoded, joined by `:`, in base64.
fn basic_authorization(client_id: &str, secret: &str) -> Option<HeaderValue> {
    use base64::Engine as _;
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    let mut value =
        HeaderValue::from_str(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `introspection_endpoint` from the issuer's metadata (RFC 8414 §3, then OpenID Connect
/// discovery), whose `issuer` must be exact; with a client certificate its RFC 8705 §5 alias
/// when there is one. Must be https.
async fn discover_endpoint(client: &HttpsClient, issuer: &str, mtls: bool, timeout: Duration) -> Result<Uri, String> {
    let mut last = String::from("no metadata URL");
    for url in crate::auth::jwks_fetch::metadata_urls(issuer) {
        let fetch = async {
            let request = Request::get(url.as_str())
                .header(ACCEPT, "application/json")
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let response = client.request(request).await.map_err(|e| crate::diagnostics::error_chain(&e))?;
            if response.status() != StatusCode::OK {
                return Err(format!("status {}", response.status()));
            }
            let body = Limited::new(response.into_body(), 1 << 20).collect().await.map_err(|e| e.to_string())?;
            jose::strict_json_object(&body.to_bytes()).map_err(|e| e.to_string())
        };
        let metadata = match tokio::time::timeout(timeout, fetch).await {
            Ok(Ok(metadata)) => metadata,
            Ok(Err(e)) => {
                last = format!("GET {url}: {e}");
                continue;
            }
            Err(_) => {
                last = format!("GET {url}: timed out");
                continue;
            }
        };
        if metadata.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(format!("{url}: the metadata names another issuer (RFC 8414 §3.3)"));
        }
        let alias = metadata.get("mtls_endpoint_aliases").and_then(|a| a.get("introspection_endpoint"));
        let chosen = match (mtls, alias) {
            (true, Some(alias)) => alias,
            _ => metadata.get("introspection_endpoint").ok_or_else(|| format!("{url}: no introspection_endpoint"))?,
        };
        let endpoint = chosen.as_str().and_then(|s| s.parse::<Uri>().ok()).filter(|u| u.scheme_str() == Some("https"));
        return endpoint.ok_or_else(|| format!("{url}: the introspection endpoint is not an https:// URL"));
    }
    Err(last)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_type_must_name_a_bound_access_token() {
        let answer = |v: Value| v.as_object().unwrap().clone();
        let jkt = serde_json::json!({ "jkt": "x" });
        assert_eq!(check_token_type(&answer(serde_json::json!({}))), Ok(()));
        assert_eq!(check_token_type(&answer(serde_json::json!({ "token_type": "Bearer" }))), Ok(()));
        assert_eq!(check_token_type(&answer(serde_json::json!({ "token_type": "dpop", "cnf": jkt }))), Ok(()));
        for bad in
            [serde_json::json!({ "token_type": "DPoP" }), serde_json::json!({ "token_type": "Bearer", "cnf": jkt })]
        {
            assert_eq!(check_token_type(&answer(bad)), Err(TokenError::BadConfirmation));
        }
        assert!(matches!(
            check_token_type(&answer(serde_json::json!({ "token_type": "refresh_token" }))),
            Err(TokenError::NotAccessToken(_))
        ));
    }

    #[test]
    fn basic_authorization_form_encodes_id_and_secret() {
        // RFC 6749 §2.3.1: `:` and non-ASCII are form-urlencoded before base64.
        let value = basic_authorization("gate:way", "s3cr3t é").unwrap();
        use base64::Engine as _;
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
        assert_eq!(String::from_utf8(decoded).unwrap(), "gate%3Away:s3cr3t+%C3%A9");
        assert!(value.is_sensitive());
    }
}
