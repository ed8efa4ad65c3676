//! The audited unit of work: every mutating use case opens a tenant-scoped transaction on
//! the primary here, makes its change, appends its audit events after it and commits, so
//! that a change and its events commit together or not at all (docs/ARCHITECTURE.md). A
//! created record takes one round trip: the row, its tokens and its event in one
//! statement sent with BEGIN, the scope and COMMIT, falling back to a transaction with the
//! locked head when this node's guess of the head is stale. Nothing else in `service`
//! begins a tenant's write transaction.

use audit::{Event, NewEvent};
use model::{Lsn, TenantId};
use store::records::{NewRecord, RecordRow};
use store::{Primary, PrimaryTx};

use crate::audit::event_row;
use crate::tenancy::RegionService;
use crate::{AuditLog, ServiceError};

/// Times a unit of work runs when the database aborts it for a deadlock or a
/// serialization conflict.
pub const ATTEMPTS: u32 = 3;

/// When a unit of work sends its events, relative to the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventTiming {
    /// Once the change is done: linked after the head this node last wrote, else after
    /// the locked head. Takes the head lock after whatever rows the change locked.
    AfterChange,
    /// Right behind the change's first statement, in the same round trip (tokio-postgres
    /// pipelines statements issued concurrently on one connection): for a change of one
    /// statement. A change that finds nothing to do rolls the event back with it.
    BesideChange,
    /// Once the change is done, after the locked head at once: for a retry whose guess of
    /// the head just turned out stale.
    AfterLockedHead,
}

/// The audited unit of work over one region's audit log: how every write of tenant data
/// runs (see the module's documentation).
#[derive(Debug, Clone, Copy)]
pub struct UnitOfWork<'a> {
    audit: &'a AuditLog,
}

/// What a unit of work did: the change's value, its events as linked, and a WAL position
/// past the commit.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub events: Vec<Event>,
    pub lsn: Lsn,
}

impl<'a> UnitOfWork<'a> {
    pub fn new(audit: &'a AuditLog) -> Self {
        Self { audit }
    }

