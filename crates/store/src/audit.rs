//! Audit events in the region's primary: the per-tenant chain head (locked by writers),
//! the events, and signed checkpoints. This module stores what the `audit` crate computes;
//! it never computes hashes itself.

use std::time::SystemTime;

use model::TenantId;
use tokio_postgres::{GenericClient, Row};

use crate::statement::{ComposedOnce, Placeholder, Statement};
use crate::{PrimaryTx, StoreError};

/// One stored event, field for field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub tenant: TenantId,
    pub seq: u64,
    pub time: SystemTime,
    pub region: String,
    pub actor_kind: String,
    pub actor_id: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub request_id: String,
    pub via_region: String,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// The head of a tenant's chain: `None` while the chain is empty.
pub type Head = Option<(u64, [u8; 32])>;

/// Locks the tenant's chain head for the rest of `tx` and returns it (one round trip).
/// Concurrent appenders for the same tenant wait here; other tenants are not affected.
/// [`StoreError::AuditChainClosed`] when the chain is closed ([`close`]): nothing may
/// follow its last event.
pub async fn lock_head(tx: &PrimaryTx<'_>, tenant: &TenantId) -> Result<Head, StoreError> {
    // ON CONFLICT DO UPDATE both creates a missing head and row-locks an existing one.
    let statement = tx
        .prepare_cached(
            "insert into audit_heads (tenant_id, seq, hash) values ($1, 0, null)
             on conflict (tenant_id) do update set seq = audit_heads.seq
             returning seq, hash, closed_at is not null",
        )
        .await?;
    let row = tx
        .client()
        .query_one(&statement, &[&tenant.as_str()])
        .await?;
    let seq: i64 = row.try_get(0)?;
    let hash: Option<Vec<u8>> = row.try_get(1)?;
    if row.try_get::<_, bool>(2)? {
        return Err(StoreError::AuditChainClosed);
    }
    match (seq, hash) {
        (0, None) => Ok(None),
        (seq, Some(hash)) => Ok(Some((to_u64(seq)?, to_hash(&hash)?))),
        _ => Err(StoreError::Corrupt(
            "audit_heads: seq and hash disagree".into(),
        )),
    }
}

/// The tenant's chain head as committed, without locking it (for evidence and reports;
/// writers use [`lock_head`]).
pub async fn head<C: GenericClient>(client: &C, tenant: &TenantId) -> Result<Head, StoreError> {
    let row = client
        .query_typed_opt(
            "select seq, hash from audit_heads where tenant_id = $1",
            &[(&tenant.as_str(), tokio_postgres::types::Type::TEXT)],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let seq: i64 = row.try_get(0)?;
    let hash: Option<Vec<u8>> = row.try_get(1)?;
    match (seq, hash) {
        (0, None) => Ok(None),
        (seq, Some(hash)) => Ok(Some((to_u64(seq)?, to_hash(&hash)?))),
        _ => Err(StoreError::Corrupt(
            "audit_heads: seq and hash disagree".into(),
        )),
    }
}

/// Closes `tenant`'s chain in `tx` (offboarding, after its `tenant.delete`): from the
/// commit on, every append to it matches nothing and [`lock_head`] answers
/// [`StoreError::AuditChainClosed`]. The chain must hold at least one event.
pub async fn close(tx: &PrimaryTx<'_>, tenant: &TenantId) -> Result<(), StoreError> {
    let closed = tx
        .client()
        .execute(
            "update audit_heads set closed_at = coalesce(closed_at, now())
             where tenant_id = $1 and seq > 0",
            &[&tenant.as_str()],
        )
        .await?;
    if closed == 1 {
        Ok(())
    } else {
        Err(StoreError::NotFound)
    }
}

/// Whether `tenant`'s chain is closed ([`close`]).
pub async fn is_closed<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
) -> Result<bool, StoreError> {
    let row = client
        .query_opt(
            "select closed_at is not null from audit_heads where tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await?;
    Ok(match row {
        Some(row) => row.try_get(0)?,
        None => false,
    })
}

/// Appends `event` if, and only if, the chain is open and the tenant's head is exactly the event's
/// predecessor (`seq - 1` and `prev_hash`; the empty chain for seq 1): moves the head and
/// inserts the event in one statement, and returns whether it did. Safe without a prior
/// [`lock_head`]: the head update row-locks, and a concurrent writer that moved the head
/// first makes this match nothing, so a stale guess never breaks the chain.
pub async fn append(tx: &PrimaryTx<'_>, event: &AuditRow) -> Result<bool, StoreError> {
    let values = EventValues::new(event)?;
    let mut statement = Statement::new();
    let event = values.bind(&mut statement);
    static SQL: ComposedOnce = ComposedOnce::new();
    let sql = SQL.get(|| {
        format!(
            "with {ctes} select count(*) from appended",
            ctes = event.append_ctes()
        )
    });
    let prepared = tx.prepare_cached(sql).await?;
    let row = tx.client().query_one(&prepared, statement.params()).await?;
    let appended: i64 = row.try_get(0)?;
    Ok(appended == 1)
}

/// An event's values as the driver binds them (`seq` as `bigint`, hashes as `bytea`), for
/// a statement that appends it (see [`EventPlaceholders::append_ctes`]).
#[derive(Debug)]
pub(crate) struct EventValues<'a> {
    event: &'a AuditRow,
    tenant: &'a str,
    seq: i64,
    prev_hash: &'a [u8],
    hash: &'a [u8],
}

