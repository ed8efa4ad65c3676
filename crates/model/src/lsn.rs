//! PostgreSQL log sequence numbers (`16/B374D848`): the position of a commit in the WAL.
//! Consistency tokens and replica lag are both measured in them.

use std::fmt;

/// A position in a region primary's write-ahead log. Ordered: a replica whose replay LSN is
/// at or past a commit's LSN has that commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed log sequence number: expected two hex numbers joined by `/`")]
pub struct LsnParseError;

impl Lsn {
    /// Parses PostgreSQL's text form, `XXXXXXXX/XXXXXXXX` (hex, high/low 32 bits).
    pub fn parse(raw: &str) -> Result<Self, LsnParseError> {
        let (high, low) = raw.split_once('/').ok_or(LsnParseError)?;
        let parse_half = |half: &str| {
            if half.is_empty() || half.len() > 8 {
                return Err(LsnParseError);
            }
            u32::from_str_radix(half, 16).map_err(|_| LsnParseError)
        };
        Ok(Self(
            (u64::from(parse_half(high)?) << 32) | u64::from(parse_half(low)?),
        ))
    }

    /// Bytes of WAL from `self` up to `later`; zero when `later` is not ahead.
    pub fn bytes_until(self, later: Lsn) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_postgres_form() {
        let lsn = Lsn::parse("16/B374D848").expect("valid lsn");
        assert_eq!(lsn.0, (0x16 << 32) | 0xB374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
    }

    #[test]
    fn refuses_garbage() {
        for raw in ["", "16", "/1", "1/", "G/1", "123456789/0"] {
            assert_eq!(Lsn::parse(raw), Err(LsnParseError), "{raw:?}");
        }
    }

    #[test]
    fn lag_in_bytes_never_underflows() {
        let a = Lsn(100);
        assert_eq!(a.bytes_until(Lsn(150)), 50);
        assert_eq!(a.bytes_until(Lsn(10)), 0);
    }
}
