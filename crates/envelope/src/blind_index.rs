//! Blind indexes: exact-match search over sealed fields without storing plaintext. A token
//! is HMAC-SHA256 under a per-field key of a canonical encoding of the value; equal values
//! give equal tokens, and without the key a token reveals nothing but equality.
//!
//! Field keys are derived with HKDF-SHA256 from the tenant's *index* key (never a data
//! key): salt `residency/blind-index/v1`, info = tenant, region, collection and field, each
//! as a u32 big-endian length followed by its bytes. So the same value in another field,
//! collection, tenant or region gets an unrelated token.
//!
//! The value is hashed in the canonical encoding of [`model::canonical`], shared with the
//! export's pseudonyms: one type-tag byte, then the value's bytes, so that the string
//! `"1"`, the integer `1` and the number `1.0` all differ. Exact match means exact:
//! `"Ada"`, `"ada"` and `"Ada "` are three values; only Unicode normalization (NFC) is
//! applied.

use std::fmt;

use aws_lc_rs::hmac;

use crate::DataKey;

const SALT: &[u8] = b"residency/blind-index/v1";

/// The HMAC key of one indexed field of one tenant.
pub struct FieldIndexKey {
    key: hmac::Key,
}

impl FieldIndexKey {
    /// Derives the key for `collection.field` from the tenant's index key.
    pub fn derive(index_key: &DataKey, collection: &str, field: &str) -> FieldIndexKey {
        let derived =
            index_key.derive_from_index_key(SALT, &[collection.as_bytes(), field.as_bytes()]);
        FieldIndexKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.expose()),
        }
    }

    /// The token of `value`: equal (after normalization) values give equal tokens.
    pub fn token(&self, value: &IndexValue<'_>) -> Result<BlindToken, IndexValueError> {
        let mut context = hmac::Context::with_key(&self.key);
        value.encode(|piece| context.update(piece))?;
        let tag = context.sign();
        let bytes: [u8; 32] = tag
            .as_ref()
            .try_into()
            .expect("HMAC-SHA256 tags are 32 bytes");
        Ok(BlindToken(bytes))
    }
}

impl fmt::Debug for FieldIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FieldIndexKey(<redacted>)")
    }
}

/// A value to index: the canonical value both blind indexes and pseudonyms encode. Its
/// `Debug` names the type only: values are personal data.
pub use model::canonical::CanonicalValue as IndexValue;

/// A value that has no canonical encoding. Messages never include the value.
pub use model::canonical::CanonicalValueError as IndexValueError;

/// HMAC-SHA256 of a canonical value under a field key: safe to store and to print, since
/// without the key it reveals only equality with other tokens of the same field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlindToken([u8; 32]);

impl BlindToken {
    /// A token as read back from storage.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for BlindToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlindToken({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyMaterial, KeyPurpose, KeyVersion};
    use model::{RegionId, TenantId};
    use proptest::prelude::*;
    use unicode_normalization::UnicodeNormalization;

    fn index_key(tenant: [u8; 16], region: &str) -> DataKey {
        DataKey::new(
            TenantId::from_random_bytes(tenant),
            RegionId::parse(region).expect("valid region"),
            KeyPurpose::Index,
            KeyVersion::FIRST,
            KeyMaterial::from_slice(&[5; 32]).expect("32 bytes"),
        )
    }

    fn token(key: &FieldIndexKey, value: IndexValue<'_>) -> BlindToken {
        key.token(&value).expect("indexable value")
    }

