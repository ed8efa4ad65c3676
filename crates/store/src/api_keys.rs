//! Tenant API keys (`api_keys`): a public lookup id, a role, and a SHA-256 hash of the
//! secret. The secret itself never reaches this crate.

use std::time::SystemTime;

use model::TenantId;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::rows::hash32;
use crate::{PrimaryTx, StoreError};

/// One API key. Debug leaves out the secret's hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    /// The public lookup prefix of the key, unique across tenants.
    pub key_id: String,
    pub tenant: TenantId,
    pub name: String,
    /// `admin`, `writer`, `reader` or `auditor`.
    pub role: String,
    pub secret_hash: [u8; 32],
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

impl std::fmt::Debug for ApiKeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyRow")
            .field("key_id", &self.key_id)
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Inserts a key; [`StoreError::Conflict`] when the key id exists (in any tenant),
/// [`StoreError::ForeignKey`] when the tenant does not.
pub async fn insert(tx: &PrimaryTx<'_>, row: &ApiKeyRow) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "insert into api_keys (tenant_id, key_id, name, role, secret_hash, created_at, revoked_at)
             values ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    tx.client()
        .execute(
            &statement,
            &[
                &row.tenant.as_str(),
                &row.key_id,
                &row.name,
                &row.role,
                &row.secret_hash.as_slice(),
                &row.created_at,
                &row.revoked_at,
            ],
        )
        .await?;
    Ok(())
}

/// The key `key_id` of `tenant`, revoked or not.
pub async fn get<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    key_id: &str,
) -> Result<Option<ApiKeyRow>, StoreError> {
    let row = client
        .query_typed_opt(
            "select name, role, secret_hash, created_at, revoked_at
             from api_keys where tenant_id = $1 and key_id = $2",
            &[(&tenant.as_str(), Type::TEXT), (&key_id, Type::TEXT)],
        )
        .await?;
    row.map(|row| {
        Ok(ApiKeyRow {
            key_id: key_id.to_owned(),
            tenant: *tenant,
            name: row.try_get(0)?,
            role: row.try_get(1)?,
            secret_hash: hash32(row.try_get(2)?, "api_keys: secret hash")?,
            created_at: row.try_get(3)?,
            revoked_at: row.try_get(4)?,
        })
    })
    .transpose()
}

/// Revokes the key; returns whether it was active (false: unknown or already revoked).
pub async fn revoke(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    key_id: &str,
) -> Result<bool, StoreError> {
    let statement = tx
        .prepare_cached(
            "update api_keys set revoked_at = now()
             where tenant_id = $1 and key_id = $2 and revoked_at is null",
        )
        .await?;
    let updated = tx
        .client()
        .execute(&statement, &[&tenant.as_str(), &key_id])
        .await?;
    Ok(updated == 1)
}
