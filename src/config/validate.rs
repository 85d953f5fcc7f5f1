//! From [`RawConfig`] to [`Config`]: defaults, rules that span several keys, and paths
//! resolved against the config file's folder. Every error carries the key path and the
//! `line:col` of the mapping it concerns.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::raw::{NonceMode, RawConfig, RawDpop, RawIssuer, RawJwksCache, RawRoute, ReplayStoreKind, RouteAuth};
use super::values::HttpUrl;
use super::values::HumanDuration;
use super::{
    Config, ConfigError, DpopSettings, Introspection, IntrospectionAuth, IntrospectionFormat, Issuer,
    JwksCacheSettings, KeySource, Limits, Listener, NonceSecret, Route, RoutePolicy, ServerTls, TokenCacheSettings,
};
use super::{RedisTarget, ReplayBackend, SecretUrl};
use crate::jose::Alg;
use crate::uri;

/// FAPI 2.0 §5.4.1: the only algorithms accepted by default.
pub const DEFAULT_ALGORITHMS: [Alg; 3] = [Alg::Ps256, Alg::Es256, Alg::EdDsa];
/// RFC 9068 §2.2: required besides `iss`, `aud` and `exp`, which are always checked.
const REQUIRED_CLAIMS: [&str; 4] = ["sub", "client_id", "iat", "jti"];
/// RFC 9449 proofs: the same FAPI set, in the order the `algs` challenge lists them.
pub const DEFAULT_DPOP_ALGORITHMS: [Alg; 3] = [Alg::Es256, Alg::Ps256, Alg::EdDsa];
/// FAPI 2.0 §5.3.2.1-2.13: never accept `iat`/`nbf` more than 60 s ahead.
const MAX_FUTURE_CEILING: Duration = Duration::from_secs(60);
/// `limits.shutdown_delay`: longer only keeps a stopping instance alive for nothing.
const MAX_SHUTDOWN_DELAY: Duration = Duration::from_secs(300);

pub(super) struct Ctx<'a> {
    file: &'a str,
    base_dir: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    /// An error about `key`, placed on the line where the key is written when it is written
    /// in block style, else at `at` (the mapping it belongs to).
    pub(super) fn err(&self, at: Location, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        let key = key.into();
        let (line, column) = match super::yaml_path::line_of_key(self.text, &key) {
            Some((line, column)) => (line as u64, column as u64),
            None => (at.line(), at.column()),
        };
        ConfigError::Invalid { file: self.file.to_string(), line, column, key, message: message.into() }
    }

    pub(super) fn path(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() { p } else { self.base_dir.join(p) }
    }
}

fn dur(value: Option<HumanDuration>, default: Duration) -> Duration {
    value.map_or(default, |d| d.0)
}

