//! Object stores behind one interface: the region's S3 data bucket (`s3`), a local
//! directory (`local`, the embedded default), and a failure-injecting wrapper for tests
//! (`faulty`). They store opaque bytes; encryption is
//! layered on top by [`crate::sealed_objects`], so plaintext never reaches a store.

pub mod faulty;
pub mod local;
pub mod s3;

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A stream of bytes in or out of a store.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, ObjectStoreError>> + Send>>;

/// An object's name in a store: `/`-separated segments of `[A-Za-z0-9._=-]`, no `.` or
/// `..` segment, at most 1024 bytes. Callers derive it from ids, never from user text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key: {0}")]
pub struct ObjectKeyError(&'static str);

impl ObjectKey {
    pub fn parse(raw: &str) -> Result<Self, ObjectKeyError> {
        if raw.is_empty() || raw.len() > 1024 {
            return Err(ObjectKeyError("length must be 1 to 1024 bytes"));
        }
        for segment in raw.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(ObjectKeyError("empty, `.` or `..` segment"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._=-".contains(&b))
            {
                return Err(ObjectKeyError(
                    "segments may hold only letters, digits and . _ = -",
                ));
            }
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({})", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectStoreKind {
    S3,
    Local,
}

impl ObjectStoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S3 => "s3",
            Self::Local => "local",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ObjectStoreError {
    #[error("object {0} not found")]
    NotFound(ObjectKey),
    /// The store could not be reached or refused for now: retry later.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// Reading the body that was being stored failed (the caller's stream).
    #[error("reading the object body failed: {0}")]
    Body(String),
    #[error("object store error: {0}")]
    Other(String),
}

/// One region's object store.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    fn kind(&self) -> ObjectStoreKind;

    /// Where it stores, for reports: `s3://bucket` or `file:///dir`.
    fn location(&self) -> String;

    /// Stores `body` under `key`, replacing any object there; returns the bytes stored.
    /// Memory stays bounded whatever the size (S3 switches to multipart above a
    /// threshold). A failed put leaves no partial object visible.
    async fn put(&self, key: &ObjectKey, body: ByteStream) -> Result<u64, ObjectStoreError>;

    /// Streams the object's bytes; [`ObjectStoreError::NotFound`] when absent.
    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, ObjectStoreError>;

    /// Deletes the object; deleting an absent object succeeds.
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError>;

    /// The keys of every object whose key starts with `prefix` (a plain string prefix, as
    /// S3 has it), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectStoreError>;

    /// Deletes up to `limit` stored objects under `prefix` (a plain string prefix), and on
    /// a versioned store every version and delete marker of each, so nothing under the
    /// prefix can be restored; returns how many it deleted (0: nothing is left). Called
    /// until it returns 0 (an offboarding purge). A store without versions lists and
    /// deletes.
    async fn purge(&self, prefix: &str, limit: usize) -> Result<u64, ObjectStoreError> {
        let mut deleted = 0;
        for key in self.list(prefix).await?.into_iter().take(limit) {
            self.delete(&key).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Whether the store answers (for `/readyz`).
    async fn check(&self) -> Result<(), ObjectStoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_refuse_traversal_and_odd_bytes() {
        assert!(ObjectKey::parse("tenants/2f1c/records/r1/files/f-1.bin").is_ok());
        for bad in [
            "", "/abs", "a//b", "a/../b", "./a", "a/b/", "a b", "a/ü", "a\\b",
        ] {
            assert!(ObjectKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectKey::parse(&"a".repeat(1025)).is_err());
    }
}
