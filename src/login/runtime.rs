//! One `login:` entry at run time: its AS client, keys, transactions and sessions, and the
//! four endpoints it answers itself — login, callback, session and logout — plus the
//! admission of `auth: session` routes. Every answer is an [`Answer`]; nothing here knows
//! the pipeline.
//!
//! The login (`GET paths.login?return_to=/app/…`) pushes the authorization request (PAR
//! with `private_key_jwt`, PKCE S256, `state`, `nonce`, `response_mode=jwt`, `dpop_jkt`) and
//! sends the browser to the authorization endpoint with only `client_id` and `request_uri`.
//! The callback verifies the JARM response before reading it, takes the transaction of its
//! `state` (single use) with the browser's transaction cookie, redeems the code with the
//! verifier and a DPoP proof, checks the ID token, and only then makes a **new** session.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::json;
use tokio::sync::Mutex as AsyncMutex;

use super::as_client::{AsClient, AsMetadata, LoginError};
use super::client_auth::{ASSERTION_TYPE, client_assertion};
use super::jarm::{self, Outcome};
use super::pkce::{Pkce, random_token};
use super::redis_store::RedisLoginStore;
use super::session::{
    Session, SessionMiss, SessionTokens, Sessions, Transaction, Transactions, transaction_cookie_name,
};
use crate::answer::Answer;
use crate::auth::jwks::IssuerKeys;
use crate::body::{ProxyBody, full};
use crate::config::{
    Issuer, JwksCacheSettings, KeySource, LoginAuth, LoginSettings, RequestObject, ResponseMode, SessionStore,
};
use crate::jose::{Alg, SigningKey, constant_time_eq, sha256, unix_now};
use crate::principal::UpstreamCredential;
use crate::secret::Secret;

/// The header a session request must carry (a cross-site page cannot send it without a CORS
/// preflight the gateway does not grant).
pub const CSRF_HEADER: &str = "x-csrf";

/// Why a login entry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoginSetupError {
    #[error("login {name}: cannot read the client key {path}: {reason}")]
    ClientKey { name: String, path: String, reason: String },
    #[error("login {name}: cannot read the session secret {path}: {reason}")]
    Secret { name: String, path: String, reason: String },
    #[error("login {name}: {source}")]
    Client { name: String, source: LoginError },
    #[error("login {name}: the session store: {reason}")]
    Store { name: String, reason: String },
}

/// The AS as discovered: metadata and its key set.
struct Discovered {
    metadata: AsMetadata,
    keys: Arc<IssuerKeys>,
}

