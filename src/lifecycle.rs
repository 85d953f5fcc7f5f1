//! Starting, reloading and stopping a gateway: everything compiled from a [`Config`] is
//! built here (certificates, key caches, upstream clients, DPoP runtime), then the
//! listeners are bound and served. `check_files` does the same loading without binding.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{admin, auth, config, metrics, server, tls};

use crate::auth::jwks::IssuerKeys;
use crate::auth::jwks_fetch::FetchError;
use crate::auth::token::TokenValidator;
use crate::config::Config;
use crate::gateway::{GatewayState, Live};
use crate::proxy::Upstream;
use crate::router::Router;
use crate::server::ServerSettings;
use crate::tls::TlsError;
use arc_swap::ArcSwap;

/// Why the gateway could not start. Each message names the file or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("issuer {issuer}: {source}")]
    Issuer { issuer: String, source: FetchError },
    #[error("route {route}: {source}")]
    Upstream { route: String, source: TlsError },
    #[error("dpop: {0}")]
    NonceSecret(#[from] auth::dpop::nonce::NonceSecretError),
    #[error("{0}")]
    ReplayStore(#[from] auth::dpop::replay_redis::RedisConfigError),
    #[error("cannot listen on {address}: {source} (is another process using it?)")]
    Bind { address: SocketAddr, source: std::io::Error },
}

/// Loads every file the configuration names — server certificate and key, client CA,
/// issuer CAs and key files, upstream CAs — without binding anything. `check-config` runs
/// this; [`start`] does the same work as it starts.
pub fn check_files(config: &Config) -> Result<(), StartError> {
    tls::server_config(&config.listen.tls)?;
    for issuer in &config.issuers {
        IssuerKeys::new(issuer).map_err(|source| StartError::Issuer { issuer: issuer.issuer.clone(), source })?;
        if let config::KeySource::File(path) = &issuer.keys {
            auth::jwks_fetch::read_jwks_file(path)
                .map_err(|source| StartError::Issuer { issuer: issuer.issuer.clone(), source })?;
        }
    }
    for route in &config.routes {
        Upstream::new(route).map_err(|source| StartError::Upstream { route: route.name.clone(), source })?;
    }
    dpop_runtime(config, &metrics::Metrics::new(), None)?;
    Ok(())
}

/// The DPoP runtime of a configuration: nonce keys and a fresh replay store that remembers
/// proofs for the whole `iat` acceptance window.
///
/// On a reload, `previous` is the running runtime: its replay store is kept (forgetting it
/// would make every proof of the last window acceptable again; [`GatewayHandle::reload`]
/// refuses changes to the replay settings), and so is its nonce key when the nonce
/// settings did not change (issued nonces stay valid). The proof-header cache is always new,
/// since it depends on the algorithm list.
fn dpop_runtime(
    config: &Config,
    metrics: &metrics::Metrics,
    previous: Option<&auth::DpopRuntime>,
) -> Result<auth::DpopRuntime, StartError> {
    use auth::dpop::replay::{MemoryReplayStore, ReplayStore};
    use auth::dpop::replay_redis::RedisReplayStore;
    let settings = config.dpop.clone();
    let nonces = match previous {
        Some(p) if same_nonce_settings(&p.settings, &settings) => p.nonces.clone(),
        _ => Arc::new(auth::dpop::nonce::NonceIssuer::from_settings(&settings)?),
    };
    if let Some(p) = previous {
        return Ok(auth::DpopRuntime {
            algs: Arc::from(settings.algs_challenge.as_str()),
            nonces,
            keys: auth::dpop::ProofKeyCache::new(10_000),
            replay: p.replay.clone(),
            shared_replay: p.shared_replay.clone(),
            replay_refusals: metrics.replay_refusals.clone(),
            refusal_log: p.refusal_log.clone(),
            settings,
        });
    }
    let window = replay_window(&settings);
    let memory = || Arc::new(MemoryReplayStore::new(window, settings.replay_max_entries, std::time::Instant::now()));
    let (replay, shared): (Arc<dyn ReplayStore>, _) = match &settings.replay_store {
        config::ReplayBackend::Memory => (memory(), None),
        config::ReplayBackend::Redis { url, ca, key_prefix, timeout, on_error } => {
            let fallback = (*on_error == config::ReplayOnError::Local).then(memory);
            let store = Arc::new(RedisReplayStore::new(&url.0, ca.as_deref(), key_prefix, window, *timeout, fallback)?);
            (store.clone(), Some(store))
        }
    };
    Ok(auth::DpopRuntime {
        algs: Arc::from(settings.algs_challenge.as_str()),
        nonces,
        keys: auth::dpop::ProofKeyCache::new(10_000),
        replay,
        shared_replay: shared,
        replay_refusals: metrics.replay_refusals.clone(),
        refusal_log: Arc::new(crate::diagnostics::LogThrottle::new(auth::REFUSAL_LOG_PERIOD)),
        settings,
    })
}

/// How long a proof's (`jkt`, `jti`) must be remembered: the whole `iat` acceptance window,
/// plus a margin for whole-second rounding of `iat` and clock differences between
/// instances (a proof stays acceptable until `iat + max_age` seen by the slowest clock).
pub fn replay_window(settings: &config::DpopSettings) -> std::time::Duration {
    settings.max_age + settings.max_future + std::time::Duration::from_secs(5)
}

fn same_nonce_settings(a: &config::DpopSettings, b: &config::DpopSettings) -> bool {
    a.nonce_secret == b.nonce_secret && a.nonce_step == b.nonce_step && a.nonce_window == b.nonce_window
}

fn same_replay_settings(a: &config::DpopSettings, b: &config::DpopSettings) -> bool {
    a.replay_store == b.replay_store
        && a.replay_max_entries == b.replay_max_entries
        && a.max_age == b.max_age
        && a.max_future == b.max_future
}

/// A running gateway.
pub struct GatewayHandle {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    live: Arc<ArcSwap<Live>>,
    metrics: Arc<metrics::Metrics>,
    /// What a reload may not change without a restart.
    bound: Bound,
}

/// Settings fixed when the listeners were bound.
#[derive(Clone, PartialEq, Eq)]
struct Bound {
    address: SocketAddr,
    admin: Option<SocketAddr>,
    settings: ServerSettings,
}

/// Why a reload was refused; the running configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0} changed: that takes a restart; the running configuration keeps serving")]
    NeedsRestart(&'static str),
}

impl GatewayHandle {
    /// The address the admin listener is bound to, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address the TLS listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether every issuer's keys have been fetched at least once.
    pub fn keys_loaded(&self) -> bool {
        self.live.load().state.validator.issuer_keys().all(|k| k.is_loaded())
    }

    /// What `/readyz` would report now.
    pub async fn readiness(&self) -> admin::Readiness {
        let live = self.live.load_full();
        admin::readiness(&live.state).await
    }

    /// Whether the shared DPoP replay store (if configured) answers now.
    pub async fn replay_store_reachable(&self) -> bool {
        self.readiness().await.replay_store_reachable
    }

    /// Replaces the running configuration: certificates, issuers, routes, DPoP settings.
    /// Everything is built and loaded first; on any error nothing changes. Requests already
    /// running finish on the old configuration; new requests — also on open connections —
    /// use the new one, and new TLS handshakes present the new certificate. Addresses and
    /// `limits` are fixed at start and refused here.
    pub async fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let bound = Bound { address: config.listen.address, admin: config.admin, settings: server_settings(&config) };
        if bound.address != self.bound.address {
            return Err(ReloadError::NeedsRestart("listen.address"));
        }
        if bound.admin != self.bound.admin {
            return Err(ReloadError::NeedsRestart("admin.address"));
        }
        if bound.settings != self.bound.settings {
            return Err(ReloadError::NeedsRestart("limits or listen.handshake_timeout"));
        }
        let current = self.live.load_full();
        if !same_replay_settings(&current.state.dpop.settings, &config.dpop) {
            return Err(ReloadError::NeedsRestart("dpop.replay, dpop.max_age or dpop.max_future"));
        }
        let live = build(config, self.metrics.clone(), Some(&current.state)).await?;
        self.live.store(Arc::new(live));
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Stops accepting, drains in-flight requests up to the grace period, and returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (after [`GatewayHandle::shutdown`] from elsewhere).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Compiles `config`, loads certificates, fetches every issuer's keys (failures are logged;
/// requests retry), binds the listener and starts serving.
/// Builds everything a configuration needs to serve, without binding anything.
async fn build(
    config: Config,
    metrics: Arc<metrics::Metrics>,
    previous: Option<&GatewayState>,
) -> Result<Live, StartError> {
    let server_tls = tls::server_config(&config.listen.tls)?;
    let mut issuers = Vec::with_capacity(config.issuers.len());
    for issuer in &config.issuers {
        let keys = IssuerKeys::new(issuer)
            .map_err(|source| StartError::Issuer { issuer: issuer.issuer.clone(), source })?
            .counting(metrics.jwks_fetches.clone());
        issuers.push((issuer.clone(), Arc::new(keys)));
    }
    // A key file is local configuration: unreadable means the config is wrong.
    for (issuer, keys) in &issuers {
        if let config::KeySource::File(_) = issuer.keys {
            keys.prefetch().await.map_err(|source| StartError::Issuer { issuer: issuer.issuer.clone(), source })?;
        }
    }
    // Remote issuers may be briefly down: start anyway, retry on demand and in the background
    // until loaded (a not-ready instance gets no traffic, so it cannot wait for requests).
    let prefetches = issuers.iter().filter(|(i, _)| !matches!(i.keys, config::KeySource::File(_))).map(|(issuer, keys)| {
        let keys = keys.clone();
        let name = issuer.issuer.clone();
        async move {
            if let Err(e) = keys.prefetch().await {
                tracing::warn!(issuer = %name, error = %e, "could not fetch signing keys at start-up; will retry on demand");
            }
        }
    });
    futures_join_all(prefetches).await;
    for (issuer, keys) in &issuers {
        if !keys.is_loaded() {
            let keys = keys.clone();
            let interval = issuer.jwks_cache.refetch_interval;
            tokio::spawn(async move {
                while !keys.is_loaded() && Arc::strong_count(&keys) > 1 {
                    tokio::time::sleep(interval).await;
                    let _ = keys.prefetch().await;
                }
            });
        }
    }
    let validator = TokenValidator::new(issuers, &config.token_cache).counting(metrics.token_cache.clone());
    let mut upstreams = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let upstream =
            Upstream::new(route).map_err(|source| StartError::Upstream { route: route.name.clone(), source })?;
        upstreams.push(upstream);
    }
    for route in &config.routes {
        if let config::RoutePolicy::Protected { binding: config::Binding::Bearer, .. } = route.policy {
            tracing::warn!(route = %route.name, "route accepts unbound bearer tokens (binding: bearer): a stolen token works here; use it only while migrating");
        }
    }
    if config.listen.tls.client_auth == config::ClientAuth::None
        && config
            .routes
            .iter()
            .any(|r| matches!(r.policy, config::RoutePolicy::Protected { binding: config::Binding::Mtls, .. }))
    {
        tracing::warn!(
            "listen.tls.client_auth is `none`: certificate-bound tokens can never be honoured, so every `binding: mtls` route will refuse them"
        );
    }
    let dpop = dpop_runtime(&config, &metrics, previous.map(|p| &p.dpop))?;
    match &dpop.shared_replay {
        Some(store) => {
            tracing::info!(url = %store.redacted_url(), "DPoP replay state shared through Redis");
            if let config::ReplayBackend::Redis { on_error: config::ReplayOnError::Local, .. } =
                config.dpop.replay_store
            {
                tracing::warn!(
                    "dpop.replay.on_error is `local`: while Redis is unreachable, a proof accepted here can be replayed against another instance"
                );
            }
        }
        None => tracing::debug!("DPoP replay state kept in memory (one instance)"),
    }
    if dpop.shared_replay.is_some()
        && config.dpop.nonce_secret == config::NonceSecret::Random
        && config.routes.iter().any(|r| r.nonce_required)
    {
        tracing::warn!(
            "DPoP nonces use a random per-instance secret while replay state is shared: other instances will refuse this instance's nonces; set dpop.nonce_secret_file or nonce_secret_env on every instance"
        );
    }
    let route_metrics =
        config.routes.iter().map(|r| r.name.as_str()).chain(std::iter::once("-")).map(|r| metrics.route(r)).collect();
    let state = Arc::new(GatewayState {
        dpop,
        router: Router::new(&config.routes),
        config,
        validator,
        upstreams,
        metrics,
        route_metrics,
    });
    Ok(Live { state, server_tls })
}

/// Compiles `config`, loads certificates, fetches every issuer's keys (failures are logged;
/// they are retried in the background and on demand), binds the listeners and starts
/// serving.
pub async fn start(config: Config) -> Result<GatewayHandle, StartError> {
    let metrics = Arc::new(metrics::Metrics::new());
    let bound = Bound { address: config.listen.address, admin: config.admin, settings: server_settings(&config) };
    let live = Arc::new(ArcSwap::from_pointee(build(config, metrics.clone(), None).await?));
    let address = bound.address;
    let listener =
        tokio::net::TcpListener::bind(address).await.map_err(|source| StartError::Bind { address, source })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind { address, source })?;
    let admin_listener = match bound.admin {
        Some(address) => Some(admin::bind(address).await.map_err(|source| StartError::Bind { address, source })?),
        None => None,
    };
    let (shutdown, receiver) = watch::channel(false);
    let admin_addr = match admin_listener {
        Some(admin) => {
            let addr = admin.local_addr().ok();
            tokio::spawn(admin::serve(admin, live.clone(), receiver.clone()));
            tracing::info!(admin = ?addr, "admin listener: /metrics /healthz /readyz");
            addr
        }
        None => None,
    };
    let task = tokio::spawn(server::serve(listener, live.clone(), bound.settings.clone(), receiver));
    tracing::info!(%local_addr, "gateway listening");
    Ok(GatewayHandle { local_addr, admin_addr, shutdown, task, live, metrics, bound })
}

fn server_settings(config: &Config) -> ServerSettings {
    ServerSettings {
        handshake_timeout: config.listen.handshake_timeout,
        header_read_timeout: config.limits.header_read_timeout,
        max_header_bytes: config.limits.max_header_bytes,
        shutdown_grace: config.limits.shutdown_grace,
        idle_timeout: config.limits.idle_timeout,
        max_connections: config.limits.max_connections,
    }
}

/// Runs futures concurrently and waits for all (a tiny join_all without another crate).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        let _ = handle.await;
    }
}
