//! The subject index: one keyed token per data subject of a tenant, across all its
//! collections, so that finding everything about one person (export, erasure) is one
//! equality lookup instead of decrypting every collection.
//!
//! The key is derived with HKDF-SHA256 from the tenant's *index* key (salt
//! `residency/subject-index/v1`, info = tenant and region, length-prefixed; no collection
//! or field, so the same person has the same token in every collection of the tenant).
//! The token is HMAC-SHA256 under that key of the canonical string encoding
//! ([`model::canonical`]) of the *normalized* subject value: white space trimmed at both
//! ends, Unicode lowercase (full case mapping), then NFC. So `"Ada@Example.org "` and
//! `"ada@example.org"` are one subject (an access or erasure request must not miss a
//! record over the case its address was typed in), while any other difference makes
//! another subject. Index keys are never rotated, so tokens stay valid for the tenant's
//! life. The salt differs from the blind indexes' and the pseudonyms', so a subject token
//! never equals a search token or a published pseudonym.

use std::fmt;

use aws_lc_rs::hmac;

use crate::DataKey;
use crate::blind_index::{BlindToken, IndexValue};

const SALT: &[u8] = b"residency/subject-index/v1";

/// The longest subject value (in bytes, before normalization) the index takes: a subject
/// names a person (an address, a customer number), never a document.
pub const MAX_SUBJECT_LEN: usize = 1024;

/// A subject value that cannot be indexed. Messages never include the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("the subject is empty")]
    Empty,
    #[error("the subject is longer than {MAX_SUBJECT_LEN} bytes")]
    TooLong,
}

/// The HMAC key of a tenant's subject index.
pub struct SubjectIndexKey {
    key: hmac::Key,
}

impl SubjectIndexKey {
    /// Derives the tenant's subject-index key from its index key.
    pub fn derive(index_key: &DataKey) -> Self {
        let derived = index_key.derive_from_index_key(SALT, &[]);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.expose()),
        }
    }

    /// The token of a subject value, after normalization (see the module).
    pub fn token(&self, subject: &str) -> Result<BlindToken, SubjectError> {
        let normalized = normalize(subject)?;
        let mut context = hmac::Context::with_key(&self.key);
        IndexValue::String(&normalized)
            .encode(|piece| context.update(piece))
            .expect("a string always has a canonical encoding");
        let tag = context.sign();
        let bytes: [u8; 32] = tag
            .as_ref()
            .try_into()
            .expect("HMAC-SHA256 tags are 32 bytes");
        Ok(BlindToken::from_bytes(bytes))
    }
}

impl fmt::Debug for SubjectIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectIndexKey(<redacted>)")
    }
}

/// Trimmed and lowercased; the canonical encoding applies NFC.
fn normalize(subject: &str) -> Result<String, SubjectError> {
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong);
    }
    let trimmed = subject.trim();
    if trimmed.is_empty() {
        return Err(SubjectError::Empty);
    }
    Ok(trimmed.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blind_index::FieldIndexKey;
    use crate::{KeyMaterial, KeyPurpose, KeyVersion};
    use model::{RegionId, TenantId};

    fn index_key(tenant: [u8; 16]) -> DataKey {
        DataKey::new(
            TenantId::from_random_bytes(tenant),
            RegionId::parse("eu-central-1").expect("valid region"),
            KeyPurpose::Index,
            KeyVersion::FIRST,
            KeyMaterial::from_slice(&[5; 32]).expect("32 bytes"),
        )
    }

    fn token(key: &SubjectIndexKey, subject: &str) -> BlindToken {
        key.token(subject).expect("indexable subject")
    }

    #[test]
    fn case_surrounding_space_and_composition_do_not_split_a_subject() {
        let key = SubjectIndexKey::derive(&index_key([1; 16]));
        let ada = token(&key, "ada@example.org");
        assert_eq!(token(&key, "  Ada@Example.ORG\n"), ada);
        // "é" precomposed and as e + combining acute.
        assert_eq!(
            token(&key, "jos\u{e9}@x.org"),
            token(&key, "JOSE\u{301}@x.org")
        );
        assert_ne!(token(&key, "ada@example.com"), ada);
        assert_ne!(token(&key, "a da@example.org"), ada);
    }

    #[test]
    fn tokens_differ_between_tenants_and_from_search_tokens() {
        let key = SubjectIndexKey::derive(&index_key([1; 16]));
        let other_tenant = SubjectIndexKey::derive(&index_key([2; 16]));
        let ada = token(&key, "ada@example.org");
        assert_ne!(token(&other_tenant, "ada@example.org"), ada);
        let field = FieldIndexKey::derive(&index_key([1; 16]), "patients", "email");
        let search = field
            .token(&IndexValue::String("ada@example.org"))
            .expect("indexable");
        assert_ne!(search, ada);
    }

    #[test]
    fn empty_and_oversized_subjects_are_refused() {
        let key = SubjectIndexKey::derive(&index_key([1; 16]));
        assert_eq!(key.token(" \t").expect_err("blank"), SubjectError::Empty);
        let long = "a".repeat(MAX_SUBJECT_LEN + 1);
        assert_eq!(
            key.token(&long).expect_err("too long"),
            SubjectError::TooLong
        );
        assert!(key.token(&"a".repeat(MAX_SUBJECT_LEN)).is_ok());
        assert!(!format!("{:?}", key.token(&long)).contains("aaa"));
    }
}
