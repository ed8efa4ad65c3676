//! Idempotency keys of creates (migration `0016_idempotency_keys.sql`): the answer to a
//! create sent with an `Idempotency-Key`, recorded in the create's own transaction, found
//! again when the create is retried. Rows hold hashes, ids, versions, sizes and times
//! only; rows older than the retention are ignored, and deleted in bounded batches by the
//! claims that follow.

use std::time::{Duration, SystemTime};

use model::{Lsn, TenantId};
use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::{PrimaryTx, StoreError};

/// Expired rows a claim deletes at most, so the clean-up of a tenant's backlog costs each
/// create a bounded amount.
const EXPIRED_BATCH: i64 = 100;

/// The recorded answer of a create, as a retry finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    /// `record.create`, `file.put` or `tenant.create`.
    pub operation: String,
    pub request_hash: [u8; 32],
    pub status: u16,
    /// Ids, versions, sizes and digests (see the migration): never personal data.
    pub response: Value,
    pub created_at: SystemTime,
    /// A WAL position past the commit of the create that recorded the answer (the
    /// primary's insert position when it was found): a retry's consistency token.
    pub lsn: Lsn,
}

/// A create's answer to record with its key.
#[derive(Debug, Clone, Copy)]
pub struct NewAnswer<'a> {
    pub tenant: &'a TenantId,
    pub key_hash: &'a [u8; 32],
    pub operation: &'static str,
    pub request_hash: &'a [u8; 32],
    pub status: u16,
    pub response: &'a Value,
}

/// What recording an answer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key is the create's now (new, or its earlier row had expired).
    Recorded,
    /// A create that committed first (perhaps after this one waited for it) holds the key.
    Taken,
    /// The tenant holds `max_live` live keys already: nothing was recorded.
    Full,
}

/// The live answer recorded under `key_hash` for `tenant`, if any (read on the primary:
/// a replica could miss an answer just committed).
pub async fn find<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    key_hash: &[u8; 32],
    retention: Duration,
) -> Result<Option<StoredAnswer>, StoreError> {
    let row = client
        .query_typed_opt(
            "select operation, request_hash, status, response, created_at,
                    pg_current_wal_insert_lsn()::text
             from idempotency_keys
             where tenant_id = $1 and key_hash = $2
               and created_at > now() - make_interval(secs => $3)",
            &[
                (&tenant.as_str(), Type::TEXT),
                (&key_hash.as_slice(), Type::BYTEA),
                (&retention.as_secs_f64(), Type::FLOAT8),
            ],
        )
        .await?;
    row.map(|row| stored_answer(&row, 0)).transpose()
}

/// The answer in `row`'s columns from `first` on: operation, request hash, status,
/// response, time, WAL position.
fn stored_answer(row: &tokio_postgres::Row, first: usize) -> Result<StoredAnswer, StoreError> {
    let request_hash: Vec<u8> = row.try_get(first + 1)?;
    let status: i16 = row.try_get(first + 2)?;
    let lsn: String = row.try_get(first + 5)?;
    Ok(StoredAnswer {
        operation: row.try_get(first)?,
        request_hash: request_hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("idempotency request hash".into()))?,
        status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt("idempotency status".into()))?,
        response: row.try_get(first + 3)?,
        created_at: row.try_get(first + 4)?,
        lsn: Lsn::parse(&lsn).map_err(|_| StoreError::Corrupt("wal position".into()))?,
    })
}

