//! Prometheus metrics of one gateway instance, served as text on the admin listener's
//! `/metrics`: requests by route, status and reason code; latency histograms for the
//! gateway's own time and the upstream's (buckets up to the longest route timeout); JWKS
//! fetches and failures; validated-token cache hits and misses; DPoP replay-store size and
//! refusals; upstream errors; log lines dropped; TLS handshake failures by reason; reloads;
//! certificate expiry; whether the instance is draining; build information; and the process
//! metrics of the Prometheus client conventions (`process_*`, unprefixed, see [`process`]).
//!
//! Series whose labels are known when the gateway starts (reload results, handshake
//! failure reasons, each route's upstream errors, …) are created then, at 0, so that a
//! rate or an alert has a series before the first event.

mod process;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The version this binary was built from (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision, when the build set `FAPI_GATEWAY_GIT_REVISION`; else `unknown`.
pub const REVISION: &str = match option_env!("FAPI_GATEWAY_GIT_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// Log lines the process dropped (`log_writer`): one counter for the process, shown by
/// every instance's registry.
pub fn log_lines_dropped() -> Counter {
    static DROPPED: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);
    DROPPED.clone()
}

/// Every `reason` of `dpop_replay_refusals_total`: a proof already seen, the in-memory
/// store full, the shared store unreachable.
pub const REPLAY_REFUSAL_REASONS: [&str; 3] = ["replayed", "full", "unavailable"];

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

/// A login entry (`login[].name`), and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    pub login: String,
    pub result: &'static str,
}

/// A login entry alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginNameLabels {
    pub login: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub revision: &'static str,
}

/// A certificate file: `kind` is `server`, `client_ca` or `upstream_ca`; `name` the file's
/// path (the route's name for an upstream CA).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub kind: &'static str,
    pub name: String,
}

/// The latency histograms' buckets: 25 µs doubling up to the first bucket at or above the
/// ceiling (at least [`MIN_LATENCY_CEILING`]; 22 buckets, 25 µs … 52.4 s, by default).
#[derive(Clone, Debug)]
pub struct LatencyBuckets(Arc<[f64]>);

/// The smallest top bucket: the default route timeout.
pub const MIN_LATENCY_CEILING: Duration = Duration::from_secs(30);
const FIRST_BUCKET_SECONDS: f64 = 0.000_025;
/// 25 µs × 2^39 is about 159 days: enough for any timeout anyone configures.
const MAX_BUCKETS: usize = 40;

impl LatencyBuckets {
    /// Buckets whose top finite bound is at least `ceiling` (and 30 s).
    pub fn covering(ceiling: Duration) -> Self {
        let top = ceiling.max(MIN_LATENCY_CEILING).as_secs_f64();
        let mut bounds = Vec::with_capacity(24);
        let mut bound = FIRST_BUCKET_SECONDS;
        loop {
            bounds.push(bound);
            if bound >= top || bounds.len() >= MAX_BUCKETS {
                break;
            }
            bound *= 2.0;
        }
        LatencyBuckets(bounds.into())
    }

    /// The finite upper bounds, ascending.
    pub fn bounds(&self) -> &[f64] {
        &self.0
    }
}

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
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
    pub gateway_seconds: Family<RouteLabels, Histogram, LatencyBuckets>,
    pub upstream_seconds: Family<RouteLabels, Histogram, LatencyBuckets>,
    pub upstream_errors: Family<RequestLabels, Counter>,
    pub jwks_fetches: Family<FetchLabels, Counter>,
    pub token_cache: Family<ResultLabels, Counter>,
    pub replay_refusals: Family<ReasonLabels, Counter>,
    pub replay_entries: Gauge,
    /// Client connections past the TLS handshake: `active` (an HTTP connection is being
    /// served) and `parked` (idle HTTP/1.1 keep-alive, only the TLS stream held).
    pub connections_active: Gauge,
    pub connections_parked: Gauge,
    /// TLS handshakes that failed, by reason (the reasons are the listener's, see
    /// `server::tls_stream::HandshakeFailure`).
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    /// Reloads by result (`success`, `failure`).
    pub config_reloads: Family<ResultLabels, Counter>,
    /// When the running configuration was loaded (start or the last successful reload).
    pub last_reload_success: Gauge<f64, AtomicU64>,
    /// The `notAfter` of the earliest-expiring certificate of each configured file.
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    /// 1 once a shutdown has begun (`/readyz` answers 503).
    pub draining: Gauge,
    /// Browser sessions open now, by login (set at each scrape).
    pub login_sessions: Family<LoginNameLabels, Gauge>,
    /// Session token refreshes by login and result (`ok`, `refused`: the session ended,
    /// `error`).
    pub login_refreshes: Family<LoginLabels, Counter>,
}

