//! The shape of `gateway.yaml` exactly as users write it: serde structs with
//! `deny_unknown_fields`, defaults spelled out in one place. Nothing here is trusted yet;
//! [`super::validate`] turns these into the runtime [`super::Config`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::values::{AlgName, HttpUrl, HumanDuration, MethodName};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: RawListen,
    #[serde(default)]
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub limits: Option<Spanned<RawLimits>>,
    #[serde(default)]
    pub issuers: Vec<Spanned<RawIssuer>>,
    #[serde(default)]
    pub token_cache: RawTokenCache,
    #[serde(default)]
    pub dpop: Option<Spanned<RawDpop>>,
    /// Browser login mode: the gateway as a FAPI 2.0 client of these authorization servers.
    #[serde(default)]
    pub login: Vec<Spanned<RawLogin>>,
    /// RFC 9728 protected resource metadata; off unless present.
    #[serde(default)]
    pub resource_metadata: Option<Spanned<RawResourceMetadata>>,
    pub routes: Vec<Spanned<RawRoute>>,
}

/// `resource_metadata:` — OAuth 2.0 Protected Resource Metadata (RFC 9728): documents at
/// `/.well-known/oauth-protected-resource{/route prefix}` built from the routes, named by
/// `resource_metadata` in every challenge.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResourceMetadata {
    /// Defaults to every `issuers[].issuer`.
    pub authorization_servers: Option<Vec<String>>,
    pub resource_name: Option<String>,
    pub resource_documentation: Option<String>,
    pub resource_policy_uri: Option<String>,
    pub resource_tos_uri: Option<String>,
}

/// `login:` — one browser login (the gateway as a FAPI 2.0 client, README "Login mode").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    pub name: String,
    /// The AS's issuer identifier; its metadata's `issuer` must equal it.
    pub issuer: String,
    /// Extra trust anchors (PEM) for the AS.
    pub ca: Option<PathBuf>,
    pub client_id: String,
    /// Defaults to `private_key_jwt`.
    pub client_auth: Option<LoginClientAuth>,
    /// `private_key_jwt`: the client's PKCS#8 PEM key (ES256, PS256 or EdDSA by its type).
    pub client_key: Option<PathBuf>,
    /// The `kid` of `client_key` in the client's registered JWKS (optional).
    pub client_key_id: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_cert_key: Option<PathBuf>,
    /// Exact; the gateway serves its path.
    pub redirect_uri: HttpUrl,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub resource: Vec<String>,
    /// Defaults to `jwt` (JARM).
    pub response_mode: Option<ResponseMode>,
    /// Defaults to `none`.
    pub request_object: Option<RequestObject>,
    pub paths: Option<RawLoginPaths>,
    /// Allowed post-login path prefixes (relative paths only).
    pub return_to: Vec<String>,
    /// Where the AS sends the browser after RP-initiated logout (registered with the AS).
    pub post_logout_redirect_uri: Option<HttpUrl>,
    pub session: Option<RawSession>,
    /// Defaults to 10 s: the deadline of each call to the AS.
    pub timeout: Option<HumanDuration>,
    /// Defaults to PS256, ES256, EdDSA: accepted algorithms of JARM responses and ID tokens.
    pub algorithms: Option<Vec<AlgName>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoginPaths {
    pub login: Option<String>,
    pub logout: Option<String>,
    pub session: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub cookie: Option<String>,
    pub idle_timeout: Option<HumanDuration>,
    pub max_lifetime: Option<HumanDuration>,
    pub store: Option<SessionStoreKind>,
    /// `store: redis`: where.
    pub redis: Option<RawSessionRedis>,
    /// 32+ bytes; a list for rotation (the first signs).
    pub secret_file: Option<OneOrMany<PathBuf>>,
}

/// `login[].session.redis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSessionRedis {
    /// `redis://[user:password@]host:port/db` or `rediss://…`: one server. Exactly one of
    /// `url`, `cluster` and `sentinel`.
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster.
    pub cluster: Option<Vec<String>>,
    /// The primary that these Sentinels name.
    pub sentinel: Option<RawSentinel>,
    /// Defaults to `fapi-gateway:login:<login name>:`.
    pub key_prefix: Option<String>,
    /// Extra trust anchors (PEM) for `rediss://`.
    pub ca: Option<PathBuf>,
    /// Defaults to 500 ms.
    pub timeout: Option<HumanDuration>,
}