/// Validates every section; returns all the problems found (each section or list item
/// reports its first), in file order.
pub(super) fn validate(raw: RawConfig, file: &str, base_dir: &Path, text: &str) -> Result<Config, Vec<ConfigError>> {
    let ctx = Ctx { file, base_dir, text };
    let mut errors = Vec::new();

    let listen = match listener(&ctx, raw.listen) {
        Ok(listen) => Some(listen),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let limits = limits(&ctx, raw.limits, &mut errors);

    let mut issuers = Vec::with_capacity(raw.issuers.len());
    let mut seen_issuers = HashSet::new();
    let have_issuers = !raw.issuers.is_empty();
    for (i, spanned) in raw.issuers.into_iter().enumerate() {
        let at = spanned.referenced;
        match issuer(&ctx, i, spanned) {
            Err(e) => errors.push(e),
            Ok(issuer) if !seen_issuers.insert(issuer.issuer.clone()) => {
                errors.push(ctx.err(at, format!("issuers[{i}].issuer"), "this issuer is listed twice"));
            }
            Ok(issuer)
                if issuer.introspection.is_some() && issuers.iter().any(|i: &Issuer| i.introspection.is_some()) =>
            {
                // An opaque token names no issuer: it would be sent to every one of them.
                errors.push(ctx.err(
                    at,
                    format!("issuers[{i}].introspection"),
                    "only one issuer may introspect opaque tokens (a token that names no issuer would reach them all)",
                ));
            }
            Ok(issuer) => issuers.push(issuer),
        }
    }

    let token_cache = TokenCacheSettings {
        max_entries: raw.token_cache.max_entries.unwrap_or(100_000),
        max_ttl: dur(raw.token_cache.max_ttl, Duration::from_secs(300)),
    };

    let dpop = dpop(&ctx, raw.dpop).unwrap_or_else(|e| {
        errors.push(e);
        DpopSettings::default()
    });
    let mut logins = Vec::with_capacity(raw.login.len());
    for (i, spanned) in raw.login.into_iter().enumerate() {
        let at = spanned.referenced;
        match super::login::login(&ctx, i, spanned) {
            Err(e) => errors.push(e),
            Ok(login) if logins.iter().any(|l: &super::LoginSettings| l.name == login.name) => {
                errors.push(ctx.err(
                    at,
                    format!("login[{i}].name"),
                    format!("login name `{}` is used twice", login.name),
                ));
            }
            Ok(login) => logins.push(login),
        }
    }
    // Routes are checked even when `listen` is not valid; their origin is then a stand-in.
    let listen_origin = listen.as_ref().map_or_else(|| "https://listen.invalid".to_string(), |(_, o)| o.clone());
    let login_names: Vec<String> = logins.iter().map(|l| l.name.clone()).collect();
    let defaults =
        RouteDefaults { have_issuers, public_origin: &listen_origin, nonce: dpop.nonce, logins: &login_names };
    let mut routes = Vec::with_capacity(raw.routes.len());
    let mut names = HashSet::new();
    let mut matchers = HashSet::new();
    let mut spellings = std::collections::HashMap::new();
    for (i, spanned) in raw.routes.into_iter().enumerate() {
        let at = spanned.referenced;
        let route = match route(&ctx, i, spanned, &defaults) {
            Ok(route) => route,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if !names.insert(route.name.clone()) {
            errors.push(ctx.err(at, format!("routes[{i}].name"), format!("route name `{}` is used twice", route.name)));
            continue;
        }
        let folded = (route.host.clone(), route.path_prefix.to_ascii_lowercase());
        if let Some(other) = spellings.insert(folded, route.path_prefix.clone())
            && other != route.path_prefix
        {
            errors.push(ctx.err(
                at,
                format!("routes[{i}].match.path_prefix"),
                format!(
                    "`{}` and `{other}` differ only in letter case; prefixes match case-insensitively",
                    route.path_prefix
                ),
            ));
            continue;
        }
        let key = (
            route.host.clone(),
            route.path_prefix.clone(),
            route.methods.clone().map(|m| {
                let mut v: Vec<String> = m.iter().map(|m| m.to_string()).collect();
                v.sort();
                v
            }),
        );
        if !matchers.insert(key) {
            errors.push(ctx.err(
                at,
                format!("routes[{i}].match"),
                "another route has exactly the same host, path_prefix and methods",
            ));
            continue;
        }
        routes.push(route);
    }

    let resource_metadata = raw
        .resource_metadata
        .and_then(|spanned| resource_metadata(&ctx, spanned, &issuers).map_err(|e| errors.push(e)).ok());
    if resource_metadata.is_some() {
        for route in routes.iter_mut().filter(|r| matches!(r.policy, RoutePolicy::Protected { .. })) {
            route.resource_metadata_url =
                Some(format!("{}{}{}", route.public_origin, super::RESOURCE_METADATA_PATH, route.path_prefix).into());
        }
    }

    match listen {
        Some((listen, _)) if errors.is_empty() => Ok(Config {
            source: None,
            listen,
            admin: raw.admin.map(|a| a.address),
            limits,
            issuers,
            token_cache,
            dpop,
            logins,
            resource_metadata,
            routes,
        }),
        _ => {
            errors.sort_by_key(|e| match e {
                ConfigError::Invalid { line, column, .. } => (*line, *column),
                _ => (0, 0),
            });
            Err(errors)
        }
    }
}

/// `resource_metadata:`: every URL in it is https; the authorization servers default to
/// the issuers.
fn resource_metadata(
    ctx: &Ctx<'_>,
    spanned: Spanned<super::raw::RawResourceMetadata>,
    issuers: &[super::Issuer],
) -> Result<super::ResourceMetadataSettings, ConfigError> {
    let at = spanned.referenced;
    let raw = spanned.value;
    let https = |key: &str, value: &str| {
        if value.starts_with("https://") && value.len() > "https://".len() {
            Ok(())
        } else {
            Err(ctx.err(at, format!("resource_metadata.{key}"), format!("`{value}` is not an https:// URL")))
        }
    };
    let authorization_servers = match raw.authorization_servers {
        Some(list) => {
            for (i, server) in list.iter().enumerate() {
                https(&format!("authorization_servers[{i}]"), server)?;
            }
            list
        }
        None => issuers.iter().map(|i| i.issuer.clone()).collect(),
    };
    for (key, value) in [
        ("resource_documentation", &raw.resource_documentation),
        ("resource_policy_uri", &raw.resource_policy_uri),
        ("resource_tos_uri", &raw.resource_tos_uri),
    ] {
        if let Some(value) = value {
            https(key, value)?;
        }
    }
    Ok(super::ResourceMetadataSettings {
        authorization_servers,
        resource_name: raw.resource_name.filter(|n| !n.trim().is_empty()),
        resource_documentation: raw.resource_documentation,
        resource_policy_uri: raw.resource_policy_uri,
        resource_tos_uri: raw.resource_tos_uri,
    })
}

/// `listen.trusted_proxies`: addresses as CIDR blocks, certificates as `x5t#S256`; at least
/// one of the two lists.
fn trusted_proxies(
    ctx: &Ctx<'_>,
    spanned: Spanned<super::raw::RawTrustedProxies>,
) -> Result<super::TrustedProxies, ConfigError> {
    let at = spanned.referenced;
    let raw = spanned.value;
    if raw.addresses.is_empty() && raw.certificates.is_empty() {
        return Err(ctx.err(
            at,
            "listen.trusted_proxies",
            "give the proxies' `addresses` (CIDR blocks), their `certificates` (x5t#S256), or both",
        ));
    }
    let mut addresses = Vec::with_capacity(raw.addresses.len());
    for (i, text) in raw.addresses.iter().enumerate() {
        let net =
            super::IpNet::parse(text).map_err(|m| ctx.err(at, format!("listen.trusted_proxies.addresses[{i}]"), m))?;
        addresses.push(net);
    }
    let mut certificates = Vec::with_capacity(raw.certificates.len());
    for (i, text) in raw.certificates.iter().enumerate() {
        let thumbprint = crate::jose::b64url_decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                ctx.err(
                    at,
                    format!("listen.trusted_proxies.certificates[{i}]"),
                    format!("`{text}` is not an x5t#S256 thumbprint (base64url of a SHA-256, 43 characters)"),
                )
            })?;
        certificates.push(thumbprint);
    }
    Ok(super::TrustedProxies {
        addresses,
        certificates,
        reject_from_others: raw.from_others == Some(super::raw::ForwardedCertFromOthers::Reject),
    })
}

