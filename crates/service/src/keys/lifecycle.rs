//! What changes a tenant's keys: provisioning at tenant creation, rotation to a new
//! version, re-encryption of values and objects under the active key, KMS rewrapping,
//! and crypto-shredding.

use envelope::kms::WrappedKey;
use envelope::objects::{ObjectKey, ObjectStore, ObjectStoreError};
use envelope::seal::{self, SealContext};
use envelope::sealed_objects::{self, SealedObjectError};
use envelope::{DataKey, KeyPurpose, KeyVersion};
use futures::StreamExt as _;
use model::TenantId;
use store::tenant_keys::{self, NewKey, StoredKey};
use store::{PrimaryTx, StoreError};

use super::{KeyError, Keyring, ObjectKeyError, context_json};

/// A tenant's next data key, wrapped by the KMS, not stored yet
/// ([`Keyring::next_data_key`]).
#[derive(Debug)]
pub struct NextDataKey {
    tenant: TenantId,
    wrapped: WrappedKey,
    context_json: String,
}

/// What [`Keyring::rewrap_key`] did to one stored key. Each names the KMS's current key
/// (what the KMS rewrapped to), except for a destroyed key, which nothing rewraps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewrapOutcome {
    /// Now wrapped under `kms_key_id`.
    Rewrapped { kms_key_id: String },
    /// It already was: nothing written.
    AlreadyCurrent { kms_key_id: String },
    /// Its row changed meanwhile (rewrapped by another node, or shredded): nothing written.
    Changed { kms_key_id: String },
    /// Shredded: no wrapped key to rewrap.
    Destroyed,
}

/// What [`Keyring::rewrap_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    pub rewrapped: u64,
    /// The KMS key every live tenant key is now wrapped under.
    pub kms_key_id: Option<String>,
}

impl Keyring {
    /// Creates version 1 of the tenant's data and index keys inside the caller's
    /// transaction (tenant creation), so the tenant and its keys commit together.
    pub async fn provision(&self, tx: &PrimaryTx<'_>, tenant: &TenantId) -> Result<(), KeyError> {
        for purpose in [KeyPurpose::Data, KeyPurpose::Index] {
            let (wrapped, context_json) = self.generate_wrapped(tenant, purpose).await?;
            insert_first(tx, tenant, purpose, &wrapped, &context_json).await?;
        }
        Ok(())
    }

    /// As [`Keyring::provision`], and returns version 1 of the data key, to seal what the
    /// creating transaction itself must keep (the answer of an idempotent creation). Not
    /// cached: the transaction may still roll back.
    pub async fn provision_with_data_key(
        &self,
        tx: &PrimaryTx<'_>,
        tenant: &TenantId,
    ) -> Result<DataKey, KeyError> {
        let context = self.context(tenant, KeyPurpose::Data);
        let generated = self
            .kms_call(
                "generate_data_key",
                self.inner.kms.generate_data_key(&context),
            )
            .await?;
        insert_first(
            tx,
            tenant,
            KeyPurpose::Data,
            &generated.wrapped,
            &context_json(&context),
        )
        .await?;
        let (wrapped, index_context) = self.generate_wrapped(tenant, KeyPurpose::Index).await?;
        insert_first(tx, tenant, KeyPurpose::Index, &wrapped, &index_context).await?;
        Ok(DataKey::new(
            *tenant,
            self.inner.region.clone(),
            KeyPurpose::Data,
            KeyVersion::FIRST,
            generated.material,
        ))
    }

    /// A new key from the KMS, wrapped, with its context as JSON. The plaintext is dropped
    /// (and zeroized) at once: it is not cached, since the caller's transaction may still
    /// roll back; first use unwraps it like any other key.
    async fn generate_wrapped(
        &self,
        tenant: &TenantId,
        purpose: KeyPurpose,
    ) -> Result<(WrappedKey, String), KeyError> {
        let context = self.context(tenant, purpose);
        let generated = self
            .kms_call(
                "generate_data_key",
                self.inner.kms.generate_data_key(&context),
            )
            .await?;
        drop(generated.material);
        Ok((generated.wrapped, context_json(&context)))
    }

