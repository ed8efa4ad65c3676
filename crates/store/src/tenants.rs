//! Tenants homed in this region (`tenants`): their residency policy as stored, and
//! whether they are active. Never anything a tenant put in its data.

use std::time::SystemTime;

use model::TenantId;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::{PrimaryTx, StoreError};

/// One tenant, column for column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub id: TenantId,
    pub name: String,
    pub home_region: String,
    pub allowed_regions: Vec<String>,
    /// `proxy` or `redirect`.
    pub transit: String,
    pub analytics_export: bool,
    /// `active` or `offboarded`.
    pub status: String,
    pub created_at: SystemTime,
}

/// Inserts a new tenant; [`StoreError::Conflict`] when the id exists.
pub async fn insert(tx: &PrimaryTx<'_>, row: &TenantRow) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "insert into tenants (tenant_id, name, home_region, allowed_regions, transit,
                                  analytics_export, status, created_at)
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await?;
    tx.client()
        .execute(
            &statement,
            &[
                &row.id.as_str(),
                &row.name,
                &row.home_region,
                &row.allowed_regions,
                &row.transit,
                &row.analytics_export,
                &row.status,
                &row.created_at,
            ],
        )
        .await?;
    Ok(())
}

/// The tenant, whatever its status.
pub async fn get<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
) -> Result<Option<TenantRow>, StoreError> {
    let row = client
        .query_typed_opt(
            "select name, home_region, allowed_regions, transit, analytics_export, status, created_at
             from tenants where tenant_id = $1",
            &[(&tenant.as_str(), Type::TEXT)],
        )
        .await?;
    row.map(|row| {
        Ok(TenantRow {
            id: *tenant,
            name: row.try_get(0)?,
            home_region: row.try_get(1)?,
            allowed_regions: row.try_get(2)?,
            transit: row.try_get(3)?,
            analytics_export: row.try_get(4)?,
            status: row.try_get(5)?,
            created_at: row.try_get(6)?,
        })
    })
    .transpose()
}

/// Up to `limit` active tenants with an id after `after`, by id: the operator's listing.
/// A system read across tenants, so `client` must be outside any tenant scope (row-level
/// security would confine it to one tenant).
pub async fn list_active<C: GenericClient>(
    client: &C,
    after: Option<&TenantId>,
    limit: i64,
) -> Result<Vec<TenantRow>, StoreError> {
    let rows = client
        .query_typed(
            "select tenant_id, name, home_region, allowed_regions, transit, analytics_export,
                    status, created_at
             from tenants
             where status = 'active' and ($1::text is null or tenant_id > $1)
             order by tenant_id limit $2",
            &[
                (&after.map(TenantId::as_str), Type::TEXT),
                (&limit, Type::INT8),
            ],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let id: &str = row.try_get(0)?;
            Ok(TenantRow {
                id: TenantId::parse(id)
                    .map_err(|_| StoreError::Corrupt("tenants: tenant id".into()))?,
                name: row.try_get(1)?,
                home_region: row.try_get(2)?,
                allowed_regions: row.try_get(3)?,
                transit: row.try_get(4)?,
                analytics_export: row.try_get(5)?,
                status: row.try_get(6)?,
                created_at: row.try_get(7)?,
            })
        })
        .collect()
}

/// Sets the tenant's status (`active` or `offboarded`; anything else is
/// [`StoreError::Check`]); returns whether the tenant exists.
pub async fn set_status(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    status: &str,
) -> Result<bool, StoreError> {
    let statement = tx
        .prepare_cached("update tenants set status = $2 where tenant_id = $1")
        .await?;
    let updated = tx
        .client()
        .execute(&statement, &[&tenant.as_str(), &status])
        .await?;
    Ok(updated == 1)
}

/// Marks the tenant offboarded if it is active; returns whether it was (false when it is
/// absent or already offboarded, so that two offboardings at once mark it once).
pub async fn mark_offboarded(tx: &PrimaryTx<'_>, tenant: &TenantId) -> Result<bool, StoreError> {
    let updated = tx
        .client()
        .execute(
            "update tenants set status = 'offboarded' where tenant_id = $1 and status = 'active'",
            &[&tenant.as_str()],
        )
        .await?;
    Ok(updated == 1)
}

/// A tenant's own bounds of automatic key rotation (`None`: the region's default), as
/// stored in `tenants.key_max_seals` and `tenants.key_max_age_seconds` (migration 0010).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyBounds {
    pub max_seals: Option<i64>,
    pub max_age_seconds: Option<i64>,
}

/// The tenant's rotation bounds; `None` when the tenant is not here.
pub async fn key_bounds<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
) -> Result<Option<KeyBounds>, StoreError> {
    let row = client
        .query_opt(
            "select key_max_seals, key_max_age_seconds from tenants
             where tenant_id = $1 and status = 'active'",
            &[&tenant.as_str()],
        )
        .await?;
    row.map(|row| {
        Ok(KeyBounds {
            max_seals: row.try_get(0)?,
            max_age_seconds: row.try_get(1)?,
        })
    })
    .transpose()
}

/// Sets the tenant's rotation bounds; returns whether the (active) tenant exists. The
/// caller checks the values; the table's checks refuse what is not positive.
pub async fn set_key_bounds(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    bounds: KeyBounds,
) -> Result<bool, StoreError> {
    let updated = tx
        .client()
        .execute(
            "update tenants set key_max_seals = $2, key_max_age_seconds = $3
             where tenant_id = $1 and status = 'active'",
            &[&tenant.as_str(), &bounds.max_seals, &bounds.max_age_seconds],
        )
        .await?;
    Ok(updated == 1)
}
