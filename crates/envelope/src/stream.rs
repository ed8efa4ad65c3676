//! Segmented object encryption (pure, no IO): the STREAM construction of Hoang,
//! Reyhanitabar, Rogaway and Vizár, laid out like Tink's streaming AEAD. An object is a
//! header followed by AES-256-GCM segments under a key derived for that one object, so it
//! can be sealed and opened in bounded memory and any truncation, reordering, dropped final
//! segment or splice from another object is detected.
//!
//! Header ([`HEADER_LEN`] bytes): magic `RSO1`, key version (u32 BE), plaintext bytes per
//! segment (u32 BE), 16-byte random salt, 7-byte random nonce prefix.
//!
//! Object key: HKDF-SHA256 with salt = the header salt over the tenant data key's material,
//! info = `residency/object/v1`, tenant, region and object key, each as a u32 BE length and
//! its bytes.
//!
//! Segment `i`: nonce = prefix (7) ‖ `i` (u32 BE) ‖ final flag (1 byte, `1` on the last
//! segment); associated data = the whole header ‖ `i` (u32 BE) ‖ final flag. Every segment
//! but the last holds exactly the segment size in plaintext; the last holds 0 to segment
//! size bytes (an empty object is one empty final segment). Each carries a 16-byte tag.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf;

use crate::objects::ObjectKey;
use crate::seal::length_prefixed;
use crate::{DataKey, KeyPurpose, KeyVersion};

/// The magic that opens every sealed object (format 1).
pub const MAGIC: [u8; 4] = *b"RSO1";

const SALT_LEN: usize = 16;
const PREFIX_LEN: usize = 7;

/// Header bytes: magic, key version, segment size, salt, nonce prefix.
pub const HEADER_LEN: usize = 4 + 4 + 4 + SALT_LEN + PREFIX_LEN;

/// GCM tag bytes after each segment's ciphertext.
pub const TAG_LEN: usize = 16;

/// Plaintext bytes per segment unless the caller chooses otherwise.
pub const DEFAULT_SEGMENT_SIZE: usize = 64 * 1024;

/// Smallest segment size accepted: smaller segments would mostly be tags.
pub const MIN_SEGMENT_SIZE: usize = 1024;

/// Largest segment size accepted: bounds the memory a reader must hold for one segment.
pub const MAX_SEGMENT_SIZE: usize = 16 * 1024 * 1024;

const DOMAIN: &[u8] = b"residency/object/v1";

/// Why a segmented object could not be sealed or opened. Never carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The header is short or invalid (version 0, segment size out of bounds), a segment is
    /// shorter than a tag, or a segment other than the last is not exactly the segment size.
    #[error("sealed object is malformed")]
    Malformed,
    /// The object does not start with the `RSO1` magic.
    #[error("unsupported sealed object format")]
    UnsupportedFormat,
    /// Sealed under another key version than the key offered.
    #[error("object sealed under key version {sealed} but key version {key} was offered")]
    KeyVersionMismatch { sealed: u32, key: u32 },
    /// A segment's tag did not verify: tampered, reordered, spliced from another object,
    /// moved to another object key, or the key is wrong.
    #[error("segment {segment} of the sealed object failed authentication")]
    Authentication { segment: u32 },
    /// The object ends without a valid final segment.
    #[error("sealed object is truncated")]
    Truncated,
    /// Bytes follow the final segment, or a segment was offered after the final one.
    #[error("data follows the final segment of the sealed object")]
    TrailingData,
    /// More than 2^32 segments.
    #[error("sealed object has too many segments")]
    TooManySegments,
    /// A segment holds more than the segment size.
    #[error("segment is larger than the segment size")]
    SegmentTooLarge,
}

/// A parsed object header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    bytes: [u8; HEADER_LEN],
    key_version: KeyVersion,
    segment_size: usize,
}

