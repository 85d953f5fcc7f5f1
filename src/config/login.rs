//! `login:` — the browser login mode's settings (the gateway as a FAPI 2.0 client), checked
//! and with their defaults. See README, "Login mode".

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::ConfigError;
use super::raw::{LoginClientAuth, RawLogin, RequestObject, ResponseMode, SessionStoreKind};
use super::validate::Ctx;
use crate::jose::Alg;

/// How the gateway authenticates to the AS (FAPI 2.0 §5.3.3.1-2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoginAuth {
    /// A client assertion signed with this PKCS#8 PEM key (named `kid` when given).
    PrivateKeyJwt { key: PathBuf, kid: Option<String> },
    /// Mutual TLS with this certificate chain and key (RFC 8705 §2.1), on the AS's
    /// `mtls_endpoint_aliases`.
    TlsClientAuth { cert: PathBuf, key: PathBuf },
}

/// One `login:` entry.
#[derive(Clone, Debug)]
pub struct LoginSettings {
    pub name: String,
    pub issuer: String,
    pub ca: Option<PathBuf>,
    pub client_id: String,
    pub client_auth: LoginAuth,
    pub redirect_uri: String,
    /// The path of `redirect_uri`, which the gateway serves (the callback).
    pub callback_path: String,
    pub scopes: Vec<String>,
    pub resource: Vec<String>,
    pub response_mode: ResponseMode,
    /// `signed`: the PAR carries the parameters as a request object signed with the client
    /// key (JAR, RFC 9101; FAPI 2.0 Message Signing).
    pub request_object: RequestObject,
    pub paths: LoginPaths,
    /// Allowed post-login path prefixes.
    pub return_to: Vec<String>,
    /// Named in the RP-initiated logout URL the logout endpoint answers with.
    pub post_logout_redirect_uri: Option<String>,
    pub session: SessionSettings,
    pub timeout: Duration,
    pub algorithms: Vec<Alg>,
}

impl LoginSettings {
    /// Whether the scopes ask for an ID token.
    pub fn openid(&self) -> bool {
        self.scopes.iter().any(|s| s == "openid")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginPaths {
    pub login: String,
    pub logout: String,
    pub session: String,
}

#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub store: SessionStore,
    pub cookie: String,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    /// Session secrets (32+ bytes each): the first tags new cookies, all verify. Empty: a
    /// random secret made at start (sessions end with the process anyway in memory).
    pub secret_files: Vec<PathBuf>,
}

/// Where transactions and sessions live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionStore {
    /// This instance only.
    Memory,
    /// Shared by every instance (sealed records, expiring by themselves).
    Redis { target: crate::config::RedisTarget, key_prefix: String, ca: Option<PathBuf>, timeout: Duration },
}

