//! The poller that keeps the database, pool and audit gauges current between scrapes,
//! the gauges themselves (also recorded by `GET /readyz` and `GET /metrics`), and the
//! tenant directory probe `GET /readyz` reports.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use store::{DatabaseHealth, ReplicaState};
use tokio::task::JoinHandle;

use crate::{NodeState, PROBE_TIMEOUT};

/// The deployment's tenant directory as `GET /readyz` reports it. The router in front of
/// the node is what reads the directory; the binary hands its backend in here, so that
/// the API needs no link to the router.
#[async_trait]
pub trait DirectoryProbe: Send + Sync + fmt::Debug {
    /// The backend: `postgres` or `memory`.
    fn kind(&self) -> &'static str;

    /// Where it is (`host:port/database`), never credentials.
    fn target(&self) -> String;

    /// `Err` with a short class of why (`unavailable`, `error`) when it does not answer.
    async fn check(&self) -> Result<(), &'static str>;
}

/// Probes the databases every `interval` so that lag and up gauges stay fresh.
/// Abort the handle to stop it.
pub fn spawn_health_poller(state: NodeState, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut primary_was_up = true;
        loop {
            ticker.tick().await;
            let health = state.database().health(PROBE_TIMEOUT).await;
            if health.primary_up() != primary_was_up {
                primary_was_up = health.primary_up();
                if primary_was_up {
                    tracing::info!(region = %state.region(), "primary is back");
                } else {
                    tracing::warn!(region = %state.region(), "primary is down; writes fail closed");
                }
            }
            state.database().observe(&health);
            record_database(&state, &health);
            record_pools(&state);
            record_audit(&state);
        }
    })
}

/// The primary's and replicas' gauges, from a probe of the databases.
pub(crate) fn record_database(state: &NodeState, health: &DatabaseHealth) {
    let metrics = state.metrics();
    metrics.set_primary_up(health.primary_up());
    for replica in &health.replicas {
        match &replica.state {
            ReplicaState::Streaming {
                lag_bytes,
                lag_seconds,
                ..
            } => {
                metrics.set_replica(&replica.name, true, *lag_bytes, Some(*lag_seconds));
            }
            ReplicaState::Down(_) => metrics.set_replica(&replica.name, false, None, None),
        }
    }
}

/// The connection pools' gauges.
pub(crate) fn record_pools(state: &NodeState) {
    for pool in state.database().pool_stats() {
        state
            .metrics()
            .set_pool(&pool.name, pool.max, pool.open, pool.idle, pool.waiting);
    }
}

/// The audit queue's backlog gauge.
pub(crate) fn record_audit(state: &NodeState) {
    let audit = state.audit();
    state
        .metrics()
        .set_audit_backlog(audit.backlog(), audit.capacity());
}
