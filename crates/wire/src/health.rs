//! Bodies of `GET /healthz` and `GET /readyz`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    pub status: String,
    pub region: String,
}

/// `status` is `ready` (everything up), `degraded` (primary up, but a replica, the KMS,
/// the object store or the tenant directory is not, or the audit queue is backlogged:
/// still 200, since cached keys and directory entries and the primary keep serving) or
/// `not_ready` (primary down; 503).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub region: String,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessChecks {
    pub primary: PrimaryCheck,
    pub replicas: Vec<ReplicaCheck>,
    pub kms: ComponentCheck,
    pub object_store: ComponentCheck,
    /// The deployment's tenant directory, which the router in front of the node reads;
    /// absent on a node without a router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<ComponentCheck>,
    pub audit: AuditCheck,
}

/// The audit log's queue of read events. `backlogged` (over 80% of `capacity`) makes
/// the node `degraded`, still 200; a full queue makes reads fail with 503.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditCheck {
    /// `up` or `backlogged`.
    pub status: String,
    /// How read events are written: `batched` (queued) or `sync` (no queue).
    pub mode: String,
    /// Events recorded and not yet durable.
    pub backlog: u64,
    /// Events the queue holds before reads fail (0 in `sync` mode).
    pub capacity: u64,
}

/// A dependency other than the region's databases: its KMS or object store, or the
/// deployment's tenant directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComponentCheck {
    /// `up` or `down`.
    pub status: String,
    /// Which backend: `aws` or `local` (the embedded default) for the KMS, `s3` or
    /// `local` for the object store, `postgres` or `memory` for the tenant directory.
    pub kind: String,
    /// The KMS key id, the bucket / local directory, or the tenant directory's
    /// `host:port/database` (never credentials).
    pub target: String,
    /// Why it is down (a short class, never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrimaryCheck {
    /// `up` or `down`.
    pub status: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_lsn: Option<String>,
    /// Why it is down: `unreachable`, `timeout`, `in_recovery`, `wrong_region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaCheck {
    pub name: String,
    /// `up` (streaming, in rotation) or `down`.
    pub status: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
