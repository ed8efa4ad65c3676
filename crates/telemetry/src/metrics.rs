//! One Prometheus registry per regional node, held as a value (not a global), so that
//! several nodes in one process (`residency dev`, tests) each report only their own.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsCallLabels {
    operation: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsOperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditModeLabels {
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobKindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
    state: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric a regional node exports.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    primary_up: Gauge,
    replica_up: Family<EndpointLabels, Gauge>,
    replica_lag_bytes: Family<EndpointLabels, Gauge>,
    replica_lag_seconds: Family<EndpointLabels, Gauge<f64, AtomicU64>>,
    pool_connections: Family<PoolLabels, Gauge>,
    dek_cache_hits: Counter,
    dek_cache_misses: Counter,
    kms_calls: Family<KmsCallLabels, Counter>,
    kms_duration: Family<KmsOperationLabels, Histogram, fn() -> Histogram>,
    audit_backlog: Gauge,
    audit_backlog_capacity: Gauge,
    audit_events_written: Family<AuditModeLabels, Counter>,
    audit_write_failures: Family<AuditModeLabels, Counter>,
    audit_events_after_close: Family<AuditModeLabels, Counter>,
    audit_checkpoints: Counter,
    audit_anchors: Counter,
    audit_anchor_failures: Counter,
    audit_anchor_lag_seconds: Gauge<f64, AtomicU64>,
    auth_denials: Family<ReasonLabels, Counter>,
    api_key_lookups: Counter,
    reads_retried: Counter,
    transactions_retried: Counter,
    jobs: Family<JobLabels, Gauge>,
    job_items: Family<JobKindLabels, Counter>,
    object_deletions_pending: Gauge,
    object_deletions_oldest_seconds: Gauge<f64, AtomicU64>,
    object_deletions: Family<OutcomeLabels, Counter>,
}

impl NodeMetrics {
    /// Metrics of the node serving `region`; every series carries `region="…"`.
    pub fn new(region: &str) -> Self {
        Self::with_extra(region, |_| {})
    }