/// Records `answer` under its key in the create's transaction `tx`, unless a live row
/// holds the key (waiting, like any insert, for a transaction that is writing the same
/// key to end) or the tenant holds `max_live` live keys. First deletes up to a batch of
/// the tenant's expired rows (rows another transaction is deleting are skipped, never
/// waited for).
pub async fn claim(
    tx: &PrimaryTx<'_>,
    answer: NewAnswer<'_>,
    retention: Duration,
    max_live: i64,
) -> Result<Claim, StoreError> {
    let client = tx.client();
    let tenant = answer.tenant.as_str();
    let retention = retention.as_secs_f64();
    client
        .query_typed(
            "delete from idempotency_keys where ctid = any(array(
                 select ctid from idempotency_keys
                 where tenant_id = $1 and created_at <= now() - make_interval(secs => $2)
                 limit $3 for update skip locked))",
            &[
                (&tenant, Type::TEXT),
                (&retention, Type::FLOAT8),
                (&EXPIRED_BATCH, Type::INT8),
            ],
        )
        .await?;
    let live: i64 = client
        .query_typed_one(
            "select count(*) from (select 1 from idempotency_keys
                 where tenant_id = $1 and created_at > now() - make_interval(secs => $2)
                 limit $3) live",
            &[
                (&tenant, Type::TEXT),
                (&retention, Type::FLOAT8),
                (&max_live, Type::INT8),
            ],
        )
        .await?
        .try_get(0)?;
    if live >= max_live {
        return Ok(Claim::Full);
    }
    let status = i16::try_from(answer.status)
        .map_err(|_| StoreError::Corrupt("idempotency status".into()))?;
    // A tenant creation's key is unique across tenants (migration 0016): another
    // creation's row is a unique violation, not a conflict of this statement's target.
    let recorded = client
        .query_typed_opt(
            "insert into idempotency_keys
                 (tenant_id, key_hash, operation, request_hash, status, response)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (tenant_id, key_hash) do update
                 set operation = excluded.operation, request_hash = excluded.request_hash,
                     status = excluded.status, response = excluded.response,
                     created_at = now()
                 where idempotency_keys.created_at <= now() - make_interval(secs => $7)
             returning 1",
            &[
                (&tenant, Type::TEXT),
                (&answer.key_hash.as_slice(), Type::BYTEA),
                (&answer.operation, Type::TEXT),
                (&answer.request_hash.as_slice(), Type::BYTEA),
                (&status, Type::INT2),
                (answer.response, Type::JSONB),
                (&retention, Type::FLOAT8),
            ],
        )
        .await
        .map_err(StoreError::from);
    Ok(match recorded {
        Ok(Some(_)) => Claim::Recorded,
        Ok(None) | Err(StoreError::Conflict) => Claim::Taken,
        Err(other) => return Err(other),
    })
}

/// The live answer of the operator's tenant creation recorded under `key_hash`, with the
/// tenant it created. Read across tenants: the caller is the operator, on the primary's
/// own connection (no tenant scope), like the operator's tenant listing.
pub async fn find_tenant_creation<C: GenericClient>(
    client: &C,
    key_hash: &[u8; 32],
    retention: Duration,
) -> Result<Option<(TenantId, StoredAnswer)>, StoreError> {
    let row = client
        .query_typed_opt(
            "select tenant_id, operation, request_hash, status, response, created_at,
                    pg_current_wal_insert_lsn()::text
             from idempotency_keys
             where key_hash = $1 and operation = 'tenant.create'
               and created_at > now() - make_interval(secs => $2)",
            &[
                (&key_hash.as_slice(), Type::BYTEA),
                (&retention.as_secs_f64(), Type::FLOAT8),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let tenant: String = row.try_get(0)?;
    let tenant =
        TenantId::parse(&tenant).map_err(|_| StoreError::Corrupt("idempotency tenant".into()))?;
    Ok(Some((tenant, stored_answer(&row, 1)?)))
}

/// Deletes the expired row of a tenant creation under `key_hash`, if any, so the key can
/// create again (its row belongs to the tenant the key created before, which the new
/// creation's transaction cannot see). On the primary's own connection.
pub async fn forget_expired_tenant_creation<C: GenericClient>(
    client: &C,
    key_hash: &[u8; 32],
    retention: Duration,
) -> Result<(), StoreError> {
    client
        .query_typed(
            "delete from idempotency_keys
             where key_hash = $1 and operation = 'tenant.create'
               and created_at <= now() - make_interval(secs => $2)",
            &[
                (&key_hash.as_slice(), Type::BYTEA),
                (&retention.as_secs_f64(), Type::FLOAT8),
            ],
        )
        .await?;
    Ok(())
}
