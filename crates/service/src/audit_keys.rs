//! A region's audit signing keys and their stable text form: the current Ed25519 signing
//! key and the public halves of retired ones. The same text is `residency dev`'s
//! `<region>/audit/signing.key` and the secret `residency serve` reads through the
//! catalogue's `audit_signing_key` reference. Nothing here prints a secret.
//!
//! ```text
//! # comments and blank lines are ignored
//! residency-audit-ed25519:<64 lowercase hex digits: the 32-byte secret seed>
//! retired {"key_id":"…","region":"…","algorithm":"ed25519","public_key":"…"}
//! ```
//!
//! Exactly one `residency-audit-ed25519:` line (the key that signs); any number of
//! `retired` lines, each an item of `GET /v1/audit/keys` as it was published, so that
//! bundles signed before a rotation keep verifying.

use std::fmt;

use audit::{KeySet, PublicKey, SigningKey};
use model::RegionId;

/// Starts the line of the current signing key.
pub const SIGNING_KEY_PREFIX: &str = "residency-audit-ed25519:";

/// Starts the line of a retired public key.
const RETIRED_PREFIX: &str = "retired ";

/// Why a key text was refused. Never contains any part of the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    #[error("no signing key: expected one line `{SIGNING_KEY_PREFIX}<64 hex digits>`")]
    Missing,
    #[error("line {line}: a second signing key; a key text holds exactly one")]
    Duplicate { line: usize },
    #[error("line {line}: malformed signing key: expected `{SIGNING_KEY_PREFIX}<64 hex digits>`")]
    MalformedKey { line: usize },
    #[error("line {line}: malformed retired key: {reason}")]
    MalformedRetired { line: usize, reason: String },
    #[error("line {line}: retired key of region {found}, but these are region {expected}'s keys")]
    RetiredRegion {
        line: usize,
        found: String,
        expected: RegionId,
    },
    #[error(
        "line {line}: neither a signing key nor a retired key (lines start with `{SIGNING_KEY_PREFIX}` or `retired `)"
    )]
    UnknownLine { line: usize },
}

/// The keys one region signs with (current) and has signed with (retired).
#[derive(Debug)]
pub struct AuditKeys {
    current: SigningKey,
    retired: Vec<PublicKey>,
}

/// The text form of [`AuditKeys`]; it holds a private key. Its `Debug` redacts; its
/// memory is zeroed when it drops.
pub struct KeyText(zeroize::Zeroizing<String>);

impl KeyText {
    /// The text, to write to an owner-only file or a secret store; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyText(<redacted>)")
    }
}

impl AuditKeys {
    /// A fresh random signing key for `region`, nothing retired.
    pub fn generate(region: RegionId) -> Self {
        Self {
            current: SigningKey::generate(region),
            retired: Vec::new(),
        }
    }

    /// # Panics
    /// When a retired key names another region than `current`: a region publishes its
    /// own keys only.
    pub fn new(current: SigningKey, retired: Vec<PublicKey>) -> Self {
        assert!(
            retired
                .iter()
                .all(|key| key.region == current.region().as_str()),
            "retired keys must be of the signing key's region"
        );
        Self { current, retired }
    }

    /// Parses the text form (see the module documentation) for `region`. Retired keys
    /// are checked as a verifier would check them (algorithm, key, key id) and must be
    /// `region`'s.
    pub fn parse(region: &RegionId, text: &str) -> Result<Self, KeyTextError> {
        let mut current = None;
        let mut retired = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if let Some(seed) = trimmed.strip_prefix(SIGNING_KEY_PREFIX) {
                if current.is_some() {
                    return Err(KeyTextError::Duplicate { line });
                }
                let seed = decode_seed(seed).ok_or(KeyTextError::MalformedKey { line })?;
                current = Some(SigningKey::from_bytes(region.clone(), &seed));
            } else if let Some(json) = trimmed.strip_prefix(RETIRED_PREFIX) {
                retired.push(parse_retired(region, json.trim(), line)?);
            } else {
                return Err(KeyTextError::UnknownLine { line });
            }
        }
        let current = current.ok_or(KeyTextError::Missing)?;
        Ok(Self { current, retired })
    }

    /// The text form, which [`AuditKeys::parse`] reads back.
    pub fn to_text(&self) -> KeyText {
        let mut text = format!(
            "# residency audit signing keys of {}: the signing key, then retired public keys\n",
            self.current.region()
        );
        text.push_str(SIGNING_KEY_PREFIX);
        for byte in self.current.to_bytes() {
            text.push(hex_digit(byte >> 4));
            text.push(hex_digit(byte & 0x0f));
        }
        text.push('\n');
        for key in &self.retired {
            let json = serde_json::to_string(key).expect("a public key serializes");
            text.push_str(RETIRED_PREFIX);
            text.push_str(&json);
            text.push('\n');
        }
        KeyText(zeroize::Zeroizing::new(text))
    }

    /// A new signing key; the current one's public half is kept as retired.
    pub fn rotate(self) -> Self {
        let Self {
            current,
            mut retired,
        } = self;
        retired.insert(0, current.public());
        Self {
            current: SigningKey::generate(current.region().clone()),
            retired,
        }
    }

    pub fn region(&self) -> &RegionId {
        self.current.region()
    }

    /// The key that signs checkpoints and manifests.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    pub fn retired(&self) -> &[PublicKey] {
        &self.retired
    }

    /// The current and retired public keys, as `GET /v1/audit/keys` lists them.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        std::iter::once(self.current.public())
            .chain(self.retired.iter().cloned())
            .collect()
    }
}

