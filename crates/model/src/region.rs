//! Region identifiers and the jurisdictions regions belong to.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A region of the catalogue, e.g. `eu-central-1`: lowercase ASCII words joined by `-`,
/// ending in a number. Parsed once at the edge; everything inside holds a `RegionId`.
/// Shared, not copied, when cloned: the router clones its own and a tenant's home region
/// for every request it forwards.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionIdError {
    #[error("region id is empty")]
    Empty,
    #[error(
        "region id `{0}` is malformed: expected lowercase words and a number joined by `-`, like `eu-central-1`"
    )]
    Malformed(String),
}

impl RegionId {
    pub fn parse(raw: &str) -> Result<Self, RegionIdError> {
        if raw.is_empty() {
            return Err(RegionIdError::Empty);
        }
        if Self::is_well_formed(raw) {
            Ok(Self(Arc::from(raw)))
        } else {
            Err(RegionIdError::Malformed(raw.to_owned()))
        }
    }

    /// Whether `raw` is a region id (`parse` would accept it), without allocating: two or
    /// more lowercase words and a number, joined by `-`, at most 32 bytes.
    pub fn is_well_formed(raw: &str) -> bool {
        let bytes = raw.as_bytes();
        if bytes.len() > 32 {
            return false;
        }
        let Some(last_dash) = bytes.iter().rposition(|&b| b == b'-') else {
            return false;
        };
        let (words, number) = (&bytes[..last_dash], &bytes[last_dash + 1..]);
        if number.is_empty() || !number.iter().all(u8::is_ascii_digit) {
            return false;
        }
        // One pass over the words: lowercase letters, single dashes between them.
        let (mut word_count, mut word_len) = (0, 0);
        for &b in words {
            if b == b'-' {
                if word_len == 0 {
                    return false;
                }
                word_count += 1;
                word_len = 0;
            } else if b.is_ascii_lowercase() {
                word_len += 1;
            } else {
                return false;
            }
        }
        word_len > 0 && word_count + 1 >= 2
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RegionId {
    type Err = RegionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionId({})", self.0)
    }
}

/// The legal area whose data-protection law governs a region. Residency rules (where a
/// replica or backup may live) are stated in jurisdictions, not regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Jurisdiction {
    /// European Union (GDPR).
    Eu,
    /// United Kingdom (UK GDPR).
    Uk,
    /// Switzerland (revFADP).
    Ch,
    /// United States.
    Us,
    /// Canada (PIPEDA).
    Ca,
    /// Singapore (PDPA).
    Sg,
    /// Australia (Privacy Act).
    Au,
    /// Japan (APPI).
    Jp,
    /// India (DPDP Act).
    In,
    /// Brazil (LGPD).
    Br,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown jurisdiction `{0}`: expected one of {list}", list = Jurisdiction::ALL_CODES.join(", "))]
pub struct JurisdictionParseError(pub String);

impl Jurisdiction {
    pub const ALL: [Jurisdiction; 10] = [
        Self::Eu,
        Self::Uk,
        Self::Ch,
        Self::Us,
        Self::Ca,
        Self::Sg,
        Self::Au,
        Self::Jp,
        Self::In,
        Self::Br,
    ];
    const ALL_CODES: [&'static str; 10] =
        ["EU", "UK", "CH", "US", "CA", "SG", "AU", "JP", "IN", "BR"];

    /// The upper-case code used in the catalogue and in Terraform, e.g. `EU`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Eu => "EU",
            Self::Uk => "UK",
            Self::Ch => "CH",
            Self::Us => "US",
            Self::Ca => "CA",
            Self::Sg => "SG",
            Self::Au => "AU",
            Self::Jp => "JP",
            Self::In => "IN",
            Self::Br => "BR",
        }
    }

    pub fn parse(code: &str) -> Result<Self, JurisdictionParseError> {
        Self::ALL
            .into_iter()
            .find(|j| j.code() == code)
            .ok_or_else(|| JurisdictionParseError(code.to_owned()))
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_ids_of_the_catalogue_parse() {
        for id in [
            "eu-central-1",
            "eu-west-1",
            "us-east-1",
            "ap-southeast-1",
            "us-gov-west-12",
        ] {
            assert_eq!(RegionId::parse(id).expect("valid id").as_str(), id);
            assert!(RegionId::is_well_formed(id), "{id}");
        }
    }

    #[test]
    fn malformed_region_ids_are_refused() {
        for id in [
            "",
            "eu",
            "eu-central",
            "EU-central-1",
            "eu--1",
            "eu-central-x",
            "eu central 1",
            "-eu-1",
            "eu-1",
            "eu-central-",
            "eu-central-1-",
            "eu-central-1x",
            "eu-centrallllllllllllllllllllll-1",
        ] {
            assert!(RegionId::parse(id).is_err(), "{id:?} should be refused");
            assert!(!RegionId::is_well_formed(id), "{id:?} is not well-formed");
        }
    }

    #[test]
    fn jurisdiction_codes_round_trip() {
        for j in Jurisdiction::ALL {
            assert_eq!(Jurisdiction::parse(j.code()), Ok(j));
        }
        let err = Jurisdiction::parse("XX").expect_err("unknown code");
        assert!(err.to_string().contains("EU, UK"), "{err}");
    }
}
