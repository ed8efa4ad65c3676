//! What every handler of a regional node can reach: its region, databases, KMS, object
//! store, tenant keys and metrics. All of them belong to this one region.

use std::sync::Arc;

use envelope::kms::Kms;
use envelope::objects::ObjectStore;
use model::RegionId;
use service::Keyring;
use store::RegionDatabase;
use telemetry::NodeMetrics;

/// The parts a regional node is built from.
#[derive(Debug)]
pub struct NodeParts {
    pub database: RegionDatabase,
    pub kms: Arc<dyn Kms>,
    pub objects: Arc<dyn ObjectStore>,
    pub keyring: Keyring,
    pub metrics: Arc<NodeMetrics>,
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
        Self {
            inner: Arc::new(Inner { region, parts }),
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.inner.region
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

    pub fn metrics(&self) -> &NodeMetrics {
        &self.inner.parts.metrics
    }
}
