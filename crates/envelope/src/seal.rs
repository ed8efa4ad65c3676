//! Field sealing: AES-256-GCM over one field value, bound through the associated data to
//! the tenant, region, collection, record and field it belongs to, so a sealed value moved
//! anywhere else (or opened with another tenant's or region's key) fails to open.
//!
//! Layout of a sealed value (see `docs/envelope.md`):
//!
//! | bytes        | content                                  |
//! |--------------|------------------------------------------|
//! | 0            | format, `0x01`                           |
//! | 1..5         | key version, u32 big-endian              |
//! | 5..17        | 96-bit random nonce                      |
//! | 17..len-16   | ciphertext (same length as the plaintext) |
//! | len-16..len  | GCM tag                                  |
//!
//! Associated data: `residency/seal/v1`, tenant, region, collection, record and field, each
//! as a u32 big-endian length followed by its bytes, then the key version (u32 BE). The
//! length prefixes make the encoding injective: no two contexts give the same bytes.
//!
//! Nonces are random: AES-GCM stays within its bounds for about 2^32 values per key, far
//! more than one tenant key version seals between rotations.

use std::cell::RefCell;

use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce};

use crate::{DataKey, KeyPurpose, KeyVersion};

/// The only format this code writes and opens.
pub const FORMAT_V1: u8 = 0x01;

/// Bytes before the ciphertext: format, key version, nonce.
const PREFIX_LEN: usize = 1 + 4 + NONCE_LEN;

const TAG_LEN: usize = 16;

/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = PREFIX_LEN + TAG_LEN;

const DOMAIN: &[u8] = b"residency/seal/v1";

/// Associated data that fits this buffer is built on the stack; longer names (rare)
/// fall back to one exactly sized allocation.
const AAD_STACK_LEN: usize = 256;

/// Where a sealed value lives. Tenant and region come from the [`DataKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealContext<'a> {
    pub collection: &'a str,
    pub record: &'a str,
    pub field: &'a str,
}

/// Why a sealed value did not open. Never carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short to hold a format byte, key version, nonce and tag, or key version 0.
    #[error("sealed value is malformed")]
    Malformed,
    /// The format byte names a format this code does not know.
    #[error("unsupported sealed value format {0:#04x}")]
    UnsupportedFormat(u8),
    /// Sealed under another key version than the key offered: look up the right one
    /// with [`sealed_version`] first.
    #[error("value sealed under key version {sealed} but key version {key} was offered")]
    KeyVersionMismatch { sealed: u32, key: u32 },
    /// The tag did not verify: the value was moved to another record, field, collection,
    /// tenant or region, was tampered with, or the key is wrong.
    #[error("sealed value failed authentication (wrong key or context, or tampered)")]
    Authentication,
}

/// Seals `plaintext` for `context` under `key` (which must be a data key).
pub fn seal(key: &DataKey, context: &SealContext<'_>, plaintext: &[u8]) -> Vec<u8> {
    assert_eq!(
        key.purpose(),
        KeyPurpose::Data,
        "sealing needs a data key, not an index key"
    );
    let version = key.version().get();
    let nonce = random_nonce();

    // One allocation of the exact final size; the plaintext is copied once and
    // encrypted in place.
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = with_aad(key, context, version, |aad| {
        key.aead().seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[PREFIX_LEN..],
        )
    })
    .expect("AES-GCM seals any in-memory buffer shorter than 64 GiB");
    out.extend_from_slice(tag.as_ref());
    out
}

/// The key version a value was sealed under, read without opening it, so the caller can
/// fetch that version's key.
pub fn sealed_version(sealed: &[u8]) -> Result<KeyVersion, OpenError> {
    let format = *sealed.first().ok_or(OpenError::Malformed)?;
    if format != FORMAT_V1 {
        return Err(OpenError::UnsupportedFormat(format));
    }
    if sealed.len() < OVERHEAD {
        return Err(OpenError::Malformed);
    }
    let raw: [u8; 4] = sealed[1..5].try_into().expect("length checked above");
    KeyVersion::new(u32::from_be_bytes(raw)).ok_or(OpenError::Malformed)
}