/// `listen:`, with the normalised origin routes inherit.
fn listener(ctx: &Ctx<'_>, raw: super::raw::RawListen) -> Result<(Listener, String), ConfigError> {
    let public_url = raw.public_url;
    let public_url_at = public_url.referenced;
    if !public_url.value.is_https() {
        return Err(ctx.err(
            public_url_at,
            "listen.public_url",
            "must be an https:// URL: it is the address clients call, and DPoP `htu` is checked against it",
        ));
    }
    if !matches!(public_url.value.0.path(), "" | "/") || public_url.value.0.query().is_some() {
        return Err(ctx.err(
            public_url_at,
            "listen.public_url",
            "must be an origin (scheme, host, optional port) without a path or query",
        ));
    }
    let origin = public_origin(&public_url.value).map_err(|m| ctx.err(public_url_at, "listen.public_url", m))?;
    let strip_headers = match raw.strip_headers {
        None => Vec::new(),
        Some(list) => strip_headers(ctx, list)?,
    };
    let trusted_proxies = match raw.trusted_proxies {
        None => None,
        Some(spanned) => Some(trusted_proxies(ctx, spanned)?),
    };
    let mut proxy_protocol_from = Vec::new();
    if let Some(spanned) = raw.proxy_protocol {
        let at = spanned.referenced;
        if spanned.value.from.is_empty() {
            return Err(ctx.err(at, "listen.proxy_protocol.from", "list the balancers' addresses (CIDR blocks)"));
        }
        for (i, text) in spanned.value.from.iter().enumerate() {
            let net =
                super::IpNet::parse(text).map_err(|m| ctx.err(at, format!("listen.proxy_protocol.from[{i}]"), m))?;
            proxy_protocol_from.push(net);
        }
    }
    let listen = Listener {
        proxy_protocol_from,
        trusted_proxies,
        strip_headers,
        address: raw.address,
        public_url: public_url.value.0,
        tls: ServerTls {
            cert: ctx.path(raw.tls.cert),
            key: ctx.path(raw.tls.key),
            client_auth: raw.tls.client_auth,
            client_ca: raw.tls.client_ca.map(|p| ctx.path(p)),
        },
        handshake_timeout: dur(raw.handshake_timeout, Duration::from_secs(10)),
    };
    Ok((listen, origin))
}

/// `limits:` with its defaults; every out-of-range value is reported.
fn limits(ctx: &Ctx<'_>, raw: Option<Spanned<super::raw::RawLimits>>, errors: &mut Vec<ConfigError>) -> Limits {
    let (limits_at, raw_limits) = match raw {
        Some(spanned) => (spanned.referenced, spanned.value),
        None => (Location::UNKNOWN, Default::default()),
    };
    let limits = Limits {
        max_header_bytes: raw_limits.max_header_bytes.unwrap_or(16 * 1024),
        max_body_bytes: raw_limits.max_body_bytes.unwrap_or(10 * 1024 * 1024),
        header_read_timeout: dur(raw_limits.header_read_timeout, Duration::from_secs(10)),
        shutdown_grace: dur(raw_limits.shutdown_grace, Duration::from_secs(30)),
        shutdown_delay: dur(raw_limits.shutdown_delay, Duration::ZERO),
        idle_timeout: dur(raw_limits.idle_timeout, Duration::from_secs(300)),
        max_connections: raw_limits.max_connections.unwrap_or(20_000),
        max_connections_per_client: raw_limits.max_connections_per_client,
        send_timeout: dur(raw_limits.send_timeout, Duration::from_secs(60)),
        min_send_rate: raw_limits.min_send_rate.unwrap_or(0),
        max_concurrent_streams: raw_limits.max_concurrent_streams.unwrap_or(100),
        socket_send_buffer: raw_limits.socket_send_buffer,
    };
    let mut refuse = |key: &str, message: &str| errors.push(ctx.err(limits_at, key, message));
    if limits.shutdown_delay > MAX_SHUTDOWN_DELAY {
        refuse(
            "limits.shutdown_delay",
            "must be at most 5m (a balancer deregisters within seconds; the orchestrator's grace period must cover it)",
        );
    }
    if limits.max_concurrent_streams == 0 {
        refuse("limits.max_concurrent_streams", "must be at least 1");
    }
    if limits.socket_send_buffer.is_some_and(|bytes| !(4096..=64 << 20).contains(&bytes)) {
        refuse(
            "limits.socket_send_buffer",
            "must be between 4096 and 67108864 bytes (leave it out for the kernel's autotuning)",
        );
    }
    if !(8 * 1024..=1024 * 1024).contains(&limits.max_header_bytes) {
        refuse("limits.max_header_bytes", "must be between 8192 and 1048576");
    }
    if limits.max_connections == 0 {
        refuse("limits.max_connections", "must be at least 1");
    }
    if limits.max_connections_per_client == Some(0) {
        refuse("limits.max_connections_per_client", "must be at least 1 (leave it out for no cap)");
    }
    for (key, value) in [
        ("limits.header_read_timeout", limits.header_read_timeout),
        ("limits.idle_timeout", limits.idle_timeout),
        ("limits.send_timeout", limits.send_timeout),
    ] {
        if value.is_zero() {
            refuse(key, "must be longer than 0s");
        }
    }
    limits
}