/// A `login:` entry, running.
pub struct LoginRuntime {
    pub settings: LoginSettings,
    client: AsClient,
    /// `private_key_jwt`: the key and its `kid`; `None` with `tls_client_auth`.
    client_key: Option<(SigningKey, Option<String>)>,
    /// The AS once discovered (read without a lock), and the lock of one discovery at a time.
    found: arc_swap::ArcSwapOption<Discovered>,
    discovering: AsyncMutex<()>,
    transactions: Transactions,
    pub sessions: Sessions,
    /// The origin of `redirect_uri`: the application's, which `Origin` must match.
    app_origin: String,
    /// `fapi_gateway_login_refreshes_total` (a detached family until [`Self::counting`]).
    refreshes: prometheus_client::metrics::family::Family<
        crate::metrics::LoginLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl LoginRuntime {
    pub fn new(settings: &LoginSettings) -> Result<LoginRuntime, LoginSetupError> {
        let name = settings.name.clone();
        let (client_key, identity) = match &settings.client_auth {
            LoginAuth::PrivateKeyJwt { key, kid } => {
                let key_error = |reason: String| LoginSetupError::ClientKey {
                    name: name.clone(),
                    path: key.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(key).map_err(|e| key_error(e.to_string()))?;
                let signing = [Alg::Es256, Alg::Ps256, Alg::EdDsa]
                    .into_iter()
                    .find_map(|alg| SigningKey::from_pkcs8_pem(alg, &pem).ok())
                    .ok_or_else(|| key_error("not a PKCS#8 PEM key for ES256, PS256 or EdDSA".into()))?;
                (Some((signing, kid.clone())), None)
            }
            LoginAuth::TlsClientAuth { cert, key } => (None, Some((cert.as_path(), key.as_path()))),
        };
        let mut secrets = Vec::new();
        for path in &settings.session.secret_files {
            let secret = std::fs::read(path).map_err(|e| LoginSetupError::Secret {
                name: name.clone(),
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            if secret.len() < 32 {
                return Err(LoginSetupError::Secret {
                    name: name.clone(),
                    path: path.display().to_string(),
                    reason: "it must hold at least 32 bytes".into(),
                });
            }
            secrets.push(secret);
        }
        if secrets.is_empty() {
            let mut random = vec![0u8; 32];
            aws_lc_rs::rand::fill(&mut random).map_err(|_| LoginSetupError::Secret {
                name: name.clone(),
                path: "-".into(),
                reason: "the random number generator failed".into(),
            })?;
            secrets.push(random);
        }
        let client = AsClient::new(settings.ca.as_deref(), settings.timeout, identity)
            .map_err(|source| LoginSetupError::Client { name: name.clone(), source })?;
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let shared = match &settings.session.store {
            SessionStore::Memory => None,
            SessionStore::Redis { target, key_prefix, ca, timeout } => {
                let secret = secrets.first().map(Vec::as_slice).unwrap_or_default();
                let store = RedisLoginStore::new(target, ca.as_deref(), key_prefix, *timeout, secret)
                    .map_err(|reason| LoginSetupError::Store { name: name.clone(), reason })?;
                Some(Arc::new(store))
            }
        };
        let app_origin = origin_of(&settings.redirect_uri);
        Ok(LoginRuntime {
            sessions: Sessions::new(
                &secrets,
                secs(settings.session.idle_timeout),
                secs(settings.session.max_lifetime),
                shared.clone(),
            ),
            settings: settings.clone(),
            client,
            client_key,
            found: arc_swap::ArcSwapOption::empty(),
            discovering: AsyncMutex::new(()),
            transactions: Transactions::new(shared),
            app_origin,
            refreshes: Default::default(),
        })
    }

    /// Counts refreshes into `family`, with every result present from the start.
    pub fn counting(
        mut self,
        family: prometheus_client::metrics::family::Family<
            crate::metrics::LoginLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> Self {
        for result in ["ok", "refused", "error"] {
            family.get_or_create_owned(&crate::metrics::LoginLabels { login: self.settings.name.clone(), result });
        }
        self.refreshes = family;
        self
    }

    fn count_refresh(&self, result: &'static str) {
        self.refreshes.get_or_create(&crate::metrics::LoginLabels { login: self.settings.name.clone(), result }).inc();
    }

    /// Which endpoint of this login `method path` is, if any.
    pub fn endpoint(&self, method: &Method, path: &str) -> Option<Endpoint> {
        let paths = &self.settings.paths;
        match (method, path) {
            (&Method::GET, p) if p == paths.login => Some(Endpoint::Login),
            (&Method::GET, p) if p == self.settings.callback_path => Some(Endpoint::Callback),
            (&Method::GET, p) if p == paths.session => Some(Endpoint::Session),
            (&Method::POST, p) if p == paths.logout => Some(Endpoint::Logout),
            (_, p)
                if p == paths.login || p == self.settings.callback_path || p == paths.session || p == paths.logout =>
            {
                Some(Endpoint::WrongMethod)
            }
            _ => None,
        }
    }

    /// Answers one of this login's endpoints. A refusal of the login or the callback — pages
    /// a browser navigates to — is an HTML page when the browser asks for HTML, else JSON.
    pub async fn answer(&self, endpoint: Endpoint, query: Option<&str>, headers: &HeaderMap) -> Answer {
        let result = match endpoint {
            Endpoint::Login => self.begin(query).await,
            Endpoint::Callback => self.callback(query, headers).await,
            Endpoint::Session => self.session_info(headers).await,
            Endpoint::Logout => self.logout(headers).await,
            Endpoint::WrongMethod => Err(failure(StatusCode::METHOD_NOT_ALLOWED, "login_method", "wrong method")),
        };
        match result {
            Ok(answer) => answer,
            Err(refusal) if matches!(endpoint, Endpoint::Login | Endpoint::Callback) && wants_html(headers) => {
                as_page(refusal, &self.settings.paths.login).await
            }
            Err(refusal) => refusal,
        }
    }

    /// Whether the AS has been discovered (for `/readyz`).
    pub fn is_discovered(&self) -> bool {
        self.found.load().is_some()
    }

    /// Discovers the AS now (at start, and when `/readyz` finds it not yet discovered);
    /// failures are logged and retried by the next login or probe.
    pub async fn prefetch(self: Arc<Self>) {
        let _ = self.discovered().await;
    }

    async fn discovered(&self) -> Result<Arc<Discovered>, Answer> {
        if let Some(found) = self.found.load_full() {
            return Ok(found);
        }
        let _one_at_a_time = self.discovering.lock().await;
        if let Some(found) = self.found.load_full() {
            return Ok(found);
        }
        let metadata = self.client.discover(&self.settings.issuer).await.map_err(|e| {
            tracing::warn!(login = %self.settings.name, error = %e, "authorization server discovery failed");
            failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "login_as_unavailable",
                "the authorization server cannot be reached",
            )
        })?;
        let unavailable = || {
            failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "login_as_unavailable",
                "the authorization server cannot be reached",
            )
        };
        let issuer =
            as_issuer(&self.settings, metadata.jwks_uri.as_deref().unwrap_or_default()).ok_or_else(unavailable)?;
        let keys = IssuerKeys::new(&issuer).map_err(|e| {
            tracing::warn!(login = %self.settings.name, error = %e, "the authorization server's keys cannot be set up");
            unavailable()
        })?;
        let found = Arc::new(Discovered { metadata, keys: Arc::new(keys) });
        self.found.store(Some(found.clone()));
        Ok(found)
    }

    /// The client authentication parameters of a call to the AS (`client_id` goes with the
    /// grant): a fresh `private_key_jwt` assertion, or none with `tls_client_auth` (the TLS
    /// connection authenticates).
    fn client_auth_form(&self, audience: &str) -> Result<Vec<(String, String)>, LoginError> {
        match &self.client_key {
            Some((key, kid)) => Ok(vec![
                ("client_assertion_type".into(), ASSERTION_TYPE.into()),
                (
                    "client_assertion".into(),
                    client_assertion(key, kid.as_deref(), &self.settings.client_id, audience, None)?,
                ),
            ]),
            None => Ok(Vec::new()),
        }
    }

    /// `GET paths.login?return_to=…`: PAR, then 303 to the authorization endpoint.
    async fn begin(&self, query: Option<&str>) -> Result<Answer, Answer> {
        let return_to = match query_param(query, "return_to") {
            Some(path) => checked_return_to(&path, &self.settings.return_to).ok_or_else(|| {
                failure(StatusCode::BAD_REQUEST, "login_bad_return_to", "return_to is not an allowed path")
            })?,
            None => self.settings.return_to.first().cloned().unwrap_or_else(|| "/".into()),
        };
        let found = self.discovered().await?;
        let internal =
            |_| failure(StatusCode::INTERNAL_SERVER_ERROR, "login_internal", "the login could not be started");
        let pkce = Pkce::new().map_err(internal)?;
        let state = random_token(16).map_err(internal)?;
        let nonce = if self.settings.openid() { Some(random_token(16).map_err(internal)?) } else { None };
        let dpop_key = Arc::new(SigningKey::generate(Alg::Es256).map_err(|_| {
            failure(StatusCode::INTERNAL_SERVER_ERROR, "login_internal", "the login could not be started")
        })?);
        let jkt = dpop_key.thumbprint_b64();
        let auth = self.client_auth_form(&found.metadata.issuer).map_err(|_| {
            failure(StatusCode::INTERNAL_SERVER_ERROR, "login_internal", "the login could not be started")
        })?;
        let scope = self.settings.scopes.join(" ");
        let mut form: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", &self.settings.client_id),
            ("redirect_uri", &self.settings.redirect_uri),
            ("scope", &scope),
            ("state", &state),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
            ("dpop_jkt", &jkt),
        ];
        if self.settings.response_mode == ResponseMode::Jwt {
            form.push(("response_mode", "jwt"));
        }
        if let Some(nonce) = &nonce {
            form.push(("nonce", nonce));
        }
        for resource in &self.settings.resource {
            form.push(("resource", resource));
        }
        // JAR: every authorization parameter inside a request object signed by the client.
        let request_object;
        if let (RequestObject::Signed, Some((key, kid))) = (self.settings.request_object, &self.client_key) {
            request_object = super::client_auth::request_object(
                key,
                kid.as_deref(),
                &self.settings.client_id,
                &found.metadata.issuer,
                &form,
            )
            .map_err(|_| {
                failure(StatusCode::INTERNAL_SERVER_ERROR, "login_internal", "the login could not be started")
            })?;
            form = vec![("client_id", &self.settings.client_id), ("request", &request_object)];
        }
        form.extend(auth.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let pushed = self.client.push(&found.metadata, &form).await.map_err(|e| {
            tracing::warn!(login = %self.settings.name, error = %e, "pushed authorization request failed");
            failure(StatusCode::BAD_GATEWAY, "login_par_failed", "the authorization server refused the login request")
        })?;
        let (cookie_value, cookie_hash) = super::session::transaction_secret().map_err(internal)?;
        let transaction = Transaction {
            code_verifier: Secret::new(pkce.verifier),
            nonce,
            dpop_key,
            return_to,
            cookie_hash,
            created: unix_now(),
        };
        let cookie_name = transaction_cookie_name(&state);
        let stored = self.transactions.insert(state, transaction).await.map_err(|_| store_down())?;
        if !stored {
            return Err(failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "login_busy",
                "too many logins in progress; try again",
            ));
        }
        let location = format!(
            "{}{}{}",
            found.metadata.authorization_endpoint,
            if found.metadata.authorization_endpoint.contains('?') { "&" } else { "?" },
            form_urlencoded::Serializer::new(String::new())
                .append_pair("client_id", &self.settings.client_id)
                .append_pair("request_uri", &pushed.request_uri)
                .finish()
        );
        let cookie = format!(
            "{cookie_name}={cookie_value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            super::session::TRANSACTION_TTL_SECS
        );
        Ok(redirect(&location, &[cookie], "login_started"))
    }

    /// The callback: JARM first, then the transaction, then the code.
    async fn callback(&self, query: Option<&str>, headers: &HeaderMap) -> Result<Answer, Answer> {
        let found = self.discovered().await?;
        let expected = jarm::Expected {
            issuer: &self.settings.issuer,
            client_id: &self.settings.client_id,
            algorithms: &self.settings.algorithms,
        };
        let response = match self.settings.response_mode {
            ResponseMode::Jwt => {
                let jwt = query_param(query, "response").ok_or_else(|| {
                    failure(StatusCode::BAD_REQUEST, "login_no_response", "the authorization response is missing")
                })?;
                jarm::verify(&jwt, &expected, &found.keys, unix_now())
                    .await
                    .map_err(|e| failure(StatusCode::BAD_REQUEST, e.reason(), &e.to_string()))?
            }
            ResponseMode::Query => plain_response(query, &self.settings.issuer)?,
        };
        let transaction =
            self.transactions.take(&response.state).await.map_err(|_| store_down())?.ok_or_else(|| {
                failure(StatusCode::BAD_REQUEST, "login_unknown_state", "this login is unknown, finished or expired")
            })?;
        let presented = cookie(headers, &transaction_cookie_name(&response.state));
        if !presented.is_some_and(|v| constant_time_eq(&sha256(v.as_bytes()), &transaction.cookie_hash)) {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                "login_other_browser",
                "this login was not started in this browser",
            ));
        }
        let code = match response.outcome {
            Outcome::Code(code) => code,
            Outcome::Error { error, description } => {
                let shown = crate::auth::token::shown(&error);
                tracing::info!(login = %self.settings.name, error = %shown, "the authorization server refused the login");
                let text = match description {
                    Some(d) => format!("the authorization server answered {shown}: {}", crate::auth::token::shown(&d)),
                    None => format!("the authorization server answered {shown}"),
                };
                return Err(failure(StatusCode::FORBIDDEN, "login_refused_by_as", &text));
            }
        };
        let verifier = transaction.code_verifier.expose().clone();
        let tokens = self
            .client
            .token(&found.metadata, &transaction.dpop_key, || {
                let mut form = vec![
                    ("grant_type".into(), "authorization_code".into()),
                    ("code".into(), code.clone()),
                    ("redirect_uri".into(), self.settings.redirect_uri.clone()),
                    ("code_verifier".into(), verifier.clone()),
                    ("client_id".into(), self.settings.client_id.clone()),
                ];
                form.extend(self.client_auth_form(&found.metadata.issuer)?);
                Ok(form)
            })
            .await
            .map_err(|e| {
                tracing::warn!(login = %self.settings.name, error = %e, "the code could not be redeemed");
                failure(StatusCode::BAD_GATEWAY, "login_token_failed", "the authorization server did not issue tokens")
            })?;
        let tokens_scope = tokens.scope.clone();
        if !tokens.token_type.eq_ignore_ascii_case("dpop") {
            return Err(failure(
                StatusCode::BAD_GATEWAY,
                "login_token_not_dpop",
                "the authorization server issued a token that is not DPoP-bound",
            ));
        }
        let sub = match (&tokens.id_token, self.settings.openid()) {
            (Some(id_token), _) => super::id_token::verify(
                id_token,
                &self.settings.issuer,
                &self.settings.client_id,
                transaction.nonce.as_deref(),
                &self.settings.algorithms,
                &found.keys,
                unix_now(),
            )
            .await
            .map_err(|e| failure(StatusCode::BAD_GATEWAY, "login_bad_id_token", &e.to_string()))?,
            (None, true) => {
                return Err(failure(StatusCode::BAD_GATEWAY, "login_bad_id_token", "the ID token is missing"));
            }
            (None, false) => None,
        };
        // A session this browser had before is ended, never carried over (fixation).
        if let Some(previous) = cookie(headers, &self.settings.session.cookie) {
            self.sessions.end(previous).await;
        }
        let tokens = session_tokens(tokens);
        let session = Session::new(sub, tokens_scope, tokens, transaction.dpop_key);
        let value = self
            .sessions
            .create(session)
            .await
            .map_err(|_| store_down())?
            .ok_or_else(|| failure(StatusCode::SERVICE_UNAVAILABLE, "login_busy", "too many sessions"))?;
        let session_cookie = format!(
            "{}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            self.settings.session.cookie,
            self.settings.session.max_lifetime.as_secs()
        );
        let clear =
            format!("{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0", transaction_cookie_name(&response.state));
        tracing::info!(login = %self.settings.name, "login completed");
        Ok(redirect(&transaction.return_to, &[session_cookie, clear], "login_completed"))
    }

