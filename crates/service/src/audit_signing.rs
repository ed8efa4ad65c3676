//! The region's audit signing keys, kept in the region's database so that an operator can
//! rotate them on a running region: every node signs with the one current key, and every
//! key the region ever signed with stays published with its validity (`GET
//! /v1/audit/keys`), so bundles, checkpoints and evidence signed before a rotation keep
//! verifying.
//!
//! A key's 32-byte Ed25519 seed is stored sealed: AES-256-GCM under a fresh data key from
//! the region's KMS (encryption context: region, purpose `audit-signing-key`), of which only
//! the wrapped form is stored; the associated data binds the region and the key id. The
//! configured key text (`residency dev`'s key file, `serve`'s secret) is the bootstrap: a
//! signing key the database does not know is imported as the current key, its `retired`
//! lines as retired public keys. See `docs/audit.md`, "Rotating the signing key".

use std::sync::Arc;
use std::time::SystemTime;

use audit::{KeySet, PublicKey, SigningKey};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use envelope::kms::{EncryptionContext, Kms, KmsError, WrappedKey};
use model::RegionId;
use store::audit_signing_keys::{self as rows, KeyOrigin, SealedSeed, SigningKeyRow};
use store::{RegionDatabase, StoreError};
use zeroize::Zeroizing;

use crate::audit_keys::AuditKeys;

/// The value of the encryption context's purpose for a sealed audit key seed.
const PURPOSE: &str = "audit-signing-key";

/// Domain separation of the seal's associated data.
const AAD_LABEL: &[u8] = b"residency/audit-signing-key/v1";

/// One published key and when it signed. `valid_from` is `None` when unknown (a key
/// imported from a key text may have signed before the region recorded it);
/// `valid_until` is `None` exactly while the key is current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    pub public: PublicKey,
    pub valid_from: Option<SystemTime>,
    pub valid_until: Option<SystemTime>,
}

/// The keys a node signs and publishes with: the current signing key, and every public
/// key of the region (the current one first).
#[derive(Debug)]
pub struct SigningKeys {
    current: Arc<SigningKey>,
    published: Vec<PublishedKey>,
}

impl SigningKeys {
    /// The keys of a key text, validity unknown (before the region's database was asked).
    pub fn from_key_text(keys: &AuditKeys) -> Self {
        let current = Arc::new(copy(keys.current()));
        let published = keys
            .public_keys()
            .into_iter()
            .map(|public| PublishedKey {
                public,
                valid_from: None,
                valid_until: None,
            })
            .collect();
        Self { current, published }
    }

    /// The key that signs now.
    pub fn current(&self) -> &Arc<SigningKey> {
        &self.current
    }

    pub fn region(&self) -> &RegionId {
        self.current.region()
    }

    /// Every public key of the region, the current one first.
    pub fn published(&self) -> &[PublishedKey] {
        &self.published
    }
}

/// Why the region's audit keys could not be loaded, imported or rotated.
#[derive(Debug, thiserror::Error)]
pub enum AuditKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the region's KMS: {0}")]
    Kms(#[from] KmsError),
    #[error("the region's database holds no current audit signing key")]
    NoCurrentKey,
    /// A stored key that does not open or does not match its id: tampering or a bug.
    #[error("stored audit signing key {key_id}: {reason}")]
    Corrupt { key_id: String, reason: String },
}

/// The audit signing keys of one region in its database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegionAuditKeys {
    database: RegionDatabase,
    kms: Arc<dyn Kms>,
}

impl RegionAuditKeys {
    /// # Panics
    /// When `kms` serves another region than `database`.
    pub fn new(database: RegionDatabase, kms: Arc<dyn Kms>) -> Self {
        assert_eq!(
            kms.region(),
            database.region(),
            "the KMS must be the database's region's"
        );
        Self { database, kms }
    }

    fn region(&self) -> &RegionId {
        self.database.region()
    }