fn issuer(ctx: &Ctx<'_>, i: usize, spanned: Spanned<RawIssuer>) -> Result<Issuer, ConfigError> {
    let at = spanned.referenced;
    let raw = spanned.value;
    let key = |k: &str| format!("issuers[{i}].{k}");
    if raw.issuer.is_empty() {
        return Err(ctx.err(at, key("issuer"), "must not be empty"));
    }
    let keys = match (raw.jwks_uri, raw.discovery, raw.jwks_file) {
        (Some(uri), false, None) => {
            if !uri.is_https() {
                return Err(ctx.err(at, key("jwks_uri"), "must be an https:// URL (RFC 8414 §2, FAPI 2.0 §5.4.2)"));
            }
            KeySource::JwksUri(uri.0)
        }
        (None, true, None) => {
            if !raw.issuer.starts_with("https://") {
                return Err(ctx.err(at, key("discovery"), "discovery needs an https:// issuer identifier"));
            }
            KeySource::Discovery
        }
        (None, false, Some(path)) => KeySource::File(ctx.path(path)),
        _ => {
            return Err(ctx.err(
                at,
                key("jwks_uri"),
                "give exactly one of `jwks_uri`, `discovery: true` or `jwks_file`",
            ));
        }
    };
    if raw.audiences.is_empty() || raw.audiences.iter().any(String::is_empty) {
        return Err(ctx.err(
            at,
            key("audiences"),
            "list at least one audience (RFC 9068 §4: the `aud` the gateway accepts)",
        ));
    }
    let algorithms: Vec<Alg> = match raw.algorithms {
        Some(list) => list.into_iter().map(|a| a.0).collect(),
        None => DEFAULT_ALGORITHMS.to_vec(),
    };
    if algorithms.is_empty() {
        return Err(ctx.err(at, key("algorithms"), "must list at least one algorithm"));
    }
    let typ: Vec<String> =
        raw.typ.unwrap_or_else(|| vec!["at+jwt".to_string()]).iter().map(|t| normalise_typ(t)).collect();
    if typ.is_empty() || typ.iter().any(String::is_empty) {
        return Err(ctx.err(at, key("typ"), "list at least one accepted `typ`, e.g. [at+jwt]"));
    }
    let max_future = dur(raw.max_future, Duration::from_secs(10));
    if max_future > MAX_FUTURE_CEILING {
        return Err(ctx.err(at, key("max_future"), "must be at most 60s (FAPI 2.0 §5.3.2.1-2.13)"));
    }
    let required_claims =
        raw.required_claims.unwrap_or_else(|| REQUIRED_CLAIMS.iter().map(|c| c.to_string()).collect());
    if let Some(unknown) = required_claims.iter().find(|c| !REQUIRED_CLAIMS.contains(&c.as_str())) {
        return Err(ctx.err(
            at,
            key("required_claims"),
            format!("`{unknown}` cannot be required; choose from sub, client_id, iat, jti"),
        ));
    }
    let jwks_cache = jwks_cache(raw.jwks_cache);
    if jwks_cache.refetch_interval < Duration::from_secs(1) {
        return Err(ctx.err(
            at,
            key("jwks_cache.refetch_interval"),
            "must be at least 1s: it protects the issuer from unknown-kid floods",
        ));
    }
    if jwks_cache.min_ttl > jwks_cache.max_ttl {
        return Err(ctx.err(at, key("jwks_cache.min_ttl"), "must not exceed jwks_cache.max_ttl"));
    }
    let introspection = match raw.introspection {
        Some(raw) => Some(introspection(ctx, at, &key, raw, keys == KeySource::Discovery)?),
        None => None,
    };
    Ok(Issuer {
        issuer: raw.issuer,
        keys,
        ca: raw.ca.map(|p| ctx.path(p)),
        audiences: raw.audiences,
        algorithms,
        typ,
        required_claims,
        leeway: dur(raw.leeway, Duration::from_secs(5)),
        max_future,
        jwks_cache,
        introspection,
    })
}

