//! Purging an offboarded tenant's rows (the `purge` job): counting what it holds, deleting
//! a bounded batch of one table at a time, and finally its key rows and its tenant row.
//! Counting runs in the tenant's scope; deleting goes through the database function
//! `residency_purge` (migration 0015), which runs as the schema owner, refuses a tenant
//! that is not offboarded and records each step in `tenant_purges`. The audit tables and
//! the jobs table are never touched: the chain and the purge's own job row are the
//! evidence that stays.

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
/// what is already gone deletes nothing, so a batch that runs again is harmless. Through
/// `residency_purge` (migration 0015), the only way the node's role deletes a tenant's rows
/// wholesale: it refuses a tenant that is not offboarded and records what it deleted.
pub async fn delete_batch(
    primary: &Primary,
    table: PurgeTable,
    tenant: &TenantId,
    limit: i64,
) -> Result<u64, StoreError> {
    purge_step(primary.client(), tenant, table.as_str(), limit).await
}

/// The last step of a purge: deletes the tenant's key rows (every version already
/// destroyed) and its tenant row, in one statement, only while the tenant is
/// `offboarded` (a purge never deletes an active tenant). Returns whether the tenant row
/// was there (false once an earlier run deleted it). Its idempotency keys (migration
/// 0016) go with the tenant row (their foreign key cascades).
pub async fn delete_tenant(primary: &mut Primary, tenant: &TenantId) -> Result<bool, StoreError> {
    Ok(purge_step(primary.client(), tenant, "tenant", 1).await? > 0)
}

/// One call of `residency_purge`; a live tenant is [`StoreError::Check`] naming
/// `residency_purge_refuses_a_live_tenant`.
async fn purge_step(
    client: &tokio_postgres::Client,
    tenant: &TenantId,
    step: &str,
    limit: i64,
) -> Result<u64, StoreError> {
    let deleted: i64 = client
        .query_one(
            "select residency_purge($1, $2, $3)",
            &[&tenant.as_str(), &step, &limit],
        )
        .await?
        .try_get(0)?;
    Ok(u64::try_from(deleted).unwrap_or_default())
}