impl StreamHeader {
    fn parse(bytes: &[u8]) -> Result<Self, StreamError> {
        if bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] != MAGIC {
            return Err(StreamError::UnsupportedFormat);
        }
        let bytes: [u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .ok_or(StreamError::Malformed)?
            .try_into()
            .expect("slice of HEADER_LEN");
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let key_version = KeyVersion::new(word(4)).ok_or(StreamError::Malformed)?;
        let segment_size = usize::try_from(word(8)).map_err(|_| StreamError::Malformed)?;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(StreamError::Malformed);
        }
        Ok(Self {
            bytes,
            key_version,
            segment_size,
        })
    }

    pub fn key_version(&self) -> KeyVersion {
        self.key_version
    }

    /// Plaintext bytes per segment (all but the last).
    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    /// Ciphertext bytes of every segment but the last: segment size plus tag.
    pub fn sealed_segment_len(&self) -> usize {
        self.segment_size + TAG_LEN
    }

    pub fn as_bytes(&self) -> &[u8; HEADER_LEN] {
        &self.bytes
    }

    fn salt(&self) -> &[u8] {
        &self.bytes[12..12 + SALT_LEN]
    }

    fn nonce_prefix(&self) -> &[u8] {
        &self.bytes[12 + SALT_LEN..]
    }
}

/// State shared by sealer and opener: the object key and where in the stream we are.
#[derive(Debug)]
struct Segments {
    header: StreamHeader,
    key: LessSafeKey,
    /// Index of the next segment; `None` once the final segment is done.
    next: Option<u32>,
}

impl Segments {
    fn new(key: &DataKey, object: &ObjectKey, header: StreamHeader) -> Self {
        assert_eq!(
            key.purpose(),
            KeyPurpose::Data,
            "objects are sealed with a data key, not an index key"
        );
        let info = length_prefixed(&[
            DOMAIN,
            key.tenant().as_str().as_bytes(),
            key.region().as_str().as_bytes(),
            object.as_str().as_bytes(),
        ]);
        let info = [info.as_slice()];
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, header.salt()).extract(key.material().expose());
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .expect("32 bytes is within HKDF-SHA256's output limit");
        Self {
            header,
            key: LessSafeKey::new(UnboundKey::from(okm)),
            next: Some(0),
        }
    }

    /// Index of the next segment, or why there is none.
    fn index(&self, final_segment: bool) -> Result<u32, StreamError> {
        let index = self.next.ok_or(StreamError::TrailingData)?;
        if !final_segment && index == u32::MAX {
            // The final segment would need index 2^32.
            return Err(StreamError::TooManySegments);
        }
        Ok(index)
    }

    fn advance(&mut self, index: u32, final_segment: bool) {
        self.next = if final_segment { None } else { Some(index + 1) };
    }

    fn nonce(&self, index: u32, final_segment: bool) -> Nonce {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..PREFIX_LEN].copy_from_slice(self.header.nonce_prefix());
        nonce[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
        nonce[NONCE_LEN - 1] = u8::from(final_segment);
        Nonce::assume_unique_for_key(nonce)
    }

    fn aad(&self, index: u32, final_segment: bool) -> [u8; HEADER_LEN + 5] {
        let mut aad = [0u8; HEADER_LEN + 5];
        aad[..HEADER_LEN].copy_from_slice(self.header.as_bytes());
        aad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&index.to_be_bytes());
        aad[HEADER_LEN + 4] = u8::from(final_segment);
        aad
    }
}

/// Seals one object segment by segment, in order.
#[derive(Debug)]
pub struct SegmentSealer {
    segments: Segments,
}

