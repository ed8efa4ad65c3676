//! Blind indexes: exact-match search over sealed fields without storing plaintext. A token
//! is HMAC-SHA256 under a per-field key of a canonical encoding of the value; equal values
//! give equal tokens, and without the key a token reveals nothing but equality.
//!
//! Field keys are derived with HKDF-SHA256 from the tenant's *index* key (never a data
//! key): salt `residency/blind-index/v1`, info = tenant, region, collection and field, each
//! as a u32 big-endian length followed by its bytes. So the same value in another field,
//! collection, tenant or region gets an unrelated token.
//!
//! Canonical encoding: one type-tag byte, then the value's bytes. The tag keeps types
//! apart: the string `"1"`, the integer `1` and the number `1.0` all differ.
//!
//! | type      | tag    | encoding after the tag                                         |
//! |-----------|--------|----------------------------------------------------------------|
//! | string    | `0x01` | UTF-8 of the Unicode NFC form; no case folding, no trimming    |
//! | integer   | `0x02` | i64, 8 bytes big-endian                                        |
//! | number    | `0x03` | f64 bits, 8 bytes big-endian; `-0.0` becomes `0.0`; NaN and ±∞ are refused |
//! | boolean   | `0x04` | one byte, `0x00` or `0x01`                                     |
//! | timestamp | `0x05` | UTC seconds since the epoch, i64 BE, then nanoseconds, u32 BE (< 10^9) |
//!
//! Exact match means exact: `"Ada"`, `"ada"` and `"Ada "` are three values. Only Unicode
//! normalization is applied, because NFC and NFD spellings of the same text are the same
//! text to a person and come from different keyboards and platforms.

use std::fmt;

use aws_lc_rs::{hkdf, hmac};
use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

use crate::seal::length_prefixed;
use crate::{DataKey, KeyPurpose};

const SALT: &[u8] = b"residency/blind-index/v1";

const TAG_STRING: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_NUMBER: u8 = 0x03;
const TAG_BOOLEAN: u8 = 0x04;
const TAG_TIMESTAMP: u8 = 0x05;

/// The HMAC key of one indexed field of one tenant.
pub struct FieldIndexKey {
    key: hmac::Key,
}

impl FieldIndexKey {
    /// Derives the key for `collection.field` from the tenant's index key.
    pub fn derive(index_key: &DataKey, collection: &str, field: &str) -> FieldIndexKey {
        assert_eq!(
            index_key.purpose(),
            KeyPurpose::Index,
            "blind-index keys derive from an index key, not a data key"
        );
        let info = length_prefixed(&[
            index_key.tenant().as_str().as_bytes(),
            index_key.region().as_str().as_bytes(),
            collection.as_bytes(),
            field.as_bytes(),
        ]);
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(index_key.material().expose());
        let info = [info.as_slice()];
        let okm = prk
            .expand(&info, hmac::HMAC_SHA256)
            .expect("32 bytes is within HKDF-SHA256's output limit");
        FieldIndexKey {
            key: hmac::Key::from(okm),
        }
    }

    /// The token of `value`: equal (after normalization) values give equal tokens.
    pub fn token(&self, value: &IndexValue<'_>) -> Result<BlindToken, IndexValueError> {
        let mut context = hmac::Context::with_key(&self.key);
        match *value {
            IndexValue::String(text) => {
                context.update(&[TAG_STRING]);
                // Most text is already NFC: hash it as is and allocate only when not.
                if is_nfc_quick(text.chars()) == IsNormalized::Yes {
                    context.update(text.as_bytes());
                } else {
                    let normalized: String = text.nfc().collect();
                    context.update(normalized.as_bytes());
                }
            }
            IndexValue::Integer(integer) => {
                context.update(&[TAG_INTEGER]);
                context.update(&integer.to_be_bytes());
            }
            IndexValue::Number(number) => {
                if !number.is_finite() {
                    return Err(IndexValueError::NonFiniteNumber);
                }
                // -0.0 == 0.0, so they must share a token.
                let number = if number == 0.0 { 0.0 } else { number };
                context.update(&[TAG_NUMBER]);
                context.update(&number.to_bits().to_be_bytes());
            }
            IndexValue::Boolean(boolean) => {
                context.update(&[TAG_BOOLEAN, u8::from(boolean)]);
            }
            IndexValue::Timestamp {
                unix_seconds,
                nanos,
            } => {
                if nanos >= 1_000_000_000 {
                    return Err(IndexValueError::NanosOutOfRange);
                }
                context.update(&[TAG_TIMESTAMP]);
                context.update(&unix_seconds.to_be_bytes());
                context.update(&nanos.to_be_bytes());
            }
        }
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

/// A value to index. Its `Debug` names the type only: values are personal data.
#[derive(Clone, Copy, PartialEq)]
pub enum IndexValue<'a> {
    String(&'a str),
    Integer(i64),
    Number(f64),
    Boolean(bool),
    /// A UTC instant; `nanos` must be below 10^9.
    Timestamp {
        unix_seconds: i64,
        nanos: u32,
    },
}

impl fmt::Debug for IndexValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::String(_) => "String",
            Self::Integer(_) => "Integer",
            Self::Number(_) => "Number",
            Self::Boolean(_) => "Boolean",
            Self::Timestamp { .. } => "Timestamp",
        };
        write!(f, "IndexValue::{kind}(<redacted>)")
    }
}

/// A value that has no canonical encoding. Messages never include the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndexValueError {
    #[error("cannot index a NaN or infinite number")]
    NonFiniteNumber,
    #[error("cannot index a timestamp with nanoseconds of 10^9 or more")]
    NanosOutOfRange,
}

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
    use crate::{KeyMaterial, KeyVersion};
    use model::{RegionId, TenantId};
    use proptest::prelude::*;

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
            "IndexValue::String(<redacted>)"
        );
        let token = token(&key, IndexValue::Integer(7));
        assert_eq!(
            format!("{token:?}"),
            format!("BlindToken({})", token.to_hex())
        );
        assert_eq!(token.to_hex().len(), 64);
        assert_eq!(BlindToken::from_bytes(*token.as_bytes()), token);
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
