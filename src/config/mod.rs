//! `gateway.yaml`: parsing, defaults and validation into the runtime [`Config`].
//!
//! Three steps, in order: [`raw`] deserialises the YAML strictly (unknown keys are errors,
//! scalar values such as durations and URLs validate as they parse), [`validate`] checks
//! what spans several keys and fills in defaults, and the result is a [`Config`] whose
//! fields the hot path can use without parsing anything. Every error names the key path and
//! the `line:col` it comes from. Nothing listens until the whole file is valid.

mod diff;
mod login;
mod parse_errors;
mod raw;
mod validate;
mod yaml_path;
pub use validate::normalise_typ;
pub mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use login::{LoginAuth, LoginPaths, LoginSettings, SessionSettings, SessionStore};
pub use raw::{
    Binding, ClientAuth, ForwardToken, IntrospectionFormat, NonceMode, ReplayOnError, RequestObject, ResponseMode,
    RestartGuard,
};

use crate::jose::Alg;

/// A validated gateway configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file this configuration was read from, if any.
    pub source: Option<PathBuf>,
    pub listen: Listener,
    pub admin: Option<SocketAddr>,
    pub limits: Limits,
    pub issuers: Vec<Issuer>,
    pub token_cache: TokenCacheSettings,
    pub dpop: DpopSettings,
    /// `login:` entries (browser login mode); session routes refer to them by index.
    pub logins: Vec<LoginSettings>,
    /// `resource_metadata:` (RFC 9728), when present.
    pub resource_metadata: Option<ResourceMetadataSettings>,
    pub routes: Vec<Route>,
}

/// `routes[].as_edge`: on `authorization_paths` only pushed authorization requests
/// (`client_id` and `request_uri`, FAPI 2.0 §5.3.2.2) pass; every request forwards the
/// client's certificate (RFC 9440) for the AS's `tls_client_auth` and certificate binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsEdge {
    pub authorization_paths: Vec<String>,
}

/// A route's CORS policy, with its header values made once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsPolicy {
    /// Exact origins, normalised (lower-case scheme and host, no default port).
    pub allowed_origins: Vec<String>,
    /// `Access-Control-Allow-Methods`: the route's methods (or the usual ones).
    pub allow_methods: http::HeaderValue,
    /// `Access-Control-Allow-Headers`, lower case.
    pub allow_headers: http::HeaderValue,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: http::HeaderValue,
    /// `Access-Control-Max-Age`, in seconds.
    pub max_age: http::HeaderValue,
    /// The upstream answers preflights.
    pub preflight_upstream: bool,
}

impl CorsPolicy {
    /// Whether `origin` (an `Origin` header value) is one of the allowed origins. `null` and
    /// anything malformed never is.
    pub fn allows(&self, origin: &[u8]) -> bool {
        let Ok(origin) = std::str::from_utf8(origin) else { return false };
        let origin = origin.strip_suffix('/').unwrap_or(origin);
        self.allowed_origins.iter().any(|allowed| allowed.eq_ignore_ascii_case(origin))
    }
}

/// Where RFC 9728 documents live: this path, then the resource's path (§3.1).
pub const RESOURCE_METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// What `resource_metadata:` adds to the documents built from the routes (RFC 9728 §2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceMetadataSettings {
    /// The issuers clients may get tokens from (every `issuers[].issuer` by default).
    pub authorization_servers: Vec<String>,
    pub resource_name: Option<String>,
    pub resource_documentation: Option<String>,
    pub resource_policy_uri: Option<String>,
    pub resource_tos_uri: Option<String>,
}

/// DPoP proof checking (RFC 9449), shared by all routes.
#[derive(Clone, Debug)]
pub struct DpopSettings {
    pub algorithms: Vec<Alg>,
    /// The `algs` challenge parameter: the algorithm names, space-separated.
    pub algs_challenge: String,
    pub max_age: Duration,
    pub max_future: Duration,
    pub replay_store: ReplayBackend,
    pub replay_max_entries: usize,
    /// Proofs one DPoP key may have in the replay window (fairness); more are refused (429).
    pub replay_per_key_limit: u32,
    /// With the memory store: which proofs need a nonce minted since the start.
    pub restart_guard: RestartGuard,
    pub nonce: NonceMode,
    pub nonce_secret: NonceSecret,
    pub nonce_step: Duration,
    pub nonce_window: u32,
}

