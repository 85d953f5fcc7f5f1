//! Prometheus metrics of one gateway instance, served as text on the admin listener's
//! `/metrics`: requests by route, status and reason code; latency histograms for the
//! gateway's own time and the upstream's; JWKS fetches and failures; validated-token cache
//! hits and misses; DPoP replay-store size and refusals; upstream errors; log lines dropped.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Log lines the process dropped (`log_writer`): one counter for the process, shown by
/// every instance's registry.
pub fn log_lines_dropped() -> Counter {
    static DROPPED: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);
    DROPPED.clone()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Arc<str>,
    pub status: u16,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub issuer: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// One route's metric handles, looked up once when the configuration is compiled: the
/// request path updates them without hashing labels or taking the families' locks.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    pub label: Arc<str>,
    /// `requests{status="200", reason="ok"}`, by far the most frequent series.
    pub ok: Counter,
    pub gateway_seconds: Histogram,
    pub upstream_seconds: Histogram,
}

/// Every metric, registered once per gateway.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub gateway_seconds: Family<RouteLabels, Histogram>,
    pub upstream_seconds: Family<RouteLabels, Histogram>,
    pub upstream_errors: Family<RequestLabels, Counter>,
    pub jwks_fetches: Family<FetchLabels, Counter>,
    pub token_cache: Family<ResultLabels, Counter>,
    pub replay_refusals: Family<ReasonLabels, Counter>,
    pub replay_entries: Gauge,
    /// Client connections past the TLS handshake: `active` (an HTTP connection is being
    /// served) and `parked` (idle HTTP/1.1 keep-alive, only the TLS stream held).
    pub connections_active: Gauge,
    pub connections_parked: Gauge,
}

fn latency_histogram() -> Histogram {
    // 25 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 18))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fapi_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by route, status and reason code", requests.clone());
        let gateway_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "gateway_duration_seconds",
            "Time spent in the gateway per request, upstream time excluded",
            gateway_seconds.clone(),
        );
        let upstream_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "upstream_duration_seconds",
            "Time until the upstream's response head",
            upstream_seconds.clone(),
        );
        let upstream_errors = Family::<RequestLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream failures (refused, timed out, body too large)",
            upstream_errors.clone(),
        );
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        registry.register("jwks_fetches", "Signing-key fetches by issuer and result", jwks_fetches.clone());
        let token_cache = Family::<ResultLabels, Counter>::default();
        registry.register("token_cache_lookups", "Validated-token cache look-ups (hit or miss)", token_cache.clone());
        let replay_refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dpop_replay_refusals",
            "DPoP proofs refused by the replay store (replayed, store unavailable)",
            replay_refusals.clone(),
        );
        let replay_entries = Gauge::default();
        registry.register(
            "dpop_replay_entries",
            "Proofs remembered by the in-memory replay store",
            replay_entries.clone(),
        );
        let connections = Family::<StateLabels, Gauge>::default();
        registry.register(
            "connections",
            "Client connections by state: active (being served) or parked (idle keep-alive)",
            connections.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log destination did not take them (process-wide)",
            log_lines_dropped(),
        );
        let connections_active = connections.get_or_create(&StateLabels { state: "active" }).clone();
        let connections_parked = connections.get_or_create(&StateLabels { state: "parked" }).clone();
        Metrics {
            registry,
            connections_active,
            connections_parked,
            requests,
            gateway_seconds,
            upstream_seconds,
            upstream_errors,
            jwks_fetches,
            token_cache,
            replay_refusals,
            replay_entries,
        }
    }

    /// The handles of the route labelled `route`.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let label: Arc<str> = Arc::from(route);
        let labels = RouteLabels { route: label.clone() };
        RouteMetrics {
            ok: self.requests.get_or_create(&RequestLabels { route: label.clone(), status: 200, reason: "ok" }).clone(),
            gateway_seconds: self.gateway_seconds.get_or_create(&labels).clone(),
            upstream_seconds: self.upstream_seconds.get_or_create(&labels).clone(),
            label,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}