    /// `GET paths.session` (CSRF header required): who is logged in, never a token.
    async fn session_info(&self, headers: &HeaderMap) -> Result<Answer, Answer> {
        let session = self.session_of(headers).await?;
        let body = json!({
            "sub": session.sub,
            "scope": session.scope,
            "expires_at": session.tokens().and_then(|t| t.access_expires_at),
            "logout_url": self.settings.paths.logout,
        });
        Ok(json_answer(StatusCode::OK, &body, &[], "session"))
    }

    /// `POST paths.logout` (CSRF header required): ends the session and clears the cookie.
    async fn logout(&self, headers: &HeaderMap) -> Result<Answer, Answer> {
        self.csrf(headers)?;
        let clear = format!("{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0", self.settings.session.cookie);
        let ended = match cookie(headers, &self.settings.session.cookie) {
            Some(value) => self.sessions.end(value).await,
            None => None,
        };
        if let Some(session) = &ended {
            self.revoke(session).await;
        }
        let end_session_url = match self.found.load_full().as_ref() {
            Some(found) => found.metadata.end_session_endpoint.as_ref().map(|url| {
                let mut query = form_urlencoded::Serializer::new(String::new());
                query.append_pair("client_id", &self.settings.client_id);
                if let Some(uri) = &self.settings.post_logout_redirect_uri {
                    query.append_pair("post_logout_redirect_uri", uri);
                }
                let query = query.finish();
                format!("{url}{}{query}", if url.contains('?') { "&" } else { "?" })
            }),
            None => None,
        };
        let body = json!({ "logged_out": ended.is_some(), "end_session_url": end_session_url });
        Ok(json_answer(StatusCode::OK, &body, &[clear], "logout"))
    }

