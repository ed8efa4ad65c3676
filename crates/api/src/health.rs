//! The health poller and the snapshot `GET /readyz` answers from. Every interval the
//! poller probes the primary, the replicas (with lag), the KMS, the object store and the
//! tenant directory, feeds replica rotation from those probes, keeps the gauges current
//! and publishes one immutable [`HealthSnapshot`]. A request never probes anything: a
//! flood of `/readyz` costs no dependency a call, and no request's fate moves a replica
//! in or out of rotation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::StatusCode;
use model::RegionId;
use store::{DatabaseHealth, ReplicaState};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use wire::{AuditCheck, ComponentCheck, PrimaryCheck, Readiness, ReadinessChecks, ReplicaCheck};

use crate::{NodeParts, NodeState, PROBE_TIMEOUT};

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

/// Who may read `GET /metrics` on the node's main listener. The operations listener, when
/// the node has one, always serves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Anyone who reaches the listener.
    Public,
    /// Only a caller presenting the operator token (`Authorization: Bearer …`); anyone
    /// else gets 401. The production default: series counts, error rates and pool
    /// pressure tell an attacker how an attack is going, and a scraper can send a token.
    #[default]
    OperatorToken,
    /// Nobody on the main listener (404, as for any path it does not serve); scrape the
    /// operations listener.
    OperationsListener,
}

/// How often the poller probes unless told otherwise.
pub const DEFAULT_HEALTH_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The longest one round can take: the primary's probe, then the replicas' (the KMS,
/// object store and directory are probed meanwhile), each bounded by [`PROBE_TIMEOUT`].
const LONGEST_ROUND: Duration = PROBE_TIMEOUT.saturating_mul(2);

/// How the health poller runs.
#[derive(Debug, Clone, Copy)]
pub struct HealthPolling {
    /// Time between the starts of two rounds (a round that overruns delays the next).
    pub interval: Duration,
}

impl Default for HealthPolling {
    fn default() -> Self {
        Self {
            interval: DEFAULT_HEALTH_POLL_INTERVAL,
        }
    }
}

impl HealthPolling {
    /// How long a snapshot stands for the node's health: two rounds, each as late and as
    /// long as a round may be. Past it the poller is stuck and `/readyz` answers 503.
    pub fn stale_after(&self) -> Duration {
        self.interval
            .saturating_add(LONGEST_ROUND)
            .saturating_mul(2)
    }

    /// Polls every `interval`, the first round at once. Abort the handle to stop it.
    pub fn spawn(self, state: NodeState) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut primary_was_up = true;
            loop {
                ticker.tick().await;
                self.poll_once(&state).await;
                let primary_up = state.health().latest().primary_up;
                if primary_up != primary_was_up {
                    primary_was_up = primary_up;
                    if primary_up {
                        tracing::info!(region = %state.region(), "primary is back");
                    } else {
                        tracing::warn!(region = %state.region(), "primary is down; writes fail closed");
                    }
                }
            }
        })
    }

    /// One round: probes every dependency, puts replicas in or out of rotation by what
    /// the probes saw, records the gauges and publishes the snapshot `/readyz` reads.
    pub async fn poll_once(&self, state: &NodeState) {
        let started = Instant::now();
        let (health, kms, objects, directory, jobs) = tokio::join!(
            state.database().health(PROBE_TIMEOUT),
            check_kms(state),
            check_objects(state),
            check_directory(state),
            running_jobs(state),
        );
        state.database().observe(&health);
        record_database(state, &health);
        record_pools(state);
        record_audit(state);
        let mut readiness = readiness(state, &health, kms, objects, directory);
        readiness.jobs = jobs;
        state.health().publish(HealthSnapshot {
            taken_at: Some(started),
            fresh_until: started + self.stale_after(),
            public: readiness.public(),
            detailed: readiness,
            primary_up: health.primary_up(),
        });
    }
}

/// Probes the node's dependencies every `interval` (see [`HealthPolling`]).
pub fn spawn_health_poller(state: NodeState, interval: Duration) -> JoinHandle<()> {
    HealthPolling { interval }.spawn(state)
}

/// What the poller last saw. Immutable: each round replaces it whole.
#[derive(Debug)]
pub(crate) struct HealthSnapshot {
    /// When the round that took it began; `None` before the first round.
    taken_at: Option<Instant>,
    /// Until when it stands for the node's health.
    fresh_until: Instant,
    detailed: Readiness,
    public: Readiness,
    primary_up: bool,
}