/// A value or a list of values.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginClientAuth {
    PrivateKeyJwt,
    TlsClientAuth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    Jwt,
    Query,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestObject {
    None,
    Signed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStoreKind {
    Memory,
    Redis,
}

/// [`RawConfig`] with every section optional: one piece of a file that failed to parse is
/// parsed as this to find its own errors (`super::parse_errors`). Its keys are
/// [`RawConfig`]'s (a test checks they stay the same).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(dead_code, reason = "parsed only for the errors it finds")]
pub struct RawPieces {
    pub listen: Option<RawListen>,
    pub admin: Option<RawAdmin>,
    pub limits: Option<RawLimits>,
    pub issuers: Option<Vec<RawIssuer>>,
    pub token_cache: Option<RawTokenCache>,
    pub dpop: Option<RawDpop>,
    pub login: Option<Vec<RawLogin>>,
    pub resource_metadata: Option<RawResourceMetadata>,
    pub routes: Option<Vec<RawRoute>>,
}

/// `dpop:` — how DPoP proofs (RFC 9449) are checked on `dpop` and `any` routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    /// Defaults to ES256, PS256, EdDSA.
    pub algorithms: Option<Vec<AlgName>>,
    /// Defaults to 60 s: how old a proof's `iat` may be.
    pub max_age: Option<HumanDuration>,
    /// Defaults to 10 s: how far in the future a proof's `iat` may be (at most 60 s).
    pub max_future: Option<HumanDuration>,
    #[serde(default)]
    pub replay: RawReplay,
    /// Defaults to `off`; `required` makes every DPoP route demand a server nonce.
    pub nonce: Option<NonceMode>,
    /// Where the nonce HMAC secret comes from; without it a random secret is made at start
    /// (nonces are then valid on this instance only).
    pub nonce_secret_file: Option<PathBuf>,
    pub nonce_secret_env: Option<String>,
    /// Defaults to 30 s: the time step a nonce is minted for.
    pub nonce_step: Option<HumanDuration>,
    /// Defaults to 1: nonces of the current step and this many steps before or after pass.
    pub nonce_window: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplay {
    /// `memory` (default) or `redis`.
    pub store: Option<ReplayStoreKind>,
    /// Defaults to 1 000 000 remembered proofs; when full, new proofs are refused (503).
    /// With `redis`: the size of the local fallback store.
    pub max_entries: Option<usize>,
    /// Proofs one DPoP key may have remembered within the window; more get 429. Defaults
    /// to half of `max_entries` (500 000): one key never holds more than half the store.
    pub per_key_limit: Option<u32>,
    /// `redis://[user:password@]host:port/db` or `rediss://…` (TLS): one server. With
    /// `redis`, exactly one of `url`, `cluster` and `sentinel`.
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster (`redis://host:port`, `rediss://…`).
    pub cluster: Option<Vec<String>>,
    /// The primary that these Sentinels name.
    pub sentinel: Option<RawSentinel>,
    /// Defaults to 0: a fresh proof counts as remembered once this many replicas have it
    /// (`WAIT`, on a cluster at the primary of its slot), so a failover cannot forget it;
    /// fewer in time: 503.
    pub wait_for_replicas: Option<u32>,
    /// Extra trust anchors (PEM) for a `rediss://` server; without it the system roots.
    pub ca: Option<PathBuf>,
    /// Defaults to `fapi-gateway:dpop:`.
    pub key_prefix: Option<String>,
    /// Defaults to 250 ms: a Redis reply slower than this counts as a failure.
    pub timeout: Option<HumanDuration>,
    /// Defaults to `fail`: refuse DPoP requests (503) while Redis cannot answer. `local`
    /// falls back to the in-memory store (replays across instances become possible).
    pub on_error: Option<ReplayOnError>,
    /// Memory store only. Defaults to `start`: after a start, a proof whose `iat` is before
    /// it needs a nonce minted since; `skew` also asks it of proofs up to `max_future`
    /// (+ 5 s) after the start.
    pub restart_guard: Option<RestartGuard>,
}

/// `sentinel: { urls, master }`: Sentinel nodes (`redis://host:26379`) and the name of the
/// primary they watch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub urls: Vec<String>,
    pub master: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayStoreKind {
    Memory,
    Redis,
}

/// Which proofs an in-memory replay store, empty after a start, takes only with a nonce
/// minted since (a proof accepted by the previous process could otherwise pass again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartGuard {
    /// Proofs whose `iat` is before the start: no cost to clients with a right clock.
    #[default]
    Start,
    /// Also proofs whose `iat` is up to `max_future` + 5 s after the start (closes replay
    /// for clients whose clocks run ahead; every client needs a nonce in that time).
    Skew,
}

