//! Encrypted objects through any [`ObjectStore`]: plaintext is sealed segment by segment
//! ([`crate::stream`]) while the store pulls the body, and opened segment by segment while
//! the caller reads, so memory stays at about two segments whatever the object's size.
//! Stores only ever see ciphertext.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest;
use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};

use crate::objects::{ByteStream, ObjectKey, ObjectStore, ObjectStoreError};
use crate::stream::{
    DEFAULT_SEGMENT_SIZE, HEADER_LEN, SegmentOpener, SegmentSealer, StreamError, StreamHeader,
};
use crate::{DataKey, KeyVersion};

/// Plaintext of a sealed object, segment by segment. An error item ends it: the object
/// was truncated, reordered or tampered with, or the store failed mid-way.
pub type PlaintextStream = Pin<Box<dyn Stream<Item = Result<Bytes, SealedObjectError>> + Send>>;

/// What [`put_sealed`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutReceipt {
    /// Plaintext bytes.
    pub size: u64,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// Ciphertext bytes in the store (header, segments and tags).
    pub stored_size: u64,
    /// The data key version the object is sealed under.
    pub key_version: KeyVersion,
}

#[derive(Debug, thiserror::Error)]
pub enum SealedObjectError {
    #[error(transparent)]
    Store(#[from] ObjectStoreError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The plaintext is longer than the limit; nothing was stored.
    #[error("object exceeds the size limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The key for the object's version could not be had (mapped from the resolver's error).
    #[error("data key unavailable: {0}")]
    Key(String),
    /// Reading the caller's plaintext failed, or the store stopped reading it early.
    #[error("reading the object body failed: {0}")]
    Body(String),
}

/// Seals `plaintext` into `object` with [`DEFAULT_SEGMENT_SIZE`] segments. Fails with
/// [`SealedObjectError::TooLarge`] (storing nothing) if it exceeds `max_size` bytes.
pub async fn put_sealed(
    store: &dyn ObjectStore,
    key: &DataKey,
    object: &ObjectKey,
    plaintext: ByteStream,
    max_size: Option<u64>,
) -> Result<PutReceipt, SealedObjectError> {
    put_sealed_with_segment_size(
        store,
        key,
        object,
        plaintext,
        max_size,
        DEFAULT_SEGMENT_SIZE,
    )
    .await
}

/// [`put_sealed`] with a chosen segment size: 1 KiB to 16 MiB, anything else is a
/// programming error and panics.
pub async fn put_sealed_with_segment_size(
    store: &dyn ObjectStore,
    key: &DataKey,
    object: &ObjectKey,
    plaintext: ByteStream,
    max_size: Option<u64>,
    segment_size: usize,
) -> Result<PutReceipt, SealedObjectError> {
    let outcome = Arc::new(Mutex::new(PutOutcome::default()));
    let sealing = Sealing {
        input: plaintext,
        sealer: SegmentSealer::new(key, object, segment_size),
        header_sent: false,
        pending: Vec::with_capacity(segment_size),
        current: Bytes::new(),
        size: 0,
        max_size,
        digest: Some(digest::Context::new(&digest::SHA256)),
        outcome: Arc::clone(&outcome),
        failed: false,
    };
    // Sealing runs inside the stream, so it happens as (and only as fast as) the store
    // pulls: back-pressure reaches the caller's plaintext stream.
    let body: ByteStream = Box::pin(futures::stream::unfold(sealing, |mut sealing| async move {
        let item = sealing.next_item().await?;
        Some((item, sealing))
    }));
    let result = store.put(object, body).await;
    let outcome = std::mem::take(&mut *outcome.lock().unwrap_or_else(PoisonError::into_inner));

    let failure = if outcome.too_large {
        max_size.map(|limit| SealedObjectError::TooLarge { limit })
    } else {
        outcome.body_error.map(SealedObjectError::Body)
    };
    match (result, failure, outcome.sha256) {
        (Ok(stored_size), None, Some(sha256)) => Ok(PutReceipt {
            size: outcome.size,
            sha256,
            stored_size,
            key_version: key.version(),
        }),
        (Ok(_), failure, _) => {
            // The store kept an object although the body failed or was not read to its
            // end: it must not stay visible.
            if let Err(error) = store.delete(object).await {
                tracing::warn!(object = %object, "failed to delete an incomplete sealed object: {error}");
            }
            Err(failure.unwrap_or_else(|| {
                SealedObjectError::Body(
                    "the store finished before reading the whole body".to_owned(),
                )
            }))
        }
        (Err(_), Some(failure), _) => Err(failure),
        (Err(error), None, _) => Err(SealedObjectError::Store(error)),
    }
}

/// Streams the plaintext of `object`. The header is read first and the key for its version
/// fetched through `resolve_key`, so a missing or malformed object or an unavailable key
/// fails here; later problems (truncation, tampering, store errors) arrive as an error item.
pub async fn get_sealed<F, Fut>(
    store: &dyn ObjectStore,
    object: &ObjectKey,
    resolve_key: F,
) -> Result<PlaintextStream, SealedObjectError>
where
    F: FnOnce(KeyVersion) -> Fut,
    Fut: Future<Output = Result<Arc<DataKey>, SealedObjectError>>,
{
    let mut body = store.get(object).await?;
    let (header, rest) = read_header(&mut body).await?;
    let key = resolve_key(header.key_version()).await?;
    let opener = SegmentOpener::new(&key, object, header)?;
    let opening = Opening {
        body,
        opener,
        pending: Vec::new(),
        current: rest,
        failed: false,
    };
    Ok(Box::pin(futures::stream::unfold(
        opening,
        |mut opening| async move {
            let item = opening.next_item().await?;
            Some((item, opening))
        },
    )))
}

/// The key version `object` is sealed under, from its header alone (for re-encryption).
pub async fn sealed_object_version(
    store: &dyn ObjectStore,
    object: &ObjectKey,
) -> Result<KeyVersion, SealedObjectError> {
    let mut body = store.get(object).await?;
    let (header, _) = read_header(&mut body).await?;
    Ok(header.key_version())
}

/// Reads and parses the header; returns it with the bytes read past it.
async fn read_header(body: &mut ByteStream) -> Result<(StreamHeader, Bytes), SealedObjectError> {
    let mut buf = Vec::with_capacity(HEADER_LEN);
    while buf.len() < HEADER_LEN {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                if buf.is_empty() && chunk.len() >= HEADER_LEN {
                    let header = SegmentOpener::parse_header(&chunk)?;
                    return Ok((header, chunk.slice(HEADER_LEN..)));
                }
                buf.extend_from_slice(&chunk);
            }
            None => return Err(StreamError::Malformed.into()),
        }
    }
    let header = SegmentOpener::parse_header(&buf)?;
    Ok((header, Bytes::copy_from_slice(&buf[HEADER_LEN..])))
}

