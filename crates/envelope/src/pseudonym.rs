//! The per-tenant key the analytics export pseudonymizes identifiers with: derived with
//! HKDF-SHA256 from the tenant's index key (salt `residency/analytics-pseudonym/v1`, info =
//! tenant and region, length-prefixed), so it is stable for the life of the tenant (index
//! keys are not rotated), differs between tenants and regions, and, like the index key,
//! exists only inside the home region. Blind-index field keys come from the same index
//! key under another salt, so a pseudonym never equals a stored search token.

use crate::{DataKey, KeyMaterial};

const SALT: &[u8] = b"residency/analytics-pseudonym/v1";

/// The tenant's analytics pseudonym key, from its index key.
pub fn analytics_pseudonym_key(index_key: &DataKey) -> KeyMaterial {
    index_key.derive_from_index_key(SALT, &[])
}

#[cfg(test)]
mod tests {
    use model::{KeyPurpose, KeyVersion, RegionId, TenantId};

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