    fn csrf(&self, headers: &HeaderMap) -> Result<(), Answer> {
        let header_ok = headers.get(CSRF_HEADER).is_some_and(|v| !v.is_empty());
        let origin_ok = headers.get(ORIGIN).is_none_or(|o| o.to_str().is_ok_and(|o| o == self.app_origin));
        if header_ok && origin_ok {
            Ok(())
        } else {
            Err(failure(
                StatusCode::FORBIDDEN,
                "session_csrf",
                "session requests need the X-CSRF header and, when sent, an Origin of the application",
            ))
        }
    }

    async fn session_of(&self, headers: &HeaderMap) -> Result<Arc<Session>, Answer> {
        self.csrf(headers)?;
        let found = match cookie(headers, &self.settings.session.cookie) {
            Some(value) => self.sessions.find(value).await,
            None => Err(SessionMiss::NoSession),
        };
        found.map_err(|miss| {
            let description = match miss {
                SessionMiss::NoSession => "there is no session: log in first",
                SessionMiss::Ended => "the session has ended: log in again",
                SessionMiss::Unavailable => return store_down(),
            };
            let body = json!({
                "error": "login_required",
                "error_description": description,
                "login_url": self.settings.paths.login,
            });
            refusal_body(StatusCode::UNAUTHORIZED, "session_required", &body)
        })
    }