    /// Batch re-encryption primitive: the value sealed under the active data key, or
    /// `None` when it already is. The service drives it over stored values after a
    /// rotation.
    pub async fn reencrypt(
        &self,
        tenant: &TenantId,
        context: &SealContext<'_>,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, KeyError> {
        let active = self.active_data_key(tenant).await?;
        if seal::sealed_version(sealed)? == active.version() {
            return Ok(None);
        }
        let plaintext = self.open(tenant, context, sealed).await?;
        Ok(Some(seal::seal(&active, context, &plaintext)))
    }

    /// Batch re-encryption primitive for objects: rewrites `object` under the active data
    /// key (streaming, bounded memory) unless it already is; returns whether it did.
    pub async fn reencrypt_object(
        &self,
        tenant: &TenantId,
        store: &dyn ObjectStore,
        object: &ObjectKey,
    ) -> Result<bool, ObjectKeyError> {
        let active = self.active_data_key(tenant).await?;
        if sealed_objects::sealed_object_version(store, object).await? == active.version() {
            return Ok(false);
        }
        let keyring = self.clone();
        let owner = *tenant;
        let plaintext = sealed_objects::get_sealed(store, object, move |version| async move {
            keyring
                .data_key(&owner, version)
                .await
                .map_err(|err| SealedObjectError::Key(err.to_string()))
        })
        .await?;
        // The store replaces the object only once the new one is complete.
        let body =
            plaintext.map(|chunk| chunk.map_err(|err| ObjectStoreError::Body(err.to_string())));
        sealed_objects::put_sealed(store, &active, object, Box::pin(body), None).await?;
        Ok(true)
    }

    /// A new data key version for new writes; older versions keep opening old data.
    pub async fn rotate(&self, tenant: &TenantId) -> Result<KeyVersion, KeyError> {
        let next = self.next_data_key(tenant).await?;
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.begin_tenant(tenant).await?;
        let version = self.rotate_within(&tx, &next).await?;
        tx.commit().await?;
        self.forget_tenant(tenant);
        Ok(version)
    }

    /// The KMS half of a rotation: a new data key, wrapped, for [`Keyring::rotate_within`]
    /// (the KMS call happens before the caller's transaction opens).
    pub async fn next_data_key(&self, tenant: &TenantId) -> Result<NextDataKey, KeyError> {
        let (wrapped, context_json) = self.generate_wrapped(tenant, KeyPurpose::Data).await?;
        Ok(NextDataKey {
            tenant: *tenant,
            wrapped,
            context_json,
        })
    }

    /// The database half of a rotation, inside the caller's transaction: the active data
    /// key retires and `next` becomes active. Every node of the region is notified when
    /// `tx` commits; this node's caller forgets the tenant's keys after the commit
    /// ([`Keyring::forget_tenant`]).
    pub async fn rotate_within(
        &self,
        tx: &PrimaryTx<'_>,
        next: &NextDataKey,
    ) -> Result<KeyVersion, KeyError> {
        tenant_keys::rotate(
            tx,
            &NewKey {
                tenant: &next.tenant,
                purpose: KeyPurpose::Data,
                kms_key_id: &next.wrapped.key_id,
                wrapped: &next.wrapped.ciphertext,
                kms_context: &next.context_json,
            },
        )
        .await
        .map_err(|err| match err {
            StoreError::NotFound => self.missing(&next.tenant),
            other => other.into(),
        })
    }

    /// Every key version of the tenant (for the keys API and residency evidence).
    pub async fn versions(&self, tenant: &TenantId) -> Result<Vec<StoredKey>, KeyError> {
        let primary = self.inner.database.primary().get().await?;
        Ok(tenant_keys::list(primary.client(), tenant).await?)
    }

    /// KMS key rotation: rewraps every live tenant key of the region under the KMS's
    /// current key, `batch` keys at a time, without touching any sealed data. The first
    /// rewrap tells which key is current (an alias resolves to it); later batches only
    /// take keys still wrapped under another one.
    pub async fn rewrap_all(&self, batch: i64) -> Result<RewrapReport, KeyError> {
        let mut report = RewrapReport::default();
        let mut first_pass = true;
        loop {
            let primary = self.inner.database.primary().get().await?;
            let pending = tenant_keys::wrapped_under_other_keys(
                primary.client(),
                report.kms_key_id.as_deref(),
                batch,
            )
            .await?;
            drop(primary);
            if pending.is_empty() {
                return Ok(report);
            }
            let mut moved = 0;
            for stored in pending {
                match self.rewrap_key(&stored).await? {
                    RewrapOutcome::Rewrapped { kms_key_id } => {
                        moved += 1;
                        report.kms_key_id = Some(kms_key_id);
                    }
                    // Already under the current key (only possible in the first batch), or
                    // changed under us.
                    RewrapOutcome::AlreadyCurrent { kms_key_id }
                    | RewrapOutcome::Changed { kms_key_id } => {
                        report.kms_key_id = Some(kms_key_id);
                    }
                    RewrapOutcome::Destroyed => {}
                }
            }
            report.rewrapped += moved;
            if moved == 0 && report.kms_key_id.is_some() && !first_pass {
                // Nothing could be moved (every row changed under us): stop rather than spin.
                return Ok(report);
            }
            first_pass = false;
        }
    }

