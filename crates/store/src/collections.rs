//! Collection schemas (`collections`), stored as the JSON document the tenant sent. The
//! version moves only when the schema changes.

use std::time::SystemTime;

use model::TenantId;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::Type;

use crate::{PrimaryTx, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct CollectionRow {
    pub name: String,
    pub schema: serde_json::Value,
    pub version: i32,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

fn decode(row: &Row) -> Result<CollectionRow, StoreError> {
    Ok(CollectionRow {
        name: row.try_get(0)?,
        schema: row.try_get(1)?,
        version: row.try_get(2)?,
        created_at: row.try_get(3)?,
        updated_at: row.try_get(4)?,
    })
}

/// Creates the collection or replaces its schema; returns it and whether it was created.
/// Putting the same schema again changes nothing (same version, same `updated_at`).
/// [`StoreError::ForeignKey`] when the tenant does not exist.
pub async fn upsert(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    name: &str,
    schema: &serde_json::Value,
) -> Result<(CollectionRow, bool), StoreError> {
    // `xmax = 0` only on a freshly inserted row: the conflict path locks the old row, and
    // the new version carries that lock.
    let statement = tx
        .prepare_cached(
            "insert into collections as c (tenant_id, name, schema) values ($1, $2, $3)
             on conflict (tenant_id, name) do update set
                 schema = excluded.schema,
                 version = c.version + case when c.schema = excluded.schema then 0 else 1 end,
                 updated_at = case when c.schema = excluded.schema then c.updated_at else now() end
             returning name, schema, version, created_at, updated_at, (xmax = 0) as created",
        )
        .await?;
    let row = tx
        .client()
        .query_one(&statement, &[&tenant.as_str(), &name, schema])
        .await?;
    Ok((decode(&row)?, row.try_get(5)?))
}

const GET: &str = "select name, schema, version, created_at, updated_at
                   from collections where tenant_id = $1 and name = $2";

pub async fn get<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<CollectionRow>, StoreError> {
    client
        .query_typed_opt(GET, &[(&tenant.as_str(), Type::TEXT), (&name, Type::TEXT)])
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// The collection's row, locked against other schema changes until `tx` ends (`for no
/// key update`, the lock the upsert takes anyway). Record writes are not held up: their
/// foreign key's key-share lock does not conflict with it, and taking a lock they
/// conflict with would order it against the tenant's audit-head lock, which record
/// writes take before (one round trip) or after (in a transaction) the record row.
pub async fn get_locked(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    name: &str,
) -> Result<Option<CollectionRow>, StoreError> {
    tx.client()
        .query_typed_opt(
            &format!("{GET} for no key update"),
            &[(&tenant.as_str(), Type::TEXT), (&name, Type::TEXT)],
        )
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Every collection of the tenant, in name order.
pub async fn list<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
) -> Result<Vec<CollectionRow>, StoreError> {
    client
        .query(
            "select name, schema, version, created_at, updated_at
             from collections where tenant_id = $1 order by name",
            &[&tenant.as_str()],
        )
        .await?
        .iter()
        .map(decode)
        .collect()
}
