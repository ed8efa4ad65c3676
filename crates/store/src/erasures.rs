//! Erasure of a data subject (issue 29): deleting the records whose subject token is the
//! subject's (their index tokens and file rows go with them by cascade), the erasure
//! ledger's rows (`subject_erasures`, migration `0013`) and the job that removes the
//! erased files' objects after the commit. Only tokens and counts pass through here.

use std::time::SystemTime;

use model::TenantId;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::jobs::JobId;
use crate::{PrimaryTx, StoreError};

/// The job kind of an erasure's follow-up after its commit: the files' objects and the
/// ledger entry in the audit bucket (`service::jobs::ErasureFollowUpJob`).
pub const FOLLOW_UP_KIND: &str = "erasure_follow_up";

/// The job kind of the erasure of a subject with many records
/// (`service::jobs::SubjectErasureJob`).
pub const ERASURE_JOB_KIND: &str = "subject_erasure";

/// What one erasing statement deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasedRows {
    pub records: u64,
    pub files: u64,
    /// The deleted files' object keys (random ids, not personal data).
    pub object_keys: Vec<String>,
    /// The collections that held the deleted records, sorted.
    pub collections: Vec<String>,
}

/// A row of the erasure ledger's table, as written with the erasure's `subject.erase`
/// event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRow {
    pub tenant: TenantId,
    /// The ledger entry's id (also its name in the audit bucket).
    pub entry_id: String,
    pub subject_token: [u8; 32],
    pub erased_at: SystemTime,
    pub records_erased: u64,
    pub files_erased: u64,
    pub collections: Vec<String>,
    pub audit_seq: u64,
    /// Written by a re-application of the bucket's ledger, not by a request.
    pub reapplied: bool,
}

/// How many of the tenant's records carry `token`, counting no further than `cap`.
pub async fn count_records<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    token: &[u8; 32],
    cap: i64,
) -> Result<u64, StoreError> {
    let row = client
        .query_typed_one(
            "select count(*) from (select 1 from record_index
                                   where tenant_id = $1 and field = 'subject:' and token = $2
                                   limit $3) capped",
            &[
                (&tenant.as_str(), Type::TEXT),
                (&token.as_slice(), Type::BYTEA),
                (&cap, Type::INT8),
            ],
        )
        .await?;
    count(row.try_get(0)?)
}

/// Deletes up to `limit` of the tenant's records whose subject token is `token`, in every
/// collection, with their files' rows (and, by cascade, every index token of theirs), in
/// one statement of `tx`.
pub async fn erase_records(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    token: &[u8; 32],
    limit: i64,
) -> Result<ErasedRows, StoreError> {
    let sql = "with subject as (
                   select collection, record_id from record_index
                   where tenant_id = $1 and field = 'subject:' and token = $2
                   order by collection, record_id limit $3
               ), gone_files as (
                   delete from files f using subject s
                   where f.tenant_id = $1 and f.collection = s.collection
                     and f.record_id = s.record_id
                   returning f.object_key
               ), gone as (
                   delete from records r using subject s
                   where r.tenant_id = $1 and r.collection = s.collection
                     and r.record_id = s.record_id
                   returning r.collection
               )
               select (select count(*) from gone),
                      coalesce((select array_agg(object_key order by object_key) from gone_files),
                               '{}'),
                      coalesce((select array_agg(distinct collection) from gone), '{}')";
    let row = tx
        .client()
        .query_typed_one(
            sql,
            &[
                (&tenant.as_str(), Type::TEXT),
                (&token.as_slice(), Type::BYTEA),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    let object_keys: Vec<String> = row.try_get(1)?;
    let mut collections: Vec<String> = row.try_get(2)?;
    collections.sort();
    Ok(ErasedRows {
        records: count(row.try_get(0)?)?,
        files: object_keys.len() as u64,
        object_keys,
        collections,
    })
}

/// Queues, in `tx`, the follow-up of an erasure: the job that deletes `object_keys` (every
/// version) and writes the ledger entry `entry_id` to the audit bucket once the erasure
/// committed. A node that dies between the commit and doing it itself leaves it to the
/// job. The job's checkpoint holds the entry's id and object keys (random ids), never the
/// token: it reads the entry from the ledger's row.
pub async fn queue_follow_up(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    entry_id: Option<&str>,
    object_keys: &[String],
) -> Result<(), StoreError> {
    if entry_id.is_none() && object_keys.is_empty() {
        return Ok(());
    }
    let checkpoint = serde_json::json!({ "entry_id": entry_id, "objects": object_keys });
    tx.client()
        .execute(
            "insert into jobs (kind, tenant_id, checkpoint, total) values ($1, $2, $3, $4)",
            &[
                &FOLLOW_UP_KIND,
                &tenant.as_str(),
                &checkpoint,
                &i64::try_from(object_keys.len()).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    Ok(())
}

/// A `subject_erasure` job as the erasure's answer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureJobRow {
    pub job: JobId,
    pub state: String,
    pub done: u64,
    pub total: u64,
}

fn job_row(row: &tokio_postgres::Row) -> Result<ErasureJobRow, StoreError> {
    Ok(ErasureJobRow {
        job: JobId::from_raw(row.try_get(0)?),
        state: row.try_get(1)?,
        done: count(row.try_get(2)?)?,
        total: count(row.try_get(3)?)?,
    })
}

/// The queued or running `subject_erasure` job of the tenant for `token`, if any.
pub async fn active_job<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    token: &[u8; 32],
) -> Result<Option<ErasureJobRow>, StoreError> {
    client
        .query_typed_opt(
            "select job_id, state, done, total from jobs
             where tenant_id = $1 and kind = $2 and state in ('queued', 'running')
               and checkpoint ->> 'token' = $3
             order by job_id limit 1",
            &[
                (&tenant.as_str(), Type::TEXT),
                (&ERASURE_JOB_KIND, Type::TEXT),
                (&hex::encode(token), Type::TEXT),
            ],
        )
        .await?
        .as_ref()
        .map(job_row)
        .transpose()
}

/// Queues the `subject_erasure` job of a subject with many records (its checkpoint holds
/// the token until it is done, and the id its ledger entry will have), counting its
/// records as the total.
pub async fn queue_erasure_job<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    token: &[u8; 32],
    entry_id: &str,
) -> Result<ErasureJobRow, StoreError> {
    let checkpoint = serde_json::json!({ "token": hex::encode(token), "entry_id": entry_id });
    let row = client
        .query_typed_one(
            "insert into jobs (kind, tenant_id, checkpoint, total)
             values ($1, $2, $3, (select count(*) from record_index
                                  where tenant_id = $2 and field = 'subject:' and token = $4))
             returning job_id, state, done, total",
            &[
                (&ERASURE_JOB_KIND, Type::TEXT),
                (&tenant.as_str(), Type::TEXT),
                (&checkpoint, Type::JSONB),
                (&token.as_slice(), Type::BYTEA),
            ],
        )
        .await?;
    job_row(&row)
}

