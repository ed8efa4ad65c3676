//! Tenant identifiers.

use std::fmt;
use std::str::FromStr;

/// A tenant: a lowercase, hyphenated UUID (`8-4-4-4-12` hex digits). It carries no
/// personal data, so it may appear in logs, metrics, key contexts and the directory.
///
/// Held as its 36 ASCII bytes rather than a `String`: it is copied into cache keys on
/// every sealed value, and a copy must not allocate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId([u8; TENANT_ID_LEN]);

const TENANT_ID_LEN: usize = 36;

/// Where the hyphens of `8-4-4-4-12` are.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed tenant id: expected a lowercase UUID like 2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60")]
pub struct TenantIdError;

impl TenantId {
    /// Parsed on every request (paths, tokens, record ids), so without allocating: 36
    /// bytes, hyphens where a UUID has them, lowercase hex digits everywhere else.
    pub fn parse(raw: &str) -> Result<Self, TenantIdError> {
        let bytes = <[u8; TENANT_ID_LEN]>::try_from(raw.as_bytes()).map_err(|_| TenantIdError)?;
        let well_formed = bytes.iter().enumerate().all(|(at, &b)| {
            if HYPHENS.contains(&at) {
                b == b'-'
            } else {
                b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
            }
        });
        if well_formed {
            Ok(Self(bytes))
        } else {
            Err(TenantIdError)
        }
    }

    /// A tenant id from 16 random bytes (UUID version 4 layout).
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let mut text = [b'-'; TENANT_ID_LEN];
        let mut at = 0;
        // Every group has an even number of digits, so a byte's two never straddle a
        // hyphen.
        for byte in bytes {
            if HYPHENS.contains(&at) {
                at += 1;
            }
            text[at] = HEX[usize::from(byte >> 4)];
            text[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        Self::parse(std::str::from_utf8(&text).expect("ASCII"))
            .expect("a formatted UUID is a valid tenant id")
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated as ASCII when parsed")
    }
}

impl FromStr for TenantId {
    type Err = TenantIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_parse_back() {
        let id = TenantId::from_random_bytes([0xab; 16]);
        assert_eq!(TenantId::parse(id.as_str()), Ok(id));
        assert_eq!(id.as_str().len(), 36);
        assert_eq!(&id.as_str()[14..15], "4", "version 4 layout");
    }

    #[test]
    fn malformed_ids_are_refused() {
        for raw in [
            "",
            "acme",
            "2F1C6A0E-8D4B-4F7E-9A51-0C3D2B1E4F60",
            "2f1c6a0e8d4b4f7e9a510c3d2b1e4f60",
            "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f6",
            "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f6g",
            "../../etc/passwd-0000-0000-000000000000",
        ] {
            assert_eq!(TenantId::parse(raw), Err(TenantIdError), "{raw:?}");
        }
    }
}
