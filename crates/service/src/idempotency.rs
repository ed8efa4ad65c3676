//! Idempotent creates (`Idempotency-Key`, docs/operations.md): a create sent with a key
//! records its answer with the key in its own transaction (`store::idempotency`); a retry
//! with the same key and the same request gets that answer again, with nothing created;
//! the same key with another request is refused (422). The key is caller text: only its
//! SHA-256 is kept, as is only a SHA-256 of the request, and the recorded answer holds
//! ids, versions, sizes and digests, never personal data (a replay takes the rest from
//! the retried request, which the hash proves identical).

use std::time::Duration;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use envelope::DataKey;
use envelope::seal::{self, SealContext};
use model::{NewTenant, TenantId};
use store::PrimaryTx;
use store::idempotency::{Claim, NewAnswer, StoredAnswer};
use zeroize::Zeroizing;

use crate::ServiceError;
use crate::access::IssuedKey;
use crate::tenancy::{Caller, CreatedTenant, OperatorGrant, RegionService, RequestContext, Tenant};

/// How long a recorded answer is kept and replayed.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Live keys a tenant may hold (at one create a second for a day, about a tenth of them):
/// past it a keyed create is refused with 429 until keys expire; creates without a key
/// are not affected.
pub const MAX_LIVE_KEYS_PER_TENANT: i64 = 10_000;

/// How long a create refused at the bound is told to wait.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The `detail` of the 409 a retry gets when the create holding its key is neither
/// committed nor gone (it committed its key and the key expired at once: not in practice).
pub(crate) const KEY_TAKEN: &str = "a create with this Idempotency-Key";

/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// The operations a key may create, as recorded.
pub(crate) const RECORD_CREATE: &str = "record.create";
pub(crate) const FILE_PUT: &str = "file.put";
pub(crate) const TENANT_CREATE: &str = "tenant.create";

/// Where a tenant creation's admin key is sealed: `:` is in no collection name, so no
/// record's field shares this associated data.
const ADMIN_KEY_COLLECTION: &str = ":idempotency";
const ADMIN_KEY_FIELD: &str = "admin_key";

/// A validated `Idempotency-Key`, as the hash that is stored: the text itself is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub(crate) hash: [u8; 32],
}

impl std::fmt::Debug for IdempotencyKey {
    /// Never prints the key: caller text.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencyKey(..)")
    }
}

impl IdempotencyKey {
    /// 1 to 255 printable ASCII characters (space to `~`), else 400 naming the header.
    pub fn parse(text: &[u8]) -> Result<Self, ServiceError> {
        if text.is_empty()
            || text.len() > MAX_KEY_LEN
            || !text.iter().all(|byte| (0x20..=0x7e).contains(byte))
        {
            return Err(ServiceError::BadRequest(format!(
                "Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"
            )));
        }
        Ok(Self {
            hash: sha256(&[text]),
        })
    }
}

impl IdempotencyKey {
    /// The key as the operator's: a tenant creation's keys are the operator's, apart from
    /// every tenant's (there is one operator credential per deployment; an operator
    /// identity, once there are several, goes into this hash).
    fn of_operator(&self) -> Self {
        Self {
            hash: sha256(&[b"operator", &self.hash]),
        }
    }
}

/// A SHA-256 over `parts`, each prefixed by its length (so no two lists of parts hash
/// alike by moving bytes between neighbours).
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// One keyed create: its key, what it does, and the hash of its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyedCreate<'a> {
    pub(crate) key: &'a IdempotencyKey,
    pub(crate) operation: &'static str,
    pub(crate) request_hash: [u8; 32],
}

impl KeyedCreate<'_> {
    /// Records the create's answer in its transaction `tx`; fails the transaction (so the
    /// create rolls back) when the key is taken or the tenant's keys are at their bound.
    pub(crate) async fn record(
        &self,
        tx: &PrimaryTx<'_>,
        tenant: &TenantId,
        status: u16,
        response: &serde_json::Value,
    ) -> Result<(), ServiceError> {
        let answer = NewAnswer {
            tenant,
            key_hash: &self.key.hash,
            operation: self.operation,
            request_hash: &self.request_hash,
            status,
            response,
        };
        match store::idempotency::claim(tx, answer, RETENTION, MAX_LIVE_KEYS_PER_TENANT).await? {
            Claim::Recorded => Ok(()),
            Claim::Taken => Err(ServiceError::Conflict(KEY_TAKEN)),
            Claim::Full => Err(ServiceError::RateLimited {
                retry_after: FULL_RETRY_AFTER,
            }),
        }
    }
}