/// What the Redis replay store does when Redis cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayOnError {
    #[default]
    Fail,
    Local,
}

/// Whether DPoP proofs must carry a server-provided nonce (RFC 9449 §9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonceMode {
    #[default]
    Off,
    Required,
}

/// How the access token travels to the upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardToken {
    /// `Authorization: Bearer <token>`, `DPoP` header removed: upstreams need not know DPoP.
    #[default]
    Bearer,
    /// The client's `Authorization` and `DPoP` headers unchanged.
    AsIs,
    /// Neither header is forwarded.
    Strip,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub address: SocketAddr,
    pub public_url: Spanned<HttpUrl>,
    pub tls: RawServerTls,
    /// Defaults to 10 s.
    pub handshake_timeout: Option<HumanDuration>,
    /// Request headers removed before forwarding, beyond the built-in list.
    pub strip_headers: Option<Spanned<Vec<String>>>,
    /// Peers (TLS-terminating proxies, balancers) whose RFC 9440 `Client-Cert` header is
    /// the client's certificate; off unless present.
    pub trusted_proxies: Option<Spanned<RawTrustedProxies>>,
    /// Balancers whose connections start with a PROXY protocol v2 header (the client's
    /// address); off unless present.
    pub proxy_protocol: Option<Spanned<RawProxyProtocol>>,
}

/// `listen.proxy_protocol:` — who sends PROXY protocol v2. Independent of
/// `trusted_proxies`: a layer-4 balancer (TLS passes through it to the gateway) sends the
/// header but must not be trusted with `Client-Cert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyProtocol {
    /// The balancers' addresses (CIDR blocks): from them the header is required.
    pub from: Vec<String>,
}

/// `listen.trusted_proxies:` — who may tell the gateway the client's certificate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedProxies {
    /// Peer addresses, as CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`) or single addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// The `x5t#S256` thumbprints (base64url SHA-256 of the DER) of the TLS client
    /// certificates the proxies present to the gateway.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Defaults to `strip`: what `Client-Cert` from any other peer gets.
    pub from_others: Option<ForwardedCertFromOthers>,
}

/// What a `Client-Cert` header from an untrusted peer gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardedCertFromOthers {
    /// Removed, as any client-sent certificate header; the request goes on.
    #[default]
    Strip,
    /// 400 `forwarded_cert_untrusted`.
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Defaults to `optional`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    pub client_ca: Option<PathBuf>,
}

