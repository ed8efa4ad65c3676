//! Consistency tokens (`X-Consistency-Token`): the region and WAL position of a write, so
//! that a later read sees that write or a newer one, whichever node serves it.
//!
//! The token is opaque to clients and not secret, but it is authenticated: the current
//! encoding (`v2`, [`SignedToken`]) carries a MAC tag under a key of the deployment, so a
//! client cannot name a WAL position the region never gave it (a far-future position
//! would hold a replica connection waiting for it). This module is the encoding only; the
//! MAC is computed over [`ConsistencyToken::signed_bytes`] by the store, which holds the
//! key. The unsigned `v1` encoding ([`ConsistencyToken::encode`]) was minted before tokens
//! were authenticated; it is still parsed ([`PresentedToken::Unsigned`]) so that the
//! store can serve such a token safely (from the primary), never trusted.

use std::fmt;

use crate::{Lsn, RegionId};

/// The version prefix of the unsigned encoding.
const PREFIX: &str = "v1.";

/// The version prefix of the authenticated encoding.
const SIGNED_PREFIX: &str = "v2.";

/// Bytes of the MAC tag a [`SignedToken`] carries (HMAC-SHA256 truncated to 128 bits).
pub const TOKEN_TAG_BYTES: usize = 16;

/// The longest header value looked at: a token of the longest region id is far shorter,
/// so anything longer is refused before it is parsed.
const MAX_TOKEN_LEN: usize = 256;