impl RegionService {
    /// The answer recorded for `create`'s key, read on the primary: `None` when the key
    /// is new (or expired); 422 when it was used for another request.
    pub(crate) async fn recorded_answer(
        &self,
        caller: &Caller,
        create: &KeyedCreate<'_>,
    ) -> Result<Option<StoredAnswer>, ServiceError> {
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.begin_tenant(&caller.tenant).await?;
        let found =
            store::idempotency::find(tx.client(), &caller.tenant, &create.key.hash, RETENTION)
                .await?;
        tx.commit().await?;
        match found {
            Some(answer)
                if answer.operation != create.operation
                    || answer.request_hash != create.request_hash =>
            {
                Err(ServiceError::IdempotencyKeyReused)
            }
            found => Ok(found),
        }
    }

    /// Runs a keyed create: the recorded answer if the key has one, else `create`; when
    /// `create` finds the key taken by a create that committed meanwhile, that one's
    /// answer. `replay` turns a recorded answer into the create's result.
    pub(crate) async fn once<T, Create, Replay>(
        &self,
        caller: &Caller,
        keyed: &KeyedCreate<'_>,
        create: Create,
        replay: Replay,
    ) -> Result<T, ServiceError>
    where
        Create: AsyncFnOnce() -> Result<T, ServiceError>,
        Replay: Fn(StoredAnswer) -> Result<T, ServiceError>,
    {
        if let Some(answer) = self.recorded_answer(caller, keyed).await? {
            return replay(answer);
        }
        match create().await {
            Err(ServiceError::Conflict(KEY_TAKEN)) => {
                match self.recorded_answer(caller, keyed).await? {
                    Some(answer) => replay(answer),
                    None => Err(ServiceError::Conflict(KEY_TAKEN)),
                }
            }
            done => done,
        }
    }
}

impl RegionService {
    /// As [`RegionService::create_tenant`], once per `key` of the operator (docs/operations.md,
    /// "Idempotent creates"): the tenant, its keys, its admin key and the key's answer
    /// commit together; a retry with the key and the same settings gets the same tenant and
    /// the same admin key (kept sealed under the tenant's first data key, so offboarding's
    /// shredding makes it unreadable: the retry is then 404); the key with other settings
    /// is 422.
    pub async fn create_tenant_once(
        &self,
        operator: &OperatorGrant,
        new: NewTenant,
        context: &RequestContext,
        key: &IdempotencyKey,
    ) -> Result<CreatedTenant, ServiceError> {
        let key = key.of_operator();
        let allowed: Vec<&str> = new.policy.allowed().iter().map(|r| r.as_str()).collect();
        let keyed = KeyedCreate {
            key: &key,
            operation: TENANT_CREATE,
            request_hash: sha256(&[
                TENANT_CREATE.as_bytes(),
                new.name.as_bytes(),
                new.policy.home().as_str().as_bytes(),
                allowed.join(",").as_bytes(),
                new.policy.transit().as_str().as_bytes(),
                &[u8::from(new.analytics_export)],
            ]),
        };
        if let Some(created) = self.recorded_tenant_creation(&keyed, &new).await? {
            return Ok(created);
        }
        {
            let primary = self.inner.database.primary().get().await?;
            store::idempotency::forget_expired_tenant_creation(
                primary.client(),
                &key.hash,
                RETENTION,
            )
            .await?;
        }
        match self
            .create_tenant_keyed(operator, new.clone(), context, Some(&keyed))
            .await
        {
            Err(ServiceError::Conflict(KEY_TAKEN)) => self
                .recorded_tenant_creation(&keyed, &new)
                .await?
                .ok_or(ServiceError::Conflict(KEY_TAKEN)),
            done => done,
        }
    }

