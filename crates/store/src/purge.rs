//! Purging an offboarded tenant's rows (the `purge` job): counting what it holds, deleting
//! a bounded batch of one table at a time, and finally its key rows and its tenant row.
//! System work on the primary outside any tenant scope (the table owner's connection, like
//! the job runner's). The audit tables and the jobs table are never touched: the chain and
//! the purge's own job row are the evidence that stays.

use model::TenantId;
use tokio_postgres::GenericClient;

use crate::{Primary, StoreError};

/// The tables a purge empties batch by batch, children before parents (a parent's
/// `on delete cascade` would otherwise delete unbounded numbers of children at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeTable {
    RecordIndex,
    Files,
    Records,
    Collections,
    ApiKeys,
}

impl PurgeTable {
    /// In purge order.
    pub const ALL: [PurgeTable; 5] = [
        PurgeTable::RecordIndex,
        PurgeTable::Files,
        PurgeTable::Records,
        PurgeTable::Collections,
        PurgeTable::ApiKeys,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PurgeTable::RecordIndex => "record_index",
            PurgeTable::Files => "files",
            PurgeTable::Records => "records",
            PurgeTable::Collections => "collections",
            PurgeTable::ApiKeys => "api_keys",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|table| table.as_str() == text)
    }
}

/// How many rows `tenant` holds in `table`.
pub async fn count<C: GenericClient>(
    client: &C,
    table: PurgeTable,
    tenant: &TenantId,
) -> Result<u64, StoreError> {
    let sql = format!(
        "select count(*) from {} where tenant_id = $1",
        table.as_str()
    );
    let count: i64 = client
        .query_one(&sql, &[&tenant.as_str()])
        .await?
        .try_get(0)?;
    Ok(u64::try_from(count).unwrap_or_default())
}

/// Deletes up to `limit` rows of `tenant` from `table`; returns how many went. Deleting
/// what is already gone deletes nothing, so a batch that runs again is harmless.
pub async fn delete_batch(
    primary: &Primary,
    table: PurgeTable,
    tenant: &TenantId,
    limit: i64,
) -> Result<u64, StoreError> {
    let name = table.as_str();
    let sql = format!(
        "delete from {name} where ctid = any(array(
             select ctid from {name} where tenant_id = $1 limit $2))"
    );
    Ok(primary
        .client()
        .execute(&sql, &[&tenant.as_str(), &limit])
        .await?)
}

/// The last step of a purge: deletes the tenant's key rows (every version already
/// destroyed) and its tenant row, in one transaction, only while the tenant is
/// `offboarded` (a purge never deletes an active tenant). Returns whether the tenant row
/// was there (false once an earlier run deleted it).
pub async fn delete_tenant(primary: &mut Primary, tenant: &TenantId) -> Result<bool, StoreError> {
    let tx = primary.begin().await?;
    let status: Option<String> = tx
        .client()
        .query_opt(
            "select status from tenants where tenant_id = $1 for update",
            &[&tenant.as_str()],
        )
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    let present = match status.as_deref() {
        None => false,
        Some("offboarded") => true,
        Some(_) => {
            return Err(StoreError::Check {
                constraint: "purge of a tenant that is not offboarded".into(),
            });
        }
    };
    tx.client()
        .execute(
            "delete from tenant_keys where tenant_id = $1 and state = 'destroyed'",
            &[&tenant.as_str()],
        )
        .await?;
    // Idempotency keys (migration 0016): a bounded number per tenant, gone with the tenant.
    tx.client()
        .execute(
            "delete from idempotency_keys where tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await?;
    tx.client()
        .execute(
            "delete from tenants where tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await?;
    tx.commit().await?;
    Ok(present)
}