/// Whether the listener asks TLS clients for a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Never ask: mTLS-bound tokens can then never be honoured on this listener.
    None,
    /// Ask; a client without a certificate may still connect (DPoP and public routes).
    #[default]
    Optional,
    /// The handshake fails without a client certificate.
    Required,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: SocketAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Defaults to 16 KiB (at least 8 KiB). Larger request heads are answered 431.
    pub max_header_bytes: Option<usize>,
    /// Defaults to 10 MiB. Larger request bodies are answered 413.
    pub max_body_bytes: Option<u64>,
    /// Defaults to 10 s: a client that has not sent its whole request head by then is cut off.
    pub header_read_timeout: Option<HumanDuration>,
    /// Defaults to 30 s: how long SIGTERM waits for in-flight requests.
    pub shutdown_grace: Option<HumanDuration>,
    /// Defaults to 0 s (at most 5 m): how long SIGTERM keeps accepting, with `/readyz`
    /// already 503, before the drain begins (time for a load balancer to deregister).
    pub shutdown_delay: Option<HumanDuration>,
    /// Defaults to 5 m: a connection without a request in flight for this long is closed.
    pub idle_timeout: Option<HumanDuration>,
    /// Defaults to 20 000 connections served at once.
    pub max_connections: Option<usize>,
    /// Connections one client address may hold at once; off unless set.
    pub max_connections_per_client: Option<usize>,
    /// Defaults to 60 s: a response write that waits this long without the client taking
    /// `min_send_rate × send_timeout` bytes (at least one) ends the connection.
    pub send_timeout: Option<HumanDuration>,
    /// Defaults to 0 (any progress will do): bytes per second a client must take while a
    /// response waits for it.
    pub min_send_rate: Option<u64>,
    /// Defaults to 100 HTTP/2 streams open at once per connection.
    pub max_concurrent_streams: Option<u32>,
    /// `SO_SNDBUF` for client sockets, in bytes; the kernel's autotuning unless set.
    pub socket_send_buffer: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: String,
    pub jwks_uri: Option<HttpUrl>,
    #[serde(default)]
    pub discovery: bool,
    pub jwks_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub audiences: Vec<String>,
    /// Defaults to PS256, ES256, EdDSA.
    pub algorithms: Option<Vec<AlgName>>,
    /// Defaults to `[at+jwt]` (which also matches `application/at+jwt`).
    pub typ: Option<Vec<String>>,
    /// Claims every token must carry besides `iss`, `aud` and `exp`. Defaults to RFC 9068
    /// §2.2's `[sub, client_id, iat, jti]`; allowed members are those four.
    pub required_claims: Option<Vec<String>>,
    /// Defaults to 5 s: tolerance on `exp`.
    pub leeway: Option<HumanDuration>,
    /// Defaults to 10 s: how far in the future `iat`/`nbf` may be (at most 60 s).
    pub max_future: Option<HumanDuration>,
    #[serde(default)]
    pub jwks_cache: RawJwksCache,
    /// Opaque access tokens are checked at this issuer's RFC 7662 introspection endpoint.
    pub introspection: Option<RawIntrospection>,
}

