//! The rows a re-encryption after a key rotation walks: a tenant's records' sealed parts
//! and its files' objects, page by page in key order, and the conditional writes that put
//! a re-sealed value back only while its row is as it was read (optimistic concurrency on
//! the record's version, on the file's object), so a concurrent write is never lost.
//!
//! Re-sealing changes neither what a record holds nor its version (the client's `ETag`):
//! only the bytes of `records.sealed` and which key version `files.key_version` names.

use model::TenantId;
use tokio_postgres::GenericClient;

use crate::jobs::JobId;
use crate::{Primary, PrimaryTx, StoreError};

/// A record's place in the walk: (collection, record id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPosition {
    pub collection: String,
    pub record_id: String,
}

/// A record's sealed part as read, with the version a write back is conditional on.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRecord {
    pub position: RecordPosition,
    pub version: i64,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRecord")
            .field("position", &self.position)
            .field("version", &self.version)
            .field("sealed_len", &self.sealed.len())
            .finish()
    }
}

/// A file's place in the walk: (collection, record id, name token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    pub collection: String,
    pub record_id: String,
    pub name: String,
}

/// A file's object and the key version its row says it is sealed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    pub position: FilePosition,
    pub object_key: String,
    pub key_version: i32,
}

/// Up to `limit` records of `tenant` after `after` (from the first when `None`), in
/// (collection, record id) order, that hold a sealed part.
pub async fn records_after<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    after: Option<&RecordPosition>,
    limit: i64,
) -> Result<Vec<SealedRecord>, StoreError> {
    let rows = client
        .query(
            "select collection, record_id, version, sealed from records
             where tenant_id = $1 and length(sealed) > 0
               and ($2::text is null or (collection, record_id) > ($2, $3::text))
             order by collection, record_id limit $4",
            &[
                &tenant.as_str(),
                &after.map(|at| at.collection.as_str()),
                &after.map(|at| at.record_id.as_str()),
                &limit,
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(SealedRecord {
                position: RecordPosition {
                    collection: row.try_get(0)?,
                    record_id: row.try_get(1)?,
                },
                version: row.try_get(2)?,
                sealed: row.try_get(3)?,
            })
        })
        .collect()
}

/// One record's sealed part as it is now (`None`: deleted).
pub async fn record<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    at: &RecordPosition,
) -> Result<Option<SealedRecord>, StoreError> {
    let row = client
        .query_opt(
            "select version, sealed from records
             where tenant_id = $1 and collection = $2 and record_id = $3",
            &[&tenant.as_str(), &at.collection, &at.record_id],
        )
        .await?;
    row.map(|row| {
        Ok(SealedRecord {
            position: at.clone(),
            version: row.try_get(0)?,
            sealed: row.try_get(1)?,
        })
    })
    .transpose()
}

