//! Wrapped tenant keys in the region's primary (`tenant_keys`). Only ciphertext from the
//! KMS and metadata are stored; plaintext keys never reach this crate.

use std::time::SystemTime;

use model::{KeyPurpose, KeyState, KeyVersion, TenantId};
use tokio_postgres::GenericClient;
use tokio_postgres::Row;

use crate::{PrimaryTx, StoreError};

/// One stored key version. `wrapped` and `kms_key_id` are `None` once destroyed.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub tenant: TenantId,
    pub purpose: KeyPurpose,
    pub version: KeyVersion,
    pub state: KeyState,
    pub kms_key_id: Option<String>,
    pub wrapped: Option<Vec<u8>>,
    /// The KMS encryption context, as a JSON object.
    pub kms_context: String,
    pub created_at: SystemTime,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("tenant", &self.tenant)
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .field("state", &self.state)
            .field("kms_key_id", &self.kms_key_id)
            .finish_non_exhaustive()
    }
}

/// A key version to insert (always active).
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub tenant: &'a TenantId,
    pub purpose: KeyPurpose,
    pub kms_key_id: &'a str,
    pub wrapped: &'a [u8],
    pub kms_context: &'a str,
}

const COLUMNS: &str =
    "tenant_id, purpose, version, state, kms_key_id, wrapped_key, kms_context::text, created_at";

fn decode(row: &Row) -> Result<StoredKey, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("tenant_keys: {what}"));
    let tenant: &str = row.try_get(0)?;
    let purpose: &str = row.try_get(1)?;
    let version: i32 = row.try_get(2)?;
    let state: &str = row.try_get(3)?;
    Ok(StoredKey {
        tenant: TenantId::parse(tenant).map_err(|_| corrupt("tenant id"))?,
        purpose: KeyPurpose::parse(purpose).ok_or_else(|| corrupt("purpose"))?,
        version: u32::try_from(version)
            .ok()
            .and_then(KeyVersion::new)
            .ok_or_else(|| corrupt("version"))?,
        state: KeyState::parse(state).ok_or_else(|| corrupt("state"))?,
        kms_key_id: row.try_get(4)?,
        wrapped: row.try_get(5)?,
        kms_context: row.try_get(6)?,
        created_at: row.try_get(7)?,
    })
}

fn version_param(version: KeyVersion) -> i32 {
    i32::try_from(version.get()).expect("key versions stay far below 2^31")
}

/// Inserts version 1 of `key.purpose` for a new tenant.
pub async fn insert_first_key(
    tx: &PrimaryTx<'_>,
    key: &NewKey<'_>,
) -> Result<KeyVersion, StoreError> {
    tx.client()
        .execute(
            "insert into tenant_keys (tenant_id, purpose, version, state, kms_key_id, wrapped_key, kms_context)
             values ($1, $2, 1, 'active', $3, $4, $5::text::jsonb)",
            &[&key.tenant.as_str(), &key.purpose.as_str(), &key.kms_key_id, &key.wrapped, &key.kms_context],
        )
        .await?;
    Ok(KeyVersion::FIRST)
}

/// Retires the active version of `key.purpose` and inserts the next version as active.
/// Concurrent rotations of one tenant serialize on the active row.
pub async fn rotate(tx: &PrimaryTx<'_>, key: &NewKey<'_>) -> Result<KeyVersion, StoreError> {
    let client = tx.client();
    let tenant = key.tenant.as_str();
    let purpose = key.purpose.as_str();
    let current: Option<i32> = client
        .query_opt(
            "select version from tenant_keys where tenant_id = $1 and purpose = $2 and state = 'active' for update",
            &[&tenant, &purpose],
        )
        .await?
        .map(|row| row.get(0));
    if current.is_none() {
        return Err(StoreError::NotFound);
    }
    let latest: i32 = client
        .query_one(
            "select max(version) from tenant_keys where tenant_id = $1 and purpose = $2",
            &[&tenant, &purpose],
        )
        .await?
        .get(0);
    client
        .execute(
            "update tenant_keys set state = 'retired', retired_at = now()
             where tenant_id = $1 and purpose = $2 and state = 'active'",
            &[&tenant, &purpose],
        )
        .await?;
    crate::notifications::notify_tenant_keys(tx, key.tenant).await?;
    let next = latest + 1;
    client
        .execute(
            "insert into tenant_keys (tenant_id, purpose, version, state, kms_key_id, wrapped_key, kms_context)
             values ($1, $2, $3, 'active', $4, $5, $6::text::jsonb)",
            &[&tenant, &purpose, &next, &key.kms_key_id, &key.wrapped, &key.kms_context],
        )
        .await?;
    u32::try_from(next)
        .ok()
        .and_then(KeyVersion::new)
        .ok_or_else(|| StoreError::Corrupt("tenant_keys: version".into()))
}

