//! The state every request through the router shares ([`RouterCore`]), built once from
//! the [`RouterConfig`].

use std::collections::HashMap;
use std::time::Duration;

use hop::{Connectors, Origin, Upstream};
use http::HeaderValue;
use model::{RegionId, TenantId};

use crate::admission::via_member;
use crate::cache::CachedDirectory;
use crate::config::RouterConfig;
use crate::limits::{ClientKeys, ClientLimiter};
use crate::metrics::{Decision, RouterMetrics};
use crate::signing::ForwardSigner;
use crate::target::{Target, region_value};

/// What every request through the router shares: this region, every other region as a
/// [`Target`], the directory, the signer and the metrics.
pub(crate) struct RouterCore {
    pub(crate) local: RegionId,
    pub(crate) local_header: HeaderValue,
    /// This node's `Via` member (`1.1 <region>`), added to every request it forwards.
    pub(crate) via: HeaderValue,
    pub(crate) targets: HashMap<RegionId, Target>,
    pub(crate) directory: CachedDirectory,
    pub(crate) signer: ForwardSigner,
    pub(crate) upstream_timeout: Duration,
    pub(crate) metrics: Option<RouterMetrics>,
    /// Tenants whose entry was re-read after an upstream failure, kept for
    /// [`FAILURE_REFRESH_INTERVAL`]: at most one directory read per tenant in that time,
    /// however many of its requests fail while a home region is down.
    pub(crate) refreshed_after_failure: moka::future::Cache<TenantId, ()>,
    pub(crate) client_keys: ClientKeys,
    pub(crate) client_limiter: ClientLimiter,
    /// Each client's share of the directory lookups for tenants this node does not hold.
    pub(crate) directory_miss_limiter: ClientLimiter,
    pub(crate) behind_load_balancer: bool,
    pub(crate) body_read_timeout: Duration,
}

/// How often a tenant's directory entry may be re-read because its home failed a request.
pub(crate) const FAILURE_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

impl RouterCore {
    pub(crate) fn new(config: RouterConfig) -> Self {
        let connectors = Connectors::new(
            config.connect_timeout,
            wire::limits::SERVER_MAX_HEADER_LIST_SIZE,
        );
        let targets = config
            .regions
            .iter()
            .map(|(region, endpoints)| {
                let internal = Origin::parse(&endpoints.internal)
                    .and_then(|origin| {
                        Upstream::new(origin, connectors.clone(), config.internal_protocol)
                    });
                if internal.is_none() {
                    tracing::error!(region = %region, "internal endpoint is not an absolute http(s) URL: requests for its tenants will get 503");
                }
                let target = Target {
                    region: region.clone(),
                    region_header: region_value(region),
                    forward_duration: config
                        .metrics
                        .as_ref()
                        .map(|m| m.forward_duration(region.as_str())),
                    internal,
                    public: Origin::parse(&endpoints.public),
                };
                (region.clone(), target)
            })
            .collect();
        if let Some(metrics) = &config.metrics {
            config.directory.report_to(metrics.clone());
        }
        Self {
            local_header: region_value(&config.local),
            via: via_member(&config.local),
            local: config.local,
            targets,
            directory: config.directory,
            signer: config.signer,
            upstream_timeout: config.upstream_timeout,
            metrics: config.metrics,
            refreshed_after_failure: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(FAILURE_REFRESH_INTERVAL)
                .build(),
            client_keys: ClientKeys::new(),
            client_limiter: ClientLimiter::new(config.client_rate),
            directory_miss_limiter: ClientLimiter::new(config.client_directory_misses),
            behind_load_balancer: config.behind_load_balancer,
            body_read_timeout: config.body_read_timeout,
        }
    }

    pub(crate) fn count(&self, decision: Decision, outcome: &'static str) {
        if let Some(m) = &self.metrics {
            m.request(decision, outcome);
        }
    }
}
