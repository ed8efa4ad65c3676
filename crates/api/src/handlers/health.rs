//! Operations (no auth): liveness (`GET /healthz`), readiness (`GET /readyz`: the
//! primary, replicas, KMS, object store, tenant directory and audit queue) and metrics
//! (`GET /metrics`).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use store::{DatabaseHealth, ReplicaState};
use wire::{
    AuditCheck, ComponentCheck, Liveness, PrimaryCheck, Readiness, ReadinessChecks, ReplicaCheck,
};

use crate::health::{record_audit, record_database, record_pools};
use crate::{NodeState, PROBE_TIMEOUT};

/// `GET /healthz`: the process is alive. Touches no dependency.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process is alive.", body = Liveness)),
)]
pub(crate) async fn healthz(State(state): State<NodeState>) -> Json<Liveness> {
    Json(Liveness {
        status: "ok".into(),
        region: state.region().to_string(),
    })
}

/// `GET /readyz`: 200 while the primary takes writes (replicas may be out of rotation,
/// the audit queue may be over 80% full, the tenant directory may be unreachable:
/// `degraded`), 503 when it does not.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "The primary takes writes (`ready` or `degraded`).",
            body = Readiness),
        (status = 503, description = "The primary does not take writes (`not_ready`).",
            body = Readiness),
    ),
)]
pub(crate) async fn readyz(State(state): State<NodeState>) -> Response {
    let (health, kms, objects, directory) = tokio::join!(
        state.database().health(PROBE_TIMEOUT),
        check_kms(&state),
        check_objects(&state),
        check_directory(&state),
    );
    state.database().observe(&health);
    record_database(&state, &health);
    let readiness = readiness(&state, &health, kms, objects, directory);
    let status = if health.primary_up() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(readiness)).into_response()
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus (OpenMetrics) text.", body = String,
            content_type = "application/openmetrics-text"),
    ),
)]
pub(crate) async fn metrics(State(state): State<NodeState>) -> Response {
    record_pools(&state);
    record_audit(&state);
    (
        [(header::CONTENT_TYPE, telemetry::OPENMETRICS_CONTENT_TYPE)],
        state.metrics().encode(),
    )
        .into_response()
}

/// The audit check: `backlogged` (and the node `degraded`) over 80% of the capacity.
fn audit_check(mode: &str, backlog: usize, capacity: usize) -> AuditCheck {
    let backlogged = capacity > 0 && backlog.saturating_mul(5) > capacity.saturating_mul(4);
    AuditCheck {
        status: if backlogged { "backlogged" } else { "up" }.into(),
        mode: mode.into(),
        backlog: backlog as u64,
        capacity: capacity as u64,
    }
}

async fn check_kms(state: &NodeState) -> ComponentCheck {
    let kms = state.kms();
    let result = tokio::time::timeout(PROBE_TIMEOUT, kms.check()).await;
    let reason = match result {
        Ok(Ok(())) => None,
        Ok(Err(envelope::kms::KmsError::KeyUnusable { .. })) => Some("key_unusable"),
        Ok(Err(envelope::kms::KmsError::Unavailable(_))) => Some("unavailable"),
        Ok(Err(err)) => {
            tracing::warn!(region = %state.region(), "KMS check failed: {err}");
            Some("error")
        }
        Err(_) => Some("timeout"),
    };
    component(kms.kind().as_str(), kms.key_id(), reason)
}

async fn check_objects(state: &NodeState) -> ComponentCheck {
    let objects = state.objects();
    let reason = match tokio::time::timeout(PROBE_TIMEOUT, objects.check()).await {
        Ok(Ok(())) => None,
        Ok(Err(envelope::objects::ObjectStoreError::Unavailable(_))) => Some("unavailable"),
        Ok(Err(err)) => {
            tracing::warn!(region = %state.region(), "object store check failed: {err}");
            Some("error")
        }
        Err(_) => Some("timeout"),
    };
    component(objects.kind().as_str(), objects.location(), reason)
}

/// The tenant directory, when a router reads one. Down makes the node `degraded`, not
/// `not_ready`: every node of every region shares the one directory, so taking this node
/// out of rotation would help no request, and cached entries and requests already
/// routed here still serve.
async fn check_directory(state: &NodeState) -> Option<ComponentCheck> {
    let directory = state.directory()?;
    let reason = match tokio::time::timeout(PROBE_TIMEOUT, directory.check()).await {
        Ok(Ok(())) => None,
        Ok(Err(reason)) => Some(reason),
        Err(_) => Some("timeout"),
    };
    Some(component(directory.kind(), directory.target(), reason))
}

fn component(kind: &str, target: impl Into<String>, reason: Option<&str>) -> ComponentCheck {
    ComponentCheck {
        status: if reason.is_none() { "up" } else { "down" }.into(),
        kind: kind.into(),
        target: target.into(),
        reason: reason.map(str::to_owned),
    }
}

fn readiness(
    state: &NodeState,
    health: &DatabaseHealth,
    kms: ComponentCheck,
    object_store: ComponentCheck,
    directory: Option<ComponentCheck>,
) -> Readiness {
    let primary = match &health.primary.state {
        Ok(lsn) => PrimaryCheck {
            status: "up".into(),
            address: health.primary.address.clone(),
            wal_lsn: Some(lsn.to_string()),
            reason: None,
        },
        Err(failure) => PrimaryCheck {
            status: "down".into(),
            address: health.primary.address.clone(),
            wal_lsn: None,
            reason: Some(failure.as_str().into()),
        },
    };
    let replicas: Vec<ReplicaCheck> = health
        .replicas
        .iter()
        .map(|replica| match &replica.state {
            ReplicaState::Streaming {
                replay_lsn,
                lag_bytes,
                lag_seconds,
            } => ReplicaCheck {
                name: replica.name.clone(),
                status: "up".into(),
                address: replica.address.clone(),
                replay_lsn: Some(replay_lsn.to_string()),
                lag_bytes: *lag_bytes,
                lag_seconds: Some(*lag_seconds),
                reason: None,
            },
            ReplicaState::Down(failure) => ReplicaCheck {
                name: replica.name.clone(),
                status: "down".into(),
                address: replica.address.clone(),
                replay_lsn: None,
                lag_bytes: None,
                lag_seconds: None,
                reason: Some(failure.as_str().into()),
            },
        })
        .collect();
    let audit = state.audit();
    let audit = audit_check(
        audit.settings().reads.mode(),
        audit.backlog(),
        audit.capacity(),
    );
    let everything_up = replicas.iter().all(|r| r.status == "up")
        && kms.status == "up"
        && object_store.status == "up"
        && directory.as_ref().is_none_or(|d| d.status == "up")
        && audit.status == "up";
    let status = if !health.primary_up() {
        "not_ready"
    } else if everything_up {
        "ready"
    } else {
        "degraded"
    };
    Readiness {
        status: status.into(),
        region: state.region().to_string(),
        checks: ReadinessChecks {
            primary,
            replicas,
            kms,
            object_store,
            directory,
            audit,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_queue_over_80_percent_full_is_backlogged() {
        assert_eq!(audit_check("batched", 0, 10_000).status, "up");
        assert_eq!(audit_check("batched", 8_000, 10_000).status, "up");
        let check = audit_check("batched", 8_001, 10_000);
        assert_eq!(
            (
                check.status.as_str(),
                check.mode.as_str(),
                check.backlog,
                check.capacity
            ),
            ("backlogged", "batched", 8_001, 10_000)
        );
        assert_eq!(
            audit_check("sync", 0, 0).status,
            "up",
            "no queue, no backlog"
        );
    }
}