    /// Rewraps one stored key under the KMS's current key (one `re_encrypt`, then one
    /// conditional update in its own transaction). Idempotent: a key already under the
    /// current key is left as it is, and the update applies only while the key is still
    /// wrapped as it was read, so a concurrent rewrap or shred wins.
    pub async fn rewrap_key(&self, stored: &StoredKey) -> Result<RewrapOutcome, KeyError> {
        let (Some(old_key_id), Some(ciphertext)) =
            (stored.kms_key_id.clone(), stored.wrapped.clone())
        else {
            return Ok(RewrapOutcome::Destroyed);
        };
        let context = self.context(&stored.tenant, stored.purpose);
        let wrapped = WrappedKey {
            key_id: old_key_id.clone(),
            ciphertext,
        };
        let rewrapped = self
            .kms_call("re_encrypt", self.inner.kms.re_encrypt(&wrapped, &context))
            .await?;
        if rewrapped.key_id == old_key_id {
            return Ok(RewrapOutcome::AlreadyCurrent {
                kms_key_id: rewrapped.key_id,
            });
        }
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.begin().await?;
        let moved = tenant_keys::rewrap(
            &tx,
            stored,
            &old_key_id,
            &rewrapped.key_id,
            &rewrapped.ciphertext,
        )
        .await?;
        tx.commit().await?;
        Ok(if moved {
            RewrapOutcome::Rewrapped {
                kms_key_id: rewrapped.key_id,
            }
        } else {
            RewrapOutcome::Changed {
                kms_key_id: rewrapped.key_id,
            }
        })
    }

    /// Crypto-shredding: erases every wrapped key of the tenant and forgets any unwrapped
    /// copy on this node. Afterwards the tenant's data cannot be opened by anyone.
    /// Other nodes of the region drop their copies when they hear the database's
    /// notification (see [`crate::keys::KeyNotifications`]), or within `max_age` if they
    /// do not listen.
    pub async fn shred(&self, tenant: &TenantId) -> Result<u64, KeyError> {
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.begin_tenant(tenant).await?;
        let destroyed = tenant_keys::destroy_all(&tx, tenant).await?;
        tx.commit().await?;
        self.forget_tenant(tenant);
        Ok(destroyed)
    }

    /// Drops every cached key and active version of `tenant` on this node (plaintext
    /// zeroized as the entries go), including copies whose load is still in flight.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        self.inner.forgotten.tenant(*tenant);
        let owner = *tenant;
        let _ = self
            .inner
            .keys
            .invalidate_entries_if(move |id, _| id.tenant == owner);
        let owner = *tenant;
        let _ = self
            .inner
            .active
            .invalidate_entries_if(move |(t, _), _| *t == owner);
    }

    /// Drops every cached key and active version on this node (the key-change listener
    /// lost its connection, so changes may have gone unheard).
    pub fn forget_everything(&self) {
        self.inner.forgotten.everything();
        self.inner.keys.invalidate_all();
        self.inner.active.invalidate_all();
    }
}

/// Stores version 1 of a tenant's key of `purpose`, wrapped, in `tx`.
async fn insert_first(
    tx: &PrimaryTx<'_>,
    tenant: &TenantId,
    purpose: KeyPurpose,
    wrapped: &WrappedKey,
    context_json: &str,
) -> Result<(), KeyError> {
    tenant_keys::insert_first_key(
        tx,
        &NewKey {
            tenant,
            purpose,
            kms_key_id: &wrapped.key_id,
            wrapped: &wrapped.ciphertext,
            kms_context: context_json,
        },
    )
    .await?;
    Ok(())
}