/// Locks the active version of `purpose` for `tenant` for the rest of `tx` (what
/// [`rotate`] locks first): a use case that checks something before rotating serializes
/// with every other rotation of the tenant. [`StoreError::NotFound`] when there is none.
pub async fn lock_active(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    purpose: KeyPurpose,
) -> Result<KeyVersion, StoreError> {
    // A rotation that committed while this statement waited for the row retired it: the
    // row no longer matches, and the version it inserted was not in this statement's
    // snapshot. The next statement's snapshot has it.
    let mut row = None;
    for _ in 0..2 {
        row = tx
            .client()
            .query_opt(
                "select version from tenant_keys where tenant_id = $1 and purpose = $2 and state = 'active' for update",
                &[&tenant.as_str(), &purpose.as_str()],
            )
            .await?;
        if row.is_some() {
            break;
        }
    }
    let version: i32 = row.ok_or(StoreError::NotFound)?.try_get(0)?;
    u32::try_from(version)
        .ok()
        .and_then(KeyVersion::new)
        .ok_or_else(|| StoreError::Corrupt("tenant_keys: version".into()))
}

/// The active version of `purpose` for `tenant`, if any.
pub async fn active<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    purpose: KeyPurpose,
) -> Result<Option<StoredKey>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from tenant_keys where tenant_id = $1 and purpose = $2 and state = 'active'"
    );
    client
        .query_opt(&sql, &[&tenant.as_str(), &purpose.as_str()])
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// One version of `purpose` for `tenant`, whatever its state.
pub async fn by_version<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    purpose: KeyPurpose,
    version: KeyVersion,
) -> Result<Option<StoredKey>, StoreError> {
    one_version(client, tenant, purpose, version, "").await
}

/// One version's row; `suffix` ends the statement (a row lock).
async fn one_version<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    purpose: KeyPurpose,
    version: KeyVersion,
    suffix: &str,
) -> Result<Option<StoredKey>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from tenant_keys
         where tenant_id = $1 and purpose = $2 and version = $3{suffix}"
    );
    client
        .query_opt(
            &sql,
            &[&tenant.as_str(), &purpose.as_str(), &version_param(version)],
        )
        .await?
        .as_ref()
        .map(decode)
        .transpose()
}

/// Every version of every purpose for `tenant`, oldest first.
pub async fn list<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
) -> Result<Vec<StoredKey>, StoreError> {
    let sql =
        format!("select {COLUMNS} from tenant_keys where tenant_id = $1 order by purpose, version");
    client
        .query(&sql, &[&tenant.as_str()])
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// Up to `limit` live keys not wrapped under `current_kms_key` (all live keys when it is
/// `None`), for KMS key rotation.
pub async fn wrapped_under_other_keys<C: GenericClient>(
    client: &C,
    current_kms_key: Option<&str>,
    limit: i64,
) -> Result<Vec<StoredKey>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from tenant_keys
         where state <> 'destroyed' and ($1::text is null or kms_key_id <> $1)
         order by tenant_id, purpose, version limit $2"
    );
    client
        .query(&sql, &[&current_kms_key, &limit])
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// A stored key's place in the order KMS rewrapping walks them: (tenant, purpose,
/// version). A resumable rewrap checkpoints the last one it processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPosition {
    pub tenant: TenantId,
    pub purpose: KeyPurpose,
    pub version: KeyVersion,
}