/// Opens a value sealed by [`seal`] for the same `context` with the same tenant, region
/// and key version.
pub fn open(key: &DataKey, context: &SealContext<'_>, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    assert_eq!(
        key.purpose(),
        KeyPurpose::Data,
        "opening needs a data key, not an index key"
    );
    let version = sealed_version(sealed)?;
    if version != key.version() {
        return Err(OpenError::KeyVersionMismatch {
            sealed: version.get(),
            key: key.version().get(),
        });
    }
    let nonce: [u8; NONCE_LEN] = sealed[5..PREFIX_LEN]
        .try_into()
        .expect("length checked by sealed_version");
    let (ciphertext, tag) = sealed[PREFIX_LEN..].split_at(sealed.len() - OVERHEAD);
    // The ciphertext is copied once into a buffer of the plaintext's exact size and
    // decrypted in place; the tag is checked from the input.
    let mut out = ciphertext.to_vec();
    with_aad(key, context, version.get(), |aad| {
        key.aead().open_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            tag,
            &mut out,
        )
    })
    .map_err(|_| OpenError::Authentication)?;
    Ok(out)
}

/// Nonces per refill of a thread's pool.
const POOL_NONCES: usize = 256;

/// A fresh random nonce. One call into the RNG costs about as much as sealing 1 KiB
/// whatever the length asked for, so each thread draws [`POOL_NONCES`] nonces' worth of
/// CSPRNG output at once and hands them out in order, each byte once.
///
/// A process that forked and then sealed in both parent and child would repeat the
/// pool's nonces; checking the pid on every call costs a system call, a large share of
/// sealing 1 KiB, and this crate's processes only fork to exec
/// (`std::process::Command`), so no check is made.
fn random_nonce() -> [u8; NONCE_LEN] {
    thread_local! {
        static POOL: RefCell<NoncePool> = const {
            RefCell::new(NoncePool { bytes: [0; NONCE_LEN * POOL_NONCES], used: NONCE_LEN * POOL_NONCES })
        };
    }
    POOL.with_borrow_mut(NoncePool::take)
}

struct NoncePool {
    bytes: [u8; NONCE_LEN * POOL_NONCES],
    /// Bytes already handed out.
    used: usize,
}

impl NoncePool {
    fn take(&mut self) -> [u8; NONCE_LEN] {
        if self.used == self.bytes.len() {
            aws_lc_rs::rand::fill(&mut self.bytes).expect("the system RNG does not fail");
            self.used = 0;
        }
        let nonce = self.bytes[self.used..self.used + NONCE_LEN]
            .try_into()
            .expect("NONCE_LEN bytes");
        self.used += NONCE_LEN;
        nonce
    }
}

/// Runs `f` with the associated data for `context`, built on the stack when it fits.
fn with_aad<R>(
    key: &DataKey,
    context: &SealContext<'_>,
    version: u32,
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    let parts: [&[u8]; 6] = [
        DOMAIN,
        key.tenant().as_str().as_bytes(),
        key.region().as_str().as_bytes(),
        context.collection.as_bytes(),
        context.record.as_bytes(),
        context.field.as_bytes(),
    ];
    let len = parts.iter().map(|part| 4 + part.len()).sum::<usize>() + 4;
    if len <= AAD_STACK_LEN {
        let mut buf = [0u8; AAD_STACK_LEN];
        write_aad(&mut buf[..len], &parts, version);
        f(&buf[..len])
    } else {
        let mut buf = vec![0u8; len];
        write_aad(&mut buf, &parts, version);
        f(&buf)
    }
}

/// Fills `out` (exactly as long as the encoding) with the length-prefixed `parts`
/// followed by `version`.
fn write_aad(out: &mut [u8], parts: &[&[u8]], version: u32) {
    let mut rest = out;
    for part in parts {
        let (prefix, tail) = rest.split_at_mut(4);
        prefix.copy_from_slice(&prefix_len(part).to_be_bytes());
        let (body, tail) = tail.split_at_mut(part.len());
        body.copy_from_slice(part);
        rest = tail;
    }
    rest.copy_from_slice(&version.to_be_bytes());
}

fn prefix_len(part: &[u8]) -> u32 {
    u32::try_from(part.len()).expect("names and ids are shorter than 4 GiB")
}