impl SegmentSealer {
    /// A sealer for `object` with a fresh random salt and nonce prefix. `segment_size` must
    /// be within [`MIN_SEGMENT_SIZE`]..=[`MAX_SEGMENT_SIZE`] (a programming error otherwise).
    pub fn new(key: &DataKey, object: &ObjectKey, segment_size: usize) -> Self {
        assert!(
            (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size),
            "segment size must be between 1 KiB and 16 MiB"
        );
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..4].copy_from_slice(&MAGIC);
        bytes[4..8].copy_from_slice(&key.version().get().to_be_bytes());
        let size = u32::try_from(segment_size).expect("at most 16 MiB");
        bytes[8..12].copy_from_slice(&size.to_be_bytes());
        aws_lc_rs::rand::fill(&mut bytes[12..]).expect("the system RNG does not fail");
        let header = StreamHeader {
            bytes,
            key_version: key.version(),
            segment_size,
        };
        Self {
            segments: Segments::new(key, object, header),
        }
    }

    /// The header to write before the first segment.
    pub fn header(&self) -> &[u8] {
        self.segments.header.as_bytes()
    }

    pub fn segment_size(&self) -> usize {
        self.segments.header.segment_size
    }

    /// Seals the next segment: exactly the segment size unless `final_segment`, in which
    /// case 0 to segment size bytes. Returns ciphertext followed by the tag.
    pub fn seal_segment(
        &mut self,
        plaintext: &[u8],
        final_segment: bool,
    ) -> Result<Vec<u8>, StreamError> {
        let index = self.segments.index(final_segment)?;
        let size = self.segment_size();
        if plaintext.len() > size {
            return Err(StreamError::SegmentTooLarge);
        }
        if !final_segment && plaintext.len() != size {
            return Err(StreamError::Malformed);
        }
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self
            .segments
            .key
            .seal_in_place_separate_tag(
                self.segments.nonce(index, final_segment),
                Aad::from(self.segments.aad(index, final_segment)),
                &mut out,
            )
            .expect("AES-GCM seals any segment of at most 16 MiB");
        out.extend_from_slice(tag.as_ref());
        self.segments.advance(index, final_segment);
        Ok(out)
    }

    /// Whether the final segment has been sealed.
    pub fn is_finished(&self) -> bool {
        self.segments.next.is_none()
    }
}

/// Opens one object segment by segment, in order.
#[derive(Debug)]
pub struct SegmentOpener {
    segments: Segments,
}

impl SegmentOpener {
    /// Parses the header at the start of `bytes` (which may continue with segments).
    pub fn parse_header(bytes: &[u8]) -> Result<StreamHeader, StreamError> {
        StreamHeader::parse(bytes)
    }

    /// An opener for `object`; `key` must be the version named in the header.
    pub fn new(
        key: &DataKey,
        object: &ObjectKey,
        header: StreamHeader,
    ) -> Result<Self, StreamError> {
        if header.key_version != key.version() {
            return Err(StreamError::KeyVersionMismatch {
                sealed: header.key_version.get(),
                key: key.version().get(),
            });
        }
        Ok(Self {
            segments: Segments::new(key, object, header),
        })
    }

    pub fn header(&self) -> &StreamHeader {
        &self.segments.header
    }