    /// Admits a request on an `auth: session` route: the session's DPoP-bound access token
    /// (refreshed first when it is about to expire) with a fresh proof for `method htu`
    /// replaces the browser's credentials.
    pub async fn admit(
        &self,
        method: &Method,
        htu: &str,
        headers: &HeaderMap,
    ) -> Result<(UpstreamProofs, UpstreamCredential), Answer> {
        let session = self.session_of(headers).await?;
        let tokens = self.fresh_tokens(&session, headers).await?;
        let proofs = UpstreamProofs {
            session,
            method: method.as_str().to_string(),
            htu: htu.to_string(),
            token: tokens.access_token.clone(),
        };
        let internal =
            || failure(StatusCode::INTERNAL_SERVER_ERROR, "session_internal", "the request could not be signed");
        let dpop = proofs.proof(proofs.session.upstream_nonce().as_deref()).ok_or_else(internal)?;
        let authorization =
            HeaderValue::try_from(format!("DPoP {}", tokens.access_token.expose())).map_err(|_| internal())?;
        Ok((
            proofs,
            UpstreamCredential::Replace { authorization: Secret::new(authorization), dpop: Some(Secret::new(dpop)) },
        ))
    }

    /// The session's tokens, refreshed (single flight) when the access token expires within
    /// [`REFRESH_MARGIN_SECS`]. A refused refresh (`invalid_grant`) ends the session.
    async fn fresh_tokens(&self, session: &Arc<Session>, headers: &HeaderMap) -> Result<SessionTokens, Answer> {
        let lapsed =
            || failure(StatusCode::BAD_GATEWAY, "session_refresh_failed", "the session's token could not be renewed");
        let current = session.tokens().ok_or_else(lapsed)?;
        let due = |t: &SessionTokens| t.access_expires_at.is_some_and(|at| at - REFRESH_MARGIN_SECS <= unix_now());
        if !due(&current) || current.refresh_token.is_none() {
            return Ok(current);
        }
        let _flight = session.refreshing.lock().await;
        // Another request may have refreshed while this one waited.
        let current = session.tokens().ok_or_else(lapsed)?;
        let Some(refresh_token) = current.refresh_token.clone().filter(|_| due(&current)) else {
            return Ok(current);
        };
        // Several instances: one refresh per session among them all (a lock with a lease);
        // the others wait for its tokens.
        if let (Some(store), Some(id)) = (self.sessions.shared(), session.id) {
            let lock = store.key("lock", &id);
            if !store.lock(&lock, REFRESH_LEASE).await.map_err(|_| store_down())? {
                return self.await_refresh(session, headers, &current).await;
            }
            let refreshed = self.refresh(session, headers, current, refresh_token).await;
            let _ = store.delete(&lock).await;
            return refreshed;
        }
        self.refresh(session, headers, current, refresh_token).await
    }