/// `parts`, each as a u32 big-endian length followed by its bytes: an injective encoding
/// for key-derivation inputs off the hot path (blind-index and object keys).
pub(crate) fn length_prefixed(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|part| 4 + part.len()).sum());
    for part in parts {
        out.extend_from_slice(&prefix_len(part).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyMaterial;
    use model::{RegionId, TenantId};
    use proptest::prelude::*;

    fn key_with(
        tenant: [u8; 16],
        region: &str,
        version: KeyVersion,
        material: [u8; 32],
    ) -> DataKey {
        DataKey::new(
            TenantId::from_random_bytes(tenant),
            RegionId::parse(region).expect("valid region"),
            KeyPurpose::Data,
            version,
            KeyMaterial::from_slice(&material).expect("32 bytes"),
        )
    }

    fn test_key() -> DataKey {
        key_with([1; 16], "eu-central-1", KeyVersion::FIRST, [9; 32])
    }

    const CTX: SealContext<'static> = SealContext {
        collection: "patients",
        record: "r-1",
        field: "name",
    };

    #[test]
    fn round_trip_and_layout() {
        let key = test_key();
        let sealed = seal(&key, &CTX, b"Ada Lovelace");
        assert_eq!(sealed.len(), b"Ada Lovelace".len() + OVERHEAD);
        assert_eq!(sealed[0], FORMAT_V1);
        assert_eq!(&sealed[1..5], &1u32.to_be_bytes());
        assert_eq!(sealed_version(&sealed), Ok(KeyVersion::FIRST));
        assert_eq!(open(&key, &CTX, &sealed).expect("opens"), b"Ada Lovelace");
        assert!(!sealed.windows(3).any(|w| w == b"Ada"));
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let key = test_key();
        let sealed = seal(&key, &CTX, b"");
        assert_eq!(sealed.len(), OVERHEAD);
        assert_eq!(open(&key, &CTX, &sealed).expect("opens"), b"");
    }

    #[test]
    fn nonces_differ_between_seals() {
        let key = test_key();
        assert_ne!(seal(&key, &CTX, b"same"), seal(&key, &CTX, b"same"));
    }

    #[test]
    fn pooled_nonces_do_not_repeat_across_refills() {
        let nonces: std::collections::HashSet<[u8; NONCE_LEN]> =
            (0..3 * POOL_NONCES + 1).map(|_| random_nonce()).collect();
        assert_eq!(nonces.len(), 3 * POOL_NONCES + 1);
    }

    #[test]
    fn long_context_uses_the_heap_path() {
        let key = test_key();
        let long = "f".repeat(1000);
        let context = SealContext {
            collection: "c",
            record: "r",
            field: &long,
        };
        let sealed = seal(&key, &context, b"v");
        assert_eq!(open(&key, &context, &sealed).expect("opens"), b"v");
        let shorter = SealContext {
            field: &long[1..],
            ..context
        };
        assert_eq!(
            open(&key, &shorter, &sealed),
            Err(OpenError::Authentication)
        );
    }

    #[test]
    fn moved_values_fail_authentication() {
        let key = test_key();
        let sealed = seal(&key, &CTX, b"secret");
        for other in [
            SealContext {
                record: "r-2",
                ..CTX
            },
            SealContext {
                field: "email",
                ..CTX
            },
            SealContext {
                collection: "doctors",
                ..CTX
            },
            // Length prefixes: shifting bytes between parts is a different context.
            SealContext {
                collection: "patient",
                record: "sr-1",
                ..CTX
            },
            SealContext {
                record: "r-1n",
                field: "ame",
                ..CTX
            },
        ] {
            assert_eq!(
                open(&key, &other, &sealed),
                Err(OpenError::Authentication),
                "{other:?}"
            );
        }
    }

    #[test]
    fn other_tenant_or_region_with_same_material_fails() {
        let key = test_key();
        let sealed = seal(&key, &CTX, b"secret");
        let other_tenant = key_with([2; 16], "eu-central-1", KeyVersion::FIRST, [9; 32]);
        let other_region = key_with([1; 16], "eu-west-1", KeyVersion::FIRST, [9; 32]);
        let other_material = key_with([1; 16], "eu-central-1", KeyVersion::FIRST, [8; 32]);
        for other in [&other_tenant, &other_region, &other_material] {
            assert_eq!(open(other, &CTX, &sealed), Err(OpenError::Authentication));
        }
    }

    #[test]
    fn version_mismatch_is_typed() {
        let v2 = KeyVersion::FIRST.next();
        let old = test_key();
        let new = key_with([1; 16], "eu-central-1", v2, [9; 32]);
        let sealed = seal(&new, &CTX, b"x");
        assert_eq!(sealed_version(&sealed), Ok(v2));
        assert_eq!(
            open(&old, &CTX, &sealed),
            Err(OpenError::KeyVersionMismatch { sealed: 2, key: 1 })
        );
    }

    #[test]
    fn short_zero_version_and_unknown_format_are_refused() {
        let key = test_key();
        assert_eq!(sealed_version(&[]), Err(OpenError::Malformed));
        assert_eq!(
            open(&key, &CTX, &[FORMAT_V1, 0, 0, 0, 1]),
            Err(OpenError::Malformed)
        );
        let mut sealed = seal(&key, &CTX, b"x");
        sealed[0] = 0x02;
        assert_eq!(
            open(&key, &CTX, &sealed),
            Err(OpenError::UnsupportedFormat(0x02))
        );
        sealed[0] = FORMAT_V1;
        sealed[1..5].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(sealed_version(&sealed), Err(OpenError::Malformed));
    }

    #[test]
    #[should_panic(expected = "sealing needs a data key")]
    fn sealing_with_an_index_key_is_a_bug() {
        let key = DataKey::new(
            TenantId::from_random_bytes([1; 16]),
            RegionId::parse("eu-central-1").expect("valid region"),
            KeyPurpose::Index,
            KeyVersion::FIRST,
            KeyMaterial::random(),
        );
        seal(&key, &CTX, b"x");
    }

    #[test]
    fn errors_do_not_leak_plaintext() {
        for error in [
            OpenError::Malformed,
            OpenError::UnsupportedFormat(7),
            OpenError::KeyVersionMismatch { sealed: 2, key: 1 },
            OpenError::Authentication,
        ] {
            let message = error.to_string();
            assert_eq!(message, message.to_lowercase());
            assert!(!message.ends_with('.'));
        }
    }

    fn name() -> impl Strategy<Value = String> {
        // Arbitrary Unicode, including empty strings and names longer than the stack buffer.
        prop_oneof![".{0,12}", ".{60,120}"]
    }

    proptest! {
        #[test]
        fn round_trips_for_any_bytes_and_context(
            plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
            collection in name(), record in name(), field in name(),
        ) {
            let key = test_key();
            let context = SealContext { collection: &collection, record: &record, field: &field };
            let sealed = seal(&key, &context, &plaintext);
            prop_assert_eq!(open(&key, &context, &sealed), Ok(plaintext));
        }

        #[test]
        fn any_flipped_bit_is_refused(
            plaintext in proptest::collection::vec(any::<u8>(), 0..64),
            position in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let key = test_key();
            let mut sealed = seal(&key, &CTX, &plaintext);
            let at = position.index(sealed.len());
            sealed[at] ^= 1 << bit;
            prop_assert!(open(&key, &CTX, &sealed).is_err());
        }

        #[test]
        fn any_truncation_is_refused(
            plaintext in proptest::collection::vec(any::<u8>(), 0..64),
            cut in any::<prop::sample::Index>(),
        ) {
            let key = test_key();
            let sealed = seal(&key, &CTX, &plaintext);
            let keep = cut.index(sealed.len());
            prop_assert!(open(&key, &CTX, &sealed[..keep]).is_err());
        }

        #[test]
        fn swapped_between_records_fails(
            a in proptest::collection::vec(any::<u8>(), 0..64),
            b in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let key = test_key();
            let at_a = SealContext { record: "r-a", ..CTX };
            let at_b = SealContext { record: "r-b", ..CTX };
            let sealed_a = seal(&key, &at_a, &a);
            let sealed_b = seal(&key, &at_b, &b);
            prop_assert_eq!(open(&key, &at_b, &sealed_a), Err(OpenError::Authentication));
            prop_assert_eq!(open(&key, &at_a, &sealed_b), Err(OpenError::Authentication));
        }
    }
}