    /// Opens the next segment (ciphertext followed by tag). On failure nothing advances,
    /// so the caller may retry the same bytes with the other `final_segment` to tell a
    /// truncated object from a tampered one.
    pub fn open_segment(
        &mut self,
        ciphertext: &[u8],
        final_segment: bool,
    ) -> Result<Vec<u8>, StreamError> {
        let index = self.segments.index(final_segment)?;
        let full = self.segments.header.sealed_segment_len();
        if ciphertext.len() > full {
            return Err(StreamError::SegmentTooLarge);
        }
        if ciphertext.len() < TAG_LEN || (!final_segment && ciphertext.len() != full) {
            return Err(StreamError::Malformed);
        }
        let (sealed, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
        let mut out = sealed.to_vec();
        self.segments
            .key
            .open_in_place_separate_tag(
                self.segments.nonce(index, final_segment),
                Aad::from(self.segments.aad(index, final_segment)),
                tag,
                &mut out,
            )
            .map_err(|_| StreamError::Authentication { segment: index })?;
        self.segments.advance(index, final_segment);
        Ok(out)
    }

    /// Whether the final segment has been opened.
    pub fn is_finished(&self) -> bool {
        self.segments.next.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyMaterial;
    use model::{RegionId, TenantId};
    use proptest::prelude::*;

    const SEGMENT: usize = MIN_SEGMENT_SIZE;

    fn key_with(tenant: [u8; 16], version: KeyVersion) -> DataKey {
        DataKey::new(
            TenantId::from_random_bytes(tenant),
            RegionId::parse("eu-central-1").expect("valid region"),
            KeyPurpose::Data,
            version,
            KeyMaterial::from_slice(&[3; 32]).expect("32 bytes"),
        )
    }

    fn object(name: &str) -> ObjectKey {
        ObjectKey::parse(name).expect("valid object key")
    }

    /// Seals `plaintext` into header and segments.
    fn seal_all(key: &DataKey, name: &str, plaintext: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut sealer = SegmentSealer::new(key, &object(name), SEGMENT);
        let mut segments = Vec::new();
        let mut chunks: Vec<&[u8]> = plaintext.chunks(SEGMENT).collect();
        // An exact multiple still ends with a final segment, possibly empty.
        if plaintext.len().is_multiple_of(SEGMENT) {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            segments.push(sealer.seal_segment(chunk, i == last).expect("seal"));
        }
        assert!(sealer.is_finished());
        (sealer.header().to_vec(), segments)
    }

    fn open_all(
        key: &DataKey,
        name: &str,
        header: &[u8],
        segments: &[Vec<u8>],
    ) -> Result<Vec<u8>, StreamError> {
        let header = SegmentOpener::parse_header(header)?;
        let mut opener = SegmentOpener::new(key, &object(name), header)?;
        let mut out = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            out.extend(opener.open_segment(segment, i + 1 == segments.len())?);
        }
        if !opener.is_finished() {
            return Err(StreamError::Truncated);
        }
        Ok(out)
    }

    #[test]
    fn header_layout() {
        let key = key_with([1; 16], KeyVersion::FIRST.next());
        let sealer = SegmentSealer::new(&key, &object("a/b"), DEFAULT_SEGMENT_SIZE);
        let header = sealer.header();
        assert_eq!(header.len(), HEADER_LEN);
        assert_eq!(HEADER_LEN, 35);
        assert_eq!(&header[..4], b"RSO1");
        assert_eq!(&header[4..8], &2u32.to_be_bytes());
        assert_eq!(&header[8..12], &(64 * 1024u32).to_be_bytes());
        let parsed = SegmentOpener::parse_header(header).expect("parses");
        assert_eq!(parsed.key_version().get(), 2);
        assert_eq!(parsed.segment_size(), DEFAULT_SEGMENT_SIZE);
        // Salt and prefix are random per object.
        let other = SegmentSealer::new(&key, &object("a/b"), DEFAULT_SEGMENT_SIZE);
        assert_ne!(&other.header()[12..], &header[12..]);
    }

    #[test]
    fn round_trips_at_the_edges() {
        let key = key_with([1; 16], KeyVersion::FIRST);
        for len in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            3 * SEGMENT + 17,
        ] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (header, segments) = seal_all(&key, "o", &plaintext);
            assert_eq!(segments.len(), len / SEGMENT + 1);
            assert_eq!(
                open_all(&key, "o", &header, &segments).expect("opens"),
                plaintext,
                "{len}"
            );
        }
    }

    #[test]
    fn truncation_reordering_and_splicing_are_detected() {
        let key = key_with([1; 16], KeyVersion::FIRST);
        let plaintext = vec![7u8; 3 * SEGMENT + 5];
        let (header, segments) = seal_all(&key, "o", &plaintext);

        // Dropping the final segment: the last remaining one is not final.
        let truncated = &segments[..3];
        assert_eq!(
            open_all(&key, "o", &header, truncated),
            Err(StreamError::Authentication { segment: 2 })
        );
        let header_parsed = SegmentOpener::parse_header(&header).expect("parses");
        let mut opener = SegmentOpener::new(&key, &object("o"), header_parsed).expect("opener");
        for segment in &segments[..2] {
            opener.open_segment(segment, false).expect("opens");
        }
        assert!(opener.open_segment(&segments[2], true).is_err());
        // Nothing advanced: the same bytes open as a non-final segment.
        opener
            .open_segment(&segments[2], false)
            .expect("opens as non-final");
        assert!(!opener.is_finished());

        let mut swapped = segments.clone();
        swapped.swap(0, 1);
        assert_eq!(
            open_all(&key, "o", &header, &swapped),
            Err(StreamError::Authentication { segment: 0 })
        );

        // A segment from another object of the same tenant.
        let (other_header, other_segments) = seal_all(&key, "o", &plaintext);
        let mut spliced = segments.clone();
        spliced[1] = other_segments[1].clone();
        assert_eq!(
            open_all(&key, "o", &header, &spliced),
            Err(StreamError::Authentication { segment: 1 })
        );
        assert!(open_all(&key, "o", &other_header, &segments).is_err());

        // Another object key, tenant, or tampered header.
        assert!(open_all(&key, "p", &header, &segments).is_err());
        assert!(
            open_all(
                &key_with([2; 16], KeyVersion::FIRST),
                "o",
                &header,
                &segments
            )
            .is_err()
        );
        let mut tampered = header.clone();
        tampered[20] ^= 1;
        assert!(open_all(&key, "o", &tampered, &segments).is_err());
    }

    #[test]
    fn order_and_sizes_are_enforced() {
        let key = key_with([1; 16], KeyVersion::FIRST);
        let mut sealer = SegmentSealer::new(&key, &object("o"), SEGMENT);
        assert_eq!(
            sealer.seal_segment(&[0; SEGMENT + 1], true),
            Err(StreamError::SegmentTooLarge)
        );
        assert_eq!(
            sealer.seal_segment(&[0; SEGMENT - 1], false),
            Err(StreamError::Malformed)
        );
        let last = sealer.seal_segment(b"tail", true).expect("final");
        assert_eq!(
            sealer.seal_segment(b"more", true),
            Err(StreamError::TrailingData)
        );

        let header = SegmentOpener::parse_header(sealer.header()).expect("parses");
        let mut opener = SegmentOpener::new(&key, &object("o"), header).expect("opener");
        assert_eq!(
            opener.open_segment(&last[..TAG_LEN - 1], true),
            Err(StreamError::Malformed)
        );
        assert_eq!(
            opener.open_segment(&last, false),
            Err(StreamError::Malformed)
        );
        assert_eq!(
            opener.open_segment(&[0; SEGMENT + TAG_LEN + 1], true),
            Err(StreamError::SegmentTooLarge)
        );
        assert_eq!(opener.open_segment(&last, true).expect("opens"), b"tail");
        assert_eq!(
            opener.open_segment(&last, true),
            Err(StreamError::TrailingData)
        );
    }

    #[test]
    fn headers_are_checked() {
        let key = key_with([1; 16], KeyVersion::FIRST);
        let sealer = SegmentSealer::new(&key, &object("o"), SEGMENT);
        let good = sealer.header().to_vec();
        assert_eq!(
            SegmentOpener::parse_header(&good[..HEADER_LEN - 1]),
            Err(StreamError::Malformed)
        );
        assert_eq!(
            SegmentOpener::parse_header(b"RSO2rest"),
            Err(StreamError::UnsupportedFormat)
        );
        let mut zero_version = good.clone();
        zero_version[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(
            SegmentOpener::parse_header(&zero_version),
            Err(StreamError::Malformed)
        );
        for size in [MIN_SEGMENT_SIZE as u32 - 1, MAX_SEGMENT_SIZE as u32 + 1] {
            let mut bad = good.clone();
            bad[8..12].copy_from_slice(&size.to_be_bytes());
            assert_eq!(
                SegmentOpener::parse_header(&bad),
                Err(StreamError::Malformed)
            );
        }
        let header = SegmentOpener::parse_header(&good).expect("parses");
        let v2 = key_with([1; 16], KeyVersion::FIRST.next());
        assert_eq!(
            SegmentOpener::new(&v2, &object("o"), header).err(),
            Some(StreamError::KeyVersionMismatch { sealed: 1, key: 2 })
        );
    }

    #[test]
    #[should_panic(expected = "segment size must be between")]
    fn tiny_segments_are_a_bug() {
        SegmentSealer::new(&key_with([1; 16], KeyVersion::FIRST), &object("o"), 16);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_flipped_bit_is_detected(
            len in 0..3 * SEGMENT,
            position in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let key = key_with([1; 16], KeyVersion::FIRST);
            let (header, segments) = seal_all(&key, "o", &vec![1u8; len]);
            let mut bytes = header.clone();
            for segment in &segments {
                bytes.extend_from_slice(segment);
            }
            let at = position.index(bytes.len());
            bytes[at] ^= 1 << bit;
            let (header, rest) = bytes.split_at(HEADER_LEN);
            let segments: Vec<Vec<u8>> = rest.chunks(SEGMENT + TAG_LEN).map(<[u8]>::to_vec).collect();
            prop_assert!(open_all(&key, "o", header, &segments).is_err());
        }
    }
}
