//! The region's audit log as use cases see it: append an event inside the caller's
//! transaction (so the change and its event commit or roll back together), record events
//! that belong to no data transaction (reads, denials, exports) synchronously or through
//! a bounded queue, read events, sign checkpoints of chain heads that moved, and export a
//! tenant's signed bundle.

use std::sync::{Arc, Once, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use audit::{
    Action, Actor, ActorKind, BundleWriter, Event, Hash, Head, NewEvent, Outcome, PublicKey,
    SigningKey,
};
use model::{RegionId, TenantId};
use store::audit::{self as rows, AuditRow, CheckpointRow, EventFilter};
use store::{PrimaryTx, RegionDatabase, StoreError};
use telemetry::NodeMetrics;

use crate::audit_keys::AuditKeys;
use crate::audit_queue::{Budget, Queue, QueueSettings, Refused};
use crate::audit_signing::SigningKeys;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The event names another region: a node records only its own region's events.
    #[error("event for region {event}, but this node keeps region {node}'s audit log")]
    WrongRegion { event: RegionId, node: RegionId },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bundle(#[from] audit::BundleError),
    #[error("stored audit event is corrupt: {0}")]
    Corrupt(String),
    /// The queue of batched events is full: the caller must fail the operation (503)
    /// rather than perform it unaudited.
    #[error("the audit queue is full ({capacity} events waiting to be written)")]
    Backlogged { capacity: usize },
    /// The log was shut down; it accepts no more events.
    #[error("the audit log is shut down")]
    Closed,
    /// Events accepted earlier were never written: the log was shut down while the
    /// primary failed.
    #[error("{events} audit events were not written before the log shut down")]
    Unwritten { events: u64 },
    /// A flush did not finish in time; the events stay queued.
    #[error("{backlog} audit events still waiting to be written after {waited:?}")]
    FlushTimeout { backlog: usize, waited: Duration },
    /// An event the database cannot store (a NUL character in a text field).
    #[error("audit event field {field} contains a NUL character")]
    Invalid { field: &'static str },
    /// The region's audit bucket failed while anchoring checkpoints.
    #[error("the audit bucket: {0}")]
    Bucket(envelope::objects::ObjectStoreError),
}

/// How events outside a data transaction (reads, denials, exports) are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAudit {
    /// In a transaction of their own on the primary, before `record` returns.
    Sync,
    /// Into a bounded queue that one writer task drains, a batch per transaction.
    /// `record` returns once the event is queued, and fails with
    /// [`AuditError::Backlogged`] when `capacity` events are waiting. Denials
    /// ([`AuditLog::record_denial`]) have a budget of their own beside it, a quarter of
    /// `capacity` (at least 1), so that they never take a read's place.
    Batched {
        capacity: usize,
        /// Events written per transaction at most.
        max_batch: usize,
        /// How long the writer waits for a batch to fill before writing what it has.
        flush_interval: Duration,
    },
}

impl ReadAudit {
    /// `Batched`: 10 000 events, 256 per transaction, 20 ms.
    pub const DEFAULT_BATCHED: Self = Self::batched(10_000);

    /// `Batched` with room for `capacity` events, 256 per transaction, 20 ms.
    pub const fn batched(capacity: usize) -> Self {
        Self::Batched {
            capacity,
            max_batch: 256,
            flush_interval: Duration::from_millis(20),
        }
    }

    /// `sync` or `batched`, for metrics and readiness.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Batched { .. } => "batched",
        }
    }
}

impl Default for ReadAudit {
    fn default() -> Self {
        Self::DEFAULT_BATCHED
    }
}

/// How a node runs its audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub reads: ReadAudit,
    /// How often the node signs the chain heads that moved (see
    /// [`AuditLog::spawn_checkpoints`]).
    pub checkpoint_interval: Duration,
    /// Heads signed per transaction.
    pub checkpoint_batch: i64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            reads: ReadAudit::default(),
            checkpoint_interval: Duration::from_secs(60),
            checkpoint_batch: 1000,
        }
    }
}