    #[test]
    fn same_value_same_token() {
        let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "patients", "email");
        let again = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "patients", "email");
        let value = IndexValue::String("ada@example.org");
        assert_eq!(token(&key, value), token(&again, value));
        assert_ne!(
            token(&key, value),
            token(&key, IndexValue::String("bob@example.org"))
        );
    }

    #[test]
    fn different_field_collection_tenant_or_region_differ() {
        let base = index_key([1; 16], "eu-central-1");
        let value = IndexValue::String("ada@example.org");
        let reference = token(&FieldIndexKey::derive(&base, "patients", "email"), value);
        let others = [
            FieldIndexKey::derive(&base, "patients", "phone"),
            FieldIndexKey::derive(&base, "doctors", "email"),
            // Length prefixes: moving bytes between collection and field changes the key.
            FieldIndexKey::derive(&base, "patientse", "mail"),
            FieldIndexKey::derive(&index_key([2; 16], "eu-central-1"), "patients", "email"),
            FieldIndexKey::derive(&index_key([1; 16], "eu-west-1"), "patients", "email"),
        ];
        for other in &others {
            assert_ne!(token(other, value), reference);
        }
    }

    #[test]
    fn nfc_and_nfd_match_but_case_and_spaces_do_not() {
        let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "people", "name");
        let nfc = token(&key, IndexValue::String("Ren\u{e9}"));
        let nfd = token(&key, IndexValue::String("Rene\u{301}"));
        assert_eq!(nfc, nfd);
        assert_ne!(nfc, token(&key, IndexValue::String("ren\u{e9}")));
        assert_ne!(nfc, token(&key, IndexValue::String("Ren\u{e9} ")));
    }

    #[test]
    fn types_are_kept_apart() {
        let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "c", "f");
        let string = token(&key, IndexValue::String("1"));
        let integer = token(&key, IndexValue::Integer(1));
        let number = token(&key, IndexValue::Number(1.0));
        let boolean = token(&key, IndexValue::Boolean(true));
        let time = token(
            &key,
            IndexValue::Timestamp {
                unix_seconds: 1,
                nanos: 0,
            },
        );
        let all = [string, integer, number, boolean, time];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(token(&key, IndexValue::Boolean(false)), boolean);
    }

    #[test]
    fn negative_zero_is_zero_and_non_finite_is_refused() {
        let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "c", "f");
        assert_eq!(
            token(&key, IndexValue::Number(-0.0)),
            token(&key, IndexValue::Number(0.0))
        );
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(
                key.token(&IndexValue::Number(bad)),
                Err(IndexValueError::NonFiniteNumber)
            );
        }
    }

    #[test]
    fn timestamps_need_valid_nanos() {
        let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "c", "f");
        let at = |nanos| IndexValue::Timestamp {
            unix_seconds: 1_700_000_000,
            nanos,
        };
        assert_eq!(
            key.token(&at(1_000_000_000)),
            Err(IndexValueError::NanosOutOfRange)
        );
        assert_ne!(token(&key, at(999_999_999)), token(&key, at(0)));
    }

    #[test]
    #[should_panic(expected = "derive from an index key")]
    fn deriving_from_a_data_key_is_a_bug() {
        let data = DataKey::new(
            TenantId::from_random_bytes([1; 16]),
            RegionId::parse("eu-central-1").expect("valid region"),
            KeyPurpose::Data,
            KeyVersion::FIRST,
            KeyMaterial::random(),
        );
        FieldIndexKey::derive(&data, "c", "f");
    }

    #[test]
    fn debug_reveals_no_value_or_key() {
        let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "c", "f");
        assert_eq!(format!("{key:?}"), "FieldIndexKey(<redacted>)");
        assert_eq!(
            format!("{:?}", IndexValue::String("Ada")),
            "CanonicalValue::String(<redacted>)"
        );
        let token = token(&key, IndexValue::Integer(7));
        assert_eq!(
            format!("{token:?}"),
            format!("BlindToken({})", token.to_hex())
        );
        assert_eq!(token.to_hex().len(), 64);
        assert_eq!(BlindToken::from_bytes(*token.as_bytes()), token);
    }

    /// Tokens computed before the encoding moved to `model::canonical`: stored tokens
    /// must keep matching what search computes, so these never change.
    #[test]
    fn tokens_are_pinned() {
        let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "c", "f");
        let cases = [
            (
                IndexValue::String(""),
                "61b8f1dd8bacead3fbc9fd7f28630abb400f484b9f4bd35d825a014bc235dade",
            ),
            (
                IndexValue::String("ada@example.org"),
                "3876b03b5d35b1d290d3f01939032bfdd850645136a67a4096ee5f5c4fe4be28",
            ),
            (
                IndexValue::String("René"),
                "22dff1454d759d2bca33b62325f9ff2251016d47c96d71e27c239fe4b0ce6311",
            ),
            (
                IndexValue::String("Rene\u{301}"),
                "22dff1454d759d2bca33b62325f9ff2251016d47c96d71e27c239fe4b0ce6311",
            ),
            (
                IndexValue::String("Ada "),
                "8afb83bfe2266513ed89e8a0de7822b7948b46538a89571094e759e363f2f41b",
            ),
            (
                IndexValue::String("日本"),
                "faa5c451744021fafa915929ac41c23e1c91a8c6b36bdbd8d0ad46ddd4c7e387",
            ),
            (
                IndexValue::String("😀"),
                "2a3e8d16da47e41897199464f8faf2809a820893811ebca2f0db41a4ae2df09e",
            ),
            (
                IndexValue::String("A\u{30a}"),
                "aa12dc9ae9d4a4b46d5af8dbe8737bb480475ec0ac20efb50680014e90f15127",
            ),
            (
                IndexValue::String("Å"),
                "aa12dc9ae9d4a4b46d5af8dbe8737bb480475ec0ac20efb50680014e90f15127",
            ),
            (
                IndexValue::Integer(0),
                "74cac1788bd8acb56d5638a357730539bee1ef6a31dc628d7fba43a0e44bcdcf",
            ),
            (
                IndexValue::Integer(1),
                "844add0c98e07082ce3732c8cc3fe3d2e9061655405d4b5f36ec7c992254a73b",
            ),
            (
                IndexValue::Integer(-1),
                "0c27a6b538aaaf5be5a1fd52956d9ccb4e4c9b20f999a4603a11a79103ee4fa4",
            ),
            (
                IndexValue::Integer(42),
                "e8bf2f6fde42dd168ba27aa694b53f4d305701f24585520283b169fde747adf1",
            ),
            (
                IndexValue::Integer(i64::MIN),
                "5efa08bed44cdcc3a5ca1265d5a4cbdb01b431fb7af68b18ab076161806e6e7c",
            ),
            (
                IndexValue::Integer(i64::MAX),
                "3a6d5bb8f89402f2dad90cadee514edcd7c5893ef07c0592959e5c73c1013303",
            ),
            (
                IndexValue::Number(0.0),
                "916f66b6fd5b2e70e838c7a2f0c0b10ef57aab56be1f6a8088a462219c167ccb",
            ),
            (
                IndexValue::Number(-0.0),
                "916f66b6fd5b2e70e838c7a2f0c0b10ef57aab56be1f6a8088a462219c167ccb",
            ),
            (
                IndexValue::Number(1.0),
                "6981880ba04391f3a1b0b89c2dee996cdd43d088185268838967c6d317b4e9d6",
            ),
            (
                IndexValue::Number(-1.5),
                "372ac9040eaeda62800fe24aa97329291a2260702370b4d41283d112bd07d61e",
            ),
            (
                IndexValue::Number(0.1),
                "fbfe0dd15da937f9940ababe29a15fb672a99851f2421ff28b7ea069040a828f",
            ),
            (
                IndexValue::Number(f64::MAX),
                "22f0fb3afa5d9d6efb865bdb5805aa751d1a52dcff50680f20e1ade5c0068fb1",
            ),
            (
                IndexValue::Number(f64::MIN_POSITIVE),
                "d4938d2c45a513bde74a77a982217f0ed58e546ffd9a4ecdf3333ec8404b2f64",
            ),
            (
                IndexValue::Number(5e-324),
                "c6c56ba0ad6eada3559745366ce469940b669af842f5faadd5bdaefa23bff78b",
            ),
            (
                IndexValue::Boolean(false),
                "45a1095521b80abc3b8e8ce43737c55331236a37203570c7c14027767baba394",
            ),
            (
                IndexValue::Boolean(true),
                "c9423b691fa23d83aefa59b5124c660ca192061fba22547071ded2f020f725fd",
            ),
            (
                IndexValue::Timestamp {
                    unix_seconds: 0,
                    nanos: 0,
                },
                "157778df87bf5aacc7fe45d9dfbbb55daef8bc0d93243774ef21e05dc7f21180",
            ),
            (
                IndexValue::Timestamp {
                    unix_seconds: 1,
                    nanos: 0,
                },
                "aa9e1d73a1523d6ef94ab0672231603fd9f4f2e881dceed20a146a80367dd950",
            ),
            (
                IndexValue::Timestamp {
                    unix_seconds: -1,
                    nanos: 999999999,
                },
                "d6823466dac624d8c77081e9bc06ac7ea11766eb1c4b4fc7d6732832c191cd60",
            ),
            (
                IndexValue::Timestamp {
                    unix_seconds: 1772368496,
                    nanos: 789012000,
                },
                "d103f289cc574d484567b6e57b9b626238417dbaf994dc198eeab33302e4a615",
            ),
            (
                IndexValue::Timestamp {
                    unix_seconds: i64::MIN,
                    nanos: 0,
                },
                "6a2622dd5a0b7f56905d1a60d5c318e342dc89cd327c94613c741e1a4ee41ce8",
            ),
            (
                IndexValue::Timestamp {
                    unix_seconds: 253402300799,
                    nanos: 999999999,
                },
                "7571ebc477fcab64404cca6003eb54d5c20bfcd8acb2baff31c4b32a45662996",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(token(&key, value).to_hex(), expected, "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn normalization_forms_share_a_token(text in "\\PC{0,24}") {
            let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "c", "f");
            let nfd: String = text.nfd().collect();
            let nfc: String = text.nfc().collect();
            prop_assert_eq!(token(&key, IndexValue::String(&nfd)), token(&key, IndexValue::String(&nfc)));
        }

        #[test]
        fn distinct_integers_differ(a in any::<i64>(), b in any::<i64>()) {
            prop_assume!(a != b);
            let key = FieldIndexKey::derive(&index_key([1; 16], "eu-central-1"), "c", "f");
            prop_assert_ne!(token(&key, IndexValue::Integer(a)), token(&key, IndexValue::Integer(b)));
        }
    }
}