impl<'a> EventValues<'a> {
    pub(crate) fn new(event: &'a AuditRow) -> Result<Self, StoreError> {
        Ok(Self {
            event,
            tenant: event.tenant.as_str(),
            seq: to_i64(event.seq)?,
            prev_hash: &event.prev_hash,
            hash: &event.hash,
        })
    }

    /// Binds the event into `statement`; the placeholders give the common table
    /// expressions that append it ([`EventPlaceholders::append_ctes`]).
    pub(crate) fn bind(&'a self, statement: &mut Statement<'a>) -> EventPlaceholders {
        let event = self.event;
        EventPlaceholders {
            tenant: statement.bind(&self.tenant),
            seq: statement.bind(&self.seq),
            time: statement.bind(&event.time),
            region: statement.bind(&event.region),
            actor_kind: statement.bind(&event.actor_kind),
            actor_id: statement.bind(&event.actor_id),
            action: statement.bind(&event.action),
            resource: statement.bind(&event.resource),
            outcome: statement.bind(&event.outcome),
            request_id: statement.bind(&event.request_id),
            via_region: statement.bind(&event.via_region),
            prev_hash: statement.bind(&self.prev_hash),
            hash: statement.bind(&self.hash),
        }
    }
}

/// Where an event's values went in a statement ([`EventValues::bind`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventPlaceholders {
    tenant: Placeholder,
    seq: Placeholder,
    time: Placeholder,
    region: Placeholder,
    actor_kind: Placeholder,
    actor_id: Placeholder,
    action: Placeholder,
    resource: Placeholder,
    outcome: Placeholder,
    request_id: Placeholder,
    via_region: Placeholder,
    prev_hash: Placeholder,
    hash: Placeholder,
}

impl EventPlaceholders {
    /// The common table expressions of a conditional append (see [`append`]): `moved` and
    /// `appended`, the latter returning one row when the event went in, so that a
    /// statement writing something else too (a record and its event) can make its own
    /// write depend on it.
    pub(crate) fn append_ctes(&self) -> String {
        let Self {
            tenant,
            seq,
            time,
            region,
            actor_kind,
            actor_id,
            action,
            resource,
            outcome,
            request_id,
            via_region,
            prev_hash,
            hash,
        } = self;
        format!(
            "moved as (
                 update audit_heads set seq = {seq}::bigint, hash = {hash}
                 where tenant_id = {tenant} and seq = {seq}::bigint - 1 and closed_at is null
                   and (hash = {prev_hash} or (seq = 0 and hash is null))
                 returning tenant_id
             ), appended as (
                 insert into audit_events (tenant_id, seq, time, region, actor_kind, actor_id,
                                           action, resource, outcome, request_id, via_region,
                                           prev_hash, hash)
                 select {tenant}, {seq}, {time}, {region}, {actor_kind}, {actor_id}, {action},
                        {resource}, {outcome}, {request_id}, {via_region}, {prev_hash}, {hash}
                 from moved
                 returning 1
             )"
        )
    }
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events at or after this time.
    pub from: Option<SystemTime>,
    /// Events strictly before this time.
    pub to: Option<SystemTime>,
    pub action: Option<String>,
    /// Only events with a seq greater than this (the paging cursor).
    pub after_seq: u64,
    pub limit: u32,
}

/// Whether `tenant`'s chain holds the event `hash` at `seq`: how a writer whose COMMIT
/// went unanswered learns whether it took effect (the hash covers the whole event).
pub async fn holds<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    seq: u64,
    hash: &[u8; 32],
) -> Result<bool, StoreError> {
    let row = client
        .query_one(
            "select exists(select 1 from audit_events
             where tenant_id = $1 and seq = $2 and hash = $3)",
            &[&tenant.as_str(), &to_i64(seq)?, &hash.as_slice()],
        )
        .await?;
    Ok(row.try_get(0)?)
}

const EVENT_COLUMNS: &str = "tenant_id, seq, time, region, actor_kind, actor_id, action, resource, outcome, request_id, via_region, prev_hash, hash";