/// The audit log of one region. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) core: Arc<Core>,
    /// Replaced whole when the region's key rotates (see [`AuditLog::install_keys`]).
    keys: RwLock<Arc<SigningKeys>>,
    settings: AuditSettings,
    /// The queue of batched events; `None` in `ReadAudit::Sync` mode.
    queue: Option<Arc<Queue>>,
    /// Starts the queue's writer with the first queued event, on the caller's runtime.
    writer: Once,
}

/// What the queue's writer shares with the log: it must not hold the log itself, so that
/// dropping the last `AuditLog` closes the queue and lets the writer finish.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) database: RegionDatabase,
    metrics: Arc<NodeMetrics>,
    /// The head this node last appended per tenant: a guess the database re-checks.
    heads: moka::sync::Cache<TenantId, Head>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(queue) = &self.queue {
            queue.close();
        }
    }
}

/// Tenants whose last head this node remembers.
const HEAD_CACHE_CAPACITY: u64 = 100_000;

/// Events per page read from the database while exporting.
const EXPORT_PAGE: u32 = 1000;

impl AuditLog {
    /// A log with the default settings and metrics of its own (not exported).
    ///
    /// # Panics
    /// When `key` is another region's: the region signs its own log only.
    pub fn new(database: RegionDatabase, key: SigningKey, retired: Vec<PublicKey>) -> Self {
        let metrics = Arc::new(NodeMetrics::new(database.region().as_str()));
        Self::with_settings(
            database,
            AuditKeys::new(key, retired),
            AuditSettings::default(),
            metrics,
        )
    }

    /// The node's log. In `Batched` mode the writer task starts with the first recorded
    /// event and stops once every `AuditLog` clone is dropped (or after
    /// [`AuditLog::shutdown`]) and the queue is written.
    ///
    /// # Panics
    /// When `keys` are another region's: the region signs its own log only.
    pub fn with_settings(
        database: RegionDatabase,
        keys: AuditKeys,
        settings: AuditSettings,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        assert_eq!(
            keys.region(),
            database.region(),
            "the signing key must be the node's region's"
        );
        let queue = match settings.reads {
            ReadAudit::Sync => None,
            ReadAudit::Batched {
                capacity,
                max_batch,
                flush_interval,
            } => Some(Arc::new(Queue::new(QueueSettings {
                capacity,
                denial_capacity: (capacity / 4).max(1),
                max_batch,
                flush_interval,
            }))),
        };
        metrics.set_audit_backlog(0, queue.as_ref().map_or(0, |q| q.capacity()));
        let core = Arc::new(Core {
            database,
            metrics,
            heads: moka::sync::Cache::new(HEAD_CACHE_CAPACITY),
        });
        Self {
            inner: Arc::new(Inner {
                core,
                keys: RwLock::new(Arc::new(SigningKeys::from_key_text(&keys))),
                settings,
                queue,
                writer: Once::new(),
            }),
        }
    }

    pub fn region(&self) -> &RegionId {
        self.inner.core.region()
    }

    pub fn settings(&self) -> &AuditSettings {
        &self.inner.settings
    }

