//! The development authorization server's authorization-code flow, for the demo's login
//! story: what a FAPI 2.0 authorization server does for one registered client, in the
//! smallest form that still checks what matters.
//!
//! - `POST /par` (RFC 9126): the client authenticates with `private_key_jwt` (RFC 7523;
//!   `aud` = the issuer, single-use `jti`); the parameters come in the form or in a signed
//!   request object (JAR, RFC 9101); `redirect_uri` must be the registered one, PKCE S256 is
//!   required, `response_mode` is `jwt` (JARM) or absent (the query, with RFC 9207 `iss`).
//! - `GET /authorize?client_id&request_uri`: a one-click consent page for the demo user (no
//!   password); the pushed request is used once and lives 60 s.
//! - `POST /authorize`: the decision; 303 to `redirect_uri` with the signed response (JARM:
//!   `iss`, `aud`, `exp`, `state`, `code` or `error`).
//! - `POST /token` with `authorization_code` or `refresh_token`: client assertion, a DPoP
//!   proof carrying the server's nonce (RFC 9449 §8: else `use_dpop_nonce`), the PKCE
//!   verifier, `dpop_jkt` kept; DPoP-bound access tokens, rotated refresh tokens bound to the
//!   same key, an ID token for `openid`.
//! - `POST /revoke` (RFC 7009) and `GET /logout` (RP-initiated logout, back to the
//!   registered `post_logout_redirect_uri`).
//!
//! Development only: one user ([`super::dev_as::SUBJECT`]), state in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};

use super::dev_as::{DevIssuer, SUBJECT};
use super::dev_as_server::{Refusal, Response, TokenProof, json_response, proof_of_possession};
use crate::answer::html_escape;
use crate::jose::{Alg, CompactJws, PublicKey, b64url_encode, sha256, unix_now};
use crate::login::pkce::random_token;

/// `client_assertion_type` of `private_key_jwt`.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// How long a pushed request, a consent page and a code stay usable.
const STEP_LIFETIME: Duration = Duration::from_secs(60);
const JARM_LIFETIME_SECS: i64 = 60;
const ID_TOKEN_LIFETIME_SECS: i64 = 600;
/// The longest client assertion accepted (its `exp` from now).
const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;
const MAX_JWT_BYTES: usize = 16 * 1024;

/// The one client the development AS knows: the demo's `login:` entry.
#[derive(Clone, Debug)]
pub struct LoginClient {
    pub client_id: String,
    /// The public half of its `private_key_jwt` key (`certs/login-client.key`), ES256.
    pub key: PublicKey,
    /// The exact redirect URI it registered.
    pub redirect_uri: String,
    pub post_logout_redirect_uri: Option<String>,
}

/// An authorization request, from its push to its code.
#[derive(Clone, Debug)]
struct Authorization {
    redirect_uri: String,
    scope: String,
    state: String,
    nonce: Option<String>,
    code_challenge: String,
    dpop_jkt: Option<String>,
    jarm: bool,
}

/// What a refresh token stands for.
#[derive(Clone, Debug)]
struct Grant {
    scope: String,
    jkt: String,
}

#[derive(Default)]
struct FlowState {
    pushed: HashMap<String, (Authorization, Instant)>,
    consents: HashMap<String, (Authorization, Instant)>,
    codes: HashMap<String, (Authorization, Instant)>,
    refresh_tokens: HashMap<String, Grant>,
    /// Client assertion `jti`s seen, with their `exp`.
    assertions: HashMap<String, i64>,
}

impl FlowState {
    fn prune(&mut self) {
        let now = Instant::now();
        for map in [&mut self.pushed, &mut self.consents, &mut self.codes] {
            map.retain(|_, (_, at)| now.duration_since(*at) < STEP_LIFETIME);
        }
        let now = unix_now();
        self.assertions.retain(|_, exp| *exp >= now);
    }
}

/// Takes a single-use entry of `map` that is still fresh.
fn take(map: &mut HashMap<String, (Authorization, Instant)>, key: &str) -> Option<Authorization> {
    map.remove(key).filter(|(_, at)| at.elapsed() < STEP_LIFETIME).map(|(auth, _)| auth)
}

