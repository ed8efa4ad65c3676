//! Consistency routing: which server answers a read. Replicas are in rotation while the
//! health poller last saw them streaming within the lag bound; a read with a consistency
//! token goes to a replica only once it has replayed up to the token, else to the primary.
//! A read is never served from anywhere that cannot honour its consistency: when nothing
//! can, the answer is [`StoreError::Unavailable`].
//!
//! Under pressure: the health poller owns the rotation. Request traffic takes a replica
//! out only when it cannot connect to it at all (refused, TLS or login failure, connect
//! timeout), which is evidence about the server; a busy replica (a pool wait timeout)
//! sends that one read to the primary and stays in rotation. Reads waiting for a replica
//! to replay up to their token are bounded (`max_token_waits`); beyond the bound a read
//! goes to the primary at once. A read whose connection dies mid-request is run once more
//! elsewhere ([`RegionDatabase::read`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::{PoolError, TimeoutType};
use model::Lsn;
use tokio_postgres::SimpleQueryMessage;

use crate::health::{DatabaseHealth, ReplicaState};
use crate::scoped::{Reader, ServedBy};
use crate::{DatabaseSettings, RegionDatabase, Replica, StoreError};

/// What a read must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Everything committed at or before this primary LSN (a consistency token).
    AtLeast(Lsn),
    /// Anything no staler than the configured replica lag bound.
    Bounded,
    /// The primary's view, e.g. for a token this region cannot compare (one issued by
    /// another region before a relocation).
    Latest,
    /// The primary's view while it is up; without a primary, a replica in rotation (for
    /// metadata, which must see the latest writes but stay readable in an outage).
    PrimaryFirst,
}

/// How often a token read re-checks a replica's replay position while it waits.
const TOKEN_POLL: Duration = Duration::from_millis(5);

/// What the router knows of one replica. Atomics: read on every request, written by the
/// health poller and by token reads, never behind a lock.
#[derive(Debug)]
struct ReplicaSlot {
    /// Last observed healthy and within the lag bound (and no failed connect since).
    healthy: AtomicBool,
    /// The last lag judgement: within the bound when last measured.
    within_bound: AtomicBool,
    /// When that was observed: milliseconds since `Routing::epoch`, plus one (0 = never).
    observed_at: AtomicU64,
    /// The newest replay LSN known for this replica.
    replay_lsn: AtomicU64,
}

/// Routing state of a region's replicas, shared by every clone of a [`RegionDatabase`].
#[derive(Debug)]
pub(crate) struct Routing {
    replicas: Box<[ReplicaSlot]>,
    /// Round-robin position among replicas in rotation.
    next: AtomicUsize,
    epoch: Instant,
    max_lag: Duration,
    max_lag_bytes: Option<u64>,
    token_wait: Duration,
    /// Permits to wait for a replica to replay up to a token (`max_token_waits`).
    token_waits: tokio::sync::Semaphore,
    /// Reads run a second time because their connection died (for metrics and tests).
    retried_reads: AtomicU64,
}