    /// The current and retired public keys, for `GET /v1/audit/keys`.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.signing_keys()
            .published()
            .iter()
            .map(|key| key.public.clone())
            .collect()
    }

    /// The keys this node signs and publishes with now.
    pub fn signing_keys(&self) -> Arc<SigningKeys> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key that signs checkpoints, manifests and residency evidence now. Take it once
    /// per signed statement: a rotation may replace it at any time.
    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.signing_keys().current().clone()
    }

    /// Signs with `keys` from now on (the region's keys, loaded from its database after a
    /// rotation here or on another node).
    ///
    /// # Panics
    /// When `keys` are another region's.
    pub fn install_keys(&self, keys: SigningKeys) {
        assert_eq!(
            keys.region(),
            self.region(),
            "the signing key must be the node's region's"
        );
        let previous = std::mem::replace(
            &mut *self
                .inner
                .keys
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            Arc::new(keys),
        );
        let now = self.signing_keys();
        if previous.current().key_id() != now.current().key_id() {
            tracing::info!(
                region = %self.region(),
                previous = previous.current().key_id(),
                key_id = now.current().key_id(),
                "audit signing key changed"
            );
        }
    }

    /// Links `event` after its tenant's chain head and stores it, inside `tx`. Writers of
    /// one tenant wait for each other on the head; the event exists only if `tx` commits.
    ///
    /// Fast path: link after the head this node last wrote for the tenant; the database
    /// accepts it only if that is still the head (same seq and hash), in one statement.
    /// Otherwise (another node wrote, or that transaction rolled back) lock the head, read
    /// it, and link after it.
    pub async fn append(&self, tx: &PrimaryTx<'_>, event: NewEvent) -> Result<Event, AuditError> {
        self.inner.core.append(tx, event).await
    }

    /// Appends `event` as the last event of its tenant's chain and closes the chain, inside
    /// `tx` (offboarding's `tenant.delete`): from the commit on, every append to it is
    /// refused (`StoreError::AuditChainClosed`), and batched events that reach it are
    /// counted and logged instead (see `docs/audit.md`, "A closed chain").
    pub async fn append_and_close(
        &self,
        tx: &PrimaryTx<'_>,
        event: NewEvent,
    ) -> Result<Event, AuditError> {
        let tenant = event.tenant;
        let linked = self.inner.core.append(tx, event).await?;
        rows::close(tx, &tenant).await?;
        // No head of a closed chain is worth guessing after.
        self.inner.core.heads.invalidate(&tenant);
        Ok(linked)
    }

    /// Links `event` after the locked head of its tenant's chain and stores it, inside
    /// `tx`: the fallback of a write whose guess of the head (see
    /// [`AuditLog::link_after_known_head`]) the database just refused.
    pub async fn append_after_locked_head(
        &self,
        tx: &PrimaryTx<'_>,
        event: NewEvent,
    ) -> Result<Event, AuditError> {
        let core = &self.inner.core;
        core.check_region(&event)?;
        core.append_locked(tx, event).await
    }

    /// `event` linked after the head this node last wrote for its tenant: a guess for a
    /// statement that stores it only if that is still the head, and then calls
    /// [`AuditLog::remember_head`]. `None` when this node knows no head of the tenant.
    pub fn link_after_known_head(&self, event: &NewEvent) -> Result<Option<Event>, AuditError> {
        let core = &self.inner.core;
        core.check_region(event)?;
        Ok(core
            .heads
            .get(&event.tenant)
            .map(|head| audit::next(Some(head), event.clone())))
    }

    /// Notes that `event` went in: its tenant's chain ends with it now.
    pub fn remember_head(&self, event: &Event) {
        self.inner.core.heads.insert(event.tenant, event.head());
    }

    /// Records an event that is part of no data transaction: a read (`record.read`,
    /// `file.get`, `record.search`), a denied attempt, an export. `ReadAudit::Sync`:
    /// durable on the primary when this returns. `ReadAudit::Batched`: queued, durable
    /// within about `flush_interval` while the primary is up (see [`AuditLog::flush`]);
    /// [`AuditError::Backlogged`] at once when the queue is full, so that the caller
    /// fails the operation instead of performing it unaudited.
    pub async fn record(&self, event: NewEvent) -> Result<(), AuditError> {
        self.record_in(Budget::Reads, event).await
    }

    /// Records a denied attempt like [`AuditLog::record`], against the denials' budget of
    /// the queue: when denials fill it, this fails with [`AuditError::Backlogged`] while
    /// reads go on being recorded.
    pub async fn record_denial(&self, event: NewEvent) -> Result<(), AuditError> {
        self.record_in(Budget::Denials, event).await
    }

    pub(crate) fn metrics(&self) -> &NodeMetrics {
        &self.inner.core.metrics
    }

    async fn record_in(&self, budget: Budget, event: NewEvent) -> Result<(), AuditError> {
        self.check(&event)?;
        let Some(queue) = &self.inner.queue else {
            return self.inner.core.record_now(event).await;
        };
        self.inner.writer.call_once(|| {
            tokio::spawn(crate::audit_queue::run_writer(
                self.inner.core.clone(),
                queue.clone(),
            ));
        });
        match queue.push(budget, event) {
            Ok(backlog) => {
                self.inner
                    .core
                    .metrics
                    .set_audit_backlog(backlog, queue.capacity());
                Ok(())
            }
            Err(Refused::Full) => Err(AuditError::Backlogged {
                capacity: queue.capacity(),
            }),
            Err(Refused::Closed) => Err(AuditError::Closed),
        }
    }

    /// Events recorded and not yet durable (always 0 in `Sync` mode).
    pub fn backlog(&self) -> usize {
        self.inner.queue.as_ref().map_or(0, |queue| queue.backlog())
    }

    /// How many events the queue holds before `record` refuses (0 in `Sync` mode).
    pub fn capacity(&self) -> usize {
        self.inner
            .queue
            .as_ref()
            .map_or(0, |queue| queue.capacity())
    }

    /// Waits until every event recorded before this call is durable. While the primary
    /// is down this waits (the writer retries); bound it with a timeout where needed.
    pub async fn flush(&self) -> Result<(), AuditError> {
        match &self.inner.queue {
            Some(queue) => queue.flush().await,
            None => Ok(()),
        }
    }

    /// Stops accepting events (`record` then fails with [`AuditError::Closed`]) and waits
    /// up to `timeout` for the queued ones to be written. After that the writer goes on
    /// writing until its first failure, then gives up on what is left and logs how many
    /// events that is; a timeout's error says how many were waiting.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), AuditError> {
        let Some(queue) = &self.inner.queue else {
            return Ok(());
        };
        let flushed = tokio::time::timeout(timeout, queue.flush()).await;
        queue.close();
        match flushed {
            Ok(result) => result,
            Err(_) => Err(AuditError::FlushTimeout {
                backlog: queue.backlog(),
                waited: timeout,
            }),
        }
    }

    fn check(&self, event: &NewEvent) -> Result<(), AuditError> {
        self.inner.core.check_region(event)?;
        // PostgreSQL text cannot hold NUL: such an event would fail its batch forever.
        for (field, value) in [
            ("actor.id", &event.actor.id),
            ("resource", &event.resource),
            ("request_id", &event.request_id),
        ] {
            if value.contains('\0') {
                return Err(AuditError::Invalid { field });
            }
        }
        Ok(())
    }

    /// Events of `tenant` matching `filter`, in seq order (from the primary).
    pub async fn events(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
    ) -> Result<Vec<Event>, AuditError> {
        // In the tenant's scope: the node's own role may append to any chain (the batched
        // writer) but reads a tenant's events only as that tenant.
        let mut primary = self.inner.core.database.primary().get().await?;
        let tx = primary.read_tenant(tenant).await?;
        let rows = rows::events(tx.client(), tenant, filter).await?;
        tx.finish().await?;
        rows.iter().map(from_row).collect()
    }

    /// Signs the heads of chains that moved since their last checkpoint, `batch` at a
    /// time; returns how many it signed.
    pub async fn checkpoint(&self, batch: i64) -> Result<u64, AuditError> {
        let mut signed = 0;
        let key = self.signing_key();
        loop {
            let mut primary = self.inner.core.database.primary().get().await?;
            let heads = rows::heads_without_checkpoint(primary.client(), batch).await?;
            if heads.is_empty() {
                return Ok(signed);
            }
            let tx = primary.begin().await?;
            let count = heads.len() as u64;
            for (tenant, seq, hash) in heads {
                let checkpoint = audit::sign_checkpoint(
                    &key,
                    &tenant,
                    seq,
                    &Hash::from_bytes(hash),
                    SystemTime::now(),
                );
                rows::insert_checkpoint(
                    &tx,
                    &CheckpointRow {
                        tenant,
                        seq,
                        hash,
                        signed_at: checkpoint.signed_at,
                        key_id: checkpoint.key_id,
                        signature: checkpoint.signature.as_bytes().to_vec(),
                    },
                )
                .await?;
            }
            tx.commit().await?;
            signed += count;
            self.inner.core.metrics.record_audit_checkpoints(count);
        }
    }

    /// The tenant's events in `[from, to)` as a bundle (NDJSON lines, then the signed
    /// manifest line), written to `out` page by page.
    pub async fn export(
        &self,
        tenant: &TenantId,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        out: &mut Vec<u8>,
    ) -> Result<u64, AuditError> {
        self.export_pages(tenant, from, to, |chunk| {
            out.extend_from_slice(&chunk);
            std::future::ready(true)
        })
        .await
    }

    /// The tenant's events in `[from, to)` as a bundle, handed to `emit` one page of
    /// NDJSON lines at a time and then the signed manifest line, so that memory stays
    /// bounded whatever the log's size. `emit` returns `false` to stop (the reader went
    /// away). Returns how many events were written.
    pub async fn export_pages<F, Fut>(
        &self,
        tenant: &TenantId,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        mut emit: F,
    ) -> Result<u64, AuditError>
    where
        F: FnMut(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut writer = BundleWriter::new(*tenant, self.region().clone(), from, to);
        let mut filter = EventFilter {
            from,
            to,
            action: None,
            after_seq: 0,
            limit: EXPORT_PAGE,
        };
        loop {
            let page = self.events(tenant, &filter).await?;
            let Some(last) = page.last() else { break };
            filter.after_seq = last.seq;
            let mut chunk = Vec::with_capacity(page.len() * 400);
            for event in &page {
                writer.write_event(event, &mut chunk)?;
            }
            if !emit(chunk).await {
                return Ok(writer.count());
            }
        }
        let count = writer.count();
        let manifest = writer.finish(&self.signing_key(), SystemTime::now())?;
        emit(manifest.into_bytes()).await;
        Ok(count)
    }
}