/// `issuers[i].introspection`: an https endpoint (or discovery to find it), one client
/// authentication with the files it needs, and sane cache bounds.
fn introspection(
    ctx: &Ctx<'_>,
    at: Location,
    key: &dyn Fn(&str) -> String,
    raw: super::raw::RawIntrospection,
    discovery: bool,
) -> Result<Introspection, ConfigError> {
    use super::raw::IntrospectionClientAuth as Auth;
    let err = |k: &str, message: &str| ctx.err(at, key(&format!("introspection.{k}")), message.to_string());
    let endpoint = match raw.endpoint {
        Some(url) if !url.is_https() => {
            return Err(err("endpoint", "must be an https:// URL (FAPI 2.0 §5.2.1: TLS on every endpoint)"));
        }
        Some(url) => Some(url.0),
        None if discovery => None,
        None => {
            return Err(err(
                "endpoint",
                "give the introspection endpoint, or use `discovery: true` so that the metadata names it",
            ));
        }
    };
    if raw.client_id.is_empty() {
        return Err(err("client_id", "must not be empty"));
    }
    let unused = |name: &str, used_with: &str| err(name, &format!("only used with `client_auth: {used_with}`"));
    let client_auth = match raw.client_auth.unwrap_or(Auth::PrivateKeyJwt) {
        Auth::PrivateKeyJwt => {
            if raw.client_cert.is_some() || raw.client_cert_key.is_some() {
                return Err(unused("client_cert", "tls_client_auth"));
            }
            if raw.client_secret_file.is_some() {
                return Err(unused("client_secret_file", "client_secret_basic"));
            }
            let key_file = raw
                .client_key
                .ok_or_else(|| err("client_key", "`client_auth: private_key_jwt` needs the client's key file"))?;
            IntrospectionAuth::PrivateKeyJwt { key: ctx.path(key_file), kid: raw.client_key_id }
        }
        Auth::TlsClientAuth => {
            if raw.client_key.is_some() || raw.client_key_id.is_some() {
                return Err(unused("client_key", "private_key_jwt"));
            }
            if raw.client_secret_file.is_some() {
                return Err(unused("client_secret_file", "client_secret_basic"));
            }
            match (raw.client_cert, raw.client_cert_key) {
                (Some(cert), Some(cert_key)) => {
                    IntrospectionAuth::TlsClientAuth { cert: ctx.path(cert), key: ctx.path(cert_key) }
                }
                _ => {
                    return Err(err(
                        "client_cert",
                        "`client_auth: tls_client_auth` needs `client_cert` and `client_cert_key` (PEM)",
                    ));
                }
            }
        }
        Auth::ClientSecretBasic => {
            if raw.client_key.is_some() || raw.client_key_id.is_some() {
                return Err(unused("client_key", "private_key_jwt"));
            }
            if raw.client_cert.is_some() || raw.client_cert_key.is_some() {
                return Err(unused("client_cert", "tls_client_auth"));
            }
            let secret_file = raw.client_secret_file.ok_or_else(|| {
                err("client_secret_file", "`client_auth: client_secret_basic` needs the file holding the secret")
            })?;
            IntrospectionAuth::ClientSecretBasic { secret_file: ctx.path(secret_file) }
        }
    };
    let timeout = dur(raw.timeout, Duration::from_secs(2));
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err(err("timeout", "must be between 1ms and 60s"));
    }
    let cache_ttl = dur(raw.cache_ttl, Duration::from_secs(60));
    let inactive_cache_ttl = dur(raw.inactive_cache_ttl, Duration::from_secs(10));
    if inactive_cache_ttl > Duration::from_secs(300) {
        return Err(err(
            "inactive_cache_ttl",
            "must be at most 5m: a token may become active only by a new one, but a long negative cache hides AS fixes",
        ));
    }
    let max_concurrent = raw.max_concurrent.unwrap_or(64);
    if max_concurrent == 0 || max_concurrent > 10_000 {
        return Err(err("max_concurrent", "must be between 1 and 10000"));
    }
    let required_claims = raw.required_claims.unwrap_or_default();
    if let Some(unknown) = required_claims.iter().find(|c| !REQUIRED_CLAIMS.contains(&c.as_str())) {
        return Err(err(
            "required_claims",
            &format!("`{unknown}` cannot be required; choose from sub, client_id, iat, jti"),
        ));
    }
    Ok(Introspection {
        endpoint,
        client_id: raw.client_id,
        client_auth,
        format: raw.response.unwrap_or(IntrospectionFormat::Json),
        timeout,
        cache_ttl,
        inactive_cache_ttl,
        max_concurrent,
        required_claims,
    })
}

fn jwks_cache(raw: RawJwksCache) -> JwksCacheSettings {
    JwksCacheSettings {
        default_ttl: dur(raw.default_ttl, Duration::from_secs(300)),
        min_ttl: dur(raw.min_ttl, Duration::from_secs(30)),
        max_ttl: dur(raw.max_ttl, Duration::from_secs(86_400)),
        stale_if_error: dur(raw.stale_if_error, Duration::from_secs(86_400)),
        refetch_interval: dur(raw.refetch_interval, Duration::from_secs(30)),
        fetch_timeout: dur(raw.fetch_timeout, Duration::from_secs(5)),
    }
}

/// `typ` is a media type: compared case-insensitively, and `application/` may be omitted
/// (RFC 7515 §4.1.9).
/// `listen.strip_headers`: header names, none that the gateway's own checks read.
fn strip_headers(ctx: &Ctx<'_>, list: Spanned<Vec<String>>) -> Result<Vec<http::HeaderName>, ConfigError> {
    let at = list.referenced;
    let mut names = Vec::with_capacity(list.value.len());
    for (i, name) in list.value.iter().enumerate() {
        let key = format!("listen.strip_headers[{i}]");
        let parsed = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ctx.err(at, key.clone(), format!("`{name}` is not a header name")))?;
        if matches!(parsed.as_str(), "host" | "authorization" | "dpop") {
            return Err(ctx.err(
                at,
                key,
                format!(
                    "`{name}` cannot be stripped here (the credential headers follow each route's `forward_token`)"
                ),
            ));
        }
        names.push(parsed);
    }
    Ok(names)
}

pub fn normalise_typ(typ: &str) -> String {
    let lower = typ.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

/// What every route inherits from the rest of the file.
struct RouteDefaults<'a> {
    have_issuers: bool,
    public_origin: &'a str,
    nonce: NonceMode,
    /// The names of the `login:` entries, in order (`auth: session` routes name one).
    logins: &'a [String],
}

