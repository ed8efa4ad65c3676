//! Signed checkpoints: a region's statement, at a time, that a tenant's chain had reached
//! `(seq, hash)`. Once a checkpoint is published, rewriting the chain up to it is evident
//! even to someone who kept no copy of the events.

use std::time::SystemTime;

use model::{RegionId, TenantId};

use crate::chain::put_str;
use crate::event::Hash;
use crate::signing::{self, KeySet, Signature, SigningKey};
use crate::time;

/// Domain string of a checkpoint's signed payload.
const CHECKPOINT_DOMAIN: &str = "residency/audit/checkpoint/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub tenant: TenantId,
    /// The region whose key signed it: the tenant's home region.
    pub region: RegionId,
    pub seq: u64,
    pub hash: Hash,
    /// Whole microseconds.
    pub signed_at: SystemTime,
    pub key_id: String,
    pub signature: Signature,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint signed by unknown key `{key_id}` for region {region}")]
    UnknownKey { key_id: String, region: RegionId },
    #[error("checkpoint signature does not verify")]
    BadSignature,
}

/// The bytes a checkpoint's signature covers: `lp("residency/audit/checkpoint/v1")`,
/// `lp(tenant)`, `lp(region)`, seq (u64), hash (32 bytes), signed_at (i64 unix
/// microseconds), `lp(key_id)`; integers big-endian, `lp` a u32 big-endian length and the
/// bytes.
pub fn checkpoint_payload(
    tenant: &TenantId,
    region: &RegionId,
    seq: u64,
    hash: &Hash,
    signed_at: SystemTime,
    key_id: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    put_str(&mut out, CHECKPOINT_DOMAIN);
    put_str(&mut out, tenant.as_str());
    put_str(&mut out, region.as_str());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(&time::to_unix_micros(signed_at).to_be_bytes());
    put_str(&mut out, key_id);
    out
}

/// Signs `(tenant, seq, hash)` at `signed_at` (truncated to microseconds) with `key`; the
/// checkpoint's region is the key's region.
pub fn sign_checkpoint(
    key: &SigningKey,
    tenant: &TenantId,
    seq: u64,
    hash: &Hash,
    signed_at: SystemTime,
) -> Checkpoint {
    let signed_at = crate::chain::truncate_to_micros(signed_at);
    let payload = checkpoint_payload(tenant, key.region(), seq, hash, signed_at, key.key_id());
    Checkpoint {
        tenant: *tenant,
        region: key.region().clone(),
        seq,
        hash: *hash,
        signed_at,
        key_id: key.key_id().to_owned(),
        signature: key.sign(&payload),
    }
}

/// Checks `checkpoint`'s signature with the key of `keys` that has its key id and region.
pub fn verify_checkpoint(keys: &KeySet, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let key = keys
        .find(&checkpoint.key_id, checkpoint.region.as_str())
        .ok_or_else(|| CheckpointError::UnknownKey {
            key_id: checkpoint.key_id.clone(),
            region: checkpoint.region.clone(),
        })?;
    let payload = checkpoint_payload(
        &checkpoint.tenant,
        &checkpoint.region,
        checkpoint.seq,
        &checkpoint.hash,
        checkpoint.signed_at,
        &checkpoint.key_id,
    );
    if signing::verify(key, &payload, &checkpoint.signature) {
        Ok(())
    } else {
        Err(CheckpointError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn checkpoints_verify_and_detect_changes() {
        let region = RegionId::parse("eu-central-1").expect("valid region");
        let key = SigningKey::generate(region.clone());
        let keys = KeySet::from_keys([key.public()]).expect("valid key");
        let tenant = TenantId::from_random_bytes([3; 16]);
        let at = UNIX_EPOCH + Duration::new(1_772_368_496, 123_456_789);
        let cp = sign_checkpoint(&key, &tenant, 42, &Hash::from_bytes([5; 32]), at);
        assert_eq!(
            cp.signed_at,
            UNIX_EPOCH + Duration::new(1_772_368_496, 123_456_000)
        );
        assert_eq!(verify_checkpoint(&keys, &cp), Ok(()));

        let mut later = cp.clone();
        later.seq = 43;
        assert_eq!(
            verify_checkpoint(&keys, &later),
            Err(CheckpointError::BadSignature)
        );
        let mut other_tenant = cp.clone();
        other_tenant.tenant = TenantId::from_random_bytes([4; 16]);
        assert_eq!(
            verify_checkpoint(&keys, &other_tenant),
            Err(CheckpointError::BadSignature)
        );
        let mut moved = cp.clone();
        moved.region = RegionId::parse("us-east-1").expect("valid region");
        assert!(matches!(
            verify_checkpoint(&keys, &moved),
            Err(CheckpointError::UnknownKey { .. })
        ));
        let stranger = KeySet::from_keys([SigningKey::generate(region).public()]).expect("valid");
        assert!(matches!(
            verify_checkpoint(&stranger, &cp),
            Err(CheckpointError::UnknownKey { .. })
        ));
    }
}