/// Results of sealing, shared from inside the body stream with [`put_sealed_with_segment_size`].
#[derive(Debug, Default)]
struct PutOutcome {
    size: u64,
    /// Set once the final segment is sealed.
    sha256: Option<[u8; 32]>,
    too_large: bool,
    body_error: Option<String>,
}

/// The state of the ciphertext body while the store pulls it.
struct Sealing {
    input: ByteStream,
    sealer: SegmentSealer,
    header_sent: bool,
    /// Plaintext of the segment being filled; at most one segment.
    pending: Vec<u8>,
    /// The unconsumed rest of the last input chunk.
    current: Bytes,
    size: u64,
    max_size: Option<u64>,
    /// `None` once finished.
    digest: Option<digest::Context>,
    outcome: Arc<Mutex<PutOutcome>>,
    failed: bool,
}

impl Sealing {
    async fn next_item(&mut self) -> Option<Result<Bytes, ObjectStoreError>> {
        if self.failed || self.sealer.is_finished() {
            return None;
        }
        if !self.header_sent {
            self.header_sent = true;
            return Some(Ok(Bytes::copy_from_slice(self.sealer.header())));
        }
        let item = self.next_segment().await;
        self.failed = item.is_err();
        Some(item)
    }

    /// Seals the next segment. A full segment is sealed as non-final only once a further
    /// plaintext byte is known to exist (one segment of lookahead), so the final flag is
    /// always right.
    async fn next_segment(&mut self) -> Result<Bytes, ObjectStoreError> {
        let size = self.sealer.segment_size();
        loop {
            if !self.current.is_empty() {
                if self.pending.len() == size {
                    let sealed = self.seal(false, None)?;
                    self.pending.clear();
                    return Ok(sealed);
                }
                if self.pending.is_empty() && self.current.len() > size {
                    // A whole segment with more to follow: seal it straight from the chunk.
                    let part = self.current.split_to(size);
                    return self.seal(false, Some(&part));
                }
                let take = (size - self.pending.len()).min(self.current.len());
                self.pending.extend_from_slice(&self.current[..take]);
                self.current.advance(take);
                continue;
            }
            match self.input.next().await {
                Some(Ok(chunk)) => {
                    self.size += chunk.len() as u64;
                    if self.max_size.is_some_and(|limit| self.size > limit) {
                        self.lock_outcome().too_large = true;
                        return Err(ObjectStoreError::Body(
                            "plaintext exceeds the size limit".to_owned(),
                        ));
                    }
                    if let Some(digest) = self.digest.as_mut() {
                        digest.update(&chunk);
                    }
                    self.current = chunk;
                }
                Some(Err(error)) => {
                    let message = match error {
                        ObjectStoreError::Body(message) => message,
                        other => other.to_string(),
                    };
                    self.lock_outcome().body_error = Some(message.clone());
                    return Err(ObjectStoreError::Body(message));
                }
                None => {
                    let sealed = self.seal(true, None)?;
                    self.pending = Vec::new();
                    let sha256 = self.digest.take().map(|digest| {
                        digest
                            .finish()
                            .as_ref()
                            .try_into()
                            .expect("SHA-256 digests are 32 bytes")
                    });
                    let mut outcome = self.lock_outcome();
                    outcome.size = self.size;
                    outcome.sha256 = sha256;
                    return Ok(sealed);
                }
            }
        }
    }

