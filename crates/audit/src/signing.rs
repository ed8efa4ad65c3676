//! Ed25519 keys of a region's audit signer, and the set of public keys a verifier trusts.
//! A key id is `<region>-<first 8 bytes of SHA-256(public key), hex>`, so it names the
//! region that holds the private key and is bound to the key itself.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, VerifyingKey};
use model::RegionId;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize as _;

/// The only algorithm there is today.
pub(crate) const ALGORITHM: &str = "ed25519";

/// A region's private signing key. Its `Debug` shows the key id only.
pub struct SigningKey {
    region: RegionId,
    key_id: String,
    inner: ed25519_dalek::SigningKey,
}

impl SigningKey {
    /// A new random key for `region`.
    pub fn generate(region: RegionId) -> Self {
        let mut secret = [0u8; 32];
        // ThreadRng is a CSPRNG seeded from the operating system.
        rand::rng().fill_bytes(&mut secret);
        let key = Self::from_bytes(region, &secret);
        secret.zeroize();
        key
    }

    /// The key whose 32-byte secret is `secret` (as written by [`SigningKey::to_bytes`]).
    pub fn from_bytes(region: RegionId, secret: &[u8; 32]) -> Self {
        let inner = ed25519_dalek::SigningKey::from_bytes(secret);
        let key_id = key_id(&region, &inner.verifying_key());
        Self {
            region,
            key_id,
            inner,
        }
    }

    /// The 32-byte secret, for the caller to store (in a file readable by the node only).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.inner.to_bytes()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn region(&self) -> &RegionId {
        &self.region
    }

    /// The public half, in the shape `GET /v1/audit/keys` lists.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id.clone(),
            region: self.region.as_str().to_owned(),
            algorithm: ALGORITHM.to_owned(),
            public_key: BASE64.encode(self.inner.verifying_key().as_bytes()),
        }
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.inner.sign(message).to_bytes())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn fingerprint(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn key_id(region: &RegionId, key: &VerifyingKey) -> String {
    format!("{region}-{}", fingerprint(key))
}

/// An Ed25519 signature: standard base64 (with padding) in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed signature: expected 64 bytes, base64-encoded")]
pub struct SignatureParseError;

impl Signature {
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// From stored bytes, which must be exactly 64.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, SignatureParseError> {
        bytes.try_into().map(Self).map_err(|_| SignatureParseError)
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    pub fn from_base64(raw: &str) -> Result<Self, SignatureParseError> {
        let bytes = BASE64.decode(raw).map_err(|_| SignatureParseError)?;
        Self::from_slice(&bytes)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_base64())
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::from_base64(&raw).map_err(serde::de::Error::custom)
    }
}

/// One item of `GET /v1/audit/keys`: `{"key_id","region","algorithm","public_key"}`, the
/// public key in standard base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub key_id: String,
    pub region: String,
    pub algorithm: String,
    pub public_key: String,
}

/// The body of `GET /v1/audit/keys`: `{"keys":[...]}`, current and retired keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<PublicKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeySetError {
    #[error("malformed key list: {0}")]
    Json(#[from] serde_json::Error),
    #[error("key `{key_id}`: unsupported algorithm `{algorithm}`")]
    Algorithm { key_id: String, algorithm: String },
    #[error("key `{key_id}`: {reason}")]
    Region { key_id: String, reason: String },
    #[error(
        "key `{key_id}`: malformed public key: expected 32 bytes of an ed25519 point, base64-encoded"
    )]
    PublicKey { key_id: String },
    #[error(
        "key `{key_id}`: the key id does not match the region and public key (expected `{expected}`)"
    )]
    KeyIdMismatch { key_id: String, expected: String },
}

/// Public keys a verifier trusts. Each is held with its region; a signature verifies only
/// with a key of the region the signed statement names.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Trusted>,
}

#[derive(Debug, Clone)]
struct Trusted {
    /// `None` for a bare key given without its region (`--public-key`): it matches any key
    /// id `<region>-<its fingerprint>`.
    key_id: Option<String>,
    region: Option<RegionId>,
    fingerprint: String,
    key: VerifyingKey,
}