    /// Another instance refreshes this session: wait (up to the lease) for its new tokens.
    async fn await_refresh(
        &self,
        session: &Arc<Session>,
        headers: &HeaderMap,
        current: &SessionTokens,
    ) -> Result<SessionTokens, Answer> {
        let deadline = tokio::time::Instant::now() + REFRESH_LEASE;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.session_of(headers).await?;
            if let Some(tokens) = now.tokens()
                && tokens.access_token.expose() != current.access_token.expose()
            {
                session.replace_tokens(tokens.clone());
                return Ok(tokens);
            }
        }
        match current.access_expires_at {
            Some(at) if at > unix_now() => Ok(current.clone()),
            _ => Err(failure(
                StatusCode::BAD_GATEWAY,
                "session_refresh_failed",
                "the session's token could not be renewed",
            )),
        }
    }

    /// Redeems the refresh token (the caller holds the session's refresh lock).
    async fn refresh(
        &self,
        session: &Arc<Session>,
        headers: &HeaderMap,
        current: SessionTokens,
        refresh_token: Secret<String>,
    ) -> Result<SessionTokens, Answer> {
        let lapsed =
            || failure(StatusCode::BAD_GATEWAY, "session_refresh_failed", "the session's token could not be renewed");
        let found = self.discovered().await?;
        let answer = self
            .client
            .token(&found.metadata, &session.dpop_key, || {
                let mut form = vec![
                    ("grant_type".into(), "refresh_token".into()),
                    ("refresh_token".into(), refresh_token.expose().clone()),
                    ("client_id".into(), self.settings.client_id.clone()),
                ];
                form.extend(self.client_auth_form(&found.metadata.issuer)?);
                Ok(form)
            })
            .await;
        match answer {
            Ok(tokens) if tokens.token_type.eq_ignore_ascii_case("dpop") => {
                let mut renewed = session_tokens(tokens);
                // An AS that does not rotate keeps the refresh token valid.
                if renewed.refresh_token.is_none() {
                    renewed.refresh_token = Some(refresh_token);
                }
                session.replace_tokens(renewed.clone());
                if self.sessions.save(session).await.is_err() {
                    tracing::warn!(login = %self.settings.name, "the refreshed tokens could not be stored");
                }
                self.count_refresh("ok");
                tracing::debug!(login = %self.settings.name, "session token refreshed");
                Ok(renewed)
            }
            Err(LoginError::Refused { error, .. }) if error == "invalid_grant" => {
                if let Some(value) = cookie(headers, &self.settings.session.cookie) {
                    self.sessions.end(value).await;
                }
                self.count_refresh("refused");
                tracing::info!(login = %self.settings.name, "the refresh token was refused; the session ended");
                Err(refusal_body(
                    StatusCode::UNAUTHORIZED,
                    "session_required",
                    &json!({
                        "error": "login_required",
                        "error_description": "the session has ended: log in again",
                        "login_url": self.settings.paths.login,
                    }),
                ))
            }
            other => {
                self.count_refresh("error");
                if let Err(e) = &other {
                    tracing::warn!(login = %self.settings.name, error = %e, "the session token could not be refreshed");
                }
                // Still valid a little longer: serve with it; else the upstream would refuse it.
                match current.access_expires_at {
                    Some(at) if at > unix_now() => Ok(current),
                    _ => Err(lapsed()),
                }
            }
        }
    }

    /// Revokes the session's refresh token (RFC 7009) when the AS has a revocation endpoint.
    async fn revoke(&self, session: &Session) {
        let (Some(tokens), Some(found)) = (session.tokens(), self.found.load_full()) else { return };
        let Some(refresh_token) = tokens.refresh_token else { return };
        if found.metadata.revocation_endpoint.is_none() {
            return;
        }
        let Ok(auth) = self.client_auth_form(&found.metadata.issuer) else { return };
        let mut form = vec![
            ("token", refresh_token.expose().as_str()),
            ("token_type_hint", "refresh_token"),
            ("client_id", self.settings.client_id.as_str()),
        ];
        form.extend(auth.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Err(e) = self.client.revoke(&found.metadata, &form).await {
            tracing::warn!(login = %self.settings.name, error = %e, "revoking the refresh token at logout failed");
        }
    }
}