    /// Seals `part`, or the pending buffer when `None`.
    fn seal(
        &mut self,
        final_segment: bool,
        part: Option<&[u8]>,
    ) -> Result<Bytes, ObjectStoreError> {
        let plaintext = part.unwrap_or(&self.pending);
        self.sealer
            .seal_segment(plaintext, final_segment)
            .map(Bytes::from)
            .map_err(|error| ObjectStoreError::Other(format!("sealing a segment failed: {error}")))
    }

    fn lock_outcome(&self) -> std::sync::MutexGuard<'_, PutOutcome> {
        self.outcome.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The state of the plaintext stream while the caller reads it.
struct Opening {
    body: ByteStream,
    opener: SegmentOpener,
    /// Ciphertext of the segment being filled; at most one sealed segment.
    pending: Vec<u8>,
    /// The unconsumed rest of the last body chunk.
    current: Bytes,
    failed: bool,
}

impl Opening {
    async fn next_item(&mut self) -> Option<Result<Bytes, SealedObjectError>> {
        if self.failed || self.opener.is_finished() {
            return None;
        }
        match self.next_segment().await {
            // An empty object ends with an empty final segment: nothing to yield.
            Ok(plaintext) if plaintext.is_empty() && self.opener.is_finished() => None,
            Ok(plaintext) => Some(Ok(plaintext)),
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }

    /// Opens the next segment; a full segment opens as non-final only once a further
    /// ciphertext byte is known to exist, the last bytes of the body always as final.
    async fn next_segment(&mut self) -> Result<Bytes, SealedObjectError> {
        let full = self.opener.header().sealed_segment_len();
        loop {
            if !self.current.is_empty() {
                if self.pending.len() == full {
                    let pending = std::mem::take(&mut self.pending);
                    let plaintext = self.open_inner(&pending);
                    self.pending = pending;
                    self.pending.clear();
                    return plaintext;
                }
                if self.pending.is_empty() && self.current.len() > full {
                    let part = self.current.split_to(full);
                    return self.open_inner(&part);
                }
                let take = (full - self.pending.len()).min(self.current.len());
                self.pending.extend_from_slice(&self.current[..take]);
                self.current.advance(take);
                continue;
            }
            match self.body.next().await {
                Some(chunk) => self.current = chunk?,
                None => {
                    let last = std::mem::take(&mut self.pending);
                    return self.open_last(&last);
                }
            }
        }
    }

    /// Opens a segment that more bytes follow.
    fn open_inner(&mut self, segment: &[u8]) -> Result<Bytes, SealedObjectError> {
        match self.opener.open_segment(segment, false) {
            Ok(plaintext) => Ok(Bytes::from(plaintext)),
            // A valid final segment with bytes after it.
            Err(StreamError::Authentication { .. })
                if self.opener.open_segment(segment, true).is_ok() =>
            {
                Err(StreamError::TrailingData.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Opens the last bytes of the body, which must be the final segment.
    fn open_last(&mut self, segment: &[u8]) -> Result<Bytes, SealedObjectError> {
        if segment.is_empty() {
            // Even an empty final segment has a tag: the object ends at a segment boundary.
            return Err(StreamError::Truncated.into());
        }
        match self.opener.open_segment(segment, true) {
            Ok(plaintext) => Ok(Bytes::from(plaintext)),
            // It is a valid segment, just not the last one: segments were cut off.
            Err(StreamError::Authentication { .. })
                if self.opener.open_segment(segment, false).is_ok() =>
            {
                Err(StreamError::Truncated.into())
            }
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use tempfile::TempDir;

    use super::*;
    use crate::objects::ObjectStoreKind;
    use crate::objects::local::LocalObjectStore;
    use crate::stream::{MIN_SEGMENT_SIZE, TAG_LEN};
    use crate::{KeyMaterial, KeyPurpose};
    use model::{RegionId, TenantId};

    /// The real local store in a temporary directory. Reads can be re-chunked into small
    /// pieces, so reassembly across arbitrary chunk boundaries (including inside the
    /// header) is exercised, not only the local store's 64 KiB reads.
    #[derive(Debug)]
    struct TestStore {
        inner: LocalObjectStore,
        read_chunk: Option<usize>,
        _dir: TempDir,
    }

    impl TestStore {
        fn new(read_chunk: Option<usize>) -> Self {
            let dir = TempDir::new().expect("temporary directory");
            let inner = LocalObjectStore::new(dir.path().to_path_buf()).expect("local store");
            Self {
                inner,
                read_chunk,
                _dir: dir,
            }
        }

        /// The stored ciphertext, or `None` if absent.
        async fn raw(&self, key: &ObjectKey) -> Option<Vec<u8>> {
            let mut body = match self.inner.get(key).await {
                Ok(body) => body,
                Err(ObjectStoreError::NotFound(_)) => return None,
                Err(error) => panic!("reading {key}: {error}"),
            };
            let mut all = Vec::new();
            while let Some(chunk) = body.next().await {
                all.extend_from_slice(&chunk.expect("readable"));
            }
            Some(all)
        }

        async fn set_raw(&self, key: &ObjectKey, bytes: Vec<u8>) {
            let body: ByteStream = Box::pin(futures::stream::iter([Ok(Bytes::from(bytes))]));
            self.inner.put(key, body).await.expect("stored");
        }
    }

    #[async_trait]
    impl ObjectStore for TestStore {
        fn kind(&self) -> ObjectStoreKind {
            self.inner.kind()
        }

        fn location(&self) -> String {
            self.inner.location()
        }

        async fn put(&self, key: &ObjectKey, body: ByteStream) -> Result<u64, ObjectStoreError> {
            self.inner.put(key, body).await
        }

        async fn get(&self, key: &ObjectKey) -> Result<ByteStream, ObjectStoreError> {
            let body = self.inner.get(key).await?;
            let Some(size) = self.read_chunk else {
                return Ok(body);
            };
            Ok(Box::pin(body.flat_map(move |chunk| {
                let pieces: Vec<Result<Bytes, ObjectStoreError>> = match chunk {
                    Ok(chunk) => (0..chunk.len())
                        .step_by(size)
                        .map(|at| Ok(chunk.slice(at..(at + size).min(chunk.len()))))
                        .collect(),
                    Err(error) => vec![Err(error)],
                };
                futures::stream::iter(pieces)
            })))
        }

        async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError> {
            self.inner.delete(key).await
        }

        async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectStoreError> {
            self.inner.list(prefix).await
        }

        async fn check(&self) -> Result<(), ObjectStoreError> {
            self.inner.check().await
        }
    }

    const SEGMENT: usize = MIN_SEGMENT_SIZE;
    const MARKER: &[u8] = b"PLAINTEXT-MARKER";

    fn data_key(tenant: [u8; 16]) -> Arc<DataKey> {
        Arc::new(DataKey::new(
            TenantId::from_random_bytes(tenant),
            RegionId::parse("eu-central-1").expect("valid region"),
            KeyPurpose::Data,
            KeyVersion::FIRST,
            KeyMaterial::from_slice(&[4; 32]).expect("32 bytes"),
        ))
    }

    fn object(name: &str) -> ObjectKey {
        ObjectKey::parse(name).expect("valid object key")
    }

    /// `len` bytes with the marker repeated through them.
    fn plaintext(len: usize) -> Vec<u8> {
        MARKER.iter().copied().cycle().take(len).collect()
    }

    fn chunked(bytes: &[u8], chunk: usize) -> ByteStream {
        let chunks: Vec<Result<Bytes, ObjectStoreError>> = bytes
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    async fn put(
        store: &TestStore,
        key: &DataKey,
        name: &str,
        bytes: &[u8],
        chunk: usize,
        segment: usize,
    ) -> PutReceipt {
        put_sealed_with_segment_size(
            store,
            key,
            &object(name),
            chunked(bytes, chunk),
            None,
            segment,
        )
        .await
        .expect("put succeeds")
    }

    async fn get(
        store: &TestStore,
        key: &Arc<DataKey>,
        name: &str,
    ) -> Result<Vec<u8>, SealedObjectError> {
        let key = Arc::clone(key);
        let mut stream = get_sealed(store, &object(name), |_| async move { Ok(key) }).await?;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        digest::digest(&digest::SHA256, bytes)
            .as_ref()
            .try_into()
            .expect("32 bytes")
    }

    #[tokio::test]
    async fn round_trips_at_every_edge() {
        for read_chunk in [None, Some(333)] {
            round_trips_with(&TestStore::new(read_chunk)).await;
        }
    }

    async fn round_trips_with(store: &TestStore) {
        let key = data_key([1; 16]);
        for (len, chunk, segment) in [
            (0, 1, SEGMENT),
            (1, 1, SEGMENT),
            (SEGMENT, 100, SEGMENT),
            (SEGMENT, SEGMENT, SEGMENT),
            (SEGMENT + 1, 1000, SEGMENT),
            (SEGMENT + 1, SEGMENT + 1, SEGMENT),
            (5 * SEGMENT, 5 * SEGMENT, SEGMENT),
            (3 * 1024 * 1024 + 7, 65_537, 4 * SEGMENT),
            (3 * 1024 * 1024, 3 * 1024 * 1024, SEGMENT),
        ] {
            let input = plaintext(len);
            let receipt = put(store, &key, "o", &input, chunk, segment).await;
            assert_eq!(receipt.size, len as u64);
            assert_eq!(receipt.sha256, sha256(&input));
            assert_eq!(receipt.key_version, KeyVersion::FIRST);
            // Every segment but the last is full; an exact multiple ends with a full final one.
            let segments = len.div_ceil(segment).max(1);
            assert_eq!(
                receipt.stored_size,
                (HEADER_LEN + len + segments * TAG_LEN) as u64
            );

            let stored = store.raw(&object("o")).await.expect("stored");
            assert_eq!(stored.len() as u64, receipt.stored_size);
            assert!(!stored.windows(MARKER.len()).any(|w| w == MARKER), "{len}");
            assert_eq!(
                get(store, &key, "o").await.expect("opens"),
                input,
                "{len} {chunk} {segment}"
            );
        }
    }

    #[test]
    fn futures_and_streams_are_send() {
        fn assert_send<T: Send>(_: &T) {}
        let store = TestStore::new(None);
        let key = data_key([1; 16]);
        let name = object("o");
        let put = put_sealed(&store, &key, &name, chunked(b"x", 1), None);
        assert_send(&put);
        let get = get_sealed(&store, &name, |_| async { Ok(data_key([1; 16])) });
        assert_send(&get);
        assert_send(&sealed_object_version(&store, &name));
    }

    #[tokio::test]
    async fn default_segment_size_round_trips() {
        let store = TestStore::new(Some(7));
        let key = data_key([1; 16]);
        let input = plaintext(2 * DEFAULT_SEGMENT_SIZE + 3);
        let receipt = put_sealed(
            &store,
            &key,
            &object("d"),
            chunked(&input, 10_000),
            Some(1 << 20),
        )
        .await
        .expect("put");
        assert_eq!(receipt.size, input.len() as u64);
        assert_eq!(
            sealed_object_version(&store, &object("d"))
                .await
                .expect("version"),
            KeyVersion::FIRST
        );
        assert_eq!(get(&store, &key, "d").await.expect("opens"), input);
    }

    /// Stores `len` bytes in `SEGMENT` segments and returns the raw ciphertext.
    async fn sealed_raw(store: &TestStore, key: &DataKey, name: &str, len: usize) -> Vec<u8> {
        put(store, key, name, &plaintext(len), 4096, SEGMENT).await;
        store.raw(&object(name)).await.expect("stored")
    }

    #[tokio::test]
    async fn truncation_at_a_segment_boundary_is_reported() {
        let store = TestStore::new(Some(7));
        let key = data_key([1; 16]);
        let raw = sealed_raw(&store, &key, "o", 3 * SEGMENT + 10).await;
        let full = SEGMENT + TAG_LEN;
        for segments in [3, 2, 1, 0] {
            store
                .set_raw(&object("o"), raw[..HEADER_LEN + segments * full].to_vec())
                .await;
            let error = get(&store, &key, "o").await.expect_err("truncated");
            assert!(
                matches!(error, SealedObjectError::Stream(StreamError::Truncated)),
                "{segments}: {error:?}"
            );
        }
        // Data before the cut is delivered, then the error: never silently short.
        store
            .set_raw(&object("o"), raw[..HEADER_LEN + 2 * full].to_vec())
            .await;
        let k = Arc::clone(&key);
        let mut stream = get_sealed(&store, &object("o"), |_| async move { Ok(k) })
            .await
            .expect("header");
        assert_eq!(
            stream.next().await.expect("item").expect("segment 0").len(),
            SEGMENT
        );
        assert!(matches!(
            stream.next().await,
            Some(Err(SealedObjectError::Stream(StreamError::Truncated)))
        ));
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn swapped_flipped_moved_or_extended_objects_fail() {
        let store = TestStore::new(Some(7));
        let key = data_key([1; 16]);
        let raw = sealed_raw(&store, &key, "o", 3 * SEGMENT + 10).await;
        let full = SEGMENT + TAG_LEN;

        let mut swapped = raw.clone();
        let (first, second) = (
            HEADER_LEN..HEADER_LEN + full,
            HEADER_LEN + full..HEADER_LEN + 2 * full,
        );
        let segment0 = raw[first.clone()].to_vec();
        swapped.copy_within(second, first.start);
        swapped[first.end..first.end + full].copy_from_slice(&segment0);
        store.set_raw(&object("o"), swapped).await;
        assert!(matches!(
            get(&store, &key, "o").await,
            Err(SealedObjectError::Stream(StreamError::Authentication {
                segment: 0
            }))
        ));

        for at in [
            HEADER_LEN - 1,
            HEADER_LEN,
            HEADER_LEN + full + 3,
            raw.len() - 1,
        ] {
            let mut flipped = raw.clone();
            flipped[at] ^= 0x20;
            store.set_raw(&object("o"), flipped).await;
            assert!(get(&store, &key, "o").await.is_err(), "{at}");
        }

        let mut extended = raw.clone();
        extended.extend_from_slice(&[0; 40]);
        store.set_raw(&object("o"), extended).await;
        assert!(get(&store, &key, "o").await.is_err());

        // The same bytes under another object key do not open: the object key is bound.
        store.set_raw(&object("copy"), raw.clone()).await;
        assert!(matches!(
            get(&store, &key, "copy").await,
            Err(SealedObjectError::Stream(StreamError::Authentication {
                segment: 0
            }))
        ));
        // Nor with another tenant's key.
        store.set_raw(&object("o"), raw).await;
        assert!(get(&store, &data_key([2; 16]), "o").await.is_err());
    }

    #[tokio::test]
    async fn too_large_stores_nothing() {
        let store = TestStore::new(Some(7));
        let key = data_key([1; 16]);
        let input = plaintext(3 * SEGMENT);
        let error = put_sealed_with_segment_size(
            &store,
            &key,
            &object("big"),
            chunked(&input, 500),
            Some(2 * SEGMENT as u64),
            SEGMENT,
        )
        .await
        .expect_err("too large");
        assert!(
            matches!(error, SealedObjectError::TooLarge { limit } if limit == 2 * SEGMENT as u64),
            "{error:?}"
        );
        assert!(store.raw(&object("big")).await.is_none());
        // Exactly at the limit is fine.
        let receipt = put_sealed_with_segment_size(
            &store,
            &key,
            &object("big"),
            chunked(&input, 500),
            Some(3 * SEGMENT as u64),
            SEGMENT,
        )
        .await
        .expect("at the limit");
        assert_eq!(receipt.size, 3 * SEGMENT as u64);
    }

    #[tokio::test]
    async fn a_failing_body_stores_nothing() {
        let store = TestStore::new(Some(7));
        let key = data_key([1; 16]);
        let chunks: Vec<Result<Bytes, ObjectStoreError>> = vec![
            Ok(Bytes::from(plaintext(2 * SEGMENT))),
            Err(ObjectStoreError::Body("client went away".to_owned())),
        ];
        let error = put_sealed(
            &store,
            &key,
            &object("o"),
            Box::pin(futures::stream::iter(chunks)),
            None,
        )
        .await
        .expect_err("body failed");
        assert!(
            matches!(&error, SealedObjectError::Body(message) if message.contains("client went away")),
            "{error:?}"
        );
        assert!(store.raw(&object("o")).await.is_none());
    }

    #[tokio::test]
    async fn header_problems_fail_before_streaming() {
        let store = TestStore::new(Some(7));
        let key = data_key([1; 16]);
        assert!(matches!(
            get(&store, &key, "missing").await,
            Err(SealedObjectError::Store(ObjectStoreError::NotFound(_)))
        ));
        store.set_raw(&object("short"), b"RSO1".to_vec()).await;
        assert!(matches!(
            get(&store, &key, "short").await,
            Err(SealedObjectError::Stream(StreamError::Malformed))
        ));
        store.set_raw(&object("plain"), plaintext(100)).await;
        assert!(matches!(
            sealed_object_version(&store, &object("plain")).await,
            Err(SealedObjectError::Stream(StreamError::UnsupportedFormat))
        ));

        sealed_raw(&store, &key, "o", 10).await;
        let refused = get_sealed(&store, &object("o"), |version| async move {
            Err(SealedObjectError::Key(format!("key {version} destroyed")))
        })
        .await;
        assert!(
            matches!(refused, Err(SealedObjectError::Key(message)) if message == "key v1 destroyed")
        );
    }
}