/// Which form of `/readyz` a caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadinessForm {
    /// Per dependency up or down, nothing more.
    Public,
    /// Addresses, WAL positions, lags, reasons and the audit backlog too.
    Detailed,
}

impl HealthSnapshot {
    /// The snapshot of a node no round has probed yet: nothing is known to be up.
    fn starting(region: &RegionId, parts: &NodeParts) -> Self {
        let not_probed = || Some("not_probed".to_owned());
        let component = |kind: &str, target: String| ComponentCheck {
            status: "down".into(),
            kind: Some(kind.into()),
            target: Some(target),
            reason: not_probed(),
        };
        let database = &parts.database;
        let detailed = Readiness {
            status: "not_ready".into(),
            region: region.to_string(),
            checks: ReadinessChecks {
                primary: PrimaryCheck {
                    status: "down".into(),
                    address: Some(database.primary().address()),
                    wal_lsn: None,
                    reason: not_probed(),
                },
                replicas: database
                    .replicas()
                    .iter()
                    .map(|replica| ReplicaCheck {
                        name: replica.name().to_owned(),
                        status: "down".into(),
                        address: Some(replica.address()),
                        replay_lsn: None,
                        lag_bytes: None,
                        lag_seconds: None,
                        reason: not_probed(),
                    })
                    .collect(),
                kms: component(parts.kms.kind().as_str(), parts.kms.key_id()),
                object_store: component(parts.objects.kind().as_str(), parts.objects.location()),
                directory: parts
                    .directory
                    .as_ref()
                    .map(|directory| component(directory.kind(), directory.target())),
                audit: current_audit_check(&parts.audit),
            },
            reason: None,
            age_seconds: None,
            jobs: None,
        };
        let now = Instant::now();
        Self {
            taken_at: None,
            fresh_until: now,
            public: detailed.public(),
            detailed,
            primary_up: false,
        }
    }

    /// The answer to `/readyz` at `now`: 503 while the primary is down, before the first
    /// round (`starting`) and once the snapshot is older than it may be (`stale`).
    pub(crate) fn answer(&self, now: Instant, form: ReadinessForm) -> (StatusCode, Readiness) {
        let mut readiness = match form {
            ReadinessForm::Public => self.public.clone(),
            ReadinessForm::Detailed => self.detailed.clone(),
        };
        readiness.age_seconds = self
            .taken_at
            .map(|taken| now.saturating_duration_since(taken).as_secs_f64());
        let unknown = if self.taken_at.is_none() {
            Some("starting")
        } else if now > self.fresh_until {
            Some("stale")
        } else {
            None
        };
        if let Some(reason) = unknown {
            readiness.status = "not_ready".into();
            readiness.reason = Some(reason.into());
        }
        let status = if self.primary_up && unknown.is_none() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, readiness)
    }
}

/// Holds the latest snapshot: the poller publishes, requests read (no I/O, no lock held
/// across an await).
#[derive(Debug)]
pub(crate) struct HealthBoard {
    latest: watch::Sender<Arc<HealthSnapshot>>,
    /// Raised once the node begins to stop: `/readyz` answers 503 (`draining`) from then
    /// on, whatever the snapshot says, so the load balancer takes the node out of rotation
    /// while it still serves.
    draining: std::sync::atomic::AtomicBool,
}

