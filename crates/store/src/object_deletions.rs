//! The outbox of object deletions (`object_deletions`, migration 0017): an object that no
//! row references any more is named here in the same transaction as the change that
//! dropped it ([`enqueue`], tenant-scoped), and stays named until every version of it is
//! deleted. Right after the commit the writer tries the deletion itself and removes its
//! rows ([`forget`], tenant-scoped); whatever that misses, a sweeper takes later
//! ([`claim_due`], [`done`], [`retry_later`]: unscoped system work on the primary, like the
//! job runner's). Claims are one statement each, a lease on the row by its
//! `next_attempt_at`, so no transaction stays open across a call to the object store.

use std::time::{Duration, SystemTime};

use model::TenantId;
use tokio_postgres::GenericClient;

use crate::{Primary, PrimaryTx, StoreError};

/// A row of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeletionId(i64);

impl DeletionId {
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Why an object is to be deleted (a fixed set; the table checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeletionReason {
    FileDeleted,
    FileReplaced,
    RecordDeleted,
    SubjectErased,
    /// An upload stored its object but its row was never committed.
    UploadAbandoned,
    /// A re-encryption wrote an object again after its file was deleted.
    ReencryptionOrphan,
}

impl DeletionReason {
    pub const ALL: [DeletionReason; 6] = [
        Self::FileDeleted,
        Self::FileReplaced,
        Self::RecordDeleted,
        Self::SubjectErased,
        Self::UploadAbandoned,
        Self::ReencryptionOrphan,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FileDeleted => "file_deleted",
            Self::FileReplaced => "file_replaced",
            Self::RecordDeleted => "record_deleted",
            Self::SubjectErased => "subject_erased",
            Self::UploadAbandoned => "upload_abandoned",
            Self::ReencryptionOrphan => "reencryption_orphan",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

/// Why the last attempt failed (a fixed set, never the object store's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeletionFailure {
    /// The store could not be reached or refused for now.
    Unavailable,
    /// The store answered with an error.
    StoreError,
    /// The stored key is not an object key: the row can never succeed (an operator looks).
    MalformedKey,
}

impl DeletionFailure {
    pub const ALL: [DeletionFailure; 3] = [Self::Unavailable, Self::StoreError, Self::MalformedKey];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::StoreError => "store_error",
            Self::MalformedKey => "malformed_key",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|failure| failure.as_str() == text)
    }
}

/// A row a sweeper claimed (or the purge listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeletion {
    pub id: DeletionId,
    pub tenant: TenantId,
    pub object_key: String,
    pub reason: DeletionReason,
    /// Claims so far, this one included.
    pub attempts: u32,
    pub last_error: Option<DeletionFailure>,
    /// When a sweeper may take it next.
    pub next_attempt_at: SystemTime,
}

/// What the outbox holds, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct OutboxStats {
    pub pending: u64,
    /// The age of the oldest row (zero when there is none).
    pub oldest: Duration,
}

const COLUMNS: &str =
    "deletion_id, tenant_id, object_key, reason, attempts, last_error, next_attempt_at";

fn decode(row: &tokio_postgres::Row) -> Result<PendingDeletion, StoreError> {
    let tenant: String = row.try_get(1)?;
    let reason: String = row.try_get(3)?;
    let attempts: i32 = row.try_get(4)?;
    let last_error: Option<String> = row.try_get(5)?;
    let corrupt = |what: &str| StoreError::Check {
        constraint: format!("object_deletions: {what}"),
    };
    Ok(PendingDeletion {
        id: DeletionId(row.try_get(0)?),
        tenant: TenantId::parse(&tenant).map_err(|_| corrupt("tenant id"))?,
        object_key: row.try_get(2)?,
        reason: DeletionReason::parse(&reason).ok_or_else(|| corrupt("reason"))?,
        attempts: u32::try_from(attempts).unwrap_or_default(),
        last_error: last_error
            .as_deref()
            .map(|text| DeletionFailure::parse(text).ok_or_else(|| corrupt("last_error")))
            .transpose()?,
        next_attempt_at: row.try_get(6)?,
    })
}

fn ids_param(ids: &[DeletionId]) -> Vec<i64> {
    ids.iter().map(|id| id.0).collect()
}

/// A row [`enqueue`] wrote: its id and the object it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDeletion {
    pub id: DeletionId,
    pub object_key: String,
}

/// Names `object_keys` for deletion in the tenant's transaction `tx` (the one that stopped
/// referencing them), due for a sweeper after `not_before` (zero: at once); returns the
/// rows, for [`forget`] once their objects are deleted.
pub async fn enqueue(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    object_keys: &[String],
    reason: DeletionReason,
    not_before: Duration,
) -> Result<Vec<QueuedDeletion>, StoreError> {
    if object_keys.is_empty() {
        return Ok(Vec::new());
    }
    let insert = tx
        .prepare_cached(
            "insert into object_deletions (tenant_id, object_key, reason, next_attempt_at)
             select $1, key, $3, now() + make_interval(secs => $4)
             from unnest($2::text[]) as key
             returning deletion_id, object_key",
        )
        .await?;
    let rows = tx
        .client()
        .query(
            &insert,
            &[
                &tenant.as_str(),
                &object_keys,
                &reason.as_str(),
                &not_before.as_secs_f64(),
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(QueuedDeletion {
                id: DeletionId(row.try_get(0)?),
                object_key: row.try_get(1)?,
            })
        })
        .collect()
}

