//! Building what a configuration serves with, without binding anything: the listener's
//! TLS, every issuer's key cache and the token validator, one upstream client per route,
//! the DPoP runtime (nonce keys, replay store), and the [`GatewayState`] the pipeline
//! reads. [`check_files`] does the loading alone, for `check-config`.

use std::sync::Arc;

use super::StartError;
use crate::answer::Rejection;
use crate::auth::jwks::IssuerKeys;
use crate::auth::token::TokenValidator;
use crate::config::Config;
use crate::pipeline::{GatewayState, Live, ServedRoute};
use crate::proxy::Upstream;
use crate::router::Router;
use crate::server::ServerSettings;
use crate::{auth, config, metrics, tls};

/// Loads every file the configuration names — server certificate and key, client CA,
/// issuer CAs and key files, upstream CAs, login client keys and session secrets — without
/// binding anything. `check-config` runs
/// this; [`start`] does the same work as it starts.
pub fn check_files(config: &Config) -> Result<(), StartError> {
    tls::server::server_config(&config.listen.tls)?;
    for issuer in &config.issuers {
        let keys =
            IssuerKeys::new(issuer).map_err(|source| StartError::Issuer { issuer: issuer.issuer.clone(), source })?;
        introspector(issuer, Arc::new(keys))?;
        if let config::KeySource::File(path) = &issuer.keys {
            auth::jwks_fetch::read_jwks_file(path)
                .map_err(|source| StartError::Issuer { issuer: issuer.issuer.clone(), source })?;
        }
    }
    for route in &config.routes {
        Upstream::new(route).map_err(|source| StartError::Upstream { route: route.name.clone(), source })?;
    }
    dpop_runtime(config, &metrics::Metrics::new(), None)?;
    for login in &config.logins {
        crate::login::LoginRuntime::new(login)?;
    }
    Ok(())
}