    /// The tenant a live key of the operator created, with its admin key opened again.
    async fn recorded_tenant_creation(
        &self,
        keyed: &KeyedCreate<'_>,
        new: &NewTenant,
    ) -> Result<Option<CreatedTenant>, ServiceError> {
        let found = {
            let primary = self.inner.database.primary().get().await?;
            store::idempotency::find_tenant_creation(primary.client(), &keyed.key.hash, RETENTION)
                .await?
        };
        let Some((tenant, answer)) = found else {
            return Ok(None);
        };
        if answer.request_hash != keyed.request_hash {
            return Err(ServiceError::IdempotencyKeyReused);
        }
        let sealed = answer_field(&answer, "admin_key_sealed")?
            .as_str()
            .and_then(|text| STANDARD.decode(text).ok())
            .ok_or_else(|| ServiceError::internal("a recorded admin key"))?;
        let record = hex::encode(keyed.key.hash);
        let opened = self
            .inner
            .keyring
            .open(&tenant, &admin_key_context(&record), &sealed)
            .await?;
        let admin_key = String::from_utf8(opened)
            .ok()
            .and_then(|token| IssuedKey::from_token(Zeroizing::new(token)))
            .ok_or_else(|| ServiceError::internal("a recorded admin key"))?;
        Ok(Some(CreatedTenant {
            tenant: Tenant {
                id: tenant,
                name: new.name.clone(),
                policy: new.policy.clone(),
                analytics_export: new.analytics_export,
                created_at: recorded_time(&answer)?,
            },
            admin_key,
        }))
    }
}

/// What a tenant creation records: its admin key sealed under the new tenant's first data
/// key (the associated data binds tenant, region and the key's hash), and its time.
pub(crate) fn tenant_answer(
    keyed: &KeyedCreate<'_>,
    data_key: &DataKey,
    admin_key: &IssuedKey,
    tenant: &Tenant,
) -> serde_json::Value {
    let record = hex::encode(keyed.key.hash);
    let sealed = seal::seal(
        data_key,
        &admin_key_context(&record),
        admin_key.token.as_bytes(),
    );
    serde_json::json!({
        "admin_key_sealed": STANDARD.encode(sealed),
        "created_at_us": micros(tenant.created_at),
    })
}

fn admin_key_context(record: &str) -> SealContext<'_> {
    SealContext {
        collection: ADMIN_KEY_COLLECTION,
        record,
        field: ADMIN_KEY_FIELD,
    }
}

/// Microseconds since the epoch, as recorded answers keep times.
pub(crate) fn micros(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

/// A recorded answer's `created_at_us`.
pub(crate) fn recorded_time(answer: &StoredAnswer) -> Result<std::time::SystemTime, ServiceError> {
    let micros = answer_field(answer, "created_at_us")?
        .as_u64()
        .ok_or_else(|| ServiceError::internal("a recorded creation time"))?;
    Ok(std::time::SystemTime::UNIX_EPOCH + Duration::from_micros(micros))
}

/// A recorded answer's field, or 500 (the row is ours: a missing field is a bug).
pub(crate) fn answer_field<'a>(
    answer: &'a StoredAnswer,
    field: &'static str,
) -> Result<&'a serde_json::Value, ServiceError> {
    answer
        .response
        .get(field)
        .ok_or_else(|| ServiceError::internal_while("read a recorded answer", field))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_ascii_of_1_to_255_characters() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(&[b'~'; 255]).is_ok());
        assert!(IdempotencyKey::parse(b"order 42 / retry").is_ok());
        for refused in [
            &b""[..],
            &[b'a'; 256][..],
            b"tab\there",
            "é".as_bytes(),
            b"\x7f",
        ] {
            assert!(
                matches!(
                    IdempotencyKey::parse(refused),
                    Err(ServiceError::BadRequest(_))
                ),
                "{refused:?} must be refused"
            );
        }
    }

    #[test]
    fn one_key_hashes_alike_and_parts_do_not_run_together() {
        assert_eq!(
            IdempotencyKey::parse(b"k1").expect("valid"),
            IdempotencyKey::parse(b"k1").expect("valid")
        );
        assert_ne!(
            IdempotencyKey::parse(b"k1").expect("valid"),
            IdempotencyKey::parse(b"k2").expect("valid")
        );
        assert_ne!(sha256(&[b"ab", b"c"]), sha256(&[b"a", b"bc"]));
    }
}