    /// [`NodeMetrics::new`], letting `extra` register further series (e.g. the region
    /// router's) in the same registry, with the same prefix and region label.
    pub fn with_extra(region: &str, extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "residency",
            [(Cow::Borrowed("region"), Cow::Owned(region.to_owned()))].into_iter(),
        );
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        let http_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer HTTP requests, by route template and method",
            prometheus_client::registry::Unit::Seconds,
            http_duration.clone(),
        );
        let primary_up = Gauge::default();
        registry.register(
            "db_primary_up",
            "1 when the region's primary answers and accepts writes",
            primary_up.clone(),
        );
        let replica_up = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "db_replica_up",
            "1 when the replica is streaming and in rotation",
            replica_up.clone(),
        );
        let replica_lag_bytes = Family::<EndpointLabels, Gauge>::default();
        registry.register_with_unit(
            "db_replica_lag",
            "WAL the replica has yet to replay",
            prometheus_client::registry::Unit::Bytes,
            replica_lag_bytes.clone(),
        );
        let replica_lag_seconds = Family::<EndpointLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "db_replica_lag",
            "Age of the last replayed transaction while the replica is behind",
            prometheus_client::registry::Unit::Seconds,
            replica_lag_seconds.clone(),
        );
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "Database pool connections by pool and state (max, open, idle, in_use, waiting)",
            pool_connections.clone(),
        );
        let dek_cache_lookups = Family::<CacheLabels, Counter>::default();
        registry.register(
            "dek_cache_lookups",
            "Tenant data key lookups by result (hit: served from memory, miss: unwrapped by the KMS)",
            dek_cache_lookups.clone(),
        );
        let kms_calls = Family::<KmsCallLabels, Counter>::default();
        registry.register(
            "kms_calls",
            "KMS calls by operation and outcome",
            kms_calls.clone(),
        );
        let kms_duration =
            Family::<KmsOperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register_with_unit(
            "kms_call_duration",
            "KMS call latency by operation",
            prometheus_client::registry::Unit::Seconds,
            kms_duration.clone(),
        );
        let audit_backlog = Gauge::default();
        registry.register(
            "audit_backlog",
            "Audit events recorded outside a data transaction (reads, denials) and not yet durable",
            audit_backlog.clone(),
        );
        let audit_backlog_capacity = Gauge::default();
        registry.register(
            "audit_backlog_capacity",
            "Audit events the queue holds before reads fail with 503 (0 when written synchronously)",
            audit_backlog_capacity.clone(),
        );
        let audit_events_written = Family::<AuditModeLabels, Counter>::default();
        registry.register(
            "audit_events_written",
            "Audit events recorded outside a data transaction and committed, by mode (sync, batched)",
            audit_events_written.clone(),
        );
        let audit_write_failures = Family::<AuditModeLabels, Counter>::default();
        registry.register(
            "audit_write_failures",
            "Failed audit write transactions, by mode (a failed batch is retried, never dropped)",
            audit_write_failures.clone(),
        );
        let audit_events_after_close = Family::<AuditModeLabels, Counter>::default();
        registry.register(
            "audit_events_after_close",
            "Audit events recorded outside a data transaction that reached a closed chain (an offboarded tenant's) and were not appended, by mode; each is logged with its tenant id",
            audit_events_after_close.clone(),
        );
        let transactions_retried = Counter::default();
        registry.register(
            "transactions_retried",
            "Write transactions the database aborted to break a deadlock or a serialization conflict and that ran again",
            transactions_retried.clone(),
        );
        let audit_checkpoints = Counter::default();
        registry.register(
            "audit_checkpoints",
            "Signed checkpoints of audit chain heads",
            audit_checkpoints.clone(),
        );
        let audit_anchors = Counter::default();
        registry.register(
            "audit_anchors",
            "Signed checkpoints written to the region's audit bucket",
            audit_anchors.clone(),
        );
        let audit_anchor_failures = Counter::default();
        registry.register(
            "audit_anchor_failures",
            "Failed attempts to write a checkpoint to the audit bucket (retried next interval)",
            audit_anchor_failures.clone(),
        );
        let audit_anchor_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "audit_anchor_lag_seconds",
            "Age of the oldest signed checkpoint not yet in the audit bucket after the last anchoring round (0: none waits)",
            audit_anchor_lag_seconds.clone(),
        );
        let auth_denials = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_denials",
            "Requests refused before their caller was authenticated, by reason (a fixed set)",
            auth_denials.clone(),
        );
        let api_key_lookups = Counter::default();
        registry.register(
            "api_key_lookups",
            "API keys read from the database (the key cache missed)",
            api_key_lookups.clone(),
        );
        let reads_retried = Counter::default();
        registry.register(
            "db_reads_retried",
            "Reads retried once on another connection after theirs died mid-read",
            reads_retried.clone(),
        );
        // Resolved once: the lookup counter sits on the hot path of every sealed value.
        let dek_cache_hits = dek_cache_lookups
            .get_or_create(&CacheLabels { result: "hit" })
            .clone();
        let dek_cache_misses = dek_cache_lookups
            .get_or_create(&CacheLabels { result: "miss" })
            .clone();
        let jobs = Family::<JobLabels, Gauge>::default();
        registry.register(
            "jobs",
            "Durable jobs of the region, by kind and state (as this node last counted them)",
            jobs.clone(),
        );
        let job_items = Family::<JobKindLabels, Counter>::default();
        registry.register(
            "job_items",
            "Items (keys, values, objects) this node's job batches processed, by job kind",
            job_items.clone(),
        );
        let object_deletions_pending = Gauge::default();
        registry.register(
            "object_deletions_pending",
            "Objects the region's outbox still has to delete (as this node last counted them)",
            object_deletions_pending.clone(),
        );
        let object_deletions_oldest_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "object_deletions_oldest_pending_seconds",
            "Age of the oldest object deletion still pending in the region's outbox",
            object_deletions_oldest_seconds.clone(),
        );
        let object_deletions = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "object_deletions",
            "Object deletion attempts of this node (right after a commit or by its sweeper), by outcome (a fixed set)",
            object_deletions.clone(),
        );
        extra(&mut registry);
        Self {
            object_deletions_pending,
            object_deletions_oldest_seconds,
            object_deletions,
            jobs,
            job_items,
            registry,
            dek_cache_hits,
            dek_cache_misses,
            kms_calls,
            kms_duration,
            http_requests,
            http_duration,
            primary_up,
            replica_up,
            replica_lag_bytes,
            replica_lag_seconds,
            pool_connections,
            audit_backlog,
            audit_backlog_capacity,
            audit_events_written,
            audit_write_failures,
            audit_events_after_close,
            audit_checkpoints,
            audit_anchors,
            audit_anchor_failures,
            audit_anchor_lag_seconds,
            auth_denials,
            api_key_lookups,
            reads_retried,
            transactions_retried,
        }
    }

    /// Counts one answered request. `route` must be a template (`/v1/tenants/{tenant}`),
    /// never the concrete path.
    pub fn record_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn set_primary_up(&self, up: bool) {
        self.primary_up.set(i64::from(up));
    }

    /// Records one replica's state; a replica that is down keeps its last lag values.
    pub fn set_replica(
        &self,
        endpoint: &str,
        up: bool,
        lag_bytes: Option<u64>,
        lag_seconds: Option<f64>,
    ) {
        let labels = EndpointLabels {
            endpoint: endpoint.to_owned(),
        };
        self.replica_up.get_or_create(&labels).set(i64::from(up));
        if let Some(bytes) = lag_bytes {
            self.replica_lag_bytes
                .get_or_create(&labels)
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(seconds) = lag_seconds {
            self.replica_lag_seconds.get_or_create(&labels).set(seconds);
        }
    }

    pub fn set_pool(&self, pool: &str, max: usize, open: usize, idle: usize, waiting: usize) {
        let gauge = |state: &'static str, value: usize| {
            self.pool_connections
                .get_or_create(&PoolLabels {
                    pool: pool.to_owned(),
                    state,
                })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        gauge("max", max);
        gauge("open", open);
        gauge("idle", idle);
        gauge("in_use", open.saturating_sub(idle));
        gauge("waiting", waiting);
    }

    /// One data-key lookup: served from the in-memory cache, or not.
    pub fn record_dek_lookup(&self, hit: bool) {
        if hit {
            self.dek_cache_hits.inc();
        } else {
            self.dek_cache_misses.inc();
        }
    }

    /// One KMS call (`generate_data_key`, `decrypt`, `re_encrypt`, `check`).
    pub fn record_kms_call(&self, operation: &'static str, ok: bool, elapsed: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.kms_calls
            .get_or_create(&KmsCallLabels { operation, outcome })
            .inc();
        self.kms_duration
            .get_or_create(&KmsOperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Audit events waiting to be written, and how many the queue holds.
    pub fn set_audit_backlog(&self, backlog: usize, capacity: usize) {
        self.audit_backlog
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
        self.audit_backlog_capacity
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
    }

    /// `count` audit events committed outside a data transaction; `mode` is `sync` or
    /// `batched`.
    pub fn record_audit_events_written(&self, mode: &'static str, count: u64) {
        self.audit_events_written
            .get_or_create(&AuditModeLabels { mode })
            .inc_by(count);
    }

    /// One failed audit write transaction (`sync` or `batched`).
    pub fn record_audit_write_failure(&self, mode: &'static str) {
        self.audit_write_failures
            .get_or_create(&AuditModeLabels { mode })
            .inc();
    }

    /// `count` audit events (`sync` or `batched`) not appended because their tenant's
    /// chain was closed by its offboarding before they reached it.
    pub fn record_audit_events_after_close(&self, mode: &'static str, count: u64) {
        self.audit_events_after_close
            .get_or_create(&AuditModeLabels { mode })
            .inc_by(count);
    }

    /// One write transaction run again after the database aborted it (deadlock,
    /// serialization conflict).
    pub fn record_transaction_retried(&self) {
        self.transactions_retried.inc();
    }

    /// `count` chain heads signed.
    pub fn record_audit_checkpoints(&self, count: u64) {
        self.audit_checkpoints.inc_by(count);
    }

    /// Checkpoints written to the audit bucket.
    pub fn record_audit_anchors(&self, count: u64) {
        self.audit_anchors.inc_by(count);
    }

    /// One failed attempt to write a checkpoint to the audit bucket.
    pub fn record_audit_anchor_failure(&self) {
        self.audit_anchor_failures.inc();
    }

    /// The age of the oldest checkpoint still waiting for the audit bucket (zero: none).
    pub fn set_audit_anchor_lag(&self, lag: Duration) {
        self.audit_anchor_lag_seconds.set(lag.as_secs_f64());
    }

    /// One request refused before authentication; `reason` is one of a fixed set of
    /// names, never anything the caller sent.
    pub fn record_auth_denial(&self, reason: &'static str) {
        self.auth_denials
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// One API key read from the database.
    pub fn record_api_key_lookup(&self) {
        self.api_key_lookups.inc();
    }

    /// Reads retried since the node started, as the region's database counts them (read
    /// at each scrape; the counter only moves forward).
    pub fn set_reads_retried(&self, total: u64) {
        self.reads_retried
            .inner()
            .fetch_max(total, std::sync::atomic::Ordering::Relaxed);
    }

    /// API keys read from the database since the node started.
    pub fn api_key_lookups(&self) -> u64 {
        self.api_key_lookups.get()
    }

    /// How many of the region's jobs of `kind` are in `state` (fixed texts of the job
    /// runner, never anything a caller sent).
    pub fn set_jobs(&self, kind: &'static str, state: &'static str, count: u64) {
        self.jobs
            .get_or_create(&JobLabels { kind, state })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// `count` items processed by one batch of a job of `kind`.
    pub fn record_job_items(&self, kind: &'static str, count: u64) {
        self.job_items
            .get_or_create(&JobKindLabels { kind })
            .inc_by(count);
    }

    /// The region's outbox of object deletions as this node last counted it.
    pub fn set_object_deletions_pending(&self, pending: u64, oldest: Duration) {
        self.object_deletions_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.object_deletions_oldest_seconds
            .set(oldest.as_secs_f64());
    }

    /// `count` object deletions that ended in `outcome`, one of a fixed set of names.
    pub fn record_object_deletions(&self, outcome: &'static str, count: u64) {
        self.object_deletions
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(count);
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_template_with_the_region_label() {
        let metrics = NodeMetrics::new("eu-central-1");
        metrics.record_http("/healthz", "GET", 200, Duration::from_millis(3));
        metrics.record_http("/healthz", "GET", 200, Duration::from_millis(4));
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"residency_http_requests_total{region="eu-central-1",route="/healthz",method="GET",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains("residency_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn key_cache_and_kms_calls_are_exported() {
        let metrics = NodeMetrics::new("eu-west-1");
        metrics.record_dek_lookup(true);
        metrics.record_dek_lookup(true);
        metrics.record_dek_lookup(false);
        metrics.record_kms_call("decrypt", true, Duration::from_millis(12));
        let text = metrics.encode();
        for expected in [
            r#"residency_dek_cache_lookups_total{region="eu-west-1",result="hit"} 2"#,
            r#"residency_dek_cache_lookups_total{region="eu-west-1",result="miss"} 1"#,
            r#"residency_kms_calls_total{region="eu-west-1",operation="decrypt",outcome="ok"} 1"#,
            r#"residency_kms_call_duration_seconds_count{region="eu-west-1",operation="decrypt"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }

    #[test]
    fn audit_backlog_and_writes_are_exported() {
        let metrics = NodeMetrics::new("eu-central-1");
        metrics.set_audit_backlog(7, 10_000);
        metrics.record_audit_events_written("batched", 256);
        metrics.record_audit_events_written("batched", 4);
        metrics.record_audit_write_failure("sync");
        metrics.record_audit_checkpoints(3);
        metrics.record_audit_anchors(2);
        metrics.record_audit_anchor_failure();
        metrics.set_audit_anchor_lag(Duration::from_millis(1500));
        let text = metrics.encode();
        for expected in [
            r#"residency_audit_backlog{region="eu-central-1"} 7"#,
            r#"residency_audit_backlog_capacity{region="eu-central-1"} 10000"#,
            r#"residency_audit_events_written_total{region="eu-central-1",mode="batched"} 260"#,
            r#"residency_audit_write_failures_total{region="eu-central-1",mode="sync"} 1"#,
            r#"residency_audit_checkpoints_total{region="eu-central-1"} 3"#,
            r#"residency_audit_anchors_total{region="eu-central-1"} 2"#,
            r#"residency_audit_anchor_failures_total{region="eu-central-1"} 1"#,
            r#"residency_audit_anchor_lag_seconds{region="eu-central-1"} 1.5"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }

    #[test]
    fn replica_lag_and_pool_usage_are_exported() {
        let metrics = NodeMetrics::new("us-east-1");
        metrics.set_primary_up(true);
        metrics.set_replica("replica-1", true, Some(4096), Some(0.25));
        metrics.set_pool("primary", 16, 3, 1, 0);
        metrics.set_reads_retried(3);
        metrics.set_reads_retried(2);
        let text = metrics.encode();
        for expected in [
            r#"residency_db_primary_up{region="us-east-1"} 1"#,
            r#"residency_db_replica_lag_bytes{region="us-east-1",endpoint="replica-1"} 4096"#,
            r#"residency_db_replica_lag_seconds{region="us-east-1",endpoint="replica-1"} 0.25"#,
            r#"residency_db_pool_connections{region="us-east-1",pool="primary",state="in_use"} 2"#,
            r#"residency_db_reads_retried_total{region="us-east-1"} 3"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