impl Core {
    pub(crate) fn region(&self) -> &RegionId {
        self.database.region()
    }

    pub(crate) fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    fn check_region(&self, event: &NewEvent) -> Result<(), AuditError> {
        if &event.region != self.region() {
            return Err(AuditError::WrongRegion {
                event: event.region.clone(),
                node: self.region().clone(),
            });
        }
        Ok(())
    }

    async fn append(&self, tx: &PrimaryTx<'_>, event: NewEvent) -> Result<Event, AuditError> {
        self.check_region(&event)?;
        let tenant = event.tenant;
        if let Some(head) = self.heads.get(&tenant) {
            let linked = audit::next(Some(head), event.clone());
            if rows::append(tx, &event_row(&linked)).await? {
                self.heads.insert(tenant, linked.head());
                return Ok(linked);
            }
        }
        self.append_locked(tx, event).await
    }

    /// Links `event` after the locked head of its tenant's chain and stores it.
    async fn append_locked(
        &self,
        tx: &PrimaryTx<'_>,
        event: NewEvent,
    ) -> Result<Event, AuditError> {
        let tenant = event.tenant;
        let head = rows::lock_head(tx, &tenant).await?.map(|(seq, hash)| Head {
            seq,
            hash: Hash::from_bytes(hash),
        });
        let linked = audit::next(head, event);
        if !rows::append(tx, &event_row(&linked)).await? {
            return Err(AuditError::Corrupt(format!(
                "the head of tenant {tenant} moved while locked"
            )));
        }
        self.heads.insert(tenant, linked.head());
        Ok(linked)
    }