    /// Runs `change` in a transaction confined to `tenant` on `primary`, appends `events`
    /// (in order) as `timing` says, and commits. When `change` fails, the transaction
    /// rolls back with whatever was appended. A transaction the database aborts to break a
    /// deadlock or a serialization conflict (statements of concurrent writers of one
    /// tenant may take the record and the chain head in either order) runs again from the
    /// start, up to [`ATTEMPTS`] times in all; then the caller gets
    /// [`ServiceError::TransactionConflict`] (503), with nothing applied.
    pub async fn run<T>(
        self,
        primary: &mut Primary,
        tenant: &TenantId,
        timing: EventTiming,
        events: impl IntoIterator<Item = NewEvent> + Clone,
        change: impl AsyncFnOnce(&PrimaryTx<'_>) -> Result<T, ServiceError> + Clone,
    ) -> Result<Committed<T>, ServiceError> {
        let mut attempt = 1;
        loop {
            // Each attempt runs a copy of `change` (its captures are references) and takes
            // a copy of `events` (which may be computed from what the change did, so they
            // are taken after it); an `AsyncFn` called by reference instead of the copy
            // would make the future's `Send` depend on a higher-ranked lifetime the
            // compiler cannot prove.
            let tx = primary.begin_tenant(tenant).await?;
            let done = match timing {
                EventTiming::AfterChange | EventTiming::AfterLockedHead => {
                    match change.clone()(&tx).await {
                        Ok(value) => (self.append(&tx, timing, events.clone()).await)
                            .map(|linked| (value, linked)),
                        Err(err) => Err(err),
                    }
                }
                EventTiming::BesideChange => {
                    // Polled in order: the change sends its statement before the events
                    // do (unless it first waits to prepare a statement: then the head
                    // may be locked before the record, and a deadlock is possible).
                    let (changed, appended) = futures::join!(
                        change.clone()(&tx),
                        self.append(&tx, timing, events.clone())
                    );
                    changed.and_then(|value| appended.map(|linked| (value, linked)))
                }
            };
            let committed = match done {
                Ok((value, events)) => match tx.commit_lsn().await {
                    Ok(lsn) => Ok(Committed { value, events, lsn }),
                    Err(err) => Err(ServiceError::from(err)),
                },
                Err(err) => Err(err),
            };
            match committed {
                Err(ServiceError::TransactionConflict { .. }) if attempt < ATTEMPTS => {
                    attempt += 1;
                    self.audit.metrics().record_transaction_retried();
                    tracing::debug!(tenant = %tenant, attempt, "a concurrent transaction aborted this one; running it again");
                }
                done => return done,
            }
        }
    }

    /// As [`UnitOfWork::run`] with [`EventTiming::AfterChange`], then `record` in the same
    /// transaction once the events are linked (it sees their seqs: a row that names its
    /// own event, like the erasure ledger's), then commits; retried like `run`.
    pub async fn run_recorded<T, U>(
        self,
        primary: &mut Primary,
        tenant: &TenantId,
        events: impl IntoIterator<Item = NewEvent> + Clone,
        change: impl AsyncFnOnce(&PrimaryTx<'_>) -> Result<T, ServiceError> + Clone,
        record: impl AsyncFnOnce(&PrimaryTx<'_>, T, &[Event]) -> Result<U, ServiceError> + Clone,
    ) -> Result<Committed<U>, ServiceError> {
        let mut attempt = 1;
        loop {
            let tx = primary.begin_tenant(tenant).await?;
            let done = match change.clone()(&tx).await {
                Ok(changed) => {
                    match self
                        .append(&tx, EventTiming::AfterChange, events.clone())
                        .await
                    {
                        Ok(events) => match record.clone()(&tx, changed, &events).await {
                            Ok(value) => match tx.commit_lsn().await {
                                Ok(lsn) => Ok(Committed { value, events, lsn }),
                                Err(err) => Err(ServiceError::from(err)),
                            },
                            Err(err) => Err(err),
                        },
                        Err(err) => Err(err),
                    }
                }
                Err(err) => Err(err),
            };
            match done {
                Err(ServiceError::TransactionConflict { .. }) if attempt < ATTEMPTS => {
                    attempt += 1;
                    self.audit.metrics().record_transaction_retried();
                    tracing::debug!(tenant = %tenant, attempt, "a concurrent transaction aborted this one; running it again");
                }
                done => return done,
            }
        }
    }

    async fn append(
        self,
        tx: &PrimaryTx<'_>,
        timing: EventTiming,
        events: impl IntoIterator<Item = NewEvent>,
    ) -> Result<Vec<Event>, ServiceError> {
        let mut linked = Vec::new();
        for event in events {
            linked.push(match timing {
                EventTiming::AfterLockedHead => {
                    self.audit.append_after_locked_head(tx, event).await?
                }
                EventTiming::AfterChange | EventTiming::BesideChange => {
                    self.audit.append(tx, event).await?
                }
            });
        }
        Ok(linked)
    }

    /// Creates a record with its event and commits both: in one round trip when the head
    /// this node last wrote for the tenant is still the head (the record, its tokens and
    /// the event in one statement, committed with it); otherwise, or without such a
    /// guess, in a unit of work that writes the row and then the event after the locked
    /// head. Returns the row, the event and a WAL position past the commit.
    pub async fn create_record(
        self,
        primary: &mut Primary,
        record: NewRecord<'_>,
        event: NewEvent,
    ) -> Result<(RecordRow, Event, Lsn), ServiceError> {
        if let Some(linked) = self.audit.link_after_known_head(&event)?
            && let Some((row, lsn)) =
                store::records::create_with_event(primary, record, &event_row(&linked)).await?
        {
            self.audit.remember_head(&linked);
            return Ok((row, linked, lsn));
        }
        let Committed {
            value: row,
            events,
            lsn,
        } = self
            .run(
                primary,
                record.tenant,
                EventTiming::AfterLockedHead,
                [event],
                async |tx| Ok(insert(tx, record).await?),
            )
            .await?;
        let linked = events
            .into_iter()
            .next()
            .expect("a unit of work links each event it was given");
        Ok((row, linked, lsn))
    }

    /// Inserts a record and appends its event inside `tx`, in one statement when the head
    /// this node last wrote for the tenant is still the head; otherwise the row goes in
    /// alone and the event follows after the locked head. For callers that hold the
    /// transaction themselves (the benchmark's write paths, tests of the chain).
    pub async fn insert_record(
        self,
        tx: &PrimaryTx<'_>,
        record: NewRecord<'_>,
        event: NewEvent,
    ) -> Result<(RecordRow, Event), ServiceError> {
        let Some(linked) = self.audit.link_after_known_head(&event)? else {
            let row = insert(tx, record).await?;
            return Ok((row, self.audit.append(tx, event).await?));
        };
        let (row, carried) =
            store::records::insert_with_event(tx, record, &event_row(&linked)).await?;
        if carried {
            self.audit.remember_head(&linked);
            return Ok((row, linked));
        }
        Ok((row, self.audit.append_after_locked_head(tx, event).await?))
    }
}

async fn insert(tx: &PrimaryTx<'_>, record: NewRecord<'_>) -> Result<RecordRow, store::StoreError> {
    store::records::insert(
        tx,
        record.tenant,
        record.collection,
        record.id,
        record.public,
        record.sealed,
        record.index,
    )
    .await
}

impl RegionService {
    /// [`UnitOfWork::run`] on a primary connection of the region, within the tenant's
    /// cap on concurrent writes (`write_slots.rs`): what every mutating use case calls. Returns the change's value and a WAL position past the commit.
    pub(crate) async fn write<T>(
        &self,
        tenant: &TenantId,
        timing: EventTiming,
        events: impl IntoIterator<Item = NewEvent> + Clone,
        change: impl AsyncFnOnce(&PrimaryTx<'_>) -> Result<T, ServiceError> + Clone,
    ) -> Result<(T, Lsn), ServiceError> {
        let _slot = self.inner.write_slots.acquire(tenant).await?;
        let mut primary = self.inner.database.primary().get().await?;
        let committed = UnitOfWork::new(&self.inner.audit)
            .run(&mut primary, tenant, timing, events, change)
            .await?;
        Ok((committed.value, committed.lsn))
    }

    /// [`UnitOfWork::create_record`] on a primary connection of the region.
    pub(crate) async fn create_with_event(
        &self,
        record: NewRecord<'_>,
        event: NewEvent,
    ) -> Result<(RecordRow, Lsn), ServiceError> {
        let _slot = self.inner.write_slots.acquire(record.tenant).await?;
        let mut primary = self.inner.database.primary().get().await?;
        let (row, _, lsn) = UnitOfWork::new(&self.inner.audit)
            .create_record(&mut primary, record, event)
            .await?;
        Ok((row, lsn))
    }
}

/// The record writes of the benchmark (`crates/residency/src/bench*.rs`), which calls
/// them on the log. TODO: remove once the benchmark calls [`UnitOfWork`] itself.
impl AuditLog {
    /// [`UnitOfWork::create_record`].
    pub async fn create_record(
        &self,
        primary: &mut Primary,
        record: NewRecord<'_>,
        event: NewEvent,
    ) -> Result<(RecordRow, Event, Lsn), ServiceError> {
        UnitOfWork::new(self)
            .create_record(primary, record, event)
            .await
    }

    /// [`UnitOfWork::insert_record`].
    pub async fn insert_record(
        &self,
        tx: &PrimaryTx<'_>,
        record: NewRecord<'_>,
        event: NewEvent,
    ) -> Result<(RecordRow, Event), ServiceError> {
        UnitOfWork::new(self).insert_record(tx, record, event).await
    }
}
