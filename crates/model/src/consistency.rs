//! Consistency tokens (`X-Consistency-Token`): the region and WAL position of a write, so
//! that a later read sees that write or a newer one, whichever node serves it.
//!
//! The token is opaque to clients but not secret and not signed: a client can forge one.
//! A forged token can only claim a position the region has not reached, which makes the
//! read wait for, or fall back to, the primary; it never grants access to anything.

use std::fmt;

use crate::{Lsn, RegionId};

/// The version prefix of the encoding; a new encoding gets a new prefix.
const PREFIX: &str = "v1.";

/// Where a write committed: its region and its commit LSN on that region's primary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsistencyToken {
    pub region: RegionId,
    pub lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unsupported consistency token version")]
    UnsupportedVersion,
    #[error("malformed consistency token")]
    Malformed,
}

impl ConsistencyToken {
    /// `v1.<region as lowercase hex>.<lsn as 16 lowercase hex digits>`: ASCII
    /// letters, digits and dots only, so it is safe in a header, a URL and a cookie, and
    /// there is no padding to lose.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(PREFIX.len() + 2 * self.region.as_str().len() + 17);
        out.push_str(PREFIX);
        for byte in self.region.as_str().bytes() {
            out.push_str(&format!("{byte:02x}"));
        }
        out.push('.');
        out.push_str(&format!("{:016x}", self.lsn.0));
        out
    }

    /// Parses exactly what [`encode`](Self::encode) writes (upper-case hex is refused:
    /// one token, one spelling).
    pub fn decode(raw: &str) -> Result<Self, TokenError> {
        let Some(body) = raw.strip_prefix(PREFIX) else {
            // `v2.` and later are well-formed tokens of an encoding this build predates.
            let versioned = raw
                .split_once('.')
                .is_some_and(|(v, _)| v.len() > 1 && v.starts_with('v') && is_digits(&v[1..]));
            return Err(if versioned {
                TokenError::UnsupportedVersion
            } else {
                TokenError::Malformed
            });
        };
        let (region_hex, lsn_hex) = body.split_once('.').ok_or(TokenError::Malformed)?;
        if lsn_hex.len() != 16 || region_hex.is_empty() || region_hex.len() % 2 != 0 {
            return Err(TokenError::Malformed);
        }
        let region_bytes = region_hex
            .as_bytes()
            .chunks_exact(2)
            .map(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or(TokenError::Malformed)?;
        let region = std::str::from_utf8(&region_bytes)
            .ok()
            .and_then(|text| RegionId::parse(text).ok())
            .ok_or(TokenError::Malformed)?;
        let lsn = lsn_hex
            .bytes()
            .try_fold(0u64, |acc, b| Some(acc << 4 | u64::from(hex_value(b)?)))
            .ok_or(TokenError::Malformed)?;
        Ok(Self {
            region,
            lsn: Lsn(lsn),
        })
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

fn is_digits(raw: &str) -> bool {
    !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit())
}

/// The value of a lowercase hex digit.
fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(region: &str, lsn: u64) -> ConsistencyToken {
        ConsistencyToken {
            region: RegionId::parse(region).expect("valid region"),
            lsn: Lsn(lsn),
        }
    }

    #[test]
    fn tokens_round_trip() {
        for t in [
            token("eu-central-1", 0),
            token("eu-central-1", (0x16 << 32) | 0xB374_D848),
            token("us-gov-west-12", u64::MAX),
            token("ap-southeast-1", 1),
        ] {
            let encoded = t.encode();
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.'),
                "{encoded}"
            );
            assert_eq!(ConsistencyToken::decode(&encoded), Ok(t.clone()));
            assert_eq!(t.to_string(), encoded);
        }
        assert_eq!(
            token("eu-central-1", 0x16_B374_D848).encode(),
            "v1.65752d63656e7472616c2d31.00000016b374d848"
        );
    }

    #[test]
    fn garbage_is_refused() {
        let good = token("eu-central-1", 42).encode();
        let (region_hex, lsn_hex) = good["v1.".len()..].split_once('.').expect("two parts");
        for raw in [
            String::new(),
            "v1".into(),
            "v1.".into(),
            "v1..".into(),
            "hello".into(),
            "v1.65752d63656e7472616c2d31".into(),
            format!("v1.{region_hex}.{}", &lsn_hex[1..]),
            format!("v1.{region_hex}.{lsn_hex}0"),
            format!("v1.{region_hex}.{}", lsn_hex.to_uppercase()),
            format!("v1.{}.{lsn_hex}", region_hex.to_uppercase()),
            format!("v1.{}.{lsn_hex}", &region_hex[1..]),
            format!("v1.{region_hex}.{lsn_hex}.x"),
            format!("v1.{region_hex}.000000000000000g"),
            // Valid hex, but not a region id ("EU-x") or not UTF-8.
            format!("v1.45552d78.{lsn_hex}"),
            format!("v1.ff.{lsn_hex}"),
            format!(" {good}"),
            format!("{good} "),
            format!("V1.{region_hex}.{lsn_hex}"),
        ] {
            assert_eq!(
                ConsistencyToken::decode(&raw),
                Err(TokenError::Malformed),
                "{raw:?}"
            );
        }
        assert_eq!(
            ConsistencyToken::decode(&format!("v2.{region_hex}.{lsn_hex}")),
            Err(TokenError::UnsupportedVersion)
        );
    }
}