/// The flow's endpoints and state.
pub struct CodeFlow {
    issuer: Arc<DevIssuer>,
    client: LoginClient,
    /// The DPoP nonce the token endpoint requires (RFC 9449 §8).
    dpop_nonce: String,
    state: Mutex<FlowState>,
}

/// Form or query parameters, each at most once (RFC 6749 §3.1); `resource` may repeat.
struct Params(HashMap<String, String>);

impl Params {
    fn parse(bytes: &[u8]) -> Result<Params, Refusal> {
        let mut map = HashMap::new();
        for (name, value) in form_urlencoded::parse(bytes) {
            if name == "resource" {
                continue;
            }
            if map.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(Refusal::new(StatusCode::BAD_REQUEST, "invalid_request", &format!("`{name}` is repeated")));
            }
        }
        Ok(Params(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, Refusal> {
        self.get(name)
            .ok_or_else(|| Refusal::new(StatusCode::BAD_REQUEST, "invalid_request", &format!("`{name}` is missing")))
    }
}

impl CodeFlow {
    pub fn new(issuer: Arc<DevIssuer>, client: LoginClient) -> Result<CodeFlow, super::DemoError> {
        let dpop_nonce = random_token(16).map_err(|e| super::DemoError::Setup(e.to_string()))?;
        Ok(CodeFlow { issuer, client, dpop_nonce, state: Mutex::new(FlowState::default()) })
    }

    /// The registered client's redirect URI.
    pub fn client(&self) -> &LoginClient {
        &self.client
    }

    fn state(&self) -> MutexGuard<'_, FlowState> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.prune();
        state
    }

    /// `POST /par`.
    pub fn push(&self, form: &[u8]) -> Response {
        self.try_push(form).unwrap_or_else(Refusal::into_response)
    }

    fn try_push(&self, form: &[u8]) -> Result<Response, Refusal> {
        let form = Params::parse(form)?;
        self.authenticate(&form)?;
        let params = match form.get("request") {
            Some(request) => self.request_object(request)?,
            None => form,
        };
        if params.get("request_uri").is_some() {
            return Err(invalid_request("`request_uri` cannot be pushed"));
        }
        if params.require("response_type")? != "code" {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, "unsupported_response_type", "only `code` is supported"));
        }
        if params.require("client_id")? != self.client.client_id {
            return Err(invalid_request("`client_id` is not the authenticated client"));
        }
        let redirect_uri = params.require("redirect_uri")?;
        if redirect_uri != self.client.redirect_uri {
            return Err(invalid_request("`redirect_uri` is not the registered one"));
        }
        if params.get("code_challenge_method") != Some("S256") {
            return Err(invalid_request("PKCE with `code_challenge_method=S256` is required"));
        }
        let code_challenge = params.require("code_challenge")?;
        if code_challenge.len() != 43 {
            return Err(invalid_request("`code_challenge` is not a base64url SHA-256"));
        }
        let jarm = match params.get("response_mode") {
            Some("jwt") => true,
            None | Some("query") => false,
            Some(_) => return Err(invalid_request("`response_mode` must be `jwt` (JARM) or `query`")),
        };
        let authorization = Authorization {
            redirect_uri: redirect_uri.to_string(),
            scope: params.require("scope")?.to_string(),
            state: params.require("state")?.to_string(),
            nonce: params.get("nonce").map(str::to_string),
            code_challenge: code_challenge.to_string(),
            dpop_jkt: params.get("dpop_jkt").map(str::to_string),
            jarm,
        };
        let request_uri = format!("{REQUEST_URI_PREFIX}{}", random(24)?);
        self.state().pushed.insert(request_uri.clone(), (authorization, Instant::now()));
        Ok(json_response(
            StatusCode::CREATED,
            json!({"request_uri": request_uri, "expires_in": STEP_LIFETIME.as_secs()}).to_string(),
        ))
    }

    /// A signed request object's claims as parameters (RFC 9101 §4).
    fn request_object(&self, request: &str) -> Result<Params, Refusal> {
        let claims = self.verified_client_jwt(request, "the request object")?;
        if claims["aud"] != self.issuer.issuer() || claims["iss"] != self.client.client_id.as_str() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_object",
                "the request object's `iss` must be the client and its `aud` this issuer",
            ));
        }
        let mut map = HashMap::new();
        for (name, value) in claims.as_object().into_iter().flatten() {
            if let Some(text) = value.as_str() {
                map.insert(name.clone(), text.to_string());
            }
        }
        Ok(Params(map))
    }

    /// `private_key_jwt` (RFC 7523 §3): the assertion verifies with the client's key, names
    /// the client as `iss` and `sub` and this issuer as `aud`, is unexpired and new.
    fn authenticate(&self, form: &Params) -> Result<(), Refusal> {
        let unauthorized = |why: &str| Refusal::new(StatusCode::UNAUTHORIZED, "invalid_client", why);
        if form.get("client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(unauthorized("authenticate with private_key_jwt"));
        }
        let assertion = form.get("client_assertion").ok_or_else(|| unauthorized("`client_assertion` is missing"))?;
        let claims = self
            .verified_client_jwt(assertion, "the client assertion")
            .map_err(|_| unauthorized("the client assertion does not verify with the registered key"))?;
        let client = self.client.client_id.as_str();
        if claims["iss"] != client || claims["sub"] != client || form.get("client_id").is_some_and(|id| id != client) {
            return Err(unauthorized("the client assertion is not for the registered client"));
        }
        let audience_ok = match &claims["aud"] {
            Value::String(aud) => aud == self.issuer.issuer(),
            Value::Array(list) => list.iter().any(|a| a == self.issuer.issuer()),
            _ => false,
        };
        if !audience_ok {
            return Err(unauthorized("the client assertion's `aud` must be this issuer"));
        }
        let now = unix_now();
        let exp = claims["exp"].as_i64().ok_or_else(|| unauthorized("the client assertion needs `exp`"))?;
        if exp < now || exp > now + MAX_ASSERTION_LIFETIME_SECS {
            return Err(unauthorized("the client assertion has expired or lives too long"));
        }
        let jti = claims["jti"].as_str().filter(|j| !j.is_empty()).ok_or_else(|| unauthorized("`jti` is missing"))?;
        if self.state().assertions.insert(jti.to_string(), exp).is_some() {
            return Err(unauthorized("the client assertion was already used"));
        }
        Ok(())
    }

    /// The claims of a JWT signed by the client's key (ES256).
    fn verified_client_jwt(&self, jwt: &str, what: &str) -> Result<Value, Refusal> {
        let bad = || invalid_request(&format!("{what} is not a JWT signed by the client's key"));
        let jws = CompactJws::parse(jwt, MAX_JWT_BYTES).map_err(|_| bad())?;
        if jws.alg() != Ok(Alg::Es256) {
            return Err(bad());
        }
        jws.verify_with(Alg::Es256, &self.client.key).map_err(|_| bad())?;
        serde_json::from_slice(jws.payload()).map_err(|_| bad())
    }

    /// `GET /authorize?client_id&request_uri`: the consent page.
    pub fn authorize(&self, query: &str) -> Response {
        let Ok(params) = Params::parse(query.as_bytes()) else {
            return page(StatusCode::BAD_REQUEST, "Bad request", "<p>A parameter is repeated.</p>", None);
        };
        if params.get("client_id") != Some(self.client.client_id.as_str()) {
            return page(StatusCode::BAD_REQUEST, "Unknown client", "<p>This client is not registered.</p>", None);
        }
        let pushed = params.get("request_uri").and_then(|uri| take(&mut self.state().pushed, uri));
        let Some(authorization) = pushed else {
            return page(
                StatusCode::BAD_REQUEST,
                "Request expired",
                "<p>The pushed authorization request is unknown, used or expired (60 s). Start the login again.</p>",
                None,
            );
        };
        let Ok(consent) = random(24) else {
            return page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "<p>No randomness.</p>", None);
        };
        let body = format!(
            "<p><b>{client}</b> asks to sign you in as <b>{SUBJECT}</b> with the scopes <code>{scope}</code>.</p>\n\
             <p>This development server has one user and no password: allowing is enough.</p>\n\
             <form method=\"post\" action=\"/authorize\">\n\
             <input type=\"hidden\" name=\"consent\" value=\"{consent}\">\n\
             <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\" autofocus>Allow</button>\n\
             <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button>\n\
             </form>",
            client = html_escape(&self.client.client_id),
            scope = html_escape(&authorization.scope),
        );
        let form_target = origin(&authorization.redirect_uri).to_string();
        self.state().consents.insert(consent, (authorization, Instant::now()));
        page(StatusCode::OK, "Sign in to the development authorization server", &body, Some(&form_target))
    }

    /// `POST /authorize`: the decision, answered with 303 to the client's redirect URI.
    pub fn decide(&self, form: &[u8]) -> Response {
        let Ok(form) = Params::parse(form) else {
            return page(StatusCode::BAD_REQUEST, "Bad request", "<p>A parameter is repeated.</p>", None);
        };
        let Some(authorization) = form.get("consent").and_then(|c| take(&mut self.state().consents, c)) else {
            return page(StatusCode::BAD_REQUEST, "Consent expired", "<p>Start the login again.</p>", None);
        };
        let mut claims = json!({
            "iss": self.issuer.issuer(), "aud": self.client.client_id,
            "exp": unix_now() + JARM_LIFETIME_SECS, "state": authorization.state,
        });
        if form.get("decision") == Some("allow") {
            let Ok(code) = random(24) else {
                return page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "<p>No randomness.</p>", None);
            };
            claims["code"] = json!(code);
            self.state().codes.insert(code, (authorization.clone(), Instant::now()));
        } else {
            claims["error"] = json!("access_denied");
            claims["error_description"] = json!("the user denied the request");
        }
        let mut query = form_urlencoded::Serializer::new(String::new());
        if authorization.jarm {
            match self.issuer.sign(None, &claims) {
                Ok(response) => {
                    query.append_pair("response", &response);
                }
                Err(_) => return page(StatusCode::INTERNAL_SERVER_ERROR, "Error", "<p>Cannot sign.</p>", None),
            }
        } else {
            for name in ["code", "state", "error", "error_description", "iss"] {
                let value = if name == "iss" { Some(self.issuer.issuer()) } else { claims[name].as_str() };
                if let Some(value) = value {
                    query.append_pair(name, value);
                }
            }
        }
        let separator = if authorization.redirect_uri.contains('?') { '&' } else { '?' };
        redirect(&format!("{}{separator}{}", authorization.redirect_uri, query.finish()))
    }

    /// `POST /token` with `grant_type` `authorization_code` or `refresh_token`.
    pub fn token(&self, headers: &HeaderMap, form: &[u8], token_url: &str) -> Response {
        self.try_token(headers, form, token_url).unwrap_or_else(Refusal::into_response)
    }

    fn try_token(&self, headers: &HeaderMap, form: &[u8], token_url: &str) -> Result<Response, Refusal> {
        let form = Params::parse(form)?;
        self.authenticate(&form)?;
        let TokenProof { jkt, nonce } = proof_of_possession(headers, token_url)?
            .ok_or_else(|| invalid_dpop("a DPoP proof is required: the tokens are DPoP-bound"))?;
        if nonce.as_deref() != Some(self.dpop_nonce.as_str()) {
            let refusal = Refusal::new(StatusCode::BAD_REQUEST, "use_dpop_nonce", "use the DPoP-Nonce in the proof");
            return Err(refusal.with_dpop_nonce(&self.dpop_nonce));
        }
        let (scope, id_nonce, with_id_token) = match form.require("grant_type")? {
            "authorization_code" => {
                let code = form.require("code")?;
                let authorization = take(&mut self.state().codes, code)
                    .ok_or_else(|| invalid_grant("the code is unknown, used or expired"))?;
                if form.get("redirect_uri") != Some(authorization.redirect_uri.as_str()) {
                    return Err(invalid_grant("`redirect_uri` differs from the authorization request's"));
                }
                let verifier = form.require("code_verifier")?;
                if b64url_encode(&sha256(verifier.as_bytes())) != authorization.code_challenge {
                    return Err(invalid_grant("the PKCE `code_verifier` does not match the challenge"));
                }
                if authorization.dpop_jkt.as_ref().is_some_and(|bound| *bound != jkt) {
                    return Err(invalid_dpop("the proof's key is not the `dpop_jkt` of the authorization request"));
                }
                let openid = authorization.scope.split(' ').any(|s| s == "openid");
                (authorization.scope, authorization.nonce, openid)
            }
            "refresh_token" => {
                let refresh_token = form.require("refresh_token")?;
                let grant = self
                    .state()
                    .refresh_tokens
                    .remove(refresh_token)
                    .ok_or_else(|| invalid_grant("the refresh token is unknown, used or revoked"))?;
                if grant.jkt != jkt {
                    return Err(invalid_dpop("the refresh token is bound to another DPoP key"));
                }
                (grant.scope, None, false)
            }
            _ => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "use authorization_code, refresh_token or client_credentials",
                ));
            }
        };
        let server_error = |_| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "cannot sign the token");
        let access_token =
            self.issuer.token_for(&self.client.client_id, &scope, json!({ "jkt": jkt })).map_err(server_error)?;
        let refresh_token = random(32)?;
        self.state().refresh_tokens.insert(refresh_token.clone(), Grant { scope: scope.clone(), jkt });
        let mut answer = json!({
            "access_token": access_token, "token_type": "DPoP", "expires_in": self.issuer.lifetime_secs(),
            "refresh_token": refresh_token, "scope": scope,
        });
        if with_id_token {
            let now = unix_now();
            let mut claims = json!({
                "iss": self.issuer.issuer(), "sub": SUBJECT, "aud": self.client.client_id,
                "iat": now, "exp": now + ID_TOKEN_LIFETIME_SECS, "auth_time": now,
            });
            if let Some(nonce) = id_nonce {
                claims["nonce"] = json!(nonce);
            }
            answer["id_token"] = json!(self.issuer.sign(None, &claims).map_err(server_error)?);
        }
        let mut response = json_response(StatusCode::OK, answer.to_string());
        if let Ok(value) = HeaderValue::from_str(&self.dpop_nonce) {
            response.headers_mut().insert("dpop-nonce", value);
        }
        Ok(response)
    }

    /// `POST /revoke` (RFC 7009 §2): the client's refresh token ends; unknown tokens too
    /// answer 200.
    pub fn revoke(&self, form: &[u8]) -> Response {
        let revoke = || -> Result<Response, Refusal> {
            let form = Params::parse(form)?;
            self.authenticate(&form)?;
            self.state().refresh_tokens.remove(form.require("token")?);
            Ok(json_response(StatusCode::OK, "{}".into()))
        };
        revoke().unwrap_or_else(Refusal::into_response)
    }

    /// `GET /logout` (OpenID Connect RP-Initiated Logout): a page with the way back to the
    /// registered `post_logout_redirect_uri`, which must be the one given.
    pub fn end_session(&self, query: &str) -> Response {
        let params = Params::parse(query.as_bytes()).unwrap_or(Params(HashMap::new()));
        let back = params.get("post_logout_redirect_uri");
        if back.is_some() && back != self.client.post_logout_redirect_uri.as_deref() {
            return page(
                StatusCode::BAD_REQUEST,
                "Unknown redirect",
                "<p><code>post_logout_redirect_uri</code> is not registered.</p>",
                None,
            );
        }
        let link = back.map(|uri| format!("<p><a id=\"back\" href=\"{}\">Back to the app</a></p>", html_escape(uri)));
        page(
            StatusCode::OK,
            "Signed out",
            &format!(
                "<p>You are signed out of the development authorization server.</p>\n{}",
                link.unwrap_or_default()
            ),
            None,
        )
    }
}