impl Default for DpopSettings {
    /// The documented defaults of the `dpop:` section.
    fn default() -> Self {
        let algorithms = vec![Alg::Es256, Alg::Ps256, Alg::EdDsa];
        DpopSettings {
            algs_challenge: algorithms.iter().map(|a| a.name()).collect::<Vec<_>>().join(" "),
            algorithms,
            max_age: Duration::from_secs(60),
            max_future: Duration::from_secs(10),
            replay_store: ReplayBackend::Memory,
            replay_max_entries: 1_000_000,
            replay_per_key_limit: 100_000,
            restart_guard: RestartGuard::Start,
            nonce: NonceMode::Off,
            nonce_secret: NonceSecret::Random,
            nonce_step: Duration::from_secs(30),
            nonce_window: 1,
        }
    }
}

/// Where DPoP replay state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayBackend {
    /// This instance's fail-closed in-memory store.
    Memory,
    /// Shared by every instance through Redis.
    Redis {
        target: RedisTarget,
        ca: Option<PathBuf>,
        key_prefix: String,
        timeout: Duration,
        on_error: ReplayOnError,
        /// Replicas that must hold a fresh proof before it is accepted (`WAIT`).
        wait_for_replicas: u32,
    },
}

/// Which Redis deployment a shared store talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisTarget {
    /// One server (`url`).
    Single(SecretUrl),
    /// A Redis Cluster, found from these seed nodes (`cluster`).
    Cluster(Vec<SecretUrl>),
    /// The primary these Sentinels name `master` (`sentinel: { urls, master }`).
    Sentinel { sentinels: Vec<SecretUrl>, master: String },
}

impl std::fmt::Display for RedisTarget {
    /// Without credentials, for logs and `check-config`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |urls: &[SecretUrl]| urls.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(" ");
        match self {
            RedisTarget::Single(url) => write!(f, "{url:?}"),
            RedisTarget::Cluster(nodes) => write!(f, "cluster {}", list(nodes)),
            RedisTarget::Sentinel { sentinels, master } => write!(f, "sentinel {} master {master}", list(sentinels)),
        }
    }
}

/// A URL that may carry a password: `Debug` shows it without credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(pub String);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::secret::redact_url(&self.0))
    }
}

/// Where the nonce HMAC key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NonceSecret {
    /// A random key made at start: nonces are valid on this instance only.
    Random,
    File(PathBuf),
    Env(String),
}

/// The TLS listener that clients connect to.
#[derive(Clone, Debug)]
pub struct Listener {
    pub address: SocketAddr,
    /// The origin clients call (`https://host[:port]`), as configured.
    pub public_url: http::Uri,
    pub tls: ServerTls,
    pub handshake_timeout: Duration,
    /// Request headers removed before forwarding, beyond the built-in list of identity,
    /// certificate and override headers (lower case).
    pub strip_headers: Vec<http::HeaderName>,
    /// Peers whose RFC 9440 `Client-Cert` is the client's certificate.
    pub trusted_proxies: Option<TrustedProxies>,
    /// Connections from these addresses start with a PROXY protocol v2 header (empty: off).
    pub proxy_protocol_from: Vec<IpNet>,
}

/// `listen.trusted_proxies`: a peer is trusted when it matches every list given — its
/// address in `addresses`, its own TLS client certificate in `certificates`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedProxies {
    pub addresses: Vec<IpNet>,
    /// SHA-256 of the proxies' certificates (DER).
    pub certificates: Vec<[u8; 32]>,
    pub reject_from_others: bool,
}

impl TrustedProxies {
    /// Whether a connection from `peer`, presenting the certificate with this thumbprint,
    /// comes from a trusted proxy.
    pub fn trusts(&self, peer: std::net::IpAddr, certificate: Option<&[u8; 32]>) -> bool {
        let address_ok = self.addresses.is_empty() || self.addresses.iter().any(|net| net.contains(peer));
        let certificate_ok = self.certificates.is_empty()
            || certificate.is_some_and(|c| self.certificates.iter().any(|t| crate::jose::constant_time_eq(t, c)));
        address_ok && certificate_ok
    }
}