fn route(
    ctx: &Ctx<'_>,
    i: usize,
    spanned: Spanned<RawRoute>,
    defaults: &RouteDefaults<'_>,
) -> Result<Route, ConfigError> {
    let have_issuers = defaults.have_issuers;
    let at = spanned.referenced;
    let raw = spanned.value;
    let key = |k: &str| format!("routes[{i}].{k}");
    if raw.name.is_empty() {
        return Err(ctx.err(at, key("name"), "must not be empty"));
    }
    let prefix = raw.matcher.path_prefix;
    if let Err(e) = crate::uri::check_path(&prefix) {
        return Err(ctx.err(at, key("match.path_prefix"), format!("is not a canonical path: {e}")));
    }
    if !prefix.starts_with('/') {
        return Err(ctx.err(at, key("match.path_prefix"), "must start with `/`"));
    }
    if prefix.contains(['?', '#']) {
        return Err(ctx.err(at, key("match.path_prefix"), "must be a path, without `?` or `#`"));
    }
    let methods = match raw.matcher.methods {
        Some(list) if list.is_empty() => {
            return Err(ctx.err(
                at,
                key("match.methods"),
                "leave `methods` out to match every method, or list at least one",
            ));
        }
        Some(list) => Some(list.into_iter().map(|m| m.0).collect()),
        None => None,
    };
    let host = match raw.matcher.host {
        Some(h) if h.is_empty() || h.contains(['/', ':', ' ']) => {
            return Err(ctx.err(at, key("match.host"), "must be a bare host name, without scheme, port or path"));
        }
        Some(h) => Some(h.to_ascii_lowercase()),
        None => None,
    };
    if raw.login.is_some() != (raw.auth == Some(RouteAuth::Session)) {
        return Err(ctx.err(at, key("login"), "`auth: session` and `login: <name>` go together"));
    }
    if raw.upstream_public_url.is_some() && raw.auth != Some(RouteAuth::Session) {
        return Err(ctx.err(at, key("upstream_public_url"), "only used with `auth: session`"));
    }
    let policy = match (raw.auth, raw.binding) {
        (Some(RouteAuth::Session), None) => {
            let name = raw.login.as_deref().unwrap_or_default();
            let login = defaults
                .logins
                .iter()
                .position(|l| l == name)
                .ok_or_else(|| ctx.err(at, key("login"), format!("no `login:` entry is named `{name}`")))?;
            if !raw.scopes.is_empty() {
                return Err(ctx.err(at, key("scopes"), "a session route takes the scopes of its login's session"));
            }
            let upstream_origin = match &raw.upstream_public_url {
                Some(url) => public_origin(url).map_err(|m| ctx.err(at, key("upstream_public_url"), m))?,
                None => {
                    let scheme = raw.upstream.0.scheme_str().unwrap_or("http");
                    let authority = raw.upstream.0.authority().map(|a| a.as_str()).unwrap_or_default();
                    format!("{scheme}://{authority}")
                }
            };
            RoutePolicy::Session { login, upstream_origin }
        }
        (Some(RouteAuth::None), None) => {
            if !raw.scopes.is_empty() {
                return Err(ctx.err(at, key("scopes"), "a public route (`auth: none`) cannot require scopes"));
            }
            RoutePolicy::Public
        }
        (None, Some(binding)) => {
            if !have_issuers {
                return Err(ctx.err(at, key("binding"), "a protected route needs at least one entry under `issuers`"));
            }
            RoutePolicy::Protected { binding, scopes: raw.scopes }
        }
        (Some(_), Some(_)) => {
            return Err(ctx.err(at, key("auth"), "give either `auth: none` (public) or `binding: …`, not both"));
        }
        (None, None) => {
            return Err(ctx.err(
                at,
                key("binding"),
                "say how tokens are bound: `binding: mtls | dpop | any | bearer`, or `auth: none` for a public route",
            ));
        }
    };
    if raw.upstream.0.query().is_some() {
        return Err(ctx.err(at, key("upstream"), "must not have a query string"));
    }
    let public_origin = match &raw.public_url {
        // A host-bound route is called at its own host, on the listener's scheme and port.
        None => match &host {
            Some(h) => with_host(defaults.public_origin, h),
            None => defaults.public_origin.to_string(),
        },
        Some(url) => public_origin(url).map_err(|m| ctx.err(at, key("public_url"), m))?,
    };
    let as_edge = match raw.as_edge {
        None => None,
        Some(edge) => {
            if policy != RoutePolicy::Public {
                return Err(ctx.err(
                    at,
                    key("as_edge"),
                    "an AS edge route authenticates nothing itself (the AS does): give it `auth: none`",
                ));
            }
            if edge.authorization_paths.is_empty() {
                return Err(ctx.err(at, key("as_edge.authorization_paths"), "list the authorization endpoint's path"));
            }
            let route_prefix = prefix.trim_end_matches('/');
            for path in &edge.authorization_paths {
                let under =
                    path.strip_prefix(route_prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
                if !path.starts_with('/') || !under {
                    return Err(ctx.err(
                        at,
                        key("as_edge.authorization_paths"),
                        format!("`{path}` is not a path under this route's path_prefix `{prefix}`"),
                    ));
                }
            }
            Some(super::AsEdge { authorization_paths: edge.authorization_paths })
        }
    };
    let cors = match raw.cors {
        None => None,
        Some(cors) => Some(cors_policy(cors, methods.as_deref()).map_err(|(k, m)| ctx.err(at, key(k), m))?.into()),
    };
    Ok(Route {
        name: raw.name,
        host,
        path_prefix: prefix.trim_end_matches('/').to_string(),
        methods,
        upstream: raw.upstream.0,
        upstream_ca: raw.upstream_ca.map(|p| ctx.path(p)),
        timeout: dur(raw.timeout, Duration::from_secs(30)),
        policy,
        // An AS edge always tells the AS the client's certificate.
        forward_client_cert: raw.forward_client_cert || as_edge.is_some(),
        identity_headers: raw.identity_headers,
        forward_token: raw.forward_token.unwrap_or_default(),
        public_origin,
        nonce_required: raw.nonce.unwrap_or(defaults.nonce) == NonceMode::Required,
        resource_metadata_url: None,
        cors,
        as_edge,
    })
}

/// `cors:` checked, its header values made once.
fn cors_policy(
    raw: super::raw::RawCors,
    methods: Option<&[http::Method]>,
) -> Result<super::CorsPolicy, (&'static str, String)> {
    if raw.allowed_origins.is_empty() {
        return Err(("cors.allowed_origins", "list at least one origin (https://app.example.com)".into()));
    }
    let mut allowed_origins = Vec::with_capacity(raw.allowed_origins.len());
    for origin in &raw.allowed_origins {
        let url = HttpUrl::parse(origin)
            .ok()
            .filter(|u| matches!(u.0.path(), "" | "/") && u.0.query().is_none() && !origin.contains('*'))
            .ok_or_else(|| {
                (
                    "cors.allowed_origins",
                    format!("`{origin}` is not an origin: give scheme, host and port only (https://app.example.com), no wildcard"),
                )
            })?;
        allowed_origins.push(normalised_origin(&url));
    }
    let token = |h: &String| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    for (key, list) in [("cors.allowed_headers", &raw.allowed_headers), ("cors.exposed_headers", &raw.exposed_headers)]
    {
        if let Some(bad) = list.iter().find(|h| !token(h)) {
            return Err((key, format!("`{bad}` is not a header name")));
        }
    }
    let mut allow_headers = vec!["authorization".to_string(), "dpop".into(), "content-type".into()];
    allow_headers.extend(raw.allowed_headers.iter().map(|h| h.to_ascii_lowercase()));
    let mut expose = vec!["WWW-Authenticate".to_string(), "DPoP-Nonce".into()];
    expose.extend(raw.exposed_headers.iter().cloned());
    let methods = match methods {
        Some(list) => list.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", "),
        None => "GET, HEAD, POST, PUT, PATCH, DELETE".to_string(),
    };
    let max_age = dur(raw.max_age, Duration::from_secs(600));
    if max_age > Duration::from_secs(86_400) {
        return Err(("cors.max_age", "at most 24h (browsers cap it lower anyway)".into()));
    }
    let value = |text: String| http::HeaderValue::try_from(text).map_err(|_| ("cors", "bad header value".to_string()));
    Ok(super::CorsPolicy {
        allowed_origins,
        allow_methods: value(methods)?,
        allow_headers: value(allow_headers.join(", "))?,
        expose_headers: value(expose.join(", "))?,
        max_age: value(max_age.as_secs().to_string())?,
        preflight_upstream: raw.preflight == Some(super::raw::Preflight::Upstream),
    })
}

