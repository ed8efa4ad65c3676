//! The per-tenant key the analytics export pseudonymizes identifiers with: derived with
//! HKDF-SHA256 from the tenant's index key (salt `residency/analytics-pseudonym/v1`, info =
//! tenant and region, length-prefixed), so it is stable for the life of the tenant (index
//! keys are not rotated), differs between tenants and regions, and, like the index key,
//! exists only inside the home region. Blind-index field keys come from the same index
//! key under another salt, so a pseudonym never equals a stored search token.

use aws_lc_rs::hkdf;

use crate::seal::length_prefixed;
use crate::{DataKey, KeyMaterial, KeyPurpose};

const SALT: &[u8] = b"residency/analytics-pseudonym/v1";

/// The tenant's analytics pseudonym key, from its index key.
pub fn analytics_pseudonym_key(index_key: &DataKey) -> KeyMaterial {
    assert_eq!(
        index_key.purpose(),
        KeyPurpose::Index,
        "pseudonym keys derive from an index key, not a data key"
    );
    let info = length_prefixed(&[
        index_key.tenant().as_str().as_bytes(),
        index_key.region().as_str().as_bytes(),
    ]);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(index_key.material().expose());
    let info = [info.as_slice()];
    let okm = prk
        .expand(&info, ThirtyTwo)
        .expect("32 bytes is within HKDF-SHA256's output limit");
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    okm.fill(bytes.as_mut())
        .expect("the output length is the key type's");
    KeyMaterial::from_slice(bytes.as_ref()).expect("32 bytes")
}

struct ThirtyTwo;

impl hkdf::KeyType for ThirtyTwo {
    fn len(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use model::{KeyVersion, RegionId, TenantId};

    use super::*;

    fn index_key(tenant: TenantId, region: &str, byte: u8) -> DataKey {
        DataKey::new(
            tenant,
            RegionId::parse(region).expect("region"),
            KeyPurpose::Index,
            KeyVersion::FIRST,
            KeyMaterial::from_slice(&[byte; 32]).expect("key"),
        )
    }

    #[test]
    fn the_key_is_stable_per_tenant_and_differs_across_tenants_regions_and_index_keys() {
        let (a, b) = (
            TenantId::from_random_bytes([1; 16]),
            TenantId::from_random_bytes([2; 16]),
        );
        let key = |tenant, region, byte| {
            *analytics_pseudonym_key(&index_key(tenant, region, byte)).expose()
        };
        assert_eq!(key(a, "eu-west-1", 7), key(a, "eu-west-1", 7));
        assert_ne!(key(a, "eu-west-1", 7), key(b, "eu-west-1", 7));
        assert_ne!(key(a, "eu-west-1", 7), key(a, "us-east-1", 7));
        assert_ne!(key(a, "eu-west-1", 7), key(a, "eu-west-1", 8));
        assert_ne!(key(a, "eu-west-1", 7), [7; 32], "not the index key itself");
    }
}