/// Puts a re-sealed part back if the record is still at `version` (no update, delete or
/// re-creation since it was read); returns whether it did. Neither the version nor
/// `updated_at` changes: the record's content did not.
pub async fn replace_sealed(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    at: &RecordPosition,
    version: i64,
    sealed: &[u8],
) -> Result<bool, StoreError> {
    let statement = tx
        .prepare_cached(
            "update records set sealed = $5
             where tenant_id = $1 and collection = $2 and record_id = $3 and version = $4",
        )
        .await?;
    let updated = tx
        .client()
        .execute(
            &statement,
            &[
                &tenant.as_str(),
                &at.collection,
                &at.record_id,
                &version,
                &sealed,
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// Up to `limit` files of `tenant` after `after` (from the first when `None`), in
/// (collection, record id, name) order.
pub async fn files_after<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    after: Option<&FilePosition>,
    limit: i64,
) -> Result<Vec<FileObject>, StoreError> {
    let rows = client
        .query(
            "select collection, record_id, name, object_key, key_version from files
             where tenant_id = $1
               and ($2::text is null or (collection, record_id, name) > ($2, $3::text, $4::text))
             order by collection, record_id, name limit $5",
            &[
                &tenant.as_str(),
                &after.map(|at| at.collection.as_str()),
                &after.map(|at| at.record_id.as_str()),
                &after.map(|at| at.name.as_str()),
                &limit,
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(FileObject {
                position: FilePosition {
                    collection: row.try_get(0)?,
                    record_id: row.try_get(1)?,
                    name: row.try_get(2)?,
                },
                object_key: row.try_get(3)?,
                key_version: row.try_get(4)?,
            })
        })
        .collect()
}

/// Records that the file's object is now sealed under `key_version`, if the file still
/// names `object_key` (not replaced or deleted meanwhile); returns whether it did.
pub async fn set_file_key_version(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    file: &FileObject,
    key_version: i32,
) -> Result<bool, StoreError> {
    let updated = tx
        .client()
        .execute(
            "update files set key_version = $6
             where tenant_id = $1 and collection = $2 and record_id = $3 and name = $4
               and object_key = $5",
            &[
                &tenant.as_str(),
                &file.position.collection,
                &file.position.record_id,
                &file.position.name,
                &file.object_key,
                &key_version,
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// Whether any file of `tenant` names `object_key`.
pub async fn object_in_use<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    object_key: &str,
) -> Result<bool, StoreError> {
    Ok(client
        .query_opt(
            "select 1 from files where tenant_id = $1 and object_key = $2",
            &[&tenant.as_str(), &object_key],
        )
        .await?
        .is_some())
}

/// Whether anything of `tenant` is still sealed under data key `version`: a sealed field
/// of a record (walked in SQL: `records.sealed` is, per field, a name length byte, the
/// name, a 4-byte big-endian length and the sealed value, whose bytes 1..5 are its key
/// version) or a file (`files.key_version`, which the re-encryption sets with the
/// object). Stops at the first one found.
pub async fn data_version_in_use<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    version: model::KeyVersion,
) -> Result<bool, StoreError> {
    let version = i32::try_from(version.get())
        .map_err(|_| StoreError::Corrupt("key version out of range".into()))?;
    let in_use: bool = client
        .query_one(
            "with recursive field (sealed, value_at) as (
                 select r.sealed, 5 + get_byte(r.sealed, 0)
                 from records r where r.tenant_id = $1 and length(r.sealed) > 0
               union all
                 select f.sealed, next.at + 5 + get_byte(f.sealed, next.at)
                 from field f
                 cross join lateral (
                     select f.value_at + ((get_byte(f.sealed, f.value_at - 4) << 24)
                                        | (get_byte(f.sealed, f.value_at - 3) << 16)
                                        | (get_byte(f.sealed, f.value_at - 2) << 8)
                                        |  get_byte(f.sealed, f.value_at - 1)) as at
                 ) next
                 where next.at < length(f.sealed)
             )
             select exists (
                 select 1 from field
                 where ((get_byte(sealed, value_at + 1) << 24)
                      | (get_byte(sealed, value_at + 2) << 16)
                      | (get_byte(sealed, value_at + 3) << 8)
                      |  get_byte(sealed, value_at + 4)) = $2
             ) or exists (select 1 from files where tenant_id = $1 and key_version = $2)",
            &[&tenant.as_str(), &version],
        )
        .await?
        .try_get(0)?;
    Ok(in_use)
}

/// How many records and files of `tenant` a re-encryption walks.
pub async fn items<C: GenericClient>(client: &C, tenant: &TenantId) -> Result<u64, StoreError> {
    let count: i64 = client
        .query_one(
            "select (select count(*) from records where tenant_id = $1 and length(sealed) > 0)
                  + (select count(*) from files where tenant_id = $1)",
            &[&tenant.as_str()],
        )
        .await?
        .try_get(0)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Queues `kind` for `tenant` inside the tenant-scoped `tx` (a rotation queues its
/// re-encryption with the new key version); returns the job's id.
pub async fn enqueue_in(
    tx: &PrimaryTx<'_>,
    kind: &str,
    tenant: &TenantId,
) -> Result<JobId, StoreError> {
    let row = tx
        .client()
        .query_one(
            "insert into jobs (kind, tenant_id) values ($1, $2) returning job_id",
            &[&kind, &tenant.as_str()],
        )
        .await?;
    JobId::parse(&row.try_get::<_, i64>(0)?.to_string())
        .ok_or_else(|| StoreError::Corrupt("jobs: job id".into()))
}

/// Whether `tenant` has a queued or running job of `kind` (seen from `client`, which may be
/// tenant-scoped: the policy shows a tenant its own jobs).
pub async fn has_active_job<C: GenericClient>(
    client: &C,
    kind: &str,
    tenant: &TenantId,
) -> Result<bool, StoreError> {
    Ok(client
        .query_opt(
            "select 1 from jobs where kind = $1 and tenant_id = $2
               and state in ('queued', 'running') limit 1",
            &[&kind, &tenant.as_str()],
        )
        .await?
        .is_some())
}

/// The latest job of `kind` for `tenant`, whatever its state.
pub async fn latest_job(
    primary: &Primary,
    kind: &str,
    tenant: &TenantId,
) -> Result<Option<crate::jobs::Job>, StoreError> {
    let filter = crate::jobs::JobFilter {
        kind: Some(kind),
        state: None,
        tenant: Some(tenant),
        before: None,
    };
    Ok(crate::jobs::list(primary, &filter, 1)
        .await?
        .into_iter()
        .next())
}