fn parse_retired(region: &RegionId, json: &str, line: usize) -> Result<PublicKey, KeyTextError> {
    let key: PublicKey =
        serde_json::from_str(json).map_err(|_| KeyTextError::MalformedRetired {
            line,
            reason: "expected an item of GET /v1/audit/keys: {\"key_id\",\"region\",\"algorithm\",\"public_key\"}".to_owned(),
        })?;
    KeySet::new()
        .insert(key.clone())
        .map_err(|err| KeyTextError::MalformedRetired {
            line,
            reason: err.to_string(),
        })?;
    if key.region != region.as_str() {
        return Err(KeyTextError::RetiredRegion {
            line,
            found: key.region,
            expected: region.clone(),
        });
    }
    Ok(key)
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).expect("a nibble is a hex digit")
}

/// 64 lowercase hex digits → 32 bytes.
fn decode_seed(hex: &str) -> Option<[u8; 32]> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let value = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    let mut seed = [0u8; 32];
    for (byte, pair) in seed.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (value(pair[0])? << 4) | value(pair[1])?;
    }
    Some(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> RegionId {
        RegionId::parse("eu-central-1").expect("region")
    }

    #[test]
    fn the_text_form_round_trips_with_retired_keys() {
        let keys = AuditKeys::generate(region()).rotate().rotate();
        assert_eq!(keys.retired().len(), 2);
        let text = keys.to_text();
        let again = AuditKeys::parse(&region(), text.expose()).expect("parses");
        assert_eq!(again.current().key_id(), keys.current().key_id());
        assert_eq!(again.current().to_bytes(), keys.current().to_bytes());
        assert_eq!(again.public_keys(), keys.public_keys());
        assert_eq!(again.public_keys().len(), 3);
    }

    #[test]
    fn the_signing_line_is_stable() {
        let key = SigningKey::from_bytes(region(), &[0xab; 32]);
        let text = AuditKeys::new(key, Vec::new()).to_text();
        let line = text.expose().lines().nth(1).expect("second line");
        assert_eq!(line, format!("{SIGNING_KEY_PREFIX}{}", "ab".repeat(32)));
        let parsed = AuditKeys::parse(&region(), &format!("\n  {line}  \n\n")).expect("parses");
        assert_eq!(parsed.current().to_bytes(), [0xab; 32]);
    }

    #[test]
    fn debug_and_errors_never_show_the_secret() {
        let keys = AuditKeys::new(SigningKey::from_bytes(region(), &[0xcd; 32]), Vec::new());
        let text = keys.to_text();
        for shown in [format!("{text:?}"), format!("{keys:?}")] {
            assert!(!shown.contains("cdcd"), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
        let almost = format!("{SIGNING_KEY_PREFIX}{}", "cd".repeat(31));
        let err = AuditKeys::parse(&region(), &almost).expect_err("too short");
        assert_eq!(err, KeyTextError::MalformedKey { line: 1 });
        assert!(!err.to_string().contains("cdcd"), "{err}");
        let err = AuditKeys::parse(&region(), &"cd".repeat(32)).expect_err("no prefix");
        assert_eq!(err, KeyTextError::UnknownLine { line: 1 });
        assert!(!err.to_string().contains("cdcd"), "{err}");
    }

    #[test]
    fn malformed_texts_are_refused_naming_the_line() {
        let good = AuditKeys::generate(region()).rotate();
        let text = good.to_text();
        let lines: Vec<&str> = text.expose().lines().collect();
        let (signing, retired) = (lines[1], lines[2]);
        let cases = [
            (String::new(), KeyTextError::Missing),
            (
                format!("# only a comment\n{retired}"),
                KeyTextError::Missing,
            ),
            (
                format!("{signing}\n{signing}"),
                KeyTextError::Duplicate { line: 2 },
            ),
            (
                format!("{SIGNING_KEY_PREFIX}{}", "AB".repeat(32)),
                KeyTextError::MalformedKey { line: 1 },
            ),
            (
                format!("{SIGNING_KEY_PREFIX}+{}", "a".repeat(63)),
                KeyTextError::MalformedKey { line: 1 },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                AuditKeys::parse(&region(), &text).expect_err(&text),
                expected
            );
        }
        let tampered = retired.replace("\"public_key\":\"", "\"public_key\":\"A");
        assert!(matches!(
            AuditKeys::parse(&region(), &format!("{signing}\n{tampered}")),
            Err(KeyTextError::MalformedRetired { line: 2, .. })
        ));
        let other = RegionId::parse("us-east-1").expect("region");
        let foreign = AuditKeys::generate(other.clone()).rotate().to_text();
        let foreign_retired = foreign.expose().lines().nth(2).expect("retired line");
        assert!(matches!(
            AuditKeys::parse(&region(), &format!("{signing}\n{foreign_retired}")),
            Err(KeyTextError::RetiredRegion { line: 2, .. })
        ));
    }
}
