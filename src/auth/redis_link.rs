//! One logical connection to the Redis deployment a shared store uses: a single server, a
//! Redis Cluster, or the primary that Sentinel names (Valkey speaks the same protocol).
//!
//! - **Single:** a multiplexed `ConnectionManager` that reconnects by itself.
//! - **Cluster:** redis-rs's async cluster connection: each command goes to the node owning
//!   its keys' slot (the stores put every key of one operation under one hash tag), `MOVED`
//!   and `ASK` are followed and the slot map is refreshed after a failover.
//! - **Sentinel:** a multiplexed connection to the primary the Sentinels name. After any
//!   connection error or a `READONLY` answer (a demoted primary) it is dropped, and the next
//!   command asks the Sentinels again — so a failover is followed once Sentinel has promoted
//!   a replica; until then commands fail, and the store's `on_error` decides. The primary is
//!   reached with the Sentinel URLs' user, password and database.
//!
//! Connections are made on first use, so the gateway starts while Redis is down; each
//! command is bounded by the store's `timeout`. URLs are never logged with their password.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, RedisResult};

use crate::config::RedisTarget;

/// Why a Redis link cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisLinkError {
    #[error("`{url}` is not a usable redis:// or rediss:// URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read the CA file {path}: {reason}")]
    Ca { path: String, reason: String },
}

/// A connection to a single server, a cluster or a Sentinel-named primary.
pub struct RedisLink {
    kind: Kind,
    timeout: Duration,
    /// The target without credentials, for logs.
    shown: String,
}

enum Kind {
    Single {
        client: redis::Client,
        /// Created on first use (it needs a running runtime), then shared.
        manager: std::sync::Mutex<Option<ConnectionManager>>,
    },
    Cluster {
        client: ClusterClient,
        connection: tokio::sync::Mutex<Option<ClusterConnection>>,
    },
    Sentinel {
        sentinel: tokio::sync::Mutex<SentinelClient>,
        connection: std::sync::Mutex<Option<MultiplexedConnection>>,
    },
}