/// Signs the DPoP proofs of one session request to its upstream: the first, and a second
/// with the nonce an upstream's `use_dpop_nonce` asks for (RFC 9449 §9), which the session
/// keeps for its later requests.
pub struct UpstreamProofs {
    session: Arc<Session>,
    method: String,
    htu: String,
    token: Secret<String>,
}

impl UpstreamProofs {
    fn proof(&self, nonce: Option<&str>) -> Option<HeaderValue> {
        let proof =
            super::proof::dpop_proof(&self.session.dpop_key, &self.method, &self.htu, Some(self.token.expose()), nonce)
                .ok()?;
        HeaderValue::try_from(proof).ok()
    }

    /// A new proof carrying `nonce`, which the session remembers.
    pub fn with_nonce(&self, nonce: &str) -> Option<HeaderValue> {
        self.session.set_upstream_nonce(nonce);
        self.proof(Some(nonce))
    }
}

impl std::fmt::Debug for UpstreamProofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamProofs").field("method", &self.method).field("htu", &self.htu).finish_non_exhaustive()
    }
}

/// How long one instance may hold a session's refresh lock.
const REFRESH_LEASE: Duration = Duration::from_secs(10);

/// The shared store did not answer.
fn store_down() -> Answer {
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "session_store_unavailable",
        "the session store cannot be reached; try again",
    )
}

/// Refresh this long before the access token expires.
const REFRESH_MARGIN_SECS: i64 = 10;

fn session_tokens(tokens: super::TokenResponse) -> SessionTokens {
    SessionTokens {
        access_expires_at: tokens.expires_in.map(|s| unix_now().saturating_add(i64::try_from(s).unwrap_or(i64::MAX))),
        access_token: Secret::new(tokens.access_token),
        refresh_token: tokens.refresh_token.map(Secret::new),
    }
}

/// The login endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Callback,
    Session,
    Logout,
    /// One of the paths with another method: 405.
    WrongMethod,
}

/// The AS as an [`Issuer`] for [`IssuerKeys`]: its key set at `jwks_uri`.
fn as_issuer(settings: &LoginSettings, jwks_uri: &str) -> Option<Issuer> {
    let uri: http::Uri = jwks_uri.parse().ok()?;
    Some(Issuer { keys: KeySource::JwksUri(uri), ..as_issuer_or_default(settings) })
}

fn as_issuer_or_default(settings: &LoginSettings) -> Issuer {
    Issuer {
        issuer: settings.issuer.clone(),
        keys: KeySource::Discovery,
        ca: settings.ca.clone(),
        audiences: vec![settings.client_id.clone()],
        algorithms: settings.algorithms.clone(),
        typ: vec![],
        required_claims: vec![],
        leeway: Duration::from_secs(5),
        max_future: Duration::from_secs(10),
        jwks_cache: JwksCacheSettings {
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(86_400),
            stale_if_error: Duration::from_secs(86_400),
            refetch_interval: Duration::from_secs(30),
            fetch_timeout: settings.timeout,
        },
        introspection: None,
    }
}