/// An IP network: an address and a prefix length (`10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub address: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// `a.b.c.d/n`, `x::y/n`, or a single address (the whole prefix).
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: std::net::IpAddr =
            address.trim().parse().map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be a number from 0 to {max}"))?,
        };
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`: peers are compared as IPv4 too.
        if let std::net::IpAddr::V6(v6) = address
            && let Some(v4) = v6.to_ipv4_mapped()
            && prefix >= 96
        {
            return Ok(IpNet { address: std::net::IpAddr::V4(v4), prefix: prefix - 96 });
        }
        Ok(IpNet { address, prefix })
    }

    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: std::net::IpAddr| -> u128 {
            match a {
                std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                std::net::IpAddr::V6(v6) => u128::from(v6),
            }
        };
        if ip.is_ipv4() != self.address.is_ipv4() {
            return false;
        }
        let prefix = u32::from(self.prefix);
        if prefix == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - prefix.min(128));
        (bits(ip) & mask) == (bits(self.address) & mask)
    }
}

#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_auth: ClientAuth,
    /// When set, client certificates must chain to these roots; otherwise any certificate is
    /// accepted for binding purposes (RFC 8705 §6.2).
    pub client_ca: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub shutdown_grace: Duration,
    /// On SIGTERM/SIGINT: how long the listener keeps accepting, with `/readyz` already
    /// 503, before it stops and the drain begins (0: stop at once).
    pub shutdown_delay: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Connections one client IP address may hold at once (`None`: no cap).
    pub max_connections_per_client: Option<usize>,
    /// How long a blocked response write may go without the client taking
    /// `min_send_rate × send_timeout` bytes (at least one).
    pub send_timeout: Duration,
    /// Bytes per second a client must take while a response waits for it (0: any).
    pub min_send_rate: u64,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// `SO_SNDBUF` for client sockets (`None`: the kernel's autotuning).
    pub socket_send_buffer: Option<usize>,
}

/// An authorization server whose access tokens the gateway accepts.
#[derive(Clone, Debug)]
pub struct Issuer {
    /// The exact `iss` value.
    pub issuer: String,
    pub keys: KeySource,
    /// Extra trust anchors (PEM) for fetching metadata and keys.
    pub ca: Option<PathBuf>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    /// Accepted `typ` values, normalised (lower case, without `application/`).
    pub typ: Vec<String>,
    /// Claims that must be present (RFC 9068 §2.2 by default).
    pub required_claims: Vec<String>,
    pub leeway: Duration,
    pub max_future: Duration,
    pub jwks_cache: JwksCacheSettings,
    /// Opaque tokens go to this issuer's introspection endpoint (at most one issuer).
    pub introspection: Option<Introspection>,
}

/// `issuers[].introspection` (RFC 7662; RFC 9701 signed answers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Introspection {
    /// `None`: the issuer's metadata names it (`introspection_endpoint`, or its mTLS alias).
    pub endpoint: Option<http::Uri>,
    pub client_id: String,
    pub client_auth: IntrospectionAuth,
    pub format: IntrospectionFormat,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub inactive_cache_ttl: Duration,
    pub max_concurrent: usize,
    /// Members an active answer must carry (the issuer's `required_claims` are for JWTs).
    pub required_claims: Vec<String>,
}

/// How the gateway authenticates to the introspection endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntrospectionAuth {
    /// RFC 7523: an assertion signed with this key (alg from its type), `kid` when given.
    PrivateKeyJwt { key: PathBuf, kid: Option<String> },
    /// RFC 8705 §2: the client certificate (on the mTLS alias when the metadata has one).
    TlsClientAuth { cert: PathBuf, key: PathBuf },
    /// RFC 6749 §2.3.1: HTTP Basic with the secret read from this file.
    ClientSecretBasic { secret_file: PathBuf },
}

/// Where an issuer's signing keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    JwksUri(http::Uri),
    /// RFC 8414 / OpenID Connect discovery from the issuer URL.
    Discovery,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct JwksCacheSettings {
    pub default_ttl: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub stale_if_error: Duration,
    pub refetch_interval: Duration,
    pub fetch_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct TokenCacheSettings {
    pub max_entries: u64,
    pub max_ttl: Duration,
}

/// One compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    /// Lower-case host (without port) the route is limited to, if any.
    pub host: Option<String>,
    /// Path prefix without a trailing slash (`""` for the root).
    pub path_prefix: String,
    pub methods: Option<Vec<http::Method>>,
    pub upstream: http::Uri,
    pub upstream_ca: Option<PathBuf>,
    pub timeout: Duration,
    pub policy: RoutePolicy,
    pub forward_client_cert: bool,
    pub identity_headers: bool,
    pub forward_token: ForwardToken,
    /// The origin clients call for this route (`listen.public_url` unless overridden),
    /// normalised for DPoP `htu` comparison: lower-case scheme and host, no default port.
    pub public_origin: String,
    /// Whether DPoP proofs on this route must carry a server nonce.
    pub nonce_required: bool,
    /// `cors:`: browser apps on these origins may call the route.
    pub cors: Option<std::sync::Arc<CorsPolicy>>,
    /// `as_edge:`: the route fronts an authorization server.
    pub as_edge: Option<AsEdge>,
    /// With `resource_metadata:`, on a protected route: the URL of its RFC 9728 document
    /// (`public_origin` + `/.well-known/oauth-protected-resource` + `path_prefix`), which
    /// its challenges name.
    pub resource_metadata_url: Option<std::sync::Arc<str>>,
}

/// What a route demands of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoutePolicy {
    /// `auth: none`: a public route.
    Public,
    /// A valid access token bound as `binding` says, carrying all of `scopes`.
    Protected { binding: Binding, scopes: Vec<String> },
    /// `auth: session`: a browser session of `config.logins[login]`; the session's DPoP-bound
    /// token goes upstream with a fresh proof whose `htu` is `upstream_origin` + the path.
    Session { login: usize, upstream_origin: String },
}

/// Why a configuration was refused. `Display` gives one line a person can act on per
/// problem: `file:line:col: key.path: what is wrong and what to write`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax { file: String, line: u64, column: u64, message: String },
    #[error("{file}: {message}")]
    SyntaxNoLocation { file: String, message: String },
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Invalid { file: String, line: u64, column: u64, key: String, message: String },
    /// Every problem found in one file (two or more), one per line, in file order.
    #[error("{}", several(.0))]
    Several(Vec<ConfigError>),
}

fn several(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

impl ConfigError {
    /// One error, or [`ConfigError::Several`].
    fn from_list(mut errors: Vec<ConfigError>) -> ConfigError {
        match errors.len() {
            1 => errors.remove(0),
            _ => ConfigError::Several(errors),
        }
    }

    /// How many problems this error reports.
    pub fn count(&self) -> usize {
        match self {
            ConfigError::Several(list) => list.len(),
            _ => 1,
        }
    }
}

impl Config {
    /// Reads and validates `path`; relative paths inside are resolved against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Self::from_yaml(&text, &path.display().to_string(), base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Parses and validates YAML text. `file` names it in errors; relative paths are
    /// resolved against `base_dir`. Reports every problem it can find, not only the first.
    pub fn from_yaml(text: &str, file: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let raw = parse_errors::parse(text, file).map_err(ConfigError::from_list)?;
        validate::validate(raw, file, base_dir, text).map_err(ConfigError::from_list)
    }

    /// The configuration keys that name files, with the file each names (for errors that
    /// know only a path: [`Config::locate_file`]).
    pub fn file_keys(&self) -> Vec<(String, &Path)> {
        let mut keys = vec![
            ("listen.tls.cert".to_string(), self.listen.tls.cert.as_path()),
            ("listen.tls.key".to_string(), self.listen.tls.key.as_path()),
        ];
        if let Some(ca) = &self.listen.tls.client_ca {
            keys.push(("listen.tls.client_ca".to_string(), ca.as_path()));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            if let Some(ca) = &issuer.ca {
                keys.push((format!("issuers[{i}].ca"), ca.as_path()));
            }
            if let KeySource::File(path) = &issuer.keys {
                keys.push((format!("issuers[{i}].jwks_file"), path.as_path()));
            }
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Some(ca) = &route.upstream_ca {
                keys.push((format!("routes[{i}].upstream_ca"), ca.as_path()));
            }
        }
        if let ReplayBackend::Redis { ca: Some(ca), .. } = &self.dpop.replay_store {
            keys.push(("dpop.replay.ca".to_string(), ca.as_path()));
        }
        if let NonceSecret::File(path) = &self.dpop.nonce_secret {
            keys.push(("dpop.nonce_secret_file".to_string(), path.as_path()));
        }
        for (i, login) in self.logins.iter().enumerate() {
            match &login.client_auth {
                LoginAuth::PrivateKeyJwt { key, .. } => keys.push((format!("login[{i}].client_key"), key.as_path())),
                LoginAuth::TlsClientAuth { cert, key } => {
                    keys.push((format!("login[{i}].client_cert"), cert.as_path()));
                    keys.push((format!("login[{i}].client_cert_key"), key.as_path()));
                }
            }
            if let Some(ca) = &login.ca {
                keys.push((format!("login[{i}].ca"), ca.as_path()));
            }
            for path in &login.session.secret_files {
                keys.push((format!("login[{i}].session.secret_file"), path.as_path()));
            }
        }
        keys
    }

    /// `file:line:col: key` of the configuration key whose file `message` (an error about a
    /// file) names, so the user knows which line to fix; `None` when no key's file appears in
    /// it or the configuration was not read from a file.
    pub fn locate_file(&self, message: &str) -> Option<String> {
        let source = self.source.as_ref()?;
        let (key, _) = self
            .file_keys()
            .into_iter()
            .filter(|(_, path)| message.contains(&path.display().to_string()))
            .max_by_key(|(_, path)| path.as_os_str().len())?;
        let text = std::fs::read_to_string(source).ok()?;
        Some(match yaml_path::line_of_key(&text, &key) {
            Some((line, column)) => format!("{}:{line}:{column}: {key}", source.display()),
            None => format!("{}: {key}", source.display()),
        })
    }
}

#[cfg(test)]
mod tests;
