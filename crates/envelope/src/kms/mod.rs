//! Key management services behind one interface: AWS KMS (`aws`), a file-backed local KMS
//! for `residency dev` (`local`), and a failure-injecting wrapper for tests (`faulty`).
//!
//! A KMS wraps and unwraps tenant keys under the region's master key, bound to an
//! encryption context (tenant, region, purpose): unwrapping with another context fails.

pub mod aws;
pub mod faulty;
pub mod local;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

use crate::{KeyMaterial, KeyPurpose};
use model::{RegionId, TenantId};

/// Key/value pairs bound to a wrapped key; unwrapping needs the same pairs.
pub type EncryptionContext = BTreeMap<String, String>;

/// The encryption context of a tenant key: which tenant, which region, what for.
pub fn tenant_key_context(
    tenant: &TenantId,
    region: &RegionId,
    purpose: KeyPurpose,
) -> EncryptionContext {
    BTreeMap::from([
        ("residency:tenant".to_owned(), tenant.to_string()),
        ("residency:region".to_owned(), region.to_string()),
        (
            "residency:purpose".to_owned(),
            format!("tenant-{}-key", purpose.as_str()),
        ),
    ])
}

/// A key as stored: ciphertext from the KMS and the id of the KMS key that wrapped it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The KMS key that wrapped it (an ARN for AWS, `local:<region>:<id>` locally).
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// A fresh data key: the plaintext for immediate use, the wrapped form to store.
#[derive(Debug)]
pub struct GeneratedKey {
    pub material: KeyMaterial,
    pub wrapped: WrappedKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsKind {
    Aws,
    Local,
}

impl KmsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Local => "local",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// Wrong encryption context, wrong key, or tampered ciphertext: the KMS will not unwrap.
    #[error("the KMS refused to unwrap the key (wrong context, wrong key or tampered ciphertext)")]
    Denied,
    /// The wrapped key names a KMS key that is not this region's.
    #[error("key {key_id} does not belong to region {region}")]
    ForeignKey { key_id: String, region: String },
    /// The KMS key is disabled or scheduled for deletion.
    #[error("KMS key {key_id} is not usable: {state}")]
    KeyUnusable { key_id: String, state: String },
    /// Throttled, timed out or unreachable: retry later.
    #[error("KMS unavailable: {0}")]
    Unavailable(String),
    #[error("KMS error: {0}")]
    Other(String),
}

/// One region's KMS.
#[async_trait]
pub trait Kms: Send + Sync + fmt::Debug {
    fn kind(&self) -> KmsKind;

    /// The region this KMS serves; it never unwraps another region's keys.
    fn region(&self) -> &RegionId;

    /// The KMS key new data keys are wrapped under (alias or ARN for AWS). Owned because
    /// it can change at run time (the local KMS rotates its master key behind `&self`).
    fn key_id(&self) -> String;

    /// A new random 256-bit data key, returned in plaintext and wrapped under `key_id()`.
    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError>;

    /// Unwraps `wrapped`; fails with [`KmsError::Denied`] unless `context` is the one it
    /// was wrapped with.
    async fn decrypt(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<KeyMaterial, KmsError>;

    /// Rewraps `wrapped` under the current `key_id()` without exposing the plaintext to
    /// the caller (KMS key rotation).
    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError>;

    /// Whether the KMS answers and the key is usable (for `/readyz`).
    async fn check(&self) -> Result<(), KmsError>;
}