    /// Records `held` (a node's configured keys) unless the region knows them, then loads
    /// the region's keys. A signing key the region does not know becomes the current key
    /// (a rotation done in the key text); known keys change nothing, so the database
    /// stays the authority once a key was rotated there.
    pub async fn bootstrap(&self, held: &SigningKeys) -> Result<SigningKeys, AuditKeyError> {
        let current_id = held.current().key_id();
        let known = {
            let primary = self.database.primary().get().await?;
            rows::list(primary.client()).await?
        };
        let knows =
            |known: &[SigningKeyRow], key_id: &str| known.iter().any(|k| k.key_id == key_id);
        // Keys are never deleted: what is known now is known under the lock too.
        let sealed = if knows(&known, current_id) {
            None
        } else {
            Some(self.seal(held.current()).await?)
        };
        let mut primary = self.database.primary().get().await?;
        let tx = primary.begin().await?;
        rows::lock(&tx).await?;
        let known = rows::list(tx.client()).await?;
        for key in held.published() {
            if key.public.key_id != current_id {
                rows::insert_retired_public(&tx, &key.public.key_id, &key.public.public_key)
                    .await?;
            }
        }
        if let Some(sealed) = sealed
            && !knows(&known, current_id)
        {
            let public = held.current().public();
            rows::insert_current(
                &tx,
                current_id,
                &public.public_key,
                &sealed,
                KeyOrigin::KeyText,
            )
            .await?;
            tracing::info!(
                region = %self.region(),
                key_id = current_id,
                "imported the configured audit signing key as the region's current key"
            );
        }
        tx.commit().await?;
        drop(primary);
        self.load().await
    }

    /// The region's keys as stored: the current one opened (one KMS call), every one
    /// published.
    pub async fn load(&self) -> Result<SigningKeys, AuditKeyError> {
        let stored = {
            let primary = self.database.primary().get().await?;
            rows::list(primary.client()).await?
        };
        let current = stored
            .iter()
            .find(|row| row.current)
            .ok_or(AuditKeyError::NoCurrentKey)?;
        let current = Arc::new(self.open(current).await?);
        let published = stored
            .into_iter()
            .map(|row| self.published(row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SigningKeys { current, published })
    }

    /// A new current key, generated here; the current one is retired as of now. Every
    /// node of the region is notified and loads it. Returns the region's keys after.
    pub async fn rotate(&self) -> Result<SigningKeys, AuditKeyError> {
        let key = SigningKey::generate(self.region().clone());
        let sealed = self.seal(&key).await?;
        let mut primary = self.database.primary().get().await?;
        let tx = primary.begin().await?;
        rows::lock(&tx).await?;
        rows::insert_current(
            &tx,
            key.key_id(),
            &key.public().public_key,
            &sealed,
            KeyOrigin::Generated,
        )
        .await?;
        tx.commit().await?;
        drop(primary);
        self.load().await
    }

    /// After a change of the region's KMS key: rewraps the data key of every sealed seed
    /// under the KMS's current key (the seeds themselves are untouched, nothing else is
    /// re-sealed). Returns how many it moved. Run it with the tenant keys' rewrap
    /// (`Keyring::rewrap_all`) before the old KMS key is disabled.
    pub async fn rewrap(&self) -> Result<u64, AuditKeyError> {
        let stored = {
            let primary = self.database.primary().get().await?;
            rows::list(primary.client()).await?
        };
        let mut moved = 0;
        for row in stored {
            let Some(sealed) = row.sealed else { continue };
            let wrapped = WrappedKey {
                key_id: sealed.kms_key_id.clone(),
                ciphertext: sealed.wrapped_key,
            };
            let rewrapped = self.kms.re_encrypt(&wrapped, &self.context()).await?;
            if rewrapped.key_id == sealed.kms_key_id {
                continue;
            }
            let mut primary = self.database.primary().get().await?;
            let tx = primary.begin().await?;
            // Conditional on the old wrapping: a concurrent rewrap wins.
            if rows::rewrap(
                &tx,
                &row.key_id,
                &sealed.kms_key_id,
                &rewrapped.key_id,
                &rewrapped.ciphertext,
            )
            .await?
            {
                moved += 1;
            }
            tx.commit().await?;
        }
        Ok(moved)
    }

    /// A stored row as published, checked as a verifier checks it.
    fn published(&self, row: SigningKeyRow) -> Result<PublishedKey, AuditKeyError> {
        let public = PublicKey {
            key_id: row.key_id,
            region: self.region().to_string(),
            algorithm: "ed25519".to_owned(),
            public_key: row.public_key,
        };
        KeySet::new()
            .insert(public.clone())
            .map_err(|err| AuditKeyError::Corrupt {
                key_id: public.key_id.clone(),
                reason: err.to_string(),
            })?;
        Ok(PublishedKey {
            public,
            valid_from: row.valid_from,
            valid_until: row.valid_until,
        })
    }

    fn context(&self) -> EncryptionContext {
        EncryptionContext::from([
            ("residency:region".to_owned(), self.region().to_string()),
            ("residency:purpose".to_owned(), PURPOSE.to_owned()),
        ])
    }

    /// `key`'s seed sealed under a fresh KMS data key.
    async fn seal(&self, key: &SigningKey) -> Result<SealedSeed, AuditKeyError> {
        let context = self.context();
        let generated = self.kms.generate_data_key(&context).await?;
        let aead = aead_key(generated.material.expose());
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system random source works");
        let mut sealed = Zeroizing::new(key.to_bytes().to_vec());
        aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(associated_data(self.region(), key.key_id())),
            &mut *sealed,
        )
        .expect("sealing 32 bytes cannot fail");
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        Ok(SealedSeed {
            kms_key_id: generated.wrapped.key_id,
            wrapped_key: generated.wrapped.ciphertext,
            kms_context: serde_json::to_string(&context).expect("a map of strings serializes"),
            sealed_seed: stored,
        })
    }

