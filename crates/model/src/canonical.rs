//! The canonical value encoding that blind indexes (`envelope::blind_index`) and
//! pseudonyms (`export::pseudonym`) hash: equal values give equal bytes, values of
//! different types never do. Stored tokens and released pseudonyms depend on these exact
//! bytes: the encoding must never change (the tests pin it).
//!
//! One type-tag byte, then the value's bytes:
//!
//! | type      | tag    | encoding after the tag                                         |
//! |-----------|--------|----------------------------------------------------------------|
//! | string    | `0x01` | UTF-8 of the Unicode NFC form; no case folding, no trimming    |
//! | integer   | `0x02` | i64, 8 bytes big-endian                                        |
//! | number    | `0x03` | f64 bits, 8 bytes big-endian; `-0.0` becomes `0.0`; NaN and ±∞ are refused |
//! | boolean   | `0x04` | one byte, `0x00` or `0x01`                                     |
//! | timestamp | `0x05` | UTC seconds since the epoch, i64 BE, then nanoseconds, u32 BE (< 10^9) |
//!
//! Only Unicode normalization is applied to text, because NFC and NFD spellings of the
//! same text are the same text to a person and come from different keyboards and
//! platforms; `"Ada"`, `"ada"` and `"Ada "` stay three values.

use std::fmt;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

const TAG_STRING: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_NUMBER: u8 = 0x03;
const TAG_BOOLEAN: u8 = 0x04;
const TAG_TIMESTAMP: u8 = 0x05;

const NANOS_PER_SECOND: u32 = 1_000_000_000;

/// A value to encode. Its `Debug` names the type only: values are personal data.
#[derive(Clone, Copy, PartialEq)]
pub enum CanonicalValue<'a> {
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

impl CanonicalValue<'_> {
    /// The instant `micros` microseconds after (or before) the Unix epoch.
    pub fn timestamp_micros(micros: i64) -> Self {
        let nanos = u32::try_from(micros.rem_euclid(1_000_000) * 1_000)
            .expect("a remainder below 10^6, times 10^3, is below 10^9");
        Self::Timestamp {
            unix_seconds: micros.div_euclid(1_000_000),
            nanos,
        }
    }

    /// Feeds the canonical bytes of the value to `write`, in one or more pieces (so that
    /// a hash can take them without a buffer). Nothing is written for a refused value.
    pub fn encode(&self, mut write: impl FnMut(&[u8])) -> Result<(), CanonicalValueError> {
        match *self {
            Self::String(text) => {
                write(&[TAG_STRING]);
                // Most text is already NFC: encode it as is and allocate only when not.
                if is_nfc_quick(text.chars()) == IsNormalized::Yes {
                    write(text.as_bytes());
                } else {
                    let normalized: String = text.nfc().collect();
                    write(normalized.as_bytes());
                }
            }
            Self::Integer(integer) => {
                write(&[TAG_INTEGER]);
                write(&integer.to_be_bytes());
            }
            Self::Number(number) => {
                if !number.is_finite() {
                    return Err(CanonicalValueError::NonFiniteNumber);
                }
                // -0.0 == 0.0, so they must share an encoding.
                let number = if number == 0.0 { 0.0 } else { number };
                write(&[TAG_NUMBER]);
                write(&number.to_bits().to_be_bytes());
            }
            Self::Boolean(boolean) => write(&[TAG_BOOLEAN, u8::from(boolean)]),
            Self::Timestamp {
                unix_seconds,
                nanos,
            } => {
                if nanos >= NANOS_PER_SECOND {
                    return Err(CanonicalValueError::NanosOutOfRange);
                }
                write(&[TAG_TIMESTAMP]);
                write(&unix_seconds.to_be_bytes());
                write(&nanos.to_be_bytes());
            }
        }
        Ok(())
    }

    /// The value's type, for a `Debug` that must not show the value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::String(_) => "String",
            Self::Integer(_) => "Integer",
            Self::Number(_) => "Number",
            Self::Boolean(_) => "Boolean",
            Self::Timestamp { .. } => "Timestamp",
        }
    }

    /// The canonical bytes of the value, in one buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CanonicalValueError> {
        let mut bytes = Vec::new();
        self.encode(|piece| bytes.extend_from_slice(piece))?;
        Ok(bytes)
    }
}

impl fmt::Debug for CanonicalValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CanonicalValue::{}(<redacted>)", self.type_name())
    }
}