impl KeySet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys of a `GET /v1/audit/keys` body. Fields added to the items later are ignored.
    pub fn from_json(raw: &str) -> Result<Self, KeySetError> {
        let list: KeyList = serde_json::from_str(raw)?;
        Self::from_keys(list.keys)
    }

    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, KeySetError> {
        let mut set = Self::new();
        for key in keys {
            set.insert(key)?;
        }
        Ok(set)
    }

    /// A set of one bare base64 public key (`residency audit verify --public-key KEY`). It
    /// verifies statements whose key id is `<their region>-<this key's fingerprint>`.
    pub fn from_public_key(base64: &str) -> Result<Self, KeySetError> {
        let key = decode_key(base64.trim()).ok_or_else(|| KeySetError::PublicKey {
            key_id: "(given)".to_owned(),
        })?;
        Ok(Self {
            keys: vec![Trusted {
                key_id: None,
                region: None,
                fingerprint: fingerprint(&key),
                key,
            }],
        })
    }

    /// Adds a listed key after checking its algorithm, region, key material and that its
    /// key id is the one derived from region and key.
    pub fn insert(&mut self, public: PublicKey) -> Result<(), KeySetError> {
        if public.algorithm != ALGORITHM {
            return Err(KeySetError::Algorithm {
                key_id: public.key_id,
                algorithm: public.algorithm,
            });
        }
        let region = match RegionId::parse(&public.region) {
            Ok(region) => region,
            Err(err) => {
                return Err(KeySetError::Region {
                    key_id: public.key_id,
                    reason: err.to_string(),
                });
            }
        };
        let Some(key) = decode_key(&public.public_key) else {
            return Err(KeySetError::PublicKey {
                key_id: public.key_id,
            });
        };
        let expected = key_id(&region, &key);
        if expected != public.key_id {
            return Err(KeySetError::KeyIdMismatch {
                key_id: public.key_id,
                expected,
            });
        }
        self.keys.push(Trusted {
            key_id: Some(public.key_id),
            region: Some(region),
            fingerprint: fingerprint(&key),
            key,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key to check a statement of `region` signed by `key_id` with.
    /// Whether `signature` over `message` was made by the trusted key `key_id` of
    /// `region` (for statements other than bundles, e.g. residency evidence).
    pub fn verify_signature(
        &self,
        key_id: &str,
        region: &str,
        message: &[u8],
        signature: &Signature,
    ) -> bool {
        self.find(key_id, region)
            .is_some_and(|key| verify(key, message, signature))
    }

    pub(crate) fn find(&self, key_id: &str, region: &str) -> Option<&VerifyingKey> {
        self.keys
            .iter()
            .find(|t| match (&t.key_id, &t.region) {
                (Some(id), Some(r)) => id == key_id && r.as_str() == region,
                _ => key_id
                    .strip_prefix(region)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|fp| fp == t.fingerprint),
            })
            .map(|t| &t.key)
    }
}

/// Whether `signature` is `key`'s over `message` (strict: refuses malleable encodings).
pub(crate) fn verify(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(message, &signature).is_ok()
}

fn decode_key(base64: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = BASE64.decode(base64).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> RegionId {
        RegionId::parse("eu-central-1").expect("valid region")
    }

    #[test]
    fn keys_round_trip_through_bytes() {
        let key = SigningKey::generate(region());
        let again = SigningKey::from_bytes(region(), &key.to_bytes());
        assert_eq!(key.key_id(), again.key_id());
        assert_eq!(key.public(), again.public());
        assert!(key.key_id().starts_with("eu-central-1-"));
        assert_eq!(key.key_id().len(), "eu-central-1-".len() + 16);
        assert_ne!(
            SigningKey::generate(region()).key_id(),
            key.key_id(),
            "random"
        );
    }

    #[test]
    fn debug_redacts_the_secret() {
        let key = SigningKey::from_bytes(region(), &[9; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("9, 9"), "{shown}");
    }

    #[test]
    fn listed_and_bare_keys_verify_their_signatures() {
        let key = SigningKey::generate(region());
        let signature = key.sign(b"statement");
        let body = serde_json::to_string(&KeyList {
            keys: vec![key.public()],
        })
        .expect("serializes");
        let listed = KeySet::from_json(&body).expect("valid list");
        let found = listed
            .find(key.key_id(), "eu-central-1")
            .expect("listed key");
        assert!(verify(found, b"statement", &signature));
        assert!(!verify(found, b"statement!", &signature));
        assert!(
            listed.find(key.key_id(), "us-east-1").is_none(),
            "wrong region"
        );

        let bare = KeySet::from_public_key(&key.public().public_key).expect("valid key");
        assert!(bare.find(key.key_id(), "eu-central-1").is_some());
        assert!(bare.find(key.key_id(), "eu-west-1").is_none());
        assert!(
            bare.find("eu-central-1-0000000000000000", "eu-central-1")
                .is_none()
        );
    }

    #[test]
    fn inconsistent_listed_keys_are_refused() {
        let key = SigningKey::generate(region());
        let mut wrong_id = key.public();
        wrong_id.key_id = "eu-central-1-0011223344556677".to_owned();
        assert!(matches!(
            KeySet::from_keys([wrong_id]),
            Err(KeySetError::KeyIdMismatch { .. })
        ));
        let mut wrong_alg = key.public();
        wrong_alg.algorithm = "rsa".to_owned();
        assert!(matches!(
            KeySet::from_keys([wrong_alg]),
            Err(KeySetError::Algorithm { .. })
        ));
        let mut bad_key = key.public();
        bad_key.public_key = "AAAA".to_owned();
        assert!(matches!(
            KeySet::from_keys([bad_key]),
            Err(KeySetError::PublicKey { .. })
        ));
        assert!(KeySet::from_public_key("not base64!").is_err());
    }

    #[test]
    fn signatures_round_trip_as_base64() {
        let key = SigningKey::generate(region());
        let signature = key.sign(b"x");
        assert_eq!(
            Signature::from_base64(&signature.to_base64()),
            Ok(signature)
        );
        assert_eq!(Signature::from_slice(signature.as_bytes()), Ok(signature));
        assert_eq!(Signature::from_slice(&[0; 63]), Err(SignatureParseError));
    }
}