fn random(bytes: usize) -> Result<String, Refusal> {
    random_token(bytes).map_err(|_| Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "no randomness"))
}

fn invalid_request(why: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "invalid_request", why)
}

fn invalid_grant(why: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "invalid_grant", why)
}

fn invalid_dpop(why: &str) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why)
}

/// `scheme://host[:port]` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..].find('/').map_or(url, |i| &url[..after_scheme + i])
}

fn redirect(location: &str) -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.headers_mut().insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

/// A page of the server: `body` is HTML the caller escaped. Forms may post here and, since a
/// browser applies `form-action` to the redirect that follows, to `form_target`.
fn page(status: StatusCode, title: &str, body: &str, form_target: Option<&str>) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto}}button{{font-size:1.1em;margin-right:1em}}</style>\n\
         </head><body>\n<h1>{title}</h1>\n<p><small>fapi-gateway development authorization server — NOT FOR PRODUCTION</small></p>\n{body}\n</body></html>\n",
        title = html_escape(title),
    );
    let mut response = hyper::Response::new(Full::new(Bytes::from(html)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'{}",
        form_target.map(|t| format!(" {t}")).unwrap_or_default()
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert("content-security-policy", value);
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::jose::SigningKey;
    use http_body_util::BodyExt;

    const ISSUER: &str = "https://as.test";
    const TOKEN_URL: &str = "https://as.test/token";
    const REDIRECT: &str = "https://app.test/auth/callback";

    struct Setup {
        flow: CodeFlow,
        client_key: SigningKey,
        issuer_key: PublicKey,
        _dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("issuer.key");
        let issuer_key = SigningKey::generate(Alg::Es256).unwrap();
        std::fs::write(&key_file, issuer_key.to_pkcs8_pem().unwrap()).unwrap();
        let issuer = Arc::new(DevIssuer::new(&key_file, ISSUER, "https://api.test").unwrap());
        let client_key = SigningKey::generate(Alg::Es256).unwrap();
        let client = LoginClient {
            client_id: "web".into(),
            key: client_key.public_key().clone(),
            redirect_uri: REDIRECT.into(),
            post_logout_redirect_uri: Some("https://app.test/bye".into()),
        };
        Setup {
            flow: CodeFlow::new(issuer, client).unwrap(),
            client_key,
            issuer_key: issuer_key.public_key().clone(),
            _dir: dir,
        }
    }

    fn assertion(key: &SigningKey, aud: &str) -> String {
        crate::login::client_auth::client_assertion(key, None, "web", aud, None).unwrap()
    }

    fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            form.append_pair(k, v);
        }
        form.finish().into_bytes()
    }

    async fn body(response: Response) -> (StatusCode, HeaderMap, String) {
        let (parts, body) = response.into_parts();
        (parts.status, parts.headers, String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap())
    }

    fn verifier() -> (&'static str, String) {
        let verifier = "a-verifier-of-enough-length-to-be-a-real-pkce-verifier-43";
        (verifier, b64url_encode(&sha256(verifier.as_bytes())))
    }

    fn par_form(s: &Setup, challenge: &str, jkt: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let a = assertion(&s.client_key, ISSUER);
        let mut pairs = vec![
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", a.as_str()),
            ("response_type", "code"),
            ("client_id", "web"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid accounts:read"),
            ("state", "st-1"),
            ("nonce", "no-1"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("response_mode", "jwt"),
            ("dpop_jkt", jkt),
        ];
        pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        pairs.extend(extra.iter().filter(|(_, v)| !v.is_empty()));
        encode(&pairs)
    }

    fn proof(key: &SigningKey, nonce: Option<&str>) -> HeaderMap {
        let mut claims = json!({"jti": random_token(12).unwrap(), "htm": "POST", "htu": TOKEN_URL, "iat": unix_now()});
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        let jwt = key.sign_compact(&json!({"typ": "dpop+jwt", "jwk": key.public_jwk()}), &claims).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("dpop", HeaderValue::from_str(&jwt).unwrap());
        headers
    }

    /// Runs PAR, the consent page and the decision; returns the JARM response's claims.
    async fn authorize(s: &Setup, challenge: &str, jkt: &str) -> Value {
        let (status, _, pushed) = body(s.flow.push(&par_form(s, challenge, jkt, &[]))).await;
        assert_eq!(status, StatusCode::CREATED, "{pushed}");
        let request_uri = serde_json::from_str::<Value>(&pushed).unwrap()["request_uri"].as_str().unwrap().to_string();
        let query = String::from_utf8(encode(&[("client_id", "web"), ("request_uri", &request_uri)])).unwrap();
        let (status, headers, page) = body(s.flow.authorize(&query)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers["content-security-policy"].to_str().unwrap().contains("form-action 'self' https://app.test"));
        let (_, _, again) = body(s.flow.authorize(&query)).await;
        assert!(again.contains("unknown, used or expired"), "a pushed request is used once: {again}");
        let consent = page.split("name=\"consent\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let (status, headers, _) = body(s.flow.decide(&encode(&[("consent", &consent), ("decision", "allow")]))).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let location = headers[header::LOCATION].to_str().unwrap();
        assert!(location.starts_with(&format!("{REDIRECT}?response=")), "{location}");
        let jarm = query_value(location, "response");
        let jws = CompactJws::parse(&jarm, 8192).unwrap();
        assert_eq!(jws.verify_with(Alg::Es256, &s.issuer_key), Ok(()));
        serde_json::from_slice(jws.payload()).unwrap()
    }

    fn query_value(url: &str, name: &str) -> String {
        let query = url.split_once('?').unwrap().1;
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).unwrap().1.into_owned()
    }

    fn token_form(s: &Setup, pairs: &[(&str, &str)]) -> Vec<u8> {
        let a = assertion(&s.client_key, ISSUER);
        let mut all = vec![("client_assertion_type", ASSERTION_TYPE), ("client_assertion", a.as_str())];
        all.extend_from_slice(pairs);
        encode(&all)
    }

    #[tokio::test]
    async fn the_code_flow_gives_dpop_bound_tokens_to_the_pkce_holder_with_the_nonce() {
        let s = setup();
        let dpop_key = SigningKey::generate(Alg::Es256).unwrap();
        let (verifier, challenge) = verifier();
        let jarm = authorize(&s, &challenge, &dpop_key.thumbprint_b64()).await;
        assert_eq!(
            (jarm["iss"].as_str(), jarm["aud"].as_str(), jarm["state"].as_str()),
            (Some(ISSUER), Some("web"), Some("st-1"))
        );
        let code = jarm["code"].as_str().unwrap();
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ];

        // Without the nonce: use_dpop_nonce and the nonce; the code is not spent.
        let (status, headers, answer) =
            body(s.flow.token(&proof(&dpop_key, None), &token_form(&s, &grant), TOKEN_URL)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(answer.contains("use_dpop_nonce"), "{answer}");
        let nonce = headers["dpop-nonce"].to_str().unwrap().to_string();

        // Another key than dpop_jkt: refused, and the code is spent (single use).
        let thief = SigningKey::generate(Alg::Es256).unwrap();
        let (_, _, answer) = body(s.flow.token(&proof(&thief, Some(&nonce)), &token_form(&s, &grant), TOKEN_URL)).await;
        assert!(answer.contains("dpop_jkt"), "{answer}");
        let (_, _, answer) =
            body(s.flow.token(&proof(&dpop_key, Some(&nonce)), &token_form(&s, &grant), TOKEN_URL)).await;
        assert!(answer.contains("invalid_grant"), "{answer}");

        // A new authorization, redeemed properly.
        let jarm = authorize(&s, &challenge, &dpop_key.thumbprint_b64()).await;
        let code = jarm["code"].as_str().unwrap();
        let wrong = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", "another-verifier-of-enough-length-to-be-pkce-43"),
        ];
        let (_, _, answer) =
            body(s.flow.token(&proof(&dpop_key, Some(&nonce)), &token_form(&s, &wrong), TOKEN_URL)).await;
        assert!(answer.contains("code_verifier"), "{answer}");
        let jarm = authorize(&s, &challenge, &dpop_key.thumbprint_b64()).await;
        let code = jarm["code"].as_str().unwrap();
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ];
        let (status, _, answer) =
            body(s.flow.token(&proof(&dpop_key, Some(&nonce)), &token_form(&s, &grant), TOKEN_URL)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["token_type"], "DPoP");
        let access = CompactJws::parse(answer["access_token"].as_str().unwrap(), 8192).unwrap();
        let claims: Value = serde_json::from_slice(access.payload()).unwrap();
        assert_eq!(claims["cnf"], json!({"jkt": dpop_key.thumbprint_b64()}));
        let id_token = CompactJws::parse(answer["id_token"].as_str().unwrap(), 8192).unwrap();
        let id: Value = serde_json::from_slice(id_token.payload()).unwrap();
        assert_eq!(
            (id["nonce"].as_str(), id["aud"].as_str(), id["sub"].as_str()),
            (Some("no-1"), Some("web"), Some(SUBJECT))
        );

        // The refresh token rotates and stays bound to the key.
        let refresh = answer["refresh_token"].as_str().unwrap();
        let refresh_grant = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
        let (_, _, answer) =
            body(s.flow.token(&proof(&thief, Some(&nonce)), &token_form(&s, &refresh_grant), TOKEN_URL)).await;
        assert!(answer.contains("another DPoP key"), "{answer}");
        let (_, _, answer) =
            body(s.flow.token(&proof(&dpop_key, Some(&nonce)), &token_form(&s, &refresh_grant), TOKEN_URL)).await;
        assert!(answer.contains("invalid_grant"), "the refused attempt spent it too: {answer}");
    }

    #[tokio::test]
    async fn pushed_requests_and_client_assertions_are_checked() {
        let s = setup();
        let (_, challenge) = verifier();
        let refused = |form: Vec<u8>, word: &'static str| {
            let flow = &s.flow;
            async move {
                let (status, _, answer) = body(flow.push(&form)).await;
                assert!(status.is_client_error(), "{answer}");
                assert!(answer.contains(word), "{answer} should say {word}");
            }
        };
        refused(par_form(&s, &challenge, "j", &[("redirect_uri", "https://evil.test/cb")]), "registered").await;
        refused(par_form(&s, &challenge, "j", &[("code_challenge_method", "plain")]), "S256").await;
        refused(par_form(&s, &challenge, "j", &[("response_mode", "fragment")]), "response_mode").await;
        refused(par_form(&s, &challenge, "j", &[("state", "")]), "state").await;
        let other = SigningKey::generate(Alg::Es256).unwrap();
        let forged = assertion(&other, ISSUER);
        refused(par_form(&s, &challenge, "j", &[("client_assertion", &forged)]), "registered key").await;
        let elsewhere = assertion(&s.client_key, "https://other.test");
        refused(par_form(&s, &challenge, "j", &[("client_assertion", &elsewhere)]), "aud").await;
        let once = assertion(&s.client_key, ISSUER);
        let (status, _, _) = body(s.flow.push(&par_form(&s, &challenge, "j", &[("client_assertion", &once)]))).await;
        assert_eq!(status, StatusCode::CREATED);
        refused(par_form(&s, &challenge, "j", &[("client_assertion", &once)]), "already used").await;

        // A signed request object carries the parameters.
        let params = [
            ("response_type", "code"),
            ("client_id", "web"),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("state", "s"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        let request = crate::login::client_auth::request_object(&s.client_key, None, "web", ISSUER, &params).unwrap();
        let a = assertion(&s.client_key, ISSUER);
        let form = encode(&[
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &a),
            ("client_id", "web"),
            ("request", &request),
        ]);
        let (status, _, answer) = body(s.flow.push(&form)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }

    #[tokio::test]
    async fn a_denied_request_and_the_logout_page() {
        let s = setup();
        let (_, challenge) = verifier();
        let (_, _, pushed) = body(s.flow.push(&par_form(&s, &challenge, "j", &[]))).await;
        let request_uri = serde_json::from_str::<Value>(&pushed).unwrap()["request_uri"].as_str().unwrap().to_string();
        let query = String::from_utf8(encode(&[("client_id", "web"), ("request_uri", &request_uri)])).unwrap();
        let (_, _, page) = body(s.flow.authorize(&query)).await;
        let consent = page.split("name=\"consent\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let (_, headers, _) = body(s.flow.decide(&encode(&[("consent", &consent), ("decision", "deny")]))).await;
        let jarm = query_value(headers[header::LOCATION].to_str().unwrap(), "response");
        let claims: Value = serde_json::from_slice(CompactJws::parse(&jarm, 8192).unwrap().payload()).unwrap();
        assert_eq!((claims["error"].as_str(), claims.get("code")), (Some("access_denied"), None));

        let (status, _, page) =
            body(s.flow.end_session("client_id=web&post_logout_redirect_uri=https%3A%2F%2Fapp.test%2Fbye")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("href=\"https://app.test/bye\""), "{page}");
        let (status, _, _) = body(s.flow.end_session("post_logout_redirect_uri=https%3A%2F%2Fevil.test%2F")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(origin("https://app.test:8443/auth/callback?x"), "https://app.test:8443");
    }
}
