//! What every handler of a regional node can reach: its region, databases, KMS, object
//! store, tenant keys, audit log and metrics. All of them belong to this one region.

use std::sync::Arc;

use envelope::kms::Kms;
use envelope::objects::ObjectStore;
use model::RegionId;
use service::access::OperatorToken;
use service::{AuditLog, Keyring, RegionService, ServiceParts, ServiceSettings};
use store::RegionDatabase;
use telemetry::NodeMetrics;

use crate::health::HealthBoard;
use crate::rate_limit::RateLimit;

/// The parts a regional node is built from.
#[derive(Debug)]
pub struct NodeParts {
    pub database: RegionDatabase,
    pub kms: Arc<dyn Kms>,
    pub objects: Arc<dyn ObjectStore>,
    /// The region's audit bucket (the erasure ledger, the anchored checkpoints; write-once
    /// in AWS).
    pub audit_objects: Arc<dyn ObjectStore>,
    pub keyring: Keyring,
    pub audit: AuditLog,
    pub metrics: Arc<NodeMetrics>,
    /// Every region of the catalogue: tenants name them as home and allowed regions.
    pub regions: Vec<RegionId>,
    /// The deployment's operator token (kept as a hash).
    pub operator: OperatorToken,
    pub service: ServiceSettings,
    pub rate_limit: RateLimit,
    /// The tenant directory new tenants are registered in, if the deployment has one.
    pub registry: Option<Arc<dyn service::TenantRegistry>>,
    /// Whether the region router runs in front of this node. Only then is the
    /// `x-residency-entry-region` request header trusted: the router strips every copy a
    /// client sends and sets it only for a request whose forwarding signature verified.
    pub behind_router: bool,
    /// The deployment's tenant directory, for `/readyz`, when a router in front of this
    /// node reads one.
    pub directory: Option<Arc<dyn crate::DirectoryProbe>>,
    /// Who may read `/metrics` on the main listener.
    pub metrics_access: crate::MetricsAccess,
}

/// Cheap to clone; one per regional node.
#[derive(Debug, Clone)]
pub struct NodeState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    region: RegionId,
    parts: NodeParts,
    service: RegionService,
    health: HealthBoard,
}

impl NodeState {
    /// The node of `parts.database`'s region.
    ///
    /// # Panics
    /// When a part belongs to another region: a node holds its own region only.
    pub fn new(parts: NodeParts) -> Self {
        let region = parts.database.region().clone();
        assert_eq!(
            parts.kms.region(),
            &region,
            "the KMS must be the node's region's"
        );
        assert_eq!(
            parts.keyring.region(),
            &region,
            "the keyring must be the node's region's"
        );
        assert_eq!(
            parts.audit.region(),
            &region,
            "the audit log must be the node's region's"
        );
        let service = RegionService::new(ServiceParts {
            database: parts.database.clone(),
            keyring: parts.keyring.clone(),
            objects: parts.objects.clone(),
            audit_objects: parts.audit_objects.clone(),
            audit: parts.audit.clone(),
            regions: parts.regions.clone(),
            operator: parts.operator.clone(),
            settings: parts.service.clone(),
            registry: parts.registry.clone(),
            rate_limit: parts.rate_limit,
        });
        let health = HealthBoard::new(&region, &parts);
        Self {
            inner: Arc::new(Inner {
                region,
                parts,
                service,
                health,
            }),
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.inner.region
    }

    /// The region whose endpoint received the request: the router's verified entry region
    /// for a forwarded request, this region otherwise.
    pub fn entry_region(&self, headers: &http::HeaderMap) -> RegionId {
        if !self.inner.parts.behind_router {
            return self.inner.region.clone();
        }
        headers
            .get(wire::headers::ENTRY_REGION)
            .and_then(|value| value.to_str().ok())
            .and_then(|raw| RegionId::parse(raw).ok())
            .unwrap_or_else(|| self.inner.region.clone())
    }

    /// The tenant service (every `/v1` use case).
    pub fn service(&self) -> &RegionService {
        &self.inner.service
    }

    pub fn database(&self) -> &RegionDatabase {
        &self.inner.parts.database
    }

    pub fn kms(&self) -> &Arc<dyn Kms> {
        &self.inner.parts.kms
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.parts.objects
    }

    pub fn keyring(&self) -> &Keyring {
        &self.inner.parts.keyring
    }

    pub fn audit(&self) -> &AuditLog {
        &self.inner.parts.audit
    }

    /// The tenant directory's probe, when a router in front of this node reads one.
    pub fn directory(&self) -> Option<&Arc<dyn crate::DirectoryProbe>> {
        self.inner.parts.directory.as_ref()
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.inner.parts.metrics
    }

    /// The health poller's latest snapshot, which `/readyz` answers from.
    pub(crate) fn health(&self) -> &HealthBoard {
        &self.inner.health
    }

    /// Makes `/readyz` answer 503 (`draining`) from now on: the first step of a node's
    /// stop, while it still serves.
    pub fn start_draining(&self) {
        self.inner.health.start_draining();
    }

    /// Resolves once the health poller has published a snapshot whose round began at or
    /// after `since`.
    pub async fn health_checked_since(&self, since: tokio::time::Instant) {
        self.inner.health.checked_since(since).await;
    }

    /// Whether `presented` is the operator token (a hash, no I/O).
    pub(crate) fn is_operator(&self, presented: &str) -> bool {
        self.inner.parts.operator.matches(presented)
    }

    pub(crate) fn metrics_access(&self) -> crate::MetricsAccess {
        self.inner.parts.metrics_access
    }
}