/// Validates `login[i]`.
pub(super) fn login(ctx: &Ctx<'_>, i: usize, spanned: Spanned<RawLogin>) -> Result<LoginSettings, ConfigError> {
    let at = spanned.referenced;
    let raw = spanned.value;
    let key = |k: &str| format!("login[{i}].{k}");
    let err = |k: &str, m: &str| ctx.err(at, key(k), m);
    if raw.name.is_empty() || !raw.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(err("name", "must be a non-empty name of letters, digits, `-` and `_`"));
    }
    if !raw.issuer.starts_with("https://") {
        return Err(err("issuer", "must be an https:// issuer identifier (FAPI 2.0 §5.3.3.1, RFC 8414)"));
    }
    if raw.client_id.is_empty() {
        return Err(err("client_id", "must not be empty"));
    }
    let client_auth = match raw.client_auth.unwrap_or(LoginClientAuth::PrivateKeyJwt) {
        LoginClientAuth::PrivateKeyJwt => {
            if raw.client_cert.is_some() || raw.client_cert_key.is_some() {
                return Err(err("client_cert", "only used with `client_auth: tls_client_auth`"));
            }
            LoginAuth::PrivateKeyJwt {
                key: raw
                    .client_key
                    .map(|p| ctx.path(p))
                    .ok_or_else(|| err("client_key", "`client_auth: private_key_jwt` needs the client's key file"))?,
                kid: raw.client_key_id,
            }
        }
        LoginClientAuth::TlsClientAuth => match (raw.client_cert, raw.client_cert_key) {
            (Some(cert), Some(key)) => {
                if raw.client_key.is_some() {
                    return Err(err("client_key", "only used with `client_auth: private_key_jwt`"));
                }
                LoginAuth::TlsClientAuth { cert: ctx.path(cert), key: ctx.path(key) }
            }
            _ => {
                return Err(err(
                    "client_cert",
                    "`client_auth: tls_client_auth` needs `client_cert` and `client_cert_key` (PEM)",
                ));
            }
        },
    };
    if raw.request_object == Some(RequestObject::Signed) && matches!(client_auth, LoginAuth::TlsClientAuth { .. }) {
        return Err(err(
            "request_object",
            "`signed` request objects are signed with the client key: use `client_auth: private_key_jwt`",
        ));
    }
    let redirect = &raw.redirect_uri;
    if !redirect.is_https() || redirect.0.query().is_some() {
        return Err(err("redirect_uri", "must be an https:// URL without a query (it is compared exactly)"));
    }
    let callback_path = redirect.0.path().to_string();
    if raw.scopes.is_empty() || raw.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
        return Err(err("scopes", "list at least one scope, one per entry (e.g. [openid, accounts:read])"));
    }
    let paths = raw.paths.unwrap_or_default();
    let paths = LoginPaths {
        login: paths.login.unwrap_or_else(|| "/auth/login".into()),
        logout: paths.logout.unwrap_or_else(|| "/auth/logout".into()),
        session: paths.session.unwrap_or_else(|| "/auth/session".into()),
    };
    for (name, path) in
        [("paths.login", &paths.login), ("paths.logout", &paths.logout), ("paths.session", &paths.session)]
    {
        if !path.starts_with('/') || crate::uri::check_path(path).is_err() {
            return Err(err(name, "must be a canonical absolute path, e.g. /auth/login"));
        }
        if *path == callback_path {
            return Err(err(name, "must differ from the path of `redirect_uri` (the callback)"));
        }
    }
    if raw.return_to.is_empty() {
        return Err(err("return_to", "list the path prefixes a login may return to, e.g. [/app/]"));
    }
    for prefix in &raw.return_to {
        if !prefix.starts_with('/') || prefix.starts_with("//") || prefix.contains(['\\', '?', '#']) {
            return Err(err("return_to", "entries are relative path prefixes like /app/ (no host, `//`, `\\`, query)"));
        }
    }
    let raw_session = raw.session.unwrap_or_default();
    let store = match (raw_session.store.unwrap_or(SessionStoreKind::Memory), raw_session.redis) {
        (SessionStoreKind::Memory, None) => SessionStore::Memory,
        (SessionStoreKind::Memory, Some(_)) => {
            return Err(err("session.redis", "only used with `session.store: redis`"));
        }
        (SessionStoreKind::Redis, None) => {
            return Err(err("session.redis", "`session.store: redis` needs `session.redis: { url: redis://… }`"));
        }
        (SessionStoreKind::Redis, Some(redis)) => {
            let target = super::validate::redis_target(redis.url, redis.cluster, redis.sentinel)
                .map_err(|(k, message)| err(&format!("session.redis.{k}"), &message))?;
            if raw_session.secret_file.is_none() {
                return Err(err(
                    "session.secret_file",
                    "`session.store: redis` needs a session secret shared by every instance (32+ bytes in a file)",
                ));
            }
            SessionStore::Redis {
                target,
                key_prefix: redis.key_prefix.unwrap_or_else(|| format!("fapi-gateway:login:{}:", raw.name)),
                ca: redis.ca.map(|p| ctx.path(p)),
                timeout: redis.timeout.map_or(Duration::from_millis(500), |d| d.0),
            }
        }
    };
    let cookie = raw_session.cookie.unwrap_or_else(|| "__Host-fapi-session".into());
    if cookie.is_empty() || !cookie.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)) {
        return Err(err("session.cookie", "must be a cookie name of letters, digits, `-` and `_`"));
    }
    let session = SessionSettings {
        store,
        cookie,
        idle_timeout: raw_session.idle_timeout.map_or(Duration::from_secs(30 * 60), |d| d.0),
        max_lifetime: raw_session.max_lifetime.map_or(Duration::from_secs(12 * 3600), |d| d.0),
        secret_files: raw_session
            .secret_file
            .map(|f| f.into_vec())
            .unwrap_or_default()
            .into_iter()
            .map(|p| ctx.path(p))
            .collect(),
    };
    if session.idle_timeout.is_zero() || session.idle_timeout > session.max_lifetime {
        return Err(err("session.idle_timeout", "must be longer than 0s and at most session.max_lifetime"));
    }
    let algorithms: Vec<Alg> = match raw.algorithms {
        Some(list) => list.into_iter().map(|a| a.0).collect(),
        None => vec![Alg::Ps256, Alg::Es256, Alg::EdDsa],
    };
    if algorithms.is_empty() {
        return Err(err("algorithms", "must list at least one algorithm"));
    }
    Ok(LoginSettings {
        name: raw.name,
        issuer: raw.issuer,
        ca: raw.ca.map(|p| ctx.path(p)),
        client_id: raw.client_id,
        client_auth,
        redirect_uri: redirect.to_string(),
        callback_path,
        scopes: raw.scopes,
        resource: raw.resource,
        response_mode: raw.response_mode.unwrap_or(ResponseMode::Jwt),
        request_object: raw.request_object.unwrap_or(RequestObject::None),
        paths,
        return_to: raw.return_to,
        post_logout_redirect_uri: raw.post_logout_redirect_uri.map(|u| u.to_string()),
        session,
        timeout: raw.timeout.map_or(Duration::from_secs(10), |d| d.0),
        algorithms,
    })
}
