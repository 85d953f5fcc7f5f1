//! Running a gateway: binding the TLS and admin listeners, serving, reloading a new
//! configuration in place, and draining on shutdown.
//!
//! Shutdown ([`GatewayHandle::shutdown`]) runs in this order, so that a load balancer sees
//! the instance leave before it stops taking connections:
//! 1. draining begins: `/readyz` answers 503 (`"draining": true`);
//! 2. for `limits.shutdown_delay` (0 by default) the TLS listener keeps accepting and serving
//!    new connections, time for the balancer to deregister the instance;
//! 3. the TLS listener stops accepting and open connections finish their in-flight requests,
//!    for up to `limits.shutdown_grace`;
//! 4. the admin listener stops last.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::build::{build, same_replay_settings, server_settings};
use super::{ReloadError, StartError};
use crate::config::Config;
use crate::pipeline::Live;
use crate::server::ServerSettings;
use crate::{admin, metrics, server};

/// A running gateway.
pub struct GatewayHandle {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    /// Stops the TLS listener (then it drains).
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Stops the admin listener, once the TLS listener has drained.
    admin_shutdown: watch::Sender<bool>,
    admin_task: Option<JoinHandle<()>>,
    drain: admin::Drain,
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
        admin::readiness(&live.state, &self.drain).await
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
    ///
    /// Counted in `fapi_gateway_config_reloads_total{result}`; a success also sets
    /// `fapi_gateway_config_last_reload_success_timestamp_seconds`.
    pub async fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let result = self.replace_config(config).await;
        match result {
            Ok(()) => self.metrics.reload_succeeded(),
            Err(_) => self.metrics.reload_failed(),
        }
        result
    }

    /// Counts a reload refused before [`GatewayHandle::reload`] could be called — the file
    /// did not parse or validate — in `fapi_gateway_config_reloads_total{result="failure"}`.
    pub fn record_reload_failure(&self) {
        self.metrics.reload_failed();
    }

    async fn replace_config(&self, config: Config) -> Result<(), ReloadError> {
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
        let changes = config.changes_from(&current.state.config);
        let live = build(config, self.metrics.clone(), Some(&current.state)).await?;
        self.live.store(Arc::new(live));
        tracing::info!(changes = %changes, "configuration reloaded");
        Ok(())
    }

    /// Shuts down as the module docs say: `/readyz` answers 503 at once; the listener keeps
    /// accepting for `limits.shutdown_delay` (of the configuration running now), then stops
    /// accepting and drains in-flight requests up to `limits.shutdown_grace`; the admin
    /// listener stops last. Returns when all of it is done.
    pub async fn shutdown(self) {
        self.drain.begin();
        self.metrics.draining.set(1);
        let delay = self.live.load().state.config.limits.shutdown_delay;
        if !delay.is_zero() {
            tracing::info!(
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "draining: /readyz answers 503; still accepting connections for limits.shutdown_delay"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!("draining: no longer accepting connections; in-flight requests finish");
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let _ = self.admin_shutdown.send(true);
        if let Some(admin) = self.admin_task {
            let _ = admin.await;
        }
    }

    /// Waits until the server stops (after [`GatewayHandle::shutdown`] from elsewhere), then
    /// stops the admin listener.
    pub async fn wait(self) {
        let _ = self.task.await;
        let _ = self.admin_shutdown.send(true);
        if let Some(admin) = self.admin_task {
            let _ = admin.await;
        }
    }
}

/// Compiles `config`, loads certificates, fetches every issuer's keys (failures are logged;
/// they are retried in the background and on demand), binds the listeners and starts
/// serving.
pub async fn start(config: Config) -> Result<GatewayHandle, StartError> {
    // Latency buckets up to the longest route timeout (fixed for the life of the instance).
    let longest_timeout = config.routes.iter().map(|r| r.timeout).max().unwrap_or_default();
    let metrics = Arc::new(metrics::Metrics::with_latency_ceiling(longest_timeout));
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
    let (admin_shutdown, admin_receiver) = watch::channel(false);
    let drain = admin::Drain::default();
    let (admin_addr, admin_task) = match admin_listener {
        Some(admin) => {
            let addr = admin.local_addr().ok();
            let task = tokio::spawn(admin::serve(admin, live.clone(), drain.clone(), admin_receiver));
            if let Some(addr) = addr {
                tracing::info!(admin = %addr, "admin listener: /metrics /healthz /readyz");
            }
            (addr, Some(task))
        }
        None => (None, None),
    };
    let task = tokio::spawn(server::serve(listener, live.clone(), bound.settings.clone(), receiver));
    tracing::info!(%local_addr, "gateway listening");
    Ok(GatewayHandle {
        local_addr,
        admin_addr,
        shutdown,
        task,
        admin_shutdown,
        admin_task,
        drain,
        live,
        metrics,
        bound,
    })
}