/// `scheme://host[:port]` of a URL: lower case, without the scheme's default port.
fn normalised_origin(url: &HttpUrl) -> String {
    let uri = &url.0;
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    match uri.port_u16() {
        Some(443) if scheme == "https" => format!("{scheme}://{host}"),
        Some(80) if scheme == "http" => format!("{scheme}://{host}"),
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// `origin` (normalised `scheme://host[:port]`) with its host replaced.
fn with_host(origin: &str, host: &str) -> String {
    let (scheme, authority) = origin.split_once("://").unwrap_or(("https", origin));
    let port = authority.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map(|(_, p)| p);
    match port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }
}

/// Checks that a public URL is an https origin and returns it normalised.
fn public_origin(url: &HttpUrl) -> Result<String, &'static str> {
    if !url.is_https() {
        return Err("must be an https:// URL: it is the address clients call, and DPoP `htu` is checked against it");
    }
    if !matches!(url.0.path(), "" | "/") || url.0.query().is_some() {
        return Err("must be an origin (scheme, host, optional port) without a path or query");
    }
    uri::normalise_origin(&url.0.to_string()).map_err(|_| "is not a usable origin")
}

fn dpop(ctx: &Ctx<'_>, spanned: Option<Spanned<RawDpop>>) -> Result<DpopSettings, ConfigError> {
    let (at, raw) = match spanned {
        Some(s) => (Some(s.referenced), s.value),
        None => (None, RawDpop::default()),
    };
    let err = |key: &str, message: &str| match at {
        Some(at) => ctx.err(at, format!("dpop.{key}"), message),
        None => ctx.err(Location::UNKNOWN, format!("dpop.{key}"), message),
    };
    let algorithms: Vec<Alg> = match raw.algorithms {
        Some(list) => list.into_iter().map(|a| a.0).collect(),
        None => DEFAULT_DPOP_ALGORITHMS.to_vec(),
    };
    if algorithms.is_empty() {
        return Err(err("algorithms", "must list at least one algorithm"));
    }
    let max_future = dur(raw.max_future, Duration::from_secs(10));
    if max_future > MAX_FUTURE_CEILING || max_future < Duration::from_secs(10) {
        return Err(err(
            "max_future",
            "must be between 10s and 60s (FAPI 2.0 §5.3.2.1-2.13: accept up to 10 s ahead, never more than 60 s)",
        ));
    }
    let max_age = dur(raw.max_age, Duration::from_secs(60));
    if max_age.subsec_nanos() != 0 || max_future.subsec_nanos() != 0 {
        return Err(err("max_age", "`max_age` and `max_future` are whole seconds (iat is in seconds)"));
    }
    if max_age.is_zero() || max_age > Duration::from_secs(600) {
        return Err(err("max_age", "must be between 1s and 10m: proofs are meant to be fresh (RFC 9449 §11.1)"));
    }
    let nonce_secret = match (raw.nonce_secret_file, raw.nonce_secret_env) {
        (None, None) => NonceSecret::Random,
        (Some(path), None) => NonceSecret::File(ctx.path(path)),
        (None, Some(var)) => NonceSecret::Env(var),
        (Some(_), Some(_)) => {
            return Err(err("nonce_secret_file", "give `nonce_secret_file` or `nonce_secret_env`, not both"));
        }
    };
    let nonce_step = dur(raw.nonce_step, Duration::from_secs(30));
    if nonce_step < Duration::from_secs(1) {
        return Err(err("nonce_step", "must be at least 1s"));
    }
    let replay_store = match raw.replay.store.unwrap_or(ReplayStoreKind::Memory) {
        ReplayStoreKind::Memory => {
            if raw.replay.url.is_some() {
                return Err(err("replay.url", "only used with `store: redis`"));
            }
            ReplayBackend::Memory
        }
        ReplayStoreKind::Redis => {
            let target = redis_target(raw.replay.url, raw.replay.cluster, raw.replay.sentinel)
                .map_err(|(key, message)| err(&format!("replay.{key}"), &message))?;
            let timeout = dur(raw.replay.timeout, Duration::from_millis(250));
            if timeout.is_zero() {
                return Err(err("replay.timeout", "must be longer than 0s"));
            }
            if raw.replay.restart_guard.is_some() {
                return Err(err(
                    "replay.restart_guard",
                    "only used with `store: memory` (Redis keeps the replay state across a gateway restart)",
                ));
            }
            if raw.replay.ca.is_some() && !target_uses_tls(&target) {
                return Err(err("replay.ca", "only used with rediss:// (TLS) URLs"));
            }
            let wait_for_replicas = raw.replay.wait_for_replicas.unwrap_or(0);
            if wait_for_replicas > 0 && raw.replay.on_error == Some(super::ReplayOnError::Local) {
                return Err(err(
                    "replay.wait_for_replicas",
                    "cannot go with `on_error: local`: a proof too few replicas hold would fall back to this instance's store",
                ));
            }
            ReplayBackend::Redis {
                wait_for_replicas,
                target,
                ca: raw.replay.ca.map(|p| ctx.path(p)),
                key_prefix: raw.replay.key_prefix.unwrap_or_else(|| "fapi-gateway:dpop:".to_string()),
                timeout,
                on_error: raw.replay.on_error.unwrap_or_default(),
            }
        }
    };
    let algs_challenge = algorithms.iter().map(|a| a.name()).collect::<Vec<_>>().join(" ");
    Ok(DpopSettings {
        algorithms,
        algs_challenge,
        max_age,
        max_future,
        replay_store,
        replay_max_entries: raw.replay.max_entries.unwrap_or(1_000_000).max(1),
        replay_per_key_limit: match raw.replay.per_key_limit {
            Some(limit) => limit.max(1),
            None => u32::try_from(raw.replay.max_entries.unwrap_or(1_000_000) / 2).unwrap_or(u32::MAX).max(1),
        },
        restart_guard: raw.replay.restart_guard.unwrap_or_default(),
        nonce: raw.nonce.unwrap_or_default(),
        nonce_secret,
        nonce_step,
        nonce_window: raw.nonce_window.unwrap_or(1).min(100),
    })
}

