//! Tenant data keys in memory: the plaintext key material, zeroized when dropped and never
//! printed, and its prepared AES-256-GCM key. Versions, purposes and states live in `model`.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use aws_lc_rs::hkdf;
pub use model::{KeyPurpose, KeyState, KeyVersion};
use model::{RegionId, TenantId};
use zeroize::Zeroizing;

/// 32 bytes of plaintext key material: zeroized on drop, never printed.
pub struct KeyMaterial(Zeroizing<[u8; 32]>);

impl KeyMaterial {
    /// `None` unless `bytes` is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    /// Fresh random key material from the system's CSPRNG.
    pub fn random() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(bytes.as_mut()).expect("the system RNG does not fail");
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

/// An unwrapped tenant key, ready to seal and open: the material plus its prepared
/// AES-256-GCM key schedule, so the hot path never re-derives it.
///
/// TODO-security: the material is zeroized on drop, but the key schedule lives in an
/// aws-lc `EVP_AEAD_CTX` whose AES-GCM cleanup is empty (`aead_aes_gcm_cleanup` in
/// aws-lc's `e_aes.c`), so those bytes are freed without being cleansed. Cleansing them
/// needs either `unsafe` or an upstream change; until then the cache's age and use
/// bounds limit how long and how many such copies exist.
pub struct DataKey {
    tenant: TenantId,
    region: RegionId,
    purpose: KeyPurpose,
    version: KeyVersion,
    material: KeyMaterial,
    aead: LessSafeKey,
}

impl DataKey {
    pub fn new(
        tenant: TenantId,
        region: RegionId,
        purpose: KeyPurpose,
        version: KeyVersion,
        material: KeyMaterial,
    ) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, material.expose())
            .expect("32 bytes is a valid AES-256 key");
        Self {
            tenant,
            region,
            purpose,
            version,
            material,
            aead: LessSafeKey::new(unbound),
        }
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    pub fn version(&self) -> KeyVersion {
        self.version
    }

    /// A 32-byte key derived from this index key with HKDF-SHA256: `salt` names the use
    /// (blind index, pseudonym), and the info is the tenant, the region and `extra`,
    /// length-prefixed, so a derived key differs between uses, tenants and regions.
    ///
    /// # Panics
    /// When this is not an index key: derived keys come only from index keys.
    pub(crate) fn derive_from_index_key(&self, salt: &[u8], extra: &[&[u8]]) -> KeyMaterial {
        assert_eq!(
            self.purpose(),
            KeyPurpose::Index,
            "derived keys derive from an index key, not a data key"
        );
        let mut parts = vec![
            self.tenant().as_str().as_bytes(),
            self.region().as_str().as_bytes(),
        ];
        parts.extend_from_slice(extra);
        let info = crate::seal::length_prefixed(&parts);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(self.material().expose());
        let info = [info.as_slice()];
        let okm = prk
            .expand(&info, ThirtyTwoBytes)
            .expect("32 bytes is within HKDF-SHA256's output limit");
        let mut bytes = Zeroizing::new([0u8; 32]);
        okm.fill(bytes.as_mut())
            .expect("the output length is the key type's");
        KeyMaterial(bytes)
    }

    pub fn material(&self) -> &KeyMaterial {
        &self.material
    }

    pub(crate) fn aead(&self) -> &LessSafeKey {
        &self.aead
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("tenant", &self.tenant)
            .field("region", &self.region)
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// HKDF output length of [`DataKey::derive_from_index_key`].
struct ThirtyTwoBytes;

impl hkdf::KeyType for ThirtyTwoBytes {
    fn len(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_never_prints() {
        let material = KeyMaterial::from_slice(&[7u8; 32]).expect("32 bytes");
        assert_eq!(format!("{material:?}"), "KeyMaterial(<redacted>)");
        assert!(KeyMaterial::from_slice(&[7u8; 31]).is_none());
        let key = DataKey::new(
            TenantId::from_random_bytes([1; 16]),
            RegionId::parse("eu-central-1").expect("region"),
            KeyPurpose::Data,
            KeyVersion::FIRST,
            material,
        );
        assert!(!format!("{key:?}").contains("7, 7"), "{key:?}");
    }
}