/// Seconds since the Unix epoch, as a gauge shows them.
fn unix_now_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Metrics {
    /// The metrics with latency buckets up to 30 s (the default route timeout).
    pub fn new() -> Self {
        Self::with_latency_ceiling(MIN_LATENCY_CEILING)
    }

    /// The metrics with latency buckets up to at least `ceiling` (the longest route
    /// timeout; the buckets are fixed for the life of the instance).
    pub fn with_latency_ceiling(ceiling: Duration) -> Self {
        let buckets = LatencyBuckets::covering(ceiling);
        // The root registry holds the unprefixed `process_*` metrics; everything of the
        // gateway's own is under `fapi_gateway_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("fapi_gateway");
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register("build_info", "The gateway's version and source revision (always 1)", build_info.clone());
        build_info.get_or_create(&BuildLabels { version: VERSION, revision: REVISION }).set(1);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by route, status and reason code", requests.clone());
        let gateway_seconds = Family::<RouteLabels, Histogram, _>::new_with_constructor(buckets.clone());
        registry.register(
            "gateway_duration_seconds",
            "Time spent in the gateway per request, upstream time excluded",
            gateway_seconds.clone(),
        );
        let upstream_seconds = Family::<RouteLabels, Histogram, _>::new_with_constructor(buckets);
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
        for reason in REPLAY_REFUSAL_REASONS {
            replay_refusals.get_or_create_owned(&ReasonLabels { reason });
        }
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
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes with clients that failed, by reason",
            tls_handshake_failures.clone(),
        );
        let config_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result: success, or failure (refused; the running configuration kept serving)",
            config_reloads.clone(),
        );
        for result in ["success", "failure"] {
            config_reloads.get_or_create_owned(&ResultLabels { result });
        }
        let last_reload_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded: the start or the last successful reload (Unix time)",
            last_reload_success.clone(),
        );
        last_reload_success.set(unix_now_seconds());
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the earliest-expiring certificate in each configured file (Unix time), by kind (server, client_ca, upstream_ca) and name (file, or route for upstream_ca)",
            certificate_expiry.clone(),
        );
        let draining = Gauge::default();
        registry.register("draining", "1 once a shutdown has begun (/readyz answers 503), else 0", draining.clone());
        let login_sessions = Family::<LoginNameLabels, Gauge>::default();
        registry.register("login_sessions", "Browser sessions open now, by login", login_sessions.clone());
        let login_refreshes = Family::<LoginLabels, Counter>::default();
        registry.register(
            "login_refreshes",
            "Session token refreshes by login and result (ok; refused: the session ended; error)",
            login_refreshes.clone(),
        );
        let connections_active = connections.get_or_create(&StateLabels { state: "active" }).clone();
        let connections_parked = connections.get_or_create(&StateLabels { state: "parked" }).clone();
        Metrics {
            registry: root,
            tls_handshake_failures,
            config_reloads,
            last_reload_success,
            certificate_expiry,
            draining,
            login_sessions,
            login_refreshes,
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

    /// Counts a successful reload and sets the time of the running configuration.
    pub fn reload_succeeded(&self) {
        self.config_reloads.get_or_create(&ResultLabels { result: "success" }).inc();
        self.last_reload_success.set(unix_now_seconds());
    }

    /// Counts a refused reload.
    pub fn reload_failed(&self) {
        self.config_reloads.get_or_create(&ResultLabels { result: "failure" }).inc();
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_reach_the_ceiling() {
        let default = LatencyBuckets::covering(Duration::from_secs(1));
        let bounds = default.bounds();
        assert_eq!(bounds.first(), Some(&0.000_025));
        assert_eq!(bounds.len(), 22);
        assert!(*bounds.last().unwrap() >= 30.0 && *bounds.last().unwrap() < 60.0, "{bounds:?}");
        assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        let long = LatencyBuckets::covering(Duration::from_secs(300));
        assert!(*long.bounds().last().unwrap() >= 300.0);
        assert!(*long.bounds().iter().rev().nth(1).unwrap() < 300.0, "the smallest bucket list that covers it");
        assert_eq!(LatencyBuckets::covering(Duration::MAX).bounds().len(), MAX_BUCKETS);
    }

    #[test]
    fn known_series_exist_from_the_start() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for line in [
            format!(r#"fapi_gateway_build_info{{version="{VERSION}",revision="{REVISION}"}} 1"#),
            r#"fapi_gateway_config_reloads_total{result="success"} 0"#.to_string(),
            r#"fapi_gateway_config_reloads_total{result="failure"} 0"#.to_string(),
            r#"fapi_gateway_dpop_replay_refusals_total{reason="full"} 0"#.to_string(),
            "fapi_gateway_draining 0".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "one exposition, one EOF");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn reloads_are_counted() {
        let metrics = Metrics::new();
        metrics.last_reload_success.set(0.0);
        metrics.reload_failed();
        metrics.reload_succeeded();
        metrics.reload_succeeded();
        let text = metrics.render();
        assert!(text.contains(r#"fapi_gateway_config_reloads_total{result="success"} 2"#), "{text}");
        assert!(text.contains(r#"fapi_gateway_config_reloads_total{result="failure"} 1"#), "{text}");
        assert!(metrics.last_reload_success.get() > 1.0e9);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_unprefixed() {
        let text = Metrics::new().render();
        for name in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_start_time_seconds "] {
            assert!(text.lines().any(|l| l.starts_with(name)), "missing {name} in:\n{text}");
        }
    }
}