/// Events of `tenant` matching `filter`, in seq order.
pub async fn events<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    filter: &EventFilter,
) -> Result<Vec<AuditRow>, StoreError> {
    let sql = format!(
        "select {EVENT_COLUMNS} from audit_events
         where tenant_id = $1 and seq > $2
           and ($3::timestamptz is null or time >= $3)
           and ($4::timestamptz is null or time < $4)
           and ($5::text is null or action = $5)
         order by seq limit $6"
    );
    let rows = client
        .query(
            &sql,
            &[
                &tenant.as_str(),
                &to_i64(filter.after_seq)?,
                &filter.from,
                &filter.to,
                &filter.action,
                &i64::from(filter.limit),
            ],
        )
        .await?;
    rows.iter().map(decode).collect()
}

/// A signed checkpoint of a chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub tenant: TenantId,
    pub seq: u64,
    pub hash: [u8; 32],
    pub signed_at: SystemTime,
    pub key_id: String,
    pub signature: Vec<u8>,
}

/// Chain heads that moved since their last checkpoint (or never had one).
pub async fn heads_without_checkpoint<C: GenericClient>(
    client: &C,
    limit: i64,
) -> Result<Vec<(TenantId, u64, [u8; 32])>, StoreError> {
    let rows = client
        .query(
            "select h.tenant_id, h.seq, h.hash from audit_heads h
             where h.seq > 0 and not exists (
                 select 1 from audit_checkpoints c where c.tenant_id = h.tenant_id and c.seq = h.seq)
             order by h.tenant_id limit $1",
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let tenant: &str = row.try_get(0)?;
            let hash: Vec<u8> = row.try_get(2)?;
            Ok((
                parse_tenant(tenant)?,
                to_u64(row.try_get(1)?)?,
                to_hash(&hash)?,
            ))
        })
        .collect()
}

/// Records a checkpoint (idempotent: the same head signed twice keeps the first).
pub async fn insert_checkpoint(
    tx: &PrimaryTx<'_>,
    checkpoint: &CheckpointRow,
) -> Result<(), StoreError> {
    tx.client()
        .execute(
            "insert into audit_checkpoints (tenant_id, seq, hash, signed_at, key_id, signature)
             values ($1, $2, $3, $4, $5, $6) on conflict (tenant_id, seq) do nothing",
            &[
                &checkpoint.tenant.as_str(),
                &to_i64(checkpoint.seq)?,
                &checkpoint.hash.as_slice(),
                &checkpoint.signed_at,
                &checkpoint.key_id,
                &checkpoint.signature,
            ],
        )
        .await?;
    Ok(())
}

/// Signed checkpoints not yet written to the audit bucket, oldest first, at most
/// `limit` (migration 0018; found through a partial index: a round costs what changed).
pub async fn unanchored_checkpoints<C: GenericClient>(
    client: &C,
    limit: i64,
) -> Result<Vec<CheckpointRow>, StoreError> {
    let rows = client
        .query(
            "select tenant_id, seq, hash, signed_at, key_id, signature from audit_checkpoints
             where anchored_at is null order by signed_at, tenant_id, seq limit $1",
            &[&limit],
        )
        .await?;
    rows.iter().map(decode_checkpoint).collect()
}

/// Marks `tenant`'s checkpoint at `seq` as written to the audit bucket.
pub async fn mark_anchored<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    seq: u64,
) -> Result<(), StoreError> {
    client
        .execute(
            "update audit_checkpoints set anchored_at = now()
             where tenant_id = $1 and seq = $2 and anchored_at is null",
            &[&tenant.as_str(), &to_i64(seq)?],
        )
        .await?;
    Ok(())
}

/// When the oldest checkpoint still waiting for the audit bucket was signed; `None` when
/// none waits.
pub async fn oldest_unanchored<C: GenericClient>(
    client: &C,
) -> Result<Option<SystemTime>, StoreError> {
    let row = client
        .query_one(
            "select min(signed_at) from audit_checkpoints where anchored_at is null",
            &[],
        )
        .await?;
    Ok(row.try_get(0)?)
}