/// A value that has no canonical encoding. Messages never include the value; they read
/// as the blind index's, which has always reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalValueError {
    #[error("cannot index a NaN or infinite number")]
    NonFiniteNumber,
    #[error("cannot index a timestamp with nanoseconds of 10^9 or more")]
    NanosOutOfRange,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(value: CanonicalValue<'_>) -> String {
        let bytes = value.to_bytes().expect("encodable");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes of today's encoding, written down when the blind index and the pseudonyms
    /// each had their own copy of it (and checked against both: their tests pin the HMACs
    /// of these values). A change here breaks every stored token and released pseudonym.
    #[test]
    fn the_encoding_is_pinned() {
        let cases: [(CanonicalValue<'_>, &str); 24] = [
            (CanonicalValue::String(""), "01"),
            (
                CanonicalValue::String("ada@example.org"),
                "01616461406578616d706c652e6f7267",
            ),
            (CanonicalValue::String("Ren\u{e9}"), "0152656ec3a9"),
            (CanonicalValue::String("Rene\u{301}"), "0152656ec3a9"),
            (CanonicalValue::String("Ada "), "0141646120"),
            (CanonicalValue::String("\u{65e5}\u{672c}"), "01e697a5e69cac"),
            (CanonicalValue::String("\u{1F600}"), "01f09f9880"),
            (CanonicalValue::String("A\u{30A}"), "01c385"),
            (CanonicalValue::String("\u{212B}"), "01c385"),
            (CanonicalValue::Integer(0), "020000000000000000"),
            (CanonicalValue::Integer(-1), "02ffffffffffffffff"),
            (CanonicalValue::Integer(42), "02000000000000002a"),
            (CanonicalValue::Integer(i64::MIN), "028000000000000000"),
            (CanonicalValue::Number(0.0), "030000000000000000"),
            (CanonicalValue::Number(-0.0), "030000000000000000"),
            (CanonicalValue::Number(1.0), "033ff0000000000000"),
            (CanonicalValue::Number(-1.5), "03bff8000000000000"),
            (CanonicalValue::Number(5e-324), "030000000000000001"),
            (CanonicalValue::Boolean(false), "0400"),
            (CanonicalValue::Boolean(true), "0401"),
            (
                CanonicalValue::Timestamp {
                    unix_seconds: 0,
                    nanos: 0,
                },
                "05000000000000000000000000",
            ),
            (
                CanonicalValue::Timestamp {
                    unix_seconds: -1,
                    nanos: 999_999_999,
                },
                "05ffffffffffffffff3b9ac9ff",
            ),
            (
                CanonicalValue::Timestamp {
                    unix_seconds: 1_772_368_496,
                    nanos: 789_012_000,
                },
                "050000000069a432702f075e20",
            ),
            (
                CanonicalValue::timestamp_micros(-1),
                "05ffffffffffffffff3b9ac618",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(hex(value), expected, "{value:?}");
        }
    }

    #[test]
    fn refused_values_write_nothing() {
        for value in [
            CanonicalValue::Number(f64::NAN),
            CanonicalValue::Number(f64::INFINITY),
            CanonicalValue::Number(f64::NEG_INFINITY),
        ] {
            let mut written = 0;
            assert_eq!(
                value.encode(|piece| written += piece.len()),
                Err(CanonicalValueError::NonFiniteNumber)
            );
            assert_eq!(written, 0);
        }
        let late = CanonicalValue::Timestamp {
            unix_seconds: 0,
            nanos: 1_000_000_000,
        };
        assert_eq!(late.to_bytes(), Err(CanonicalValueError::NanosOutOfRange));
    }

    #[test]
    fn microsecond_timestamps_split_towards_the_past() {
        assert_eq!(
            CanonicalValue::timestamp_micros(1_772_368_496_789_012),
            CanonicalValue::Timestamp {
                unix_seconds: 1_772_368_496,
                nanos: 789_012_000
            }
        );
        assert_eq!(
            CanonicalValue::timestamp_micros(i64::MIN),
            CanonicalValue::Timestamp {
                unix_seconds: i64::MIN.div_euclid(1_000_000),
                nanos: 224_192_000,
            }
        );
    }

    #[test]
    fn debug_reveals_no_value() {
        assert_eq!(
            format!("{:?}", CanonicalValue::String("Ada")),
            "CanonicalValue::String(<redacted>)"
        );
    }
}