impl StoredKey {
    pub fn position(&self) -> KeyPosition {
        KeyPosition {
            tenant: self.tenant,
            purpose: self.purpose,
            version: self.version,
        }
    }
}

/// The live keys after `($2, $3, $4)` (from the start when `$2` is null) not wrapped under
/// `$1` (all live keys when it is null): what is left of a KMS rewrap.
const PENDING_REWRAP: &str = "state <> 'destroyed' and ($1::text is null or kms_key_id <> $1)
     and ($2::text is null or (tenant_id, purpose, version) > ($2, $3::text, $4::integer))";

/// The parameters `$2`..`$4` of [`PENDING_REWRAP`].
fn position_params(after: Option<&KeyPosition>) -> (Option<&str>, Option<&str>, Option<i32>) {
    (
        after.map(|at| at.tenant.as_str()),
        after.map(|at| at.purpose.as_str()),
        after.map(|at| version_param(at.version)),
    )
}

/// Up to `limit` live keys after `after` (from the start when `None`) that are not wrapped
/// under `current_kms_key` (all live keys when it is `None`), in (tenant, purpose,
/// version) order: one batch of a resumable KMS rewrap.
pub async fn pending_rewrap<C: GenericClient>(
    client: &C,
    current_kms_key: Option<&str>,
    after: Option<&KeyPosition>,
    limit: i64,
) -> Result<Vec<StoredKey>, StoreError> {
    let sql = format!(
        "select {COLUMNS} from tenant_keys where {PENDING_REWRAP}
         order by tenant_id, purpose, version limit $5"
    );
    let (tenant, purpose, version) = position_params(after);
    client
        .query(
            &sql,
            &[&current_kms_key, &tenant, &purpose, &version, &limit],
        )
        .await?
        .iter()
        .map(decode)
        .collect()
}

/// How many live keys after `after` are not wrapped under `current_kms_key`: what is left
/// of a KMS rewrap (the rest of [`pending_rewrap`]'s walk).
pub async fn count_pending_rewrap<C: GenericClient>(
    client: &C,
    current_kms_key: Option<&str>,
    after: Option<&KeyPosition>,
) -> Result<u64, StoreError> {
    let sql = format!("select count(*) from tenant_keys where {PENDING_REWRAP}");
    let (tenant, purpose, version) = position_params(after);
    let count: i64 = client
        .query_one(&sql, &[&current_kms_key, &tenant, &purpose, &version])
        .await?
        .try_get(0)?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Replaces a key's wrapping (KMS key rotation) if it is still wrapped under
/// `old_kms_key`; returns whether it did.
pub async fn rewrap(
    tx: &PrimaryTx<'_>,
    key: &StoredKey,
    old_kms_key: &str,
    new_kms_key: &str,
    new_wrapped: &[u8],
) -> Result<bool, StoreError> {
    let updated = tx
        .client()
        .execute(
            // Notifies the region's nodes only when the row changed.
            "with rewrapped as (
                 update tenant_keys set kms_key_id = $5, wrapped_key = $6
                 where tenant_id = $1 and purpose = $2 and version = $3 and kms_key_id = $4
                   and state <> 'destroyed'
                 returning tenant_id)
             select pg_notify($7, tenant_id) from rewrapped",
            &[
                &key.tenant.as_str(),
                &key.purpose.as_str(),
                &version_param(key.version),
                &old_kms_key,
                &new_kms_key,
                &new_wrapped,
                &crate::notifications::TENANT_KEYS_CHANNEL,
            ],
        )
        .await?;
    Ok(updated == 1)
}

/// One version of `purpose` for `tenant`, row-locked for the rest of `tx` (a change of its
/// state waits for, and is seen by, any other).
pub async fn lock_version(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    purpose: KeyPurpose,
    version: KeyVersion,
) -> Result<Option<StoredKey>, StoreError> {
    one_version(tx.client(), tenant, purpose, version, " for update").await
}