/// The introspection client of `issuer`, if it introspects (its key or secret file read).
fn introspector(
    issuer: &config::Issuer,
    keys: Arc<IssuerKeys>,
) -> Result<Option<auth::token::introspection::Introspector>, StartError> {
    auth::token::introspection::Introspector::new(issuer, keys)
        .map_err(|source| StartError::Introspection { issuer: issuer.issuer.clone(), source })
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
            replay_memory_since: p.replay_memory_since,
            replay_refusals: metrics.replay_refusals.clone(),
            refusal_log: p.refusal_log.clone(),
            settings,
        });
    }
    let window = replay_window(&settings);
    // The Redis store's local fallback counts no share of its own: it must remember every
    // proof Redis accepted (its fixed windows differ from the memory store's slices).
    let memory = |per_key_limit: u32| {
        Arc::new(MemoryReplayStore::new(window, settings.replay_max_entries, per_key_limit, std::time::Instant::now()))
    };
    // Before the store exists, so that no proof it takes can be older than its memory.
    let replay_memory_since =
        matches!(settings.replay_store, config::ReplayBackend::Memory).then(crate::jose::unix_now);
    let (replay, shared): (Arc<dyn ReplayStore>, _) = match &settings.replay_store {
        config::ReplayBackend::Memory => (memory(settings.replay_per_key_limit), None),
        config::ReplayBackend::Redis { target, ca, key_prefix, timeout, on_error, wait_for_replicas } => {
            let fallback = (*on_error == config::ReplayOnError::Local).then(|| memory(u32::MAX));
            let store = Arc::new(
                RedisReplayStore::new(
                    target,
                    ca.as_deref(),
                    key_prefix,
                    window,
                    *timeout,
                    settings.replay_per_key_limit,
                    fallback,
                )?
                .waiting_for_replicas(*wait_for_replicas),
            );
            (store.clone(), Some(store))
        }
    };
    Ok(auth::DpopRuntime {
        algs: Arc::from(settings.algs_challenge.as_str()),
        nonces,
        keys: auth::dpop::ProofKeyCache::new(10_000),
        replay,
        shared_replay: shared,
        replay_memory_since,
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

pub(super) fn same_replay_settings(a: &config::DpopSettings, b: &config::DpopSettings) -> bool {
    a.replay_store == b.replay_store
        && a.replay_max_entries == b.replay_max_entries
        && a.max_age == b.max_age
        && a.max_future == b.max_future
}

/// Builds everything a configuration needs to serve, without binding anything: loads
/// certificates, fetches every issuer's keys (failures are logged; requests retry).
/// `previous` is the running state on a reload (its replay store and nonce key are kept).
pub(super) async fn build(
    config: Config,
    metrics: Arc<metrics::Metrics>,
    previous: Option<&GatewayState>,
) -> Result<Live, StartError> {
    let server_tls = tls::server::server_config(&config.listen.tls)?;
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
    let mut introspecting = None;
    for (issuer, keys) in &issuers {
        if let Some(found) = introspector(issuer, keys.clone())? {
            introspecting = Some(Arc::new(found));
        }
    }
    let validator = TokenValidator::new(issuers, &config.token_cache)
        .counting(metrics.token_cache.clone())
        .introspecting(introspecting);
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
    let logins = login_runtimes(&config, previous, &metrics)?;
    declare_series(&config, &metrics);
    record_certificate_expiry(&config, &metrics);
    let routes = config
        .routes
        .iter()
        .zip(upstreams)
        .map(|(spec, upstream)| ServedRoute { spec: spec.clone(), upstream, metrics: metrics.route(&spec.name) })
        .collect();
    let resource_metadata = crate::answer::resource_metadata::ResourceMetadata::new(&config);
    let state = Arc::new(GatewayState {
        resource_metadata,
        dpop,
        router: Router::new(&config.routes),
        unrouted: metrics.route("-"),
        routes,
        config,
        validator,
        metrics,
        login_cookies: logins.iter().map(|l| l.settings.session.cookie.clone()).collect(),
        logins,
    });
    Ok(Live { state, server_tls })
}

/// The login entries, running. On a reload an entry whose settings did not change keeps its
/// runtime: its sessions and logins in progress survive.
fn login_runtimes(
    config: &Config,
    previous: Option<&GatewayState>,
    metrics: &metrics::Metrics,
) -> Result<Vec<Arc<crate::login::LoginRuntime>>, StartError> {
    let mut logins = Vec::with_capacity(config.logins.len());
    for settings in &config.logins {
        let same = |r: &&Arc<crate::login::LoginRuntime>| format!("{:?}", r.settings) == format!("{settings:?}");
        let kept = previous.and_then(|p| p.logins.iter().find(same)).cloned();
        logins.push(match kept {
            Some(runtime) => runtime,
            None => {
                let runtime =
                    Arc::new(crate::login::LoginRuntime::new(settings)?.counting(metrics.login_refreshes.clone()));
                tokio::spawn(runtime.clone().prefetch());
                runtime
            }
        });
    }
    Ok(logins)
}

/// Creates at 0 the series whose labels the configuration tells: each route's upstream
/// errors (both reasons) and each issuer's key fetches (both results). Series of routes
/// and issuers a reload removed stay, with their last values.
fn declare_series(config: &Config, metrics: &metrics::Metrics) {
    for route in &config.routes {
        let route: Arc<str> = Arc::from(route.name.as_str());
        for refusal in [Rejection::UpstreamUnavailable, Rejection::UpstreamTimeout] {
            let labels = metrics::RequestLabels {
                route: route.clone(),
                status: refusal.status().as_u16(),
                reason: refusal.reason(),
            };
            metrics.upstream_errors.get_or_create_owned(&labels);
        }
    }
    for issuer in &config.issuers {
        for result in ["ok", "error"] {
            metrics.jwks_fetches.get_or_create_owned(&metrics::FetchLabels { issuer: issuer.issuer.clone(), result });
        }
    }
}

/// Sets `fapi_gateway_certificate_expiry_timestamp_seconds` from the files of `config`: the
/// server certificate chain, the client CA and each route's upstream CA, each reported with
/// the earliest `notAfter` it holds. Files of the previous configuration are forgotten.
fn record_certificate_expiry(config: &Config, metrics: &metrics::Metrics) {
    let mut files: Vec<(&'static str, String, &std::path::Path)> =
        vec![("server", config.listen.tls.cert.display().to_string(), &config.listen.tls.cert)];
    if let Some(ca) = &config.listen.tls.client_ca {
        files.push(("client_ca", ca.display().to_string(), ca));
    }
    for route in &config.routes {
        if let Some(ca) = &route.upstream_ca {
            files.push(("upstream_ca", route.name.clone(), ca));
        }
    }
    metrics.certificate_expiry.clear();
    for (kind, name, path) in files {
        match tls::load_certs(path).ok().and_then(|certs| tls::validity::earliest_not_after(&certs)) {
            Some(not_after) => {
                metrics.certificate_expiry.get_or_create(&metrics::CertificateLabels { kind, name }).set(not_after);
            }
            None => tracing::warn!(
                file = %path.display(),
                kind,
                "cannot read the expiry (notAfter) of the file's certificates; it is not reported in fapi_gateway_certificate_expiry_timestamp_seconds"
            ),
        }
    }
}

/// The listener's settings from `config` (public for the framing fuzz target, which builds
/// its HTTP/1.1 connections from them as the gateway does).
pub fn server_settings(config: &Config) -> ServerSettings {
    ServerSettings {
        handshake_timeout: config.listen.handshake_timeout,
        header_read_timeout: config.limits.header_read_timeout,
        max_header_bytes: config.limits.max_header_bytes,
        shutdown_grace: config.limits.shutdown_grace,
        idle_timeout: config.limits.idle_timeout,
        max_connections: config.limits.max_connections,
        max_connections_per_client: config.limits.max_connections_per_client,
        send: crate::server::SendPolicy { timeout: config.limits.send_timeout, min_rate: config.limits.min_send_rate },
        max_concurrent_streams: config.limits.max_concurrent_streams,
        socket_send_buffer: config.limits.socket_send_buffer,
    }
}

/// Runs futures concurrently and waits for all (a tiny join_all without another crate).
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        let _ = handle.await;
    }
}