impl Routing {
    pub(crate) fn new(replicas: usize, settings: &DatabaseSettings) -> Self {
        Self {
            // Out of rotation until observed: an unobserved replica's lag is unknown.
            replicas: (0..replicas)
                .map(|_| ReplicaSlot {
                    healthy: AtomicBool::new(false),
                    within_bound: AtomicBool::new(false),
                    observed_at: AtomicU64::new(0),
                    replay_lsn: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            max_lag: settings.max_replica_lag,
            max_lag_bytes: settings.max_replica_lag_bytes,
            token_wait: settings.token_wait,
            token_waits: tokio::sync::Semaphore::new(settings.max_token_waits),
            retried_reads: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn in_rotation(&self, index: usize) -> bool {
        let slot = &self.replicas[index];
        if !slot.healthy.load(Ordering::Acquire) {
            return false;
        }
        // An old observation proves nothing about today's lag (a stuck poller).
        let observed = slot.observed_at.load(Ordering::Acquire);
        let max_age = u64::try_from(self.max_lag.as_millis()).unwrap_or(u64::MAX);
        observed != 0 && self.now_ms().saturating_sub(observed - 1) <= max_age
    }

    fn take_out(&self, index: usize) {
        self.replicas[index].healthy.store(false, Ordering::Release);
    }

    fn known_lsn(&self, index: usize) -> Lsn {
        Lsn(self.replicas[index].replay_lsn.load(Ordering::Acquire))
    }

    fn saw_lsn(&self, index: usize, lsn: Lsn) {
        self.replicas[index]
            .replay_lsn
            .fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// Replicas in rotation, starting at the round-robin position.
    fn rotation_order(&self) -> Vec<usize> {
        let count = self.replicas.len();
        if count == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|offset| (start + offset) % count)
            .filter(|&index| self.in_rotation(index))
            .collect()
    }

    /// Judges one replica report; returns whether the replica is now in rotation.
    fn judge(&self, slot: &ReplicaSlot, state: &ReplicaState) -> bool {
        let within = match state {
            ReplicaState::Down(_) => false,
            ReplicaState::Streaming {
                lag_bytes: Some(lag_bytes),
                lag_seconds,
                ..
            } => {
                *lag_seconds <= self.max_lag.as_secs_f64()
                    && self.max_lag_bytes.is_none_or(|max| *lag_bytes <= max)
            }
            // The primary is unreachable, so the replica's lag cannot be measured, and
            // the age of its last replayed transaction grows without anything being
            // missed: nothing commits without a primary. Keep the judgement made while
            // the primary was up; without one, fall back to that age.
            ReplicaState::Streaming {
                lag_bytes: None,
                lag_seconds,
                ..
            } => {
                slot.within_bound.load(Ordering::Acquire)
                    || *lag_seconds <= self.max_lag.as_secs_f64()
            }
        };
        slot.within_bound.store(within, Ordering::Release);
        within
    }
}

impl RegionDatabase {
    /// Updates the rotation from a health report (the node's poller calls this every
    /// second): a replica serves bounded reads while it streams within the lag bound.
    /// While the primary is unreachable, a replica keeps the judgement made when it was
    /// last measured against the primary (see `Routing::judge`).
    pub fn observe(&self, health: &DatabaseHealth) {
        let now = self.routing.now_ms();
        for (index, pool) in self.replicas.iter().enumerate() {
            let Some(report) = health.replicas.iter().find(|r| r.name == pool.name()) else {
                continue;
            };
            let slot = &self.routing.replicas[index];
            if let ReplicaState::Streaming { replay_lsn, .. } = &report.state {
                // The probe's answer is authoritative (a rebuilt replica can go back).
                slot.replay_lsn.store(replay_lsn.0, Ordering::Release);
            }
            let healthy = self.routing.judge(slot, &report.state);
            if healthy != slot.healthy.load(Ordering::Acquire) {
                tracing::info!(
                    region = %self.region(),
                    replica = pool.name(),
                    in_rotation = healthy,
                    "replica rotation changed"
                );
            }
            slot.observed_at.store(now + 1, Ordering::Release);
            slot.healthy.store(healthy, Ordering::Release);
        }
    }

    /// Each replica's name and whether it serves bounded reads now, for metrics.
    pub fn rotation(&self) -> Vec<(String, bool)> {
        self.replicas
            .iter()
            .enumerate()
            .map(|(index, pool)| (pool.name().to_owned(), self.routing.in_rotation(index)))
            .collect()
    }

    /// A connection that can serve a read of `consistency`. Prefer
    /// [`RegionDatabase::read`], which also retries a read whose connection died.
    pub async fn reader(&self, consistency: ReadConsistency) -> Result<Reader, StoreError> {
        self.route(consistency, None, true).await
    }

    /// Runs `read` on a connection that can serve `consistency`, and answers which kind
    /// of server served it. When the connection dies under it (the server went away, its
    /// session was killed, or a replica cancelled it for a recovery conflict), `read` runs
    /// once more elsewhere: on another server where one can serve the read (never on the
    /// replica that failed), without waiting for a token a second time. Reads only: the
    /// reader's transactions are read-only, and a write must never run twice.
    ///
    /// `read` takes the reader and hands it back with its result (an owned reader keeps
    /// the future free of higher-ranked borrows, which handlers need to be `Send`):
    /// `|mut reader| async move { let rows = get(&mut reader).await; (reader, rows) }`.
    pub async fn read<T, F, Fut>(
        &self,
        consistency: ReadConsistency,
        read: F,
    ) -> Result<(T, ServedBy), StoreError>
    where
        F: Fn(Reader) -> Fut,
        Fut: Future<Output = (Reader, Result<T, StoreError>)>,
    {
        let reader = self.route(consistency, None, true).await?;
        let (reader, err) = match read(reader).await {
            (reader, Ok(value)) => return Ok((value, reader.served_by())),
            (reader, Err(err)) if worth_another_server(&err, reader.served_by()) => (reader, err),
            (_, Err(err)) => return Err(err),
        };
        let failed = reader.replica_index();
        tracing::info!(
            region = %self.region(),
            served_by = reader.served_by().as_str(),
            "a read lost its connection; running it once more elsewhere: {err}"
        );
        reader.discard();
        self.routing.retried_reads.fetch_add(1, Ordering::Relaxed);
        let retry = self.route(consistency, failed, false).await?;
        let (retry, value) = read(retry).await;
        Ok((value?, retry.served_by()))
    }

    /// How many reads have run a second time because their connection died.
    pub fn retried_reads(&self) -> u64 {
        self.routing.retried_reads.load(Ordering::Relaxed)
    }

    /// A connection for `consistency`, never on replica `avoid`; `may_wait` lets a token
    /// read wait for a replica to replay up to it.
    async fn route(
        &self,
        consistency: ReadConsistency,
        avoid: Option<usize>,
        may_wait: bool,
    ) -> Result<Reader, StoreError> {
        match consistency {
            ReadConsistency::Bounded => self.bounded_reader(avoid).await,
            ReadConsistency::AtLeast(lsn) => self.reader_at_least(lsn, avoid, may_wait).await,
            ReadConsistency::Latest => Ok(Reader::Primary(self.primary.get().await?)),
            ReadConsistency::PrimaryFirst => match self.primary.get().await {
                Ok(primary) => Ok(Reader::Primary(primary)),
                Err(StoreError::Unavailable(_)) => self.bounded_reader(avoid).await,
                Err(other) => Err(other),
            },
        }
    }

    /// Replicas in rotation (round robin), without `avoid`.
    fn candidates(&self, avoid: Option<usize>) -> Vec<usize> {
        let mut order = self.routing.rotation_order();
        order.retain(|&index| Some(index) != avoid);
        order
    }

    /// A replica in rotation (round robin), else the primary.
    async fn bounded_reader(&self, avoid: Option<usize>) -> Result<Reader, StoreError> {
        for index in self.candidates(avoid) {
            if let Some(replica) = self.replica_connection(index).await {
                return Ok(Reader::Replica(replica));
            }
        }
        Ok(Reader::Primary(self.primary.get().await?))
    }

    /// A replica known or seen to have replayed `lsn`, else the primary; without a
    /// primary, any replica that has caught up.
    async fn reader_at_least(
        &self,
        lsn: Lsn,
        avoid: Option<usize>,
        may_wait: bool,
    ) -> Result<Reader, StoreError> {
        let order = self.candidates(avoid);
        for &index in &order {
            if self.routing.known_lsn(index) >= lsn
                && let Some(replica) = self.replica_connection(index).await
            {
                return Ok(Reader::Replica(replica));
            }
        }
        if may_wait && let Some(replica) = self.wait_for_a_replica(&order, lsn).await {
            return Ok(Reader::Replica(replica));
        }
        match self.primary.get().await {
            Ok(primary) => Ok(Reader::Primary(primary)),
            Err(primary_err) => {
                for index in (0..self.replicas.len()).filter(|&index| Some(index) != avoid) {
                    let Ok(replica) = self.replicas[index].get().await else {
                        continue;
                    };
                    if self
                        .wait_for_replay(index, &replica, lsn, Instant::now())
                        .await
                    {
                        return Ok(Reader::Replica(replica));
                    }
                }
                Err(primary_err)
            }
        }
    }

    /// Usually the replica is a few milliseconds behind a fresh write: look once, then
    /// wait a little for it rather than load the primary. Waiting holds a replica
    /// connection, so only `max_token_waits` reads wait at once; the rest go to the
    /// primary at once.
    async fn wait_for_a_replica(&self, order: &[usize], lsn: Lsn) -> Option<Replica> {
        let deadline = Instant::now() + self.routing.token_wait;
        for &index in order {
            if !self.routing.in_rotation(index) {
                continue; // taken out just now by a failed connection attempt
            }
            let Some(replica) = self.replica_connection(index).await else {
                continue;
            };
            if self
                .wait_for_replay(index, &replica, lsn, Instant::now())
                .await
            {
                return Some(replica);
            }
            let Ok(_permit) = self.routing.token_waits.try_acquire() else {
                tracing::debug!(
                    region = %self.region(),
                    "token waits at their bound: the read goes to the primary"
                );
                return None;
            };
            if self.wait_for_replay(index, &replica, lsn, deadline).await {
                return Some(replica);
            }
            return None;
        }
        None
    }

    /// A connection to replica `index`, or `None` when it cannot give one now. Only a
    /// failed connect (the server refused, failed TLS or the login, or did not answer
    /// within the connect timeout) takes the replica out of rotation, until the health
    /// poller sees it healthy again; a pool wait timeout means the replica is busy, which
    /// sends this read elsewhere and nothing more.
    async fn replica_connection(&self, index: usize) -> Option<Replica> {
        let pool = &self.replicas[index];
        match pool.checkout().await {
            Ok(replica) => Some(replica),
            Err(PoolError::Timeout(TimeoutType::Wait)) => {
                tracing::debug!(
                    region = %self.region(),
                    replica = pool.name(),
                    "replica pool busy: this read goes elsewhere"
                );
                None
            }
            Err(err @ (PoolError::Backend(_) | PoolError::Timeout(TimeoutType::Create))) => {
                self.routing.take_out(index);
                tracing::warn!(
                    region = %self.region(),
                    replica = pool.name(),
                    "replica out of rotation: failed to connect: {}",
                    StoreError::from(err)
                );
                None
            }
            Err(other) => {
                tracing::debug!(
                    region = %self.region(),
                    replica = pool.name(),
                    "no replica connection: {other}"
                );
                None
            }
        }
    }

    /// Polls `replica`'s replay position until it reaches `lsn` (true) or `deadline`
    /// passes (false); checks at least once.
    async fn wait_for_replay(
        &self,
        index: usize,
        replica: &Replica,
        lsn: Lsn,
        deadline: Instant,
    ) -> bool {
        loop {
            match replay_lsn(replica).await {
                Ok(Some(replayed)) => {
                    self.routing.saw_lsn(index, replayed);
                    if replayed >= lsn {
                        return true;
                    }
                }
                // Promoted (no replay position) or failing: not a place for this read.
                Ok(None) => return false,
                Err(err) => {
                    tracing::debug!(
                        replica = self.replicas[index].name(),
                        "failed to read the replay position: {err}"
                    );
                    return false;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            tokio::time::sleep(TOKEN_POLL.min(deadline - now)).await;
        }
    }
}

/// Whether a failed read may succeed on another server: its connection was lost (the
/// server went away or killed the session), or a replica cancelled it because replay
/// needed what it was reading (a recovery conflict, SQLSTATE 40001 on a standby).
fn worth_another_server(err: &StoreError, served_by: ServedBy) -> bool {
    match err {
        StoreError::Unavailable(_) => true,
        StoreError::SerializationFailure => served_by == ServedBy::Replica,
        _ => false,
    }
}

/// The replica's last replayed WAL position (`None` when it is not in recovery).
async fn replay_lsn(replica: &Replica) -> Result<Option<Lsn>, StoreError> {
    let messages = replica
        .simple_query("select pg_last_wal_replay_lsn()::text")
        .await?;
    let raw = messages.iter().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some(row.get(0)),
        _ => None,
    });
    match raw.flatten() {
        None => Ok(None),
        Some(raw) => Lsn::parse(raw)
            .map(Some)
            .map_err(|_| StoreError::Corrupt("replica replay lsn".into())),
    }
}
