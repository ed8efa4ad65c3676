//! What every handler of a regional node can reach: its region, its databases, its metrics.

use std::sync::Arc;

use model::RegionId;
use store::RegionDatabase;
use telemetry::NodeMetrics;

/// Cheap to clone; one per regional node.
#[derive(Debug, Clone)]
pub struct NodeState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    region: RegionId,
    database: RegionDatabase,
    metrics: NodeMetrics,
}

impl NodeState {
    /// The node of `database`'s region.
    pub fn new(database: RegionDatabase) -> Self {
        let region = database.region().clone();
        let metrics = NodeMetrics::new(region.as_str());
        Self {
            inner: Arc::new(Inner {
                region,
                database,
                metrics,
            }),
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.inner.region
    }

    pub fn database(&self) -> &RegionDatabase {
        &self.inner.database
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.inner.metrics
    }
}