/// Destroys one `retired` version of `purpose` for `tenant`: its wrapped key is erased
/// (state `destroyed`), so whatever it sealed is unreadable for ever. Returns whether it
/// did (`false`: the version is not `retired`). Every node of the region is notified when
/// `tx` commits, so that none keeps an unwrapped copy.
pub async fn destroy_version(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    purpose: KeyPurpose,
    version: KeyVersion,
) -> Result<bool, StoreError> {
    let destroyed = tx
        .client()
        .execute(
            "update tenant_keys
             set state = 'destroyed', wrapped_key = null, kms_key_id = null, destroyed_at = now()
             where tenant_id = $1 and purpose = $2 and version = $3 and state = 'retired'",
            &[&tenant.as_str(), &purpose.as_str(), &version_param(version)],
        )
        .await?;
    if destroyed == 1 {
        crate::notifications::notify_tenant_keys(tx, tenant).await?;
    }
    Ok(destroyed == 1)
}

/// Crypto-shredding: erases every wrapped key of `tenant`. Returns how many versions were
/// destroyed by this call. Every node of the region is notified when `tx` commits, so that
/// none keeps an unwrapped copy.
pub async fn destroy_all(tx: &PrimaryTx<'_>, tenant: &TenantId) -> Result<u64, StoreError> {
    crate::notifications::notify_tenant_keys(tx, tenant).await?;
    Ok(tx
        .client()
        .execute(
            "update tenant_keys
             set state = 'destroyed', wrapped_key = null, kms_key_id = null, destroyed_at = now()
             where tenant_id = $1 and state <> 'destroyed'",
            &[&tenant.as_str()],
        )
        .await?)
}

/// Adds seal counts to data key versions (`tenants[i]`, `versions[i]` sealed
/// `counts[i]` more values): the automatic rotation's usage record. Versions that are
/// gone are skipped.
pub async fn add_seals<C: GenericClient>(
    client: &C,
    tenants: &[&str],
    versions: &[i32],
    counts: &[i64],
) -> Result<(), StoreError> {
    client
        .execute(
            "update tenant_keys k set seals = k.seals + u.count
             from unnest($1::text[], $2::integer[], $3::bigint[]) as u (tenant_id, version, count)
             where k.tenant_id = u.tenant_id and k.purpose = 'data' and k.version = u.version",
            &[&tenants, &versions, &counts],
        )
        .await?;
    Ok(())
}

/// Why a tenant's active data key is due for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationDue {
    /// It sealed as many values as its bound allows.
    Seals,
    /// It is as old as its bound allows.
    Age,
}

impl RotationDue {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seals => "seals",
            Self::Age => "age",
        }
    }
}

/// Up to `limit` active tenants whose active data key reached its tenant's bounds (or
/// `max_seals` / `max_age_seconds` when the tenant sets none) and that have no
/// re-encryption queued or running.
pub async fn due_for_rotation<C: GenericClient>(
    client: &C,
    max_seals: i64,
    max_age_seconds: i64,
    limit: i64,
) -> Result<Vec<(TenantId, RotationDue)>, StoreError> {
    let rows = client
        .query(
            "select k.tenant_id, k.seals >= coalesce(t.key_max_seals, $1)
             from tenant_keys k join tenants t on t.tenant_id = k.tenant_id
             where k.purpose = 'data' and k.state = 'active' and t.status = 'active'
               and (k.seals >= coalesce(t.key_max_seals, $1)
                    or k.created_at <= now() - make_interval(secs => coalesce(t.key_max_age_seconds, $2)::double precision))
               and not exists (
                   select 1 from jobs j where j.kind = 'reencrypt' and j.tenant_id = k.tenant_id
                     and j.state in ('queued', 'running'))
             order by k.tenant_id limit $3",
            &[&max_seals, &max_age_seconds, &limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let tenant: &str = row.try_get(0)?;
            let by_seals: bool = row.try_get(1)?;
            Ok((
                TenantId::parse(tenant)
                    .map_err(|_| StoreError::Corrupt("tenant_keys: tenant id".into()))?,
                if by_seals {
                    RotationDue::Seals
                } else {
                    RotationDue::Age
                },
            ))
        })
        .collect()
}