/// RFC 6749 §4.1.2 with RFC 9207 `iss`, which must equal the issuer exactly.
fn plain_response(query: Option<&str>, issuer: &str) -> Result<jarm::AuthorizationResponse, Answer> {
    if query_param(query, "iss").as_deref() != Some(issuer) {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "login_wrong_iss",
            "the authorization response's iss is missing or wrong",
        ));
    }
    let state = query_param(query, "state")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| failure(StatusCode::BAD_REQUEST, "login_no_state", "the authorization response has no state"))?;
    let outcome = match (query_param(query, "code"), query_param(query, "error")) {
        (_, Some(error)) => Outcome::Error { error, description: query_param(query, "error_description") },
        (Some(code), None) if !code.is_empty() => Outcome::Code(code),
        _ => return Err(failure(StatusCode::BAD_REQUEST, "login_no_code", "the authorization response has no code")),
    };
    Ok(jarm::AuthorizationResponse { state, outcome })
}

/// The first value of `name` in a query string, decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// `return_to` (already percent-decoded) when it is a relative path under an allowed prefix:
/// no scheme or host, no `//` or `\`, no control characters or whitespace, canonical.
pub fn checked_return_to(path: &str, allowed: &[String]) -> Option<String> {
    if !path.starts_with('/') || path.starts_with("//") || path.contains('\\') {
        return None;
    }
    if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let bare = path.split(['?', '#']).next().unwrap_or(path);
    crate::uri::check_path(bare).ok()?;
    allowed.iter().any(|prefix| bare.starts_with(prefix.as_str())).then(|| path.to_string())
}

fn origin_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest)),
        None => url.to_string(),
    }
}

fn redirect(location: &str, cookies: &[String], reason: &'static str) -> Answer {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::try_from(location) {
        headers.insert(LOCATION, value);
    }
    add_common(headers, cookies);
    Answer::Respond { response: Box::new(response), reason }
}

fn json_answer(status: StatusCode, body: &serde_json::Value, cookies: &[String], reason: &'static str) -> Answer {
    let mut response: Response<ProxyBody> = Response::new(full(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_common(headers, cookies);
    Answer::Respond { response: Box::new(response), reason }
}

fn add_common(headers: &mut HeaderMap, cookies: &[String]) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    for cookie in cookies {
        if let Ok(value) = HeaderValue::try_from(cookie.as_str()) {
            headers.append(SET_COOKIE, value);
        }
    }
}

/// Whether the request prefers an HTML page (a browser navigating) to JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(http::header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}

/// A JSON refusal as a small HTML page with the same status and reason: what failed, in
/// words, and a link to try again. Text is HTML-escaped.
async fn as_page(refusal: Answer, login_path: &str) -> Answer {
    use http_body_util::BodyExt as _;
    let Answer::Respond { response, reason } = refusal else { return refusal };
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let description = parsed["error_description"].as_str().unwrap_or("the login could not be completed");
    let escape = crate::answer::html_escape;
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Login failed</title></head>\n<body>\n<h1>Login failed</h1>\n<p>{}</p>\n<p><small>Reason: <code>{}</code> (status {})</small></p>\n<p><a href=\"{}\">Log in again</a></p>\n</body></html>\n",
        escape(description),
        escape(reason),
        parts.status.as_u16(),
        escape(login_path),
    );
    let mut response = Response::from_parts(parts, full(Bytes::from(page)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response.headers_mut().insert("content-security-policy", HeaderValue::from_static("default-src 'none'"));
    Answer::Respond { response: Box::new(response), reason }
}

/// A refusal with a body of its own.
fn refusal_body(status: StatusCode, reason: &'static str, body: &serde_json::Value) -> Answer {
    json_answer(status, body, &[], reason)
}

/// A refusal of the login mode: status, reason code and a JSON body saying why.
fn failure(status: StatusCode, reason: &'static str, description: &str) -> Answer {
    json_answer(status, &json!({ "error": reason, "error_description": description }), &[], reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_stays_on_allowed_relative_paths() {
        let allowed = vec!["/app/".to_string()];
        assert_eq!(checked_return_to("/app/x?y=1", &allowed).as_deref(), Some("/app/x?y=1"));
        for bad in [
            "https://evil.test/app/",
            "//evil.test/app/",
            "/\\evil.test",
            "/app/../admin",
            "/app/%2e%2e/admin",
            "/app/\tx",
            "/app/ x",
            "/other/",
            "app/",
            "/app/\u{0}",
        ] {
            assert_eq!(checked_return_to(bad, &allowed), None, "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; __Host-fapi-session=v.t"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, "__Host-fapi-session"), Some("v.t"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "__Host-fapi"), None);
    }
}