/// The ledger's row of `entry_id`, if this database has it.
pub async fn get<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    entry_id: &str,
) -> Result<Option<ErasureRow>, StoreError> {
    Ok(list_where(client, tenant, None, Some(entry_id))
        .await?
        .into_iter()
        .next())
}

/// Writes the ledger's row of an erasure in `tx` (the erasure's own transaction).
pub async fn insert(tx: &PrimaryTx<'_>, row: &ErasureRow) -> Result<(), StoreError> {
    tx.client()
        .execute(
            "insert into subject_erasures (tenant_id, entry_id, subject_token, erased_at,
                                           records_erased, files_erased, collections,
                                           audit_seq, reapplied)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &row.tenant.as_str(),
                &row.entry_id,
                &row.subject_token.as_slice(),
                &row.erased_at,
                &count_param(row.records_erased),
                &count_param(row.files_erased),
                &row.collections,
                &count_param(row.audit_seq),
                &row.reapplied,
            ],
        )
        .await?;
    Ok(())
}

/// Which of the ledger entries `entry_ids` of `tenant` are applied in this database: one
/// query for all of a tenant's entries (a node re-applies the ledger at every start).
pub async fn applied_of<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    entry_ids: &[&str],
) -> Result<std::collections::HashSet<String>, StoreError> {
    client
        .query_typed(
            "select entry_id from subject_erasures where tenant_id = $1 and entry_id = any($2)",
            &[
                (&tenant.as_str(), Type::TEXT),
                (&entry_ids, Type::TEXT_ARRAY),
            ],
        )
        .await?
        .iter()
        .map(|row| Ok(row.try_get(0)?))
        .collect()
}

/// The tenant's erasures, oldest first, erased at or after `since` (all when `None`):
/// what the analytics export reads to leave erased subjects out and withdraw runs.
pub async fn list<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    since: Option<SystemTime>,
) -> Result<Vec<ErasureRow>, StoreError> {
    list_where(client, tenant, since, None).await
}

async fn list_where<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    since: Option<SystemTime>,
    entry_id: Option<&str>,
) -> Result<Vec<ErasureRow>, StoreError> {
    let rows = client
        .query_typed(
            "select entry_id, subject_token, erased_at, records_erased, files_erased,
                    collections, audit_seq, reapplied
             from subject_erasures
             where tenant_id = $1 and ($2::timestamptz is null or erased_at >= $2)
               and ($3::text is null or entry_id = $3)
             order by erased_at, entry_id",
            &[
                (&tenant.as_str(), Type::TEXT),
                (&since, Type::TIMESTAMPTZ),
                (&entry_id, Type::TEXT),
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let token: Vec<u8> = row.try_get(1)?;
            Ok(ErasureRow {
                tenant: *tenant,
                entry_id: row.try_get(0)?,
                subject_token: token
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("subject_erasures: token".into()))?,
                erased_at: row.try_get(2)?,
                records_erased: count(row.try_get(3)?)?,
                files_erased: count(row.try_get(4)?)?,
                collections: row.try_get(5)?,
                audit_seq: count(row.try_get(6)?)?,
                reapplied: row.try_get(7)?,
            })
        })
        .collect()
}

fn count(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("negative count".into()))
}

fn count_param(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
