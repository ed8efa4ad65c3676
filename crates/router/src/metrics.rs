//! The router's metrics (prometheus-client), registered into the node's registry. Labels
//! are decisions, outcomes, region ids and error kinds: never paths, tenants or bodies.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// What the router did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Served by the local app, in-process.
    Local,
    /// Proxied to the home region.
    Forward,
    /// Answered `307` toward the home region.
    Redirect,
    /// A forwarded request for a tenant homed elsewhere: answered `421`.
    Misdirected,
    /// No decision could be made (directory unavailable, home region unknown here).
    Unrouted,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Forward => "forward",
            Self::Redirect => "redirect",
            Self::Misdirected => "misdirected",
            Self::Unrouted => "unrouted",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    decision: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegionLabels {
    region: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    region: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

fn forward_histogram() -> Histogram {
    // 100 µs … ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Counters and histograms of the router. Cheap to clone; clones share the series.
#[derive(Debug, Clone)]
pub struct RouterMetrics {
    requests: Family<RequestLabels, Counter>,
    forward_duration: Family<RegionLabels, Histogram, fn() -> Histogram>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    retries: Family<ReasonLabels, Counter>,
    refused_signatures: Family<ReasonLabels, Counter>,
    limited: Family<LimitLabels, Counter>,
    directory_queries: Family<ReasonLabels, Counter>,
}

impl RouterMetrics {
    /// Registers the router's series (`router_*`) into `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "router_requests",
            "Requests by route decision (local, forward, redirect, misdirected, unrouted) and outcome (status class or error)",
            requests.clone(),
        );
        let forward_duration =
            Family::<RegionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                forward_histogram,
            );
        registry.register_with_unit(
            "router_forward_duration",
            "Time from sending a forwarded request to the home region to its response headers",
            Unit::Seconds,
            forward_duration.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "router_upstream_errors",
            "Forwarding attempts that got no response, by home region and kind (connect, timeout, other)",
            upstream_errors.clone(),
        );
        let retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "router_forward_retries",
            "Forwarded requests sent a second time, by reason (misdirected, connect)",
            retries.clone(),
        );
        let refused_signatures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "router_refused_forwarding_headers",
            "Requests whose forwarding headers were stripped as untrusted, by reason",
            refused_signatures.clone(),
        );
        let limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "router_limited",
            "Requests the router refused at a limit before routing them, by limit (client_address, client_directory_misses: 429; directory_misses: 503)",
            limited.clone(),
        );
        let directory_queries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "router_directory_queries",
            "Lookups sent to the tenant directory backend, by reason (miss: a tenant the cache does not hold; refresh: re-read after a 421 or a failure)",
            directory_queries.clone(),
        );
        Self {
            requests,
            forward_duration,
            upstream_errors,
            retries,
            refused_signatures,
            limited,
            directory_queries,
        }
    }

    pub(crate) fn request(&self, decision: Decision, outcome: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                decision: decision.as_str(),
                outcome,
            })
            .inc();
    }

    /// The forwarding-latency series of `region`, resolved once per target region: the
    /// label is a `String`, and looking it up per request would allocate it each time.
    pub(crate) fn forward_duration(&self, region: &str) -> Histogram {
        self.forward_duration
            .get_or_create(&RegionLabels {
                region: region.to_owned(),
            })
            .clone()
    }

    pub(crate) fn upstream_error(&self, region: &str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels {
                region: region.to_owned(),
                kind,
            })
            .inc();
    }

    pub(crate) fn retry(&self, reason: &'static str) {
        self.retries.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn refused_signature(&self, reason: &'static str) {
        self.refused_signatures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub(crate) fn limited(&self, limit: &'static str) {
        self.limited.get_or_create(&LimitLabels { limit }).inc();
    }

    pub(crate) fn directory_query(&self, reason: &'static str) {
        self.directory_queries
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// The outcome label of an answered request: its status class.
pub(crate) fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn series_are_encoded_with_their_labels() {
        let mut registry = Registry::default();
        let metrics = RouterMetrics::new(&mut registry);
        metrics.request(Decision::Forward, "2xx");
        let histogram = metrics.forward_duration("eu-west-1");
        histogram.observe(Duration::from_millis(3).as_secs_f64());
        metrics.upstream_error("eu-west-1", "connect");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains(r#"router_requests_total{decision="forward",outcome="2xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"router_forward_duration_seconds_count{region="eu-west-1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"router_upstream_errors_total{region="eu-west-1",kind="connect"} 1"#),
            "{text}"
        );
    }
}