/// `issuers[].introspection`: how the gateway asks the issuer about opaque tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    /// Defaults to the metadata's `introspection_endpoint` (with `discovery: true`).
    pub endpoint: Option<HttpUrl>,
    pub client_id: String,
    /// Defaults to `private_key_jwt`.
    pub client_auth: Option<IntrospectionClientAuth>,
    pub client_key: Option<PathBuf>,
    pub client_key_id: Option<String>,
    pub client_cert: Option<PathBuf>,
    pub client_cert_key: Option<PathBuf>,
    pub client_secret_file: Option<PathBuf>,
    /// `json` (RFC 7662, default) or `jwt` (RFC 9701, signed by the issuer).
    pub response: Option<IntrospectionFormat>,
    /// Defaults to 2 s.
    pub timeout: Option<HumanDuration>,
    /// Defaults to 60 s: how long an active answer is reused (never past the token's `exp`).
    pub cache_ttl: Option<HumanDuration>,
    /// Defaults to 10 s: how long an inactive answer is reused.
    pub inactive_cache_ttl: Option<HumanDuration>,
    /// Defaults to 64: introspection calls in flight at once.
    pub max_concurrent: Option<usize>,
    /// Members an active answer must carry besides `exp` (and `aud`): from `sub`,
    /// `client_id`, `iat`, `jti`. Defaults to none (RFC 7662 makes them all optional).
    pub required_claims: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectionClientAuth {
    PrivateKeyJwt,
    TlsClientAuth,
    ClientSecretBasic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectionFormat {
    Json,
    Jwt,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwksCache {
    /// Defaults to 5 m: freshness when the JWKS response has no `Cache-Control: max-age`.
    pub default_ttl: Option<HumanDuration>,
    /// Defaults to 30 s: lower bound applied to `max-age`.
    pub min_ttl: Option<HumanDuration>,
    /// Defaults to 24 h: upper bound applied to `max-age`.
    pub max_ttl: Option<HumanDuration>,
    /// Defaults to 24 h: how long stale keys keep serving while the issuer is unreachable.
    pub stale_if_error: Option<HumanDuration>,
    /// Defaults to 30 s: minimum gap between refetches caused by an unknown `kid`.
    pub refetch_interval: Option<HumanDuration>,
    /// Defaults to 5 s.
    pub fetch_timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenCache {
    /// Defaults to 100 000 validated tokens.
    pub max_entries: Option<u64>,
    /// Defaults to 5 m: a validated token is re-checked at least this often.
    pub max_ttl: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub upstream: HttpUrl,
    /// Extra trust anchors for an `https://` upstream.
    pub upstream_ca: Option<PathBuf>,
    /// Defaults to 30 s: time allowed for the upstream's response head.
    pub timeout: Option<HumanDuration>,
    pub auth: Option<RouteAuth>,
    pub binding: Option<Binding>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Forward the verified client certificate as RFC 9440 `Client-Cert`. Defaults to false.
    #[serde(default)]
    pub forward_client_cert: bool,
    /// Send `X-Fapi-Subject`, `X-Fapi-Client-Id`, `X-Fapi-Scopes` (and `X-Fapi-Dpop-Jkt` for
    /// DPoP) upstream. Defaults to false.
    #[serde(default)]
    pub identity_headers: bool,
    /// Defaults to `bearer`.
    pub forward_token: Option<ForwardToken>,
    /// Overrides `listen.public_url` for this route's DPoP `htu` check.
    pub public_url: Option<HttpUrl>,
    /// Overrides `dpop.nonce` for this route.
    pub nonce: Option<NonceMode>,
    /// `auth: session`: the `login:` entry whose browser sessions this route serves.
    pub login: Option<String>,
    /// `auth: session`: the origin the upstream checks DPoP `htu` against (default: the
    /// upstream URL's).
    pub upstream_public_url: Option<HttpUrl>,
    /// Cross-origin calls from browser apps (CORS); off unless present.
    pub cors: Option<RawCors>,
    /// In front of an authorization server's endpoints; off unless present.
    pub as_edge: Option<RawAsEdge>,
}

/// `routes[].as_edge:` — the route fronts an authorization server (FAPI 2.0): on its
/// authorization endpoint only pushed requests pass, and every request carries the client's
/// certificate as RFC 9440 `Client-Cert` for `tls_client_auth` and certificate binding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAsEdge {
    /// The authorization endpoint's paths: only `client_id` and `request_uri` pass there.
    pub authorization_paths: Vec<String>,
}

/// `routes[].cors:` — which web origins may call the route from a browser, and what the
/// gateway answers their preflights with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Exact origins (`https://app.example.com`); no wildcard.
    pub allowed_origins: Vec<String>,
    /// Request headers allowed beyond `Authorization`, `DPoP` and `Content-Type`.
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers exposed beyond `WWW-Authenticate` and `DPoP-Nonce`.
    #[serde(default)]
    pub exposed_headers: Vec<String>,
    /// Defaults to 10 m: how long a browser may cache a preflight answer.
    pub max_age: Option<HumanDuration>,
    /// Defaults to `gateway`: who answers preflights.
    pub preflight: Option<Preflight>,
}

/// Who answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preflight {
    /// The gateway, from `cors:`; nothing reaches authentication or the upstream.
    #[default]
    Gateway,
    /// The upstream, without authentication (preflights carry no credentials); the gateway
    /// adds no CORS headers to its answer.
    Upstream,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: String,
    pub methods: Option<Vec<MethodName>>,
}

/// `auth: none` marks a public route; `auth: session` a route for browser sessions of a
/// `login:` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAuth {
    None,
    Session,
}

/// How the access token must be bound to the caller on a route (README, "What it enforces").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    Mtls,
    Dpop,
    Any,
    Bearer,
}