/// The newest checkpoint of `tenant` at or below `seq`.
pub async fn latest_checkpoint<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    at_or_below: u64,
) -> Result<Option<CheckpointRow>, StoreError> {
    let row = client
        .query_opt(
            "select tenant_id, seq, hash, signed_at, key_id, signature from audit_checkpoints
             where tenant_id = $1 and seq <= $2 order by seq desc limit 1",
            &[&tenant.as_str(), &to_i64(at_or_below)?],
        )
        .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

fn decode_checkpoint(row: &Row) -> Result<CheckpointRow, StoreError> {
    let tenant: &str = row.try_get(0)?;
    let hash: Vec<u8> = row.try_get(2)?;
    Ok(CheckpointRow {
        tenant: parse_tenant(tenant)?,
        seq: to_u64(row.try_get(1)?)?,
        hash: to_hash(&hash)?,
        signed_at: row.try_get(3)?,
        key_id: row.try_get(4)?,
        signature: row.try_get(5)?,
    })
}

fn decode(row: &Row) -> Result<AuditRow, StoreError> {
    let tenant: &str = row.try_get(0)?;
    let prev_hash: Vec<u8> = row.try_get(11)?;
    let hash: Vec<u8> = row.try_get(12)?;
    Ok(AuditRow {
        tenant: parse_tenant(tenant)?,
        seq: to_u64(row.try_get(1)?)?,
        time: row.try_get(2)?,
        region: row.try_get(3)?,
        actor_kind: row.try_get(4)?,
        actor_id: row.try_get(5)?,
        action: row.try_get(6)?,
        resource: row.try_get(7)?,
        outcome: row.try_get(8)?,
        request_id: row.try_get(9)?,
        via_region: row.try_get(10)?,
        prev_hash: to_hash(&prev_hash)?,
        hash: to_hash(&hash)?,
    })
}

fn parse_tenant(raw: &str) -> Result<TenantId, StoreError> {
    TenantId::parse(raw).map_err(|_| StoreError::Corrupt("audit: tenant id".into()))
}

fn to_hash(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("audit: hash length".into()))
}

fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("audit: negative seq".into()))
}

fn to_i64(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt("audit: seq out of range".into()))
}

/// Appends `events`, consecutive events of one tenant already linked to each other, if
/// and only if the chain is open and the tenant's head is exactly the first event's predecessor: moves the head
/// to the last event and inserts them all in one statement, and returns whether it did.
/// Safe without a prior [`lock_head`], like [`append`].
///
/// # Panics
/// When `events` is empty or holds several tenants: a programming error.
pub async fn append_many(tx: &PrimaryTx<'_>, events: &[AuditRow]) -> Result<bool, StoreError> {
    let (Some(first), Some(last)) = (events.first(), events.last()) else {
        panic!("append_many needs at least one event");
    };
    assert!(
        events.iter().all(|event| event.tenant == first.tenant),
        "append_many takes one tenant's events"
    );
    let statement = tx
        .prepare_cached(
            "with moved as (
                 update audit_heads set seq = $2::bigint, hash = $3
                 where tenant_id = $1 and seq = $4::bigint and closed_at is null
                   and (hash = $5 or ($4::bigint = 0 and hash is null))
                 returning tenant_id
             )
             insert into audit_events (tenant_id, seq, time, region, actor_kind, actor_id, action,
                                       resource, outcome, request_id, via_region, prev_hash, hash)
             select moved.tenant_id, e.seq, e.time, e.region, e.actor_kind, e.actor_id, e.action,
                    e.resource, e.outcome, e.request_id, e.via_region, e.prev_hash, e.hash
             from moved, unnest($6::bigint[], $7::timestamptz[], $8::text[], $9::text[],
                                $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                                $15::text[], $16::bytea[], $17::bytea[])
                  as e (seq, time, region, actor_kind, actor_id, action, resource, outcome,
                        request_id, via_region, prev_hash, hash)",
        )
        .await?;
    let seqs = events
        .iter()
        .map(|event| to_i64(event.seq))
        .collect::<Result<Vec<_>, _>>()?;
    let column = |field: fn(&AuditRow) -> &str| -> Vec<&str> { events.iter().map(field).collect() };
    let prev_seq = to_i64(first.seq - 1)?;
    let prev_hash = (prev_seq != 0).then(|| first.prev_hash.to_vec());
    let times: Vec<SystemTime> = events.iter().map(|event| event.time).collect();
    let prev_hashes: Vec<&[u8]> = events.iter().map(|event| &event.prev_hash[..]).collect();
    let hashes: Vec<&[u8]> = events.iter().map(|event| &event.hash[..]).collect();
    let inserted = tx
        .client()
        .execute(
            &statement,
            &[
                &first.tenant.as_str(),
                &to_i64(last.seq)?,
                &&last.hash[..],
                &prev_seq,
                &prev_hash,
                &seqs,
                &times,
                &column(|e| &e.region),
                &column(|e| &e.actor_kind),
                &column(|e| &e.actor_id),
                &column(|e| &e.action),
                &column(|e| &e.resource),
                &column(|e| &e.outcome),
                &column(|e| &e.request_id),
                &column(|e| &e.via_region),
                &prev_hashes,
                &hashes,
            ],
        )
        .await?;
    Ok(inserted == events.len() as u64)
}
