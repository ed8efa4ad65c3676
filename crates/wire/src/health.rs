//! Bodies of `GET /healthz` and `GET /readyz`.
//!
//! `/readyz` has two forms of one body. The public form says, per dependency, only whether
//! it is up; the detailed form (the operator token, or the node's operations listener) adds
//! where each dependency is, WAL positions, lags, reasons and the audit backlog. Every
//! field of the detailed form that [`Readiness::public`] drops is optional in the schema.

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
/// `not_ready` (primary down, or no recent health snapshot; 503).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub region: String,
    pub checks: ReadinessChecks,
    /// Why the node is `not_ready` although the checks may say otherwise: `starting` (the
    /// health poller has not finished its first round) or `stale` (its last round is too
    /// old: the poller is stuck). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Seconds since the health poller took the snapshot this answer reads (a request
    /// never probes anything itself). Absent before the first snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
    /// The region's running jobs (kind, id, progress), as the health poller last read
    /// them from the primary (at most 20, newest first). Detailed form only; absent
    /// when the primary could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Vec<crate::jobs::JobView>>,
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
    /// How read events are written: `batched` (queued) or `sync` (no queue). Detailed
    /// form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Events recorded and not yet durable. Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Events the queue holds before reads fail (0 in `sync` mode). Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u64>,
}

/// A dependency other than the region's databases: its KMS or object store, or the
/// deployment's tenant directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ComponentCheck {
    /// `up` or `down`.
    pub status: String,
    /// Which backend: `aws` or `local` (the embedded default) for the KMS, `s3` or
    /// `local` for the object store, `postgres` or `memory` for the tenant directory.
    /// Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The KMS key id, the bucket / local directory, or the tenant directory's
    /// `host:port/database` (never credentials). Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why it is down (a short class, never a secret). Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PrimaryCheck {
    /// `up` or `down`.
    pub status: String,
    /// `host:port/database`, never credentials. Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_lsn: Option<String>,
    /// Why it is down: `unreachable`, `timeout`, `in_recovery`, `wrong_region`. Detailed
    /// form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaCheck {
    pub name: String,
    /// `up` (streaming, in rotation) or `down`.
    pub status: String,
    /// `host:port/database`, never credentials. Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<String>,
    /// Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Why it is down. Detailed form only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Readiness {
    /// The public form: every dependency's status (and each replica's name), nothing of
    /// where a dependency is, how far behind it is, or why it is down.
    pub fn public(&self) -> Self {
        let checks = &self.checks;
        Self {
            status: self.status.clone(),
            region: self.region.clone(),
            checks: ReadinessChecks {
                primary: PrimaryCheck {
                    status: checks.primary.status.clone(),
                    address: None,
                    wal_lsn: None,
                    reason: None,
                },
                replicas: checks
                    .replicas
                    .iter()
                    .map(|replica| ReplicaCheck {
                        name: replica.name.clone(),
                        status: replica.status.clone(),
                        address: None,
                        replay_lsn: None,
                        lag_bytes: None,
                        lag_seconds: None,
                        reason: None,
                    })
                    .collect(),
                kms: checks.kms.public(),
                object_store: checks.object_store.public(),
                directory: checks.directory.as_ref().map(ComponentCheck::public),
                audit: AuditCheck {
                    status: checks.audit.status.clone(),
                    mode: None,
                    backlog: None,
                    capacity: None,
                },
            },
            reason: self.reason.clone(),
            age_seconds: self.age_seconds,
            jobs: None,
        }
    }
}

impl ComponentCheck {
    fn public(&self) -> Self {
        Self {
            status: self.status.clone(),
            kind: None,
            target: None,
            reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detailed() -> Readiness {
        let component = |kind: &str, target: &str| ComponentCheck {
            status: "down".into(),
            kind: Some(kind.into()),
            target: Some(target.into()),
            reason: Some("unavailable".into()),
        };
        Readiness {
            status: "degraded".into(),
            region: "eu-west-1".into(),
            checks: ReadinessChecks {
                primary: PrimaryCheck {
                    status: "up".into(),
                    address: Some("db.internal.example:5432/residency".into()),
                    wal_lsn: Some("0/16B3740".into()),
                    reason: None,
                },
                replicas: vec![ReplicaCheck {
                    name: "replica-1".into(),
                    status: "up".into(),
                    address: Some("10.1.2.3:5433/residency".into()),
                    replay_lsn: Some("0/16B3700".into()),
                    lag_bytes: Some(64),
                    lag_seconds: Some(0.25),
                    reason: None,
                }],
                kms: component("aws", "arn:aws:kms:eu-west-1:123456789012:key/k"),
                object_store: component("s3", "residency-eu-west-1-data"),
                directory: Some(component("postgres", "10.9.9.9:5432/directory")),
                audit: AuditCheck {
                    status: "backlogged".into(),
                    mode: Some("batched".into()),
                    backlog: Some(9_000),
                    capacity: Some(10_000),
                },
            },
            reason: None,
            age_seconds: Some(0.5),
            jobs: Some(vec![crate::jobs::JobView {
                id: "7".into(),
                kind: "rewrap".into(),
                tenant: None,
                state: "running".into(),
                progress: crate::jobs::JobProgress {
                    done: 100,
                    total: 4_000,
                    failed: 0,
                },
                attempts: 1,
                last_error: None,
                created_at: "2026-12-07T21:00:00Z".into(),
                updated_at: "2026-12-07T21:00:05Z".into(),
                finished_at: None,
            }]),
        }
    }

    #[test]
    fn the_public_form_keeps_every_status_and_drops_every_detail() {
        let detailed = detailed();
        let public = detailed.public();
        let text = serde_json::to_string(&public).expect("json");
        for detail in [
            "db.internal.example",
            "5432",
            "10.1.2.3",
            "0/16B37",
            "arn:aws",
            "residency-eu-west-1-data",
            "unavailable",
            "batched",
            "9000",
            "lag",
            "address",
            "target",
            "kind",
            "rewrap",
            "jobs",
        ] {
            assert!(
                !text.contains(detail),
                "`{detail}` in the public form: {text}"
            );
        }
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        let checks = &value["checks"];
        for (check, status) in [
            (&checks["primary"]["status"], "up"),
            (&checks["replicas"][0]["status"], "up"),
            (&checks["replicas"][0]["name"], "replica-1"),
            (&checks["kms"]["status"], "down"),
            (&checks["object_store"]["status"], "down"),
            (&checks["directory"]["status"], "down"),
            (&checks["audit"]["status"], "backlogged"),
            (&value["status"], "degraded"),
            (&value["region"], "eu-west-1"),
        ] {
            assert_eq!(check, status, "{text}");
        }
        assert_eq!(value["age_seconds"], 0.5);
        let full = serde_json::to_string(&detailed).expect("json");
        assert!(full.contains("db.internal.example:5432") && full.contains("\"lag_bytes\":64"));
    }
}
