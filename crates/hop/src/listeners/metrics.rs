//! The server's counters of connections it refused or closed for taking too long
//! (prometheus-client). Labels are fixed reasons, never an address.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why the server closed a connection on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClosedReason {
    /// It did not send enough to tell its protocol in time (`sniff_timeout`).
    Sniff,
    /// Its HTTP/1.1 request head did not arrive in time (`header_read_timeout`).
    HeaderRead,
    /// It had no request in flight for `idle_timeout`.
    Idle,
    /// It was still open `drain_timeout` after the server began to stop.
    Drain,
}

impl ClosedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sniff => "sniff_timeout",
            Self::HeaderRead => "header_read_timeout",
            Self::Idle => "idle_timeout",
            Self::Drain => "drain_timeout",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Counters of one server's connections. Cheap to clone; clones share the series.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    inner: Arc<Series>,
}

#[derive(Debug, Default)]
struct Series {
    refused: Counter,
    closed: Family<ReasonLabels, Counter>,
}

impl ConnectionMetrics {
    /// Registers the server's series (`http_connections_refused`,
    /// `http_connections_closed`) into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let series = Series::default();
        registry.register(
            "http_connections_refused",
            "Connections answered 503 and closed because the listener had as many open as it may",
            series.refused.clone(),
        );
        registry.register(
            "http_connections_closed",
            "Connections the server closed on its own, by reason (sniff_timeout, header_read_timeout, idle_timeout, drain_timeout)",
            series.closed.clone(),
        );
        Self {
            inner: Arc::new(series),
        }
    }

    /// Connections refused for the connection cap so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.get()
    }

    /// Connections closed for `reason` so far.
    pub fn closed(&self, reason: ClosedReason) -> u64 {
        self.inner
            .closed
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .get()
    }

    pub(super) fn count_refused(&self) {
        self.inner.refused.inc();
    }

    pub(super) fn count_closed(&self, reason: ClosedReason) {
        self.inner
            .closed
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_reach_the_registry_with_fixed_reasons() {
        let mut registry = Registry::default();
        let metrics = ConnectionMetrics::new(&mut registry);
        metrics.count_refused();
        metrics.count_closed(ClosedReason::Idle);
        metrics.count_closed(ClosedReason::Idle);
        metrics.count_closed(ClosedReason::HeaderRead);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("http_connections_refused_total 1"), "{text}");
        assert!(
            text.contains("http_connections_closed_total{reason=\"idle_timeout\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("http_connections_closed_total{reason=\"header_read_timeout\"} 1"),
            "{text}"
        );
        assert_eq!(
            (metrics.refused(), metrics.closed(ClosedReason::Sniff)),
            (1, 0)
        );
    }
}