    /// The signing key of a stored row: its data key unwrapped by the KMS, its seed
    /// opened, and its id checked against the seed's public key.
    async fn open(&self, row: &SigningKeyRow) -> Result<SigningKey, AuditKeyError> {
        let corrupt = |reason: &str| AuditKeyError::Corrupt {
            key_id: row.key_id.clone(),
            reason: reason.to_owned(),
        };
        let sealed = row
            .sealed
            .as_ref()
            .ok_or_else(|| corrupt("the current key has no sealed seed"))?;
        let wrapped = WrappedKey {
            key_id: sealed.kms_key_id.clone(),
            ciphertext: sealed.wrapped_key.clone(),
        };
        let material = self.kms.decrypt(&wrapped, &self.context()).await?;
        if sealed.sealed_seed.len() < NONCE_LEN {
            return Err(corrupt("the sealed seed is truncated"));
        }
        let (nonce, ciphertext) = sealed.sealed_seed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| corrupt("nonce"))?;
        let mut opened = Zeroizing::new(ciphertext.to_vec());
        let seed = aead_key(material.expose())
            .open_in_place(
                nonce,
                Aad::from(associated_data(self.region(), &row.key_id)),
                &mut opened,
            )
            .map_err(|_| corrupt("the sealed seed does not open"))?;
        let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
            <[u8; 32]>::try_from(&*seed).map_err(|_| corrupt("the seed is not 32 bytes"))?,
        );
        let key = SigningKey::from_bytes(self.region().clone(), &seed);
        if key.key_id() != row.key_id {
            return Err(corrupt("the seed is another key's"));
        }
        Ok(key)
    }
}

fn aead_key(material: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).expect("a 32-byte AES-256 key"))
}

/// `label || lp(region) || lp(key id)`: a sealed seed opens only as the key it was sealed
/// as, in its region.
fn associated_data(region: &RegionId, key_id: &str) -> Vec<u8> {
    let mut out = AAD_LABEL.to_vec();
    for part in [region.as_str(), key_id] {
        let len = u32::try_from(part.len()).expect("ids are short");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// A second handle on the same key (`SigningKey` is deliberately not `Clone`).
fn copy(key: &SigningKey) -> SigningKey {
    let seed = Zeroizing::new(key.to_bytes());
    SigningKey::from_bytes(key.region().clone(), &seed)
}

impl crate::RegionService {
    /// Operators: a new audit signing key for the region. This node signs with it at once;
    /// the region's other nodes load it when they hear the database's notification. The
    /// keys this node held are recorded first if the region does not know them, so that
    /// none of them stops being published.
    pub async fn rotate_audit_key(
        &self,
        _operator: &crate::OperatorGrant,
    ) -> Result<Arc<SigningKeys>, crate::ServiceError> {
        let audit = &self.inner.audit;
        let region_keys = RegionAuditKeys::new(
            self.inner.database.clone(),
            self.inner.keyring.kms().clone(),
        );
        let previous = audit.signing_key();
        region_keys
            .bootstrap(&audit.signing_keys())
            .await
            .map_err(crate::ServiceError::from)?;
        let rotated = region_keys.rotate().await?;
        tracing::info!(
            region = %self.inner.region,
            previous = previous.key_id(),
            key_id = rotated.current().key_id(),
            "rotated the region's audit signing key"
        );
        audit.install_keys(rotated);
        Ok(audit.signing_keys())
    }
}

impl From<AuditKeyError> for crate::ServiceError {
    fn from(err: AuditKeyError) -> Self {
        match err {
            AuditKeyError::Store(store) => Self::from(store),
            AuditKeyError::Kms(KmsError::Unavailable(_)) => Self::unavailable("kms"),
            other => Self::internal(other),
        }
    }
}