/// `url`, `cluster` or `sentinel` (exactly one) as a [`RedisTarget`]; the error names the
/// key at fault.
pub(super) fn redis_target(
    url: Option<String>,
    cluster: Option<Vec<String>>,
    sentinel: Option<super::raw::RawSentinel>,
) -> Result<RedisTarget, (&'static str, String)> {
    fn checked(key: &'static str, url: String) -> Result<SecretUrl, (&'static str, String)> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            Ok(SecretUrl(url))
        } else {
            Err((key, "must start with redis:// or rediss://".to_string()))
        }
    }
    match (url, cluster, sentinel) {
        (Some(url), None, None) => Ok(RedisTarget::Single(checked("url", url)?)),
        (None, Some(nodes), None) => {
            if nodes.is_empty() {
                return Err(("cluster", "list at least one seed node".to_string()));
            }
            Ok(RedisTarget::Cluster(nodes.into_iter().map(|n| checked("cluster", n)).collect::<Result<_, _>>()?))
        }
        (None, None, Some(sentinel)) => {
            if sentinel.urls.is_empty() {
                return Err(("sentinel.urls", "list at least one Sentinel".to_string()));
            }
            if sentinel.master.is_empty() {
                return Err(("sentinel.master", "name the primary the Sentinels watch".to_string()));
            }
            let sentinels =
                sentinel.urls.into_iter().map(|u| checked("sentinel.urls", u)).collect::<Result<Vec<_>, _>>()?;
            if sentinels.iter().any(|u| u.0.starts_with("rediss://")) {
                return Err((
                    "sentinel.urls",
                    "Sentinel over TLS is not supported yet: use redis:// Sentinel URLs".to_string(),
                ));
            }
            Ok(RedisTarget::Sentinel { sentinels, master: sentinel.master })
        }
        (None, None, None) => Err(("url", "`store: redis` needs `url`, `cluster` or `sentinel`".to_string())),
        _ => Err(("url", "give exactly one of `url`, `cluster` and `sentinel`".to_string())),
    }
}

fn target_uses_tls(target: &RedisTarget) -> bool {
    match target {
        RedisTarget::Single(url) => url.0.starts_with("rediss://"),
        RedisTarget::Cluster(nodes) => nodes.iter().any(|n| n.0.starts_with("rediss://")),
        RedisTarget::Sentinel { .. } => false,
    }
}
