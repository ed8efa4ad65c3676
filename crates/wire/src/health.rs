//! Bodies of `GET /healthz` and `GET /readyz`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Liveness {
    pub status: String,
    pub region: String,
}

/// `status` is `ready` (everything up), `degraded` (primary up, but a replica, the KMS or
/// the object store is not: still 200, since cached keys and the primary keep serving) or
/// `not_ready` (primary down; 503).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    pub status: String,
    pub region: String,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadinessChecks {
    pub primary: PrimaryCheck,
    pub replicas: Vec<ReplicaCheck>,
    pub kms: ComponentCheck,
    pub object_store: ComponentCheck,
}

/// A dependency other than the databases: the region's KMS or object store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentCheck {
    /// `up` or `down`.
    pub status: String,
    /// Which backend: `aws` or `local` (the embedded default) for the KMS, `s3` or
    /// `local` for the object store.
    pub kind: String,
    /// The KMS key id, or the bucket / directory.
    pub target: String,
    /// Why it is down (a short class, never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