    /// One event in a transaction of its own (`ReadAudit::Sync`).
    async fn record_now(&self, event: NewEvent) -> Result<(), AuditError> {
        let result = self
            .append_batch(std::slice::from_ref(&event), &mut Vec::new())
            .await;
        match result {
            Ok(closed) if closed.is_empty() => {
                self.metrics.record_audit_events_written("sync", 1);
                Ok(())
            }
            // The tenant was offboarded before its event was written: the operation fails
            // (its tenant is gone) rather than go unaudited.
            Ok(_) => {
                self.metrics.record_audit_events_after_close("sync", 1);
                Err(AuditError::Store(StoreError::AuditChainClosed))
            }
            Err(err) => {
                self.metrics.record_audit_write_failure("sync");
                Err(err)
            }
        }
    }

    /// Appends `events` in one transaction on the primary, each after its tenant's head.
    /// Tenants are visited in sorted order (a stable sort keeps each tenant's events in
    /// their order), so that two such transactions lock heads in the same order. A
    /// connection that failed is discarded rather than reused.
    ///
    /// Before it sends COMMIT, the attempt adds a [`CommitProbe`] to `sent_commits`: if
    /// the answer is lost, [`Core::committed`] tells whether the batch went in anyway.
    ///
    /// The events of a tenant whose chain is closed (offboarded) are not appended; the
    /// rest of the batch commits, and the answer names those tenants with their counts.
    pub(crate) async fn append_batch(
        &self,
        events: &[NewEvent],
        sent_commits: &mut Vec<CommitProbe>,
    ) -> Result<Vec<(TenantId, usize)>, AuditError> {
        let mut ordered: Vec<&NewEvent> = events.iter().collect();
        ordered.sort_by(|a, b| a.tenant.as_str().cmp(b.tenant.as_str()));
        let groups: Vec<&[&NewEvent]> = ordered.chunk_by(|a, b| a.tenant == b.tenant).collect();
        let mut primary = self.database.primary().get().await?;
        let result = async {
            let tx = primary.begin().await?;
            // One statement per tenant, all sent at once on the connection (pipelined),
            // each linked after the head this node last wrote for the tenant...
            let guesses: Vec<Option<Vec<Event>>> = groups
                .iter()
                .map(|group| {
                    self.heads
                        .get(&group[0].tenant)
                        .map(|head| link(Some(head), group))
                })
                .collect();
            let rows: Vec<Option<Vec<AuditRow>>> = guesses
                .iter()
                .map(|linked| {
                    linked
                        .as_ref()
                        .map(|events| events.iter().map(event_row).collect())
                })
                .collect();
            let attempts = rows.iter().map(|rows| async {
                match rows {
                    Some(rows) => rows::append_many(&tx, rows).await,
                    None => Ok(false),
                }
            });
            let accepted = futures::future::join_all(attempts).await;
            let mut probe = None;
            let mut closed = Vec::new();
            // ...and where that guess was stale (or there was none), after the locked head.
            for ((group, guess), accepted) in groups.iter().zip(guesses).zip(accepted) {
                let linked = match (accepted?, guess) {
                    (true, Some(linked)) => linked,
                    _ => {
                        let tenant = group[0].tenant;
                        let head = match rows::lock_head(&tx, &tenant).await {
                            Ok(head) => head.map(|(seq, hash)| Head {
                                seq,
                                hash: Hash::from_bytes(hash),
                            }),
                            // Refused before any statement failed: the transaction goes
                            // on with the other tenants' events.
                            Err(StoreError::AuditChainClosed) => {
                                self.heads.invalidate(&tenant);
                                closed.push((tenant, group.len()));
                                continue;
                            }
                            Err(err) => return Err(err.into()),
                        };
                        let linked = link(head, group);
                        let rows: Vec<AuditRow> = linked.iter().map(event_row).collect();
                        if !rows::append_many(&tx, &rows).await? {
                            return Err(AuditError::Corrupt(format!(
                                "the head of tenant {tenant} moved while locked"
                            )));
                        }
                        linked
                    }
                };
                if let Some(last) = linked.last() {
                    self.heads.insert(last.tenant, last.head());
                    if probe.is_none() {
                        probe = Some(CommitProbe {
                            tenant: last.tenant,
                            seq: last.seq,
                            hash: *last.hash.as_bytes(),
                        });
                    }
                }
            }
            sent_commits.extend(probe);
            tx.commit().await?;
            Ok(closed)
        }
        .await;
        if result.is_err() {
            // A rolled-back batch leaves the cached heads ahead of the database: forget
            // them, so the retry links after the real heads at once.
            for group in &groups {
                self.heads.invalidate(&group[0].tenant);
            }
            primary.discard();
        }
        result
    }
}