/// The label the MAC input starts with, so that the key can never be made to tag anything
/// but a consistency token of this encoding.
const SIGNED_LABEL: &[u8] = b"residency consistency token v2\0";

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
    /// The unsigned `v1` form, `v1.<region as lowercase hex>.<lsn as 16 lowercase hex
    /// digits>`: ASCII letters, digits and dots only, so it is safe in a header, a URL and
    /// a cookie, and there is no padding to lose. Nodes no longer mint it (they send
    /// [`SignedToken::encode`]); it stays for tests of how old tokens are handled.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(PREFIX.len() + 2 * self.region.as_str().len() + 17);
        out.push_str(PREFIX);
        self.encode_body(&mut out);
        out
    }

    /// `<region hex>.<lsn hex>`: the part both encodings share.
    fn encode_body(&self, out: &mut String) {
        for byte in self.region.as_str().bytes() {
            out.push_str(&format!("{byte:02x}"));
        }
        out.push('.');
        out.push_str(&format!("{:016x}", self.lsn.0));
    }

    /// Parses exactly what [`encode`](Self::encode) writes (upper-case hex is refused:
    /// one token, one spelling).
    pub fn decode(raw: &str) -> Result<Self, TokenError> {
        let Some(body) = raw.strip_prefix(PREFIX) else {
            return Err(unknown_version(raw));
        };
        let (region_hex, lsn_hex) = body.split_once('.').ok_or(TokenError::Malformed)?;
        Self::decode_parts(region_hex, lsn_hex)
    }

    fn decode_parts(region_hex: &str, lsn_hex: &str) -> Result<Self, TokenError> {
        if lsn_hex.len() != 16 || region_hex.is_empty() {
            return Err(TokenError::Malformed);
        }
        let region_bytes = decode_hex(region_hex).ok_or(TokenError::Malformed)?;
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

    /// What a [`SignedToken`]'s tag authenticates: a label naming the encoding, the
    /// region's length and bytes, and the LSN (big-endian). Unambiguous: no two tokens
    /// share these bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let region = self.region.as_str().as_bytes();
        let mut out = Vec::with_capacity(SIGNED_LABEL.len() + 1 + region.len() + 8);
        out.extend_from_slice(SIGNED_LABEL);
        // Region ids are short ASCII names; RegionId::parse bounds them well below 256.
        out.push(u8::try_from(region.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(region);
        out.extend_from_slice(&self.lsn.0.to_be_bytes());
        out
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// A consistency token with the MAC tag that authenticates it: what nodes mint. Whether
/// the tag is right is for the holder of the key to check; a decoded `SignedToken` is
/// only well-formed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SignedToken {
    pub token: ConsistencyToken,
    pub tag: [u8; TOKEN_TAG_BYTES],
}

impl SignedToken {
    /// `v2.<region hex>.<lsn as 16 hex digits>.<tag as 32 hex digits>`, lowercase: the
    /// same alphabet as `v1`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(
            SIGNED_PREFIX.len() + 2 * self.token.region.as_str().len() + 18 + 2 * TOKEN_TAG_BYTES,
        );
        out.push_str(SIGNED_PREFIX);
        self.token.encode_body(&mut out);
        out.push('.');
        for byte in self.tag {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }

    /// Parses exactly what [`encode`](Self::encode) writes.
    pub fn decode(raw: &str) -> Result<Self, TokenError> {
        if raw.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let Some(body) = raw.strip_prefix(SIGNED_PREFIX) else {
            return Err(unknown_version(raw));
        };
        let mut parts = body.split('.');
        let (Some(region_hex), Some(lsn_hex), Some(tag_hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let token = ConsistencyToken::decode_parts(region_hex, lsn_hex)?;
        let tag = decode_hex(tag_hex)
            .and_then(|bytes| <[u8; TOKEN_TAG_BYTES]>::try_from(bytes).ok())
            .ok_or(TokenError::Malformed)?;
        Ok(Self { token, tag })
    }
}

impl fmt::Display for SignedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// A token as a client presented it, before anything about it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresentedToken {
    /// The current encoding; its tag is still to be checked.
    Signed(SignedToken),
    /// The unsigned `v1` encoding of tokens minted before they were authenticated.
    Unsigned(ConsistencyToken),
}

impl PresentedToken {
    /// Parses either encoding; a later version is [`TokenError::UnsupportedVersion`].
    pub fn parse(raw: &str) -> Result<Self, TokenError> {
        if raw.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        if raw.starts_with(PREFIX) {
            ConsistencyToken::decode(raw).map(Self::Unsigned)
        } else {
            SignedToken::decode(raw).map(Self::Signed)
        }
    }
}

/// The error for a token of neither known prefix: `v3.` and later are well-formed tokens
/// of an encoding this build predates; anything else is garbage.
fn unknown_version(raw: &str) -> TokenError {
    let versioned = raw
        .split_once('.')
        .is_some_and(|(v, _)| v.len() > 1 && v.starts_with('v') && is_digits(&v[1..]));
    if versioned {
        TokenError::UnsupportedVersion
    } else {
        TokenError::Malformed
    }
}

fn is_digits(raw: &str) -> bool {
    !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit())
}

/// Lowercase hex to bytes; `None` for an odd length or any other character.
fn decode_hex(raw: &str) -> Option<Vec<u8>> {
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    raw.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some(hex_value(pair[0])? << 4 | hex_value(pair[1])?))
        .collect()
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

    /// ASCII letters, digits and dots only: safe in a header, a URL and a cookie.
    fn assert_header_safe(encoded: &str) {
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.'),
            "{encoded}"
        );
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
            assert_header_safe(&encoded);
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

    fn signed(region: &str, lsn: u64, tag_byte: u8) -> SignedToken {
        SignedToken {
            token: token(region, lsn),
            tag: [tag_byte; TOKEN_TAG_BYTES],
        }
    }

    #[test]
    fn signed_tokens_round_trip_and_carry_their_tag() {
        for t in [
            signed("eu-central-1", 0, 0),
            signed("us-gov-west-12", u64::MAX, 0xff),
            signed("ap-southeast-1", 0x16_B374_D848, 0x5a),
        ] {
            let encoded = t.encode();
            assert_header_safe(&encoded);
            assert_eq!(SignedToken::decode(&encoded), Ok(t.clone()));
            assert_eq!(
                PresentedToken::parse(&encoded),
                Ok(PresentedToken::Signed(t.clone()))
            );
            assert_eq!(t.to_string(), encoded);
        }
        assert_eq!(
            signed("eu-central-1", 0x16_B374_D848, 0xab).encode(),
            format!(
                "v2.65752d63656e7472616c2d31.00000016b374d848.{}",
                "ab".repeat(TOKEN_TAG_BYTES)
            )
        );
    }

    #[test]
    fn malformed_signed_tokens_are_refused() {
        let good = signed("eu-central-1", 42, 0xab).encode();
        let (unsigned, tag_hex) = good.rsplit_once('.').expect("tag");
        for raw in [
            unsigned.to_owned(),
            format!("{unsigned}."),
            format!("{unsigned}.{}", &tag_hex[2..]),
            format!("{unsigned}.{tag_hex}00"),
            format!("{unsigned}.{}", tag_hex.to_uppercase()),
            format!("{unsigned}.{}g", &tag_hex[1..]),
            format!("{good}.x"),
            format!("{good} "),
            format!("v2.{}", "61".repeat(200)),
        ] {
            assert_eq!(
                PresentedToken::parse(&raw),
                Err(TokenError::Malformed),
                "{raw:?}"
            );
        }
        assert_eq!(
            PresentedToken::parse(&good.replacen("v2.", "v3.", 1)),
            Err(TokenError::UnsupportedVersion)
        );
    }

    #[test]
    fn unsigned_tokens_of_the_old_encoding_are_told_apart() {
        let old = token("eu-central-1", 42);
        assert_eq!(
            PresentedToken::parse(&old.encode()),
            Ok(PresentedToken::Unsigned(old))
        );
        assert_eq!(
            PresentedToken::parse("hello"),
            Err(TokenError::Malformed),
            "not a token of any version"
        );
    }

    #[test]
    fn the_signed_bytes_name_region_and_position_unambiguously() {
        let a = token("eu-central-1", 1).signed_bytes();
        assert_ne!(a, token("eu-central-1", 2).signed_bytes());
        assert_ne!(a, token("eu-central-2", 1).signed_bytes());
        assert!(a.starts_with(SIGNED_LABEL), "domain-separated");
    }
}
