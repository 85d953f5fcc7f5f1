//! The `fapi_gateway_connections{state}` gauge kept in step with one connection
//! ([`ConnectionGauge`]): active, parked, or gone.
//!
//! Not here: when a connection changes state (`connection.rs`, `h1.rs`).

use std::sync::Arc;

/// Keeps `fapi_gateway_connections{state}` in step with one connection; the drop takes
/// the connection out.
pub(super) struct ConnectionGauge {
    metrics: Arc<crate::metrics::Metrics>,
    /// `Some(true)` active, `Some(false)` parked, `None` not counted yet.
    active: Option<bool>,
}

impl ConnectionGauge {
    pub(super) fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        ConnectionGauge { metrics, active: None }
    }

    fn gauge(&self, active: bool) -> &prometheus_client::metrics::gauge::Gauge {
        if active { &self.metrics.connections_active } else { &self.metrics.connections_parked }
    }

    pub(super) fn set(&mut self, active: Option<bool>) {
        if self.active == active {
            return;
        }
        if let Some(previous) = self.active {
            self.gauge(previous).dec();
        }
        if let Some(now) = active {
            self.gauge(now).inc();
        }
        self.active = active;
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.set(None);
    }
}
