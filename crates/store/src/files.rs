//! Metadata of records' files (`files`). The bytes live sealed in the region's object
//! store under `object_key`; this table says which object is a record's file now, so the
//! caller deletes an object only after the row that named it is gone or replaced.

use std::time::SystemTime;

use model::TenantId;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::Type;

use crate::{PrimaryTx, StoreError};

/// One file of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub collection: String,
    pub record_id: String,
    pub name: String,
    pub object_key: String,
    pub size: i64,
    pub sha256: Vec<u8>,
    pub content_type: String,
    /// The tenant data-key version that sealed the object.
    pub key_version: i32,
    pub created_at: SystemTime,
}

const COLUMNS: &str =
    "collection, record_id, name, object_key, size, sha256, content_type, key_version, created_at";

fn decode(row: &Row) -> Result<FileRow, StoreError> {
    Ok(FileRow {
        collection: row.try_get(0)?,
        record_id: row.try_get(1)?,
        name: row.try_get(2)?,
        object_key: row.try_get(3)?,
        size: row.try_get(4)?,
        sha256: row.try_get(5)?,
        content_type: row.try_get(6)?,
        key_version: row.try_get(7)?,
        created_at: row.try_get(8)?,
    })
}

/// Stores `file` as the record's file of that name; returns the object key of the file it
/// replaced, if any (the caller deletes that object after committing).
/// [`StoreError::NotFound`] when the record does not exist.
pub async fn upsert(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    file: &FileRow,
) -> Result<Option<String>, StoreError> {
    // New files are the common case: try the insert first. The replacement returns the
    // old key from a row locked before it is updated, so a concurrent replacement can
    // neither be missed nor reported twice.
    let insert = tx
        .prepare_cached(
            "insert into files (tenant_id, collection, record_id, name, object_key, size, sha256,
                                content_type, key_version, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             on conflict do nothing",
        )
        .await?;
    let replace = tx
        .prepare_cached(
            "with old as (
                 select object_key from files
                 where tenant_id = $1 and collection = $2 and record_id = $3 and name = $4
                 for update
             )
             update files f set object_key = $5, size = $6, sha256 = $7, content_type = $8,
                                key_version = $9, created_at = $10
             from old
             where f.tenant_id = $1 and f.collection = $2 and f.record_id = $3 and f.name = $4
             returning old.object_key",
        )
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
        &tenant.as_str(),
        &file.collection,
        &file.record_id,
        &file.name,
        &file.object_key,
        &file.size,
        &file.sha256,
        &file.content_type,
        &file.key_version,
        &file.created_at,
    ];
    let client = tx.client();
    loop {
        match client.execute(&insert, &params).await {
            Ok(1) => return Ok(None),
            Ok(_) => {}
            Err(err) => {
                return Err(match StoreError::from(err) {
                    StoreError::ForeignKey { .. } => StoreError::NotFound,
                    other => other,
                });
            }
        }
        if let Some(row) = client.query_opt(&replace, &params).await? {
            return Ok(Some(row.try_get(0)?));
        }
        // Deleted between the two statements: insert again.
    }
}

pub async fn get<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    collection: &str,
    record: &str,
    name: &str,
) -> Result<Option<FileRow>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from files
         where tenant_id = $1 and collection = $2 and record_id = $3 and name = $4"
    );
    client
        .query_typed_opt(
            &sql,
            &[
                (&tenant.as_str(), Type::TEXT),
                (&collection, Type::TEXT),
                (&record, Type::TEXT),
                (&name, Type::TEXT),
            ],
        )
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Deletes the file's row and returns it (the caller deletes the object after
/// committing).
pub async fn delete(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    collection: &str,
    record: &str,
    name: &str,
) -> Result<Option<FileRow>, StoreError> {
    let statement = tx
        .prepare_cached(&format!(
            "delete from files
             where tenant_id = $1 and collection = $2 and record_id = $3 and name = $4
             returning {COLUMNS}"
        ))
        .await?;
    tx.client()
        .query_opt(&statement, &[&tenant.as_str(), &collection, &record, &name])
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// The record's files, by name.
pub async fn list_for_record<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    collection: &str,
    record: &str,
) -> Result<Vec<FileRow>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from files
         where tenant_id = $1 and collection = $2 and record_id = $3 order by name"
    );
    client
        .query_typed(
            &sql,
            &[
                (&tenant.as_str(), Type::TEXT),
                (&collection, Type::TEXT),
                (&record, Type::TEXT),
            ],
        )
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// The files of several records, as (collection, record id) pairs, in one query: by
/// collection, record and name.
pub async fn list_for_records<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    records: &[(&str, &str)],
) -> Result<Vec<FileRow>, StoreError> {
    let (collections, ids): (Vec<&str>, Vec<&str>) = records.iter().copied().unzip();
    let sql = format!(
        "select {COLUMNS} from files
         where tenant_id = $1
           and (collection, record_id) in (select * from unnest($2::text[], $3::text[]))
         order by collection, record_id, name"
    );
    client
        .query_typed(
            &sql,
            &[
                (&tenant.as_str(), Type::TEXT),
                (&collections, Type::TEXT_ARRAY),
                (&ids, Type::TEXT_ARRAY),
            ],
        )
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// How many files the tenant has, across collections.
pub async fn count<C: GenericClient>(client: &C, tenant: &TenantId) -> Result<i64, StoreError> {
    Ok(client
        .query_typed_one(
            "select count(*) from files where tenant_id = $1",
            &[(&tenant.as_str(), Type::TEXT)],
        )
        .await?
        .try_get(0)?)
}