impl HealthBoard {
    /// A board holding the snapshot of a node not probed yet.
    pub(crate) fn new(region: &RegionId, parts: &NodeParts) -> Self {
        Self {
            latest: watch::Sender::new(Arc::new(HealthSnapshot::starting(region, parts))),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// From now on `/readyz` answers 503 with reason `draining`.
    pub(crate) fn start_draining(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The answer to `/readyz` at `now`: the latest snapshot's, or 503 `draining` once the
    /// node began to stop.
    pub(crate) fn answer(&self, now: Instant, form: ReadinessForm) -> (StatusCode, Readiness) {
        let (status, mut readiness) = self.latest().answer(now, form);
        if self.draining.load(std::sync::atomic::Ordering::Acquire) {
            readiness.status = "not_ready".into();
            readiness.reason = Some("draining".into());
            return (StatusCode::SERVICE_UNAVAILABLE, readiness);
        }
        (status, readiness)
    }

    pub(crate) fn latest(&self) -> Arc<HealthSnapshot> {
        Arc::clone(&self.latest.borrow())
    }

    fn publish(&self, snapshot: HealthSnapshot) {
        self.latest.send_replace(Arc::new(snapshot));
    }

    /// Resolves once a snapshot taken at or after `since` is published.
    pub(crate) async fn checked_since(&self, since: Instant) {
        let mut updates = self.latest.subscribe();
        // The sender lives as long as `self`: waiting cannot fail while it is borrowed.
        let _ = updates
            .wait_for(|snapshot| snapshot.taken_at.is_some_and(|taken| taken >= since))
            .await;
    }
}

/// The primary's and replicas' gauges, from a probe of the databases.
fn record_database(state: &NodeState, health: &DatabaseHealth) {
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

/// The connection pools' gauges (in-process counters, no I/O).
pub(crate) fn record_pools(state: &NodeState) {
    for pool in state.database().pool_stats() {
        state
            .metrics()
            .set_pool(&pool.name, pool.max, pool.open, pool.idle, pool.waiting);
    }
    state
        .metrics()
        .set_reads_retried(state.database().retried_reads());
}

/// The audit queue's backlog gauge (in-process counters, no I/O).
pub(crate) fn record_audit(state: &NodeState) {
    let audit = state.audit();
    state
        .metrics()
        .set_audit_backlog(audit.backlog(), audit.capacity());
}

/// The audit check: `backlogged` (and the node `degraded`) over 80% of the capacity.
fn audit_check(mode: &str, backlog: usize, capacity: usize) -> AuditCheck {
    let backlogged = capacity > 0 && backlog.saturating_mul(5) > capacity.saturating_mul(4);
    AuditCheck {
        status: if backlogged { "backlogged" } else { "up" }.into(),
        mode: Some(mode.into()),
        backlog: Some(backlog as u64),
        capacity: Some(capacity as u64),
    }
}

fn current_audit_check(audit: &service::AuditLog) -> AuditCheck {
    audit_check(
        audit.settings().reads.mode(),
        audit.backlog(),
        audit.capacity(),
    )
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
        kind: Some(kind.into()),
        target: Some(target.into()),
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
            address: Some(health.primary.address.clone()),
            wal_lsn: Some(lsn.to_string()),
            reason: None,
        },
        Err(failure) => PrimaryCheck {
            status: "down".into(),
            address: Some(health.primary.address.clone()),
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
                address: Some(replica.address.clone()),
                replay_lsn: Some(replay_lsn.to_string()),
                lag_bytes: *lag_bytes,
                lag_seconds: Some(*lag_seconds),
                reason: None,
            },
            ReplicaState::Down(failure) => ReplicaCheck {
                name: replica.name.clone(),
                status: "down".into(),
                address: Some(replica.address.clone()),
                replay_lsn: None,
                lag_bytes: None,
                lag_seconds: None,
                reason: Some(failure.as_str().into()),
            },
        })
        .collect();
    let audit = current_audit_check(state.audit());
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
        reason: None,
        age_seconds: None,
        jobs: None,
    }
}

/// Running jobs `/readyz` shows operators: the region's, read from the primary.
const RUNNING_JOBS_SHOWN: u32 = 20;

/// The region's running jobs, newest first; `None` when the primary does not answer
/// within [`PROBE_TIMEOUT`] (its own check says why).
async fn running_jobs(state: &NodeState) -> Option<Vec<wire::jobs::JobView>> {
    let read = async {
        let primary = state.database().primary().get().await?;
        let filter = store::jobs::JobFilter {
            state: Some(store::jobs::JobState::Running),
            ..store::jobs::JobFilter::default()
        };
        store::jobs::list(&primary, &filter, RUNNING_JOBS_SHOWN).await
    };
    match tokio::time::timeout(PROBE_TIMEOUT, read).await {
        Ok(Ok(jobs)) => Some(jobs.iter().map(crate::handlers::jobs::job_view).collect()),
        Ok(Err(_)) | Err(_) => None,
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
                check.mode.as_deref(),
                check.backlog,
                check.capacity
            ),
            ("backlogged", Some("batched"), Some(8_001), Some(10_000))
        );
        assert_eq!(
            audit_check("sync", 0, 0).status,
            "up",
            "no queue, no backlog"
        );
    }

    #[test]
    fn a_snapshot_stands_for_two_of_the_longest_rounds() {
        let polling = HealthPolling {
            interval: Duration::from_secs(1),
        };
        assert_eq!(polling.stale_after(), Duration::from_secs(10));
        assert!(HealthPolling::default().stale_after() > LONGEST_ROUND);
    }
}