/// Which of the tenant's rows `ids` are still there.
pub async fn still_pending<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    ids: &[DeletionId],
) -> Result<Vec<DeletionId>, StoreError> {
    let rows = client
        .query(
            "select deletion_id from object_deletions
             where tenant_id = $1 and deletion_id = any($2) order by deletion_id",
            &[&tenant.as_str(), &ids_param(ids)],
        )
        .await?;
    rows.iter()
        .map(|row| Ok(DeletionId(row.try_get(0)?)))
        .collect()
}

/// Removes the tenant's rows `ids` (their objects are gone), in the tenant's transaction.
pub async fn forget(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    ids: &[DeletionId],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(tx
        .client()
        .execute(
            "delete from object_deletions where tenant_id = $1 and deletion_id = any($2)",
            &[&tenant.as_str(), &ids_param(ids)],
        )
        .await?)
}

/// Claims up to `limit` due rows of any tenant for a sweeper: each is leased (not due
/// again) for `lease` and its attempt counted. Rows another sweeper is claiming at this
/// moment are skipped, not waited for. Oldest due first.
pub async fn claim_due(
    primary: &Primary,
    limit: i64,
    lease: Duration,
) -> Result<Vec<PendingDeletion>, StoreError> {
    let sql = format!(
        "with due as (
             select deletion_id from object_deletions
             where next_attempt_at <= now()
             order by next_attempt_at
             limit $1
             for update skip locked
         )
         update object_deletions d
         set attempts = d.attempts + 1,
             next_attempt_at = now() + make_interval(secs => $2)
         from due where d.deletion_id = due.deletion_id
         returning {}",
        COLUMNS
            .split(", ")
            .map(|column| format!("d.{column}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let rows = primary
        .client()
        .query(&sql, &[&limit.max(0), &lease.as_secs_f64()])
        .await?;
    let mut claimed: Vec<PendingDeletion> = rows.iter().map(decode).collect::<Result<_, _>>()?;
    claimed.sort_by_key(|row| row.id);
    Ok(claimed)
}

/// Removes the rows `ids`: their objects are gone (a sweeper's or the purge's).
pub async fn done(primary: &Primary, ids: &[DeletionId]) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(primary
        .client()
        .execute(
            "delete from object_deletions where deletion_id = any($1)",
            &[&ids_param(ids)],
        )
        .await?)
}

/// Keeps row `id` for another attempt after `backoff`, recording why this one failed.
pub async fn retry_later(
    primary: &Primary,
    id: DeletionId,
    failure: DeletionFailure,
    backoff: Duration,
) -> Result<(), StoreError> {
    primary
        .client()
        .execute(
            "update object_deletions
             set next_attempt_at = now() + make_interval(secs => $2), last_error = $3
             where deletion_id = $1",
            &[&id.0, &backoff.as_secs_f64(), &failure.as_str()],
        )
        .await?;
    Ok(())
}

/// Up to `limit` rows of `tenant`, due or not (an offboarding purge deletes them all).
pub async fn list_for_tenant(
    primary: &Primary,
    tenant: &TenantId,
    limit: i64,
) -> Result<Vec<PendingDeletion>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from object_deletions where tenant_id = $1
         order by deletion_id limit $2"
    );
    let rows = primary
        .client()
        .query(&sql, &[&tenant.as_str(), &limit.max(0)])
        .await?;
    rows.iter().map(decode).collect()
}

/// The rows of `tenant` (under a tenant scope: the tenant's own).
pub async fn pending_for_tenant<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
) -> Result<Vec<PendingDeletion>, StoreError> {
    let sql =
        format!("select {COLUMNS} from object_deletions where tenant_id = $1 order by deletion_id");
    let rows = client.query(&sql, &[&tenant.as_str()]).await?;
    rows.iter().map(decode).collect()
}

/// How many rows the region holds and how old the oldest is.
pub async fn stats(primary: &Primary) -> Result<OutboxStats, StoreError> {
    let row = primary
        .client()
        .query_one(
            "select count(*), coalesce(extract(epoch from now() - min(created_at)), 0)::float8
             from object_deletions",
            &[],
        )
        .await?;
    let pending: i64 = row.try_get(0)?;
    let oldest: f64 = row.try_get(1)?;
    Ok(OutboxStats {
        pending: u64::try_from(pending).unwrap_or_default(),
        oldest: Duration::try_from_secs_f64(oldest.max(0.0)).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_failures_round_trip_their_fixed_texts() {
        for reason in DeletionReason::ALL {
            assert_eq!(DeletionReason::parse(reason.as_str()), Some(reason));
        }
        for failure in DeletionFailure::ALL {
            assert_eq!(DeletionFailure::parse(failure.as_str()), Some(failure));
        }
        assert_eq!(DeletionReason::parse("anything"), None);
        assert_eq!(DeletionFailure::parse("object store unavailable: x"), None);
    }
}