impl RedisLink {
    /// A link to `target`, trusting `ca` (PEM) besides the system roots for `rediss://`.
    pub fn new(target: &RedisTarget, ca: Option<&std::path::Path>, timeout: Duration) -> Result<Self, RedisLinkError> {
        let shown = target.to_string();
        let bad = |url: &str| {
            let url = crate::secret::redact_url(url);
            move |e: RedisError| RedisLinkError::BadUrl { url, reason: e.to_string() }
        };
        let root_cert = ca
            .map(|path| {
                std::fs::read(path)
                    .map_err(|e| RedisLinkError::Ca { path: path.display().to_string(), reason: e.to_string() })
            })
            .transpose()?;
        let certificates = || redis::TlsCertificates { client_tls: None, root_cert: root_cert.clone() };
        let kind = match target {
            RedisTarget::Single(url) => {
                let client = match ca {
                    None => redis::Client::open(url.0.as_str()).map_err(bad(&url.0))?,
                    Some(_) => redis::Client::build_with_tls(url.0.as_str(), certificates()).map_err(bad(&url.0))?,
                };
                Kind::Single { client, manager: std::sync::Mutex::new(None) }
            }
            RedisTarget::Cluster(nodes) => {
                let seeds: Vec<&str> = nodes.iter().map(|n| n.0.as_str()).collect();
                let mut builder = ClusterClient::builder(seeds.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if ca.is_some() {
                    builder = builder.certs(certificates());
                }
                let first = seeds.first().copied().unwrap_or_default();
                let client = builder.build().map_err(bad(first))?;
                Kind::Cluster { client, connection: tokio::sync::Mutex::new(None) }
            }
            RedisTarget::Sentinel { sentinels, master } => {
                let urls: Vec<&str> = sentinels.iter().map(|s| s.0.as_str()).collect();
                let first = urls.first().copied().unwrap_or_default();
                // The primary gets the Sentinel URLs' user, password and database.
                let settings = redis::IntoConnectionInfo::into_connection_info(first).map_err(bad(first))?;
                let primary =
                    SentinelNodeConnectionInfo::default().set_redis_connection_info(settings.redis_settings().clone());
                let client =
                    SentinelClient::build(urls.clone(), master.as_str(), Some(primary), SentinelServerType::Master)
                        .map_err(bad(first))?;
                Kind::Sentinel { sentinel: tokio::sync::Mutex::new(client), connection: std::sync::Mutex::new(None) }
            }
        };
        Ok(RedisLink { kind, timeout, shown })
    }

    /// The target without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs `command`, within the timeout (a slower answer is an error).
    pub async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> RedisResult<T> {
        // Boxed: redis-rs's futures are deep, and the request future that awaits this one
        // would otherwise pass the compiler's layout depth limit.
        self.bounded(Box::pin(async {
            match &self.kind {
                Kind::Single { client, manager } => {
                    command.query_async(&mut self.single_connection(client, manager)?).await
                }
                Kind::Cluster { client, connection } => {
                    command.query_async(&mut cluster_connection(client, connection).await?).await
                }
                Kind::Sentinel { .. } => {
                    let result = command.query_async(&mut self.sentinel_primary().await?).await;
                    self.sentinel_check(result)
                }
            }
        }))
        .await
    }

    /// Runs `pipeline` — its commands back to back on one connection, so that a `WAIT` in it
    /// counts the writes before it — on the node of `key` (a cluster: its slot's primary).
    pub async fn query_pipeline<T: FromRedisValue>(&self, pipeline: &redis::Pipeline, key: &str) -> RedisResult<T> {
        self.bounded(Box::pin(async {
            match &self.kind {
                Kind::Single { client, manager } => {
                    pipeline.query_async(&mut self.single_connection(client, manager)?).await
                }
                Kind::Cluster { client, connection } => {
                    use redis::cluster_routing::{Route, SingleNodeRoutingInfo, Slot, SlotAddr};
                    let route = Route::with_slot(Slot::for_key(key), SlotAddr::Master);
                    let mut cluster = cluster_connection(client, connection).await?;
                    let count = pipeline.cmd_iter().count();
                    let values = cluster
                        .route_pipeline(pipeline.clone(), 0, count, SingleNodeRoutingInfo::SpecificNode(route))
                        .await?;
                    Ok(redis::from_redis_value(redis::Value::Array(values))?)
                }
                Kind::Sentinel { .. } => {
                    let result = pipeline.query_async(&mut self.sentinel_primary().await?).await;
                    self.sentinel_check(result)
                }
            }
        }))
        .await
    }

    /// `work` within the timeout; on a timeout a Sentinel link forgets its primary too.
    async fn bounded<T>(&self, work: impl std::future::Future<Output = RedisResult<T>>) -> RedisResult<T> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                self.forget_primary();
                Err(RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "Redis timed out")))
            }
        }
    }

    /// The primary the Sentinels name: the cached connection, or a new one (asked one caller
    /// at a time; a caller that waited takes the connection the one before it made).
    async fn sentinel_primary(&self) -> RedisResult<MultiplexedConnection> {
        let Kind::Sentinel { sentinel, connection } = &self.kind else {
            return Err(RedisError::from(std::io::Error::other("not a Sentinel link")));
        };
        if let Some(open) = connection.lock().ok().and_then(|c| c.clone()) {
            return Ok(open);
        }
        let mut sentinel = sentinel.lock().await;
        if let Some(open) = connection.lock().ok().and_then(|c| c.clone()) {
            return Ok(open);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let open = sentinel.get_async_connection_with_config(&config).await?;
        if let Ok(mut slot) = connection.lock() {
            *slot = Some(open.clone());
        }
        Ok(open)
    }

    /// After a connection error or `READONLY` (a demoted primary), the next command asks the
    /// Sentinels again: the primary may have moved.
    fn sentinel_check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && (e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || e.is_timeout()
                || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
        {
            self.forget_primary();
        }
        result
    }

    fn forget_primary(&self) {
        if let Kind::Sentinel { connection, .. } = &self.kind
            && let Ok(mut slot) = connection.lock()
        {
            *slot = None;
        }
    }

    fn single_connection(
        &self,
        client: &redis::Client,
        manager: &std::sync::Mutex<Option<ConnectionManager>>,
    ) -> RedisResult<ConnectionManager> {
        let poisoned = || RedisError::from(std::io::Error::other("connection slot poisoned"));
        let mut slot = manager.lock().map_err(|_| poisoned())?;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

/// The cluster connection, made on first use (a failed attempt is tried again next time).
async fn cluster_connection(
    client: &ClusterClient,
    connection: &tokio::sync::Mutex<Option<ClusterConnection>>,
) -> RedisResult<ClusterConnection> {
    let mut slot = connection.lock().await;
    if let Some(open) = slot.as_ref() {
        return Ok(open.clone());
    }
    let open = client.get_async_connection().await?;
    *slot = Some(open.clone());
    Ok(open)
}