/// An event a batch attempt linked before it sent COMMIT (the last of its first chain).
/// A batch commits whole, so if the chain holds this event, the attempt committed.
#[derive(Debug, Clone)]
pub(crate) struct CommitProbe {
    tenant: TenantId,
    seq: u64,
    hash: [u8; 32],
}

impl Core {
    /// Whether any attempt behind `sent_commits` committed although its COMMIT went
    /// unanswered (a connection lost after the server committed). `Err` when the primary
    /// cannot say.
    pub(crate) async fn committed(&self, sent_commits: &[CommitProbe]) -> Result<bool, AuditError> {
        if sent_commits.is_empty() {
            return Ok(false);
        }
        let primary = self.database.primary().get().await?;
        for probe in sent_commits {
            if rows::holds(primary.client(), &probe.tenant, probe.seq, &probe.hash).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// `events` (of one tenant, in order) linked one after the other from `head`.
fn link(head: Option<Head>, events: &[&NewEvent]) -> Vec<Event> {
    let mut head = head;
    events
        .iter()
        .map(|event| {
            let linked = audit::next(head, (*event).clone());
            head = Some(linked.head());
            linked
        })
        .collect()
}

/// The stored form of `event`.
pub(crate) fn event_row(event: &Event) -> AuditRow {
    AuditRow {
        tenant: event.tenant,
        seq: event.seq,
        time: event.time,
        region: event.region.to_string(),
        actor_kind: event.actor.kind.as_str().to_owned(),
        actor_id: event.actor.id.clone(),
        action: event.action.as_str().to_owned(),
        resource: event.resource.clone(),
        outcome: event.outcome.as_str().to_owned(),
        request_id: event.request_id.clone(),
        via_region: event.via_region.to_string(),
        prev_hash: *event.prev_hash.as_bytes(),
        hash: *event.hash.as_bytes(),
    }
}

/// Stored rows are read back as they are: a tampered row keeps its stored hash, so that
/// verification downstream detects the tampering instead of this code hiding it. Public
/// for tests that verify a chain as stored (an offboarded tenant's, which no endpoint
/// exports any more).
pub fn from_row(row: &AuditRow) -> Result<Event, AuditError> {
    let corrupt = |what: &str| AuditError::Corrupt(format!("seq {}: {what}", row.seq));
    Ok(Event {
        seq: row.seq,
        time: row.time,
        region: RegionId::parse(&row.region).map_err(|_| corrupt("region"))?,
        tenant: row.tenant,
        actor: Actor {
            kind: ActorKind::parse(&row.actor_kind).map_err(|_| corrupt("actor kind"))?,
            id: row.actor_id.clone(),
        },
        action: Action::parse(&row.action).map_err(|_| corrupt("action"))?,
        resource: row.resource.clone(),
        outcome: Outcome::parse(&row.outcome).map_err(|_| corrupt("outcome"))?,
        request_id: row.request_id.clone(),
        via_region: RegionId::parse(&row.via_region).map_err(|_| corrupt("via region"))?,
        prev_hash: Hash::from_bytes(row.prev_hash),
        hash: Hash::from_bytes(row.hash),
    })
}
