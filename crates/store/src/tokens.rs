//! The key consistency tokens are authenticated with, and what a presented token asks a
//! read for. A node mints a token after every write ([`RegionDatabase::consistency_token`]);
//! a read's token is checked before it can make anything wait
//! ([`RegionDatabase::read_consistency`]).
//!
//! The tag is HMAC-SHA256 (truncated to 128 bits) over [`ConsistencyToken::signed_bytes`],
//! under a key every node of the deployment shares: derived with HKDF from a deployment
//! secret (`node` uses the inter-region forwarding secret, which every region holds), so
//! every node of every region accepts every other node's tokens, and a token of another
//! region (from before a relocation) is still recognised as ours. During a rotation of
//! that secret, tokens tagged under the previous one are accepted too.

use std::fmt;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::{constant_time, hkdf, hmac};
use model::{ConsistencyToken, Lsn, PresentedToken, SignedToken, TOKEN_TAG_BYTES, TokenError};

use crate::{ReadConsistency, RegionDatabase};

/// HKDF salt and info: the key derived for tokens is independent of every other use of
/// the secret it comes from (the forwarding signatures use the secret as it is).
const HKDF_SALT: &[u8] = b"residency consistency tokens";
const HKDF_INFO: &[u8] = b"consistency token mac v2";

/// The keys consistency tokens are tagged and checked with. `Debug` shows nothing of them.
#[derive(Clone)]
pub struct ConsistencyKeys {
    /// Tags new tokens; checks presented ones.
    current: hmac::Key,
    /// Checks presented tokens only, while the secret rotates.
    previous: Option<hmac::Key>,
}

impl fmt::Debug for ConsistencyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsistencyKeys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a presented token is refused (a 400: the client sent something no node issued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error(transparent)]
    Unreadable(#[from] TokenError),
    /// Well-formed, but its tag does not verify: forged, altered, or from another
    /// deployment.
    #[error("the consistency token was not issued by this deployment")]
    NotIssued,
}

fn derive_key(secret: &[u8]) -> hmac::Key {
    hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT)
        .extract(secret)
        .expand(&[HKDF_INFO], hmac::HMAC_SHA256)
        .expect("HKDF-SHA256 can expand to one HMAC-SHA256 key")
        .into()
}

impl ConsistencyKeys {
    /// The keys derived from a deployment secret that every node holds.
    pub fn derive(secret: &[u8]) -> Self {
        Self {
            current: derive_key(secret),
            previous: None,
        }
    }

    /// Also accepts tokens tagged under the key of `previous_secret` (never tags with it).
    #[must_use]
    pub fn with_previous(mut self, previous_secret: &[u8]) -> Self {
        self.previous = Some(derive_key(previous_secret));
        self
    }

    /// A random key of this process alone: for a node that is the only one of its
    /// deployment (tests, benchmarks). Tokens it mints are refused everywhere else.
    pub fn generate() -> Self {
        Self {
            current: hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
                .expect("the system CSPRNG does not fail"),
            previous: None,
        }
    }

    fn tag_with(key: &hmac::Key, token: &ConsistencyToken) -> [u8; TOKEN_TAG_BYTES] {
        let full = hmac::sign(key, &token.signed_bytes());
        let mut tag = [0u8; TOKEN_TAG_BYTES];
        tag.copy_from_slice(&full.as_ref()[..TOKEN_TAG_BYTES]);
        tag
    }

    /// `token` with its tag under the current key.
    pub fn sign(&self, token: ConsistencyToken) -> SignedToken {
        let tag = Self::tag_with(&self.current, &token);
        SignedToken { token, tag }
    }

    /// Whether `signed`'s tag verifies under the current or the previous key (compared in
    /// constant time).
    pub fn verify(&self, signed: &SignedToken) -> bool {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .any(|key| {
                let expected = Self::tag_with(key, &signed.token);
                constant_time::verify_slices_are_equal(&expected, &signed.tag).is_ok()
            })
    }
}

impl RegionDatabase {
    /// The token of a write this region's primary committed at `lsn`.
    pub fn consistency_token(&self, lsn: Lsn) -> SignedToken {
        self.consistency_keys.sign(ConsistencyToken {
            region: self.region().clone(),
            lsn,
        })
    }

    /// What a read presenting `token` (the `X-Consistency-Token` value, if any) must see.
    /// Costs a parse and one HMAC, no IO: nothing can wait on a token before it verifies.
    ///
    /// - No token: [`ReadConsistency::Bounded`].
    /// - A verified token of this region: [`ReadConsistency::AtLeast`] its position.
    /// - A verified token of another region (from before a relocation): says nothing about
    ///   this region's WAL, so [`ReadConsistency::Latest`].
    /// - A token of the unsigned `v1` encoding, minted before tokens were authenticated:
    ///   its position cannot be trusted and must not make a replica wait, but it may be a
    ///   real write of a moment ago, so [`ReadConsistency::Latest`] (the primary has every
    ///   committed write: the same as clamping the position to the primary's). Such
    ///   tokens exist only for the moments after an upgrade; a flood of them costs primary
    ///   reads at the caller's rate limit, never a replica's rotation.
    /// - Anything else, or a tag that does not verify: refused.
    pub fn read_consistency(&self, token: Option<&str>) -> Result<ReadConsistency, TokenRefused> {
        let Some(raw) = token else {
            return Ok(ReadConsistency::Bounded);
        };
        match PresentedToken::parse(raw)? {
            PresentedToken::Unsigned(_) => Ok(ReadConsistency::Latest),
            PresentedToken::Signed(signed) => {
                if !self.consistency_keys.verify(&signed) {
                    return Err(TokenRefused::NotIssued);
                }
                if &signed.token.region == self.region() {
                    Ok(ReadConsistency::AtLeast(signed.token.lsn))
                } else {
                    Ok(ReadConsistency::Latest)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use model::RegionId;

    use super::*;

    fn token(lsn: u64) -> ConsistencyToken {
        ConsistencyToken {
            region: RegionId::parse("eu-central-1").expect("region"),
            lsn: Lsn(lsn),
        }
    }

    #[test]
    fn a_tag_verifies_under_the_same_secret_only() {
        let keys = ConsistencyKeys::derive(b"deployment secret");
        let signed = keys.sign(token(42));
        assert!(keys.verify(&signed));
        assert!(
            ConsistencyKeys::derive(b"deployment secret").verify(&signed),
            "another node of the deployment derives the same key"
        );
        assert!(!ConsistencyKeys::derive(b"another deployment").verify(&signed));
        assert!(!ConsistencyKeys::generate().verify(&signed));

        let mut moved = signed.clone();
        moved.token.lsn = Lsn(u64::MAX);
        assert!(!keys.verify(&moved), "the tag covers the position");
        let mut flipped = signed;
        flipped.tag[0] ^= 1;
        assert!(!keys.verify(&flipped));
    }

    #[test]
    fn during_a_rotation_tokens_of_the_previous_secret_still_verify() {
        let old = ConsistencyKeys::derive(b"old secret");
        let rotating = ConsistencyKeys::derive(b"new secret").with_previous(b"old secret");
        let minted_before = old.sign(token(7));
        assert!(rotating.verify(&minted_before));
        let minted_now = rotating.sign(token(7));
        assert!(
            !old.verify(&minted_now),
            "new tokens are tagged with the new key"
        );
        assert!(!format!("{rotating:?}").contains("secret"));
    }
}
