//! Signed forwarding: the forwarding node signs (HMAC-SHA256, aws-lc-rs) the method, path
//! and query, a timestamp, the entry region, the target region, the client address and
//! the request id with the inter-region key, and sends them in one `x-residency-forwarded`
//! header (the request id in `x-request-id`); the receiving node trusts them only with a
//! valid, fresh signature made for its own region. The key never appears in `Debug`
//! output or errors.

mod client_address;
pub(crate) use client_address::ClientAddress;

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, hmac};
use http::HeaderValue;
use http::header::Entry;
use http::request::Parts;
use model::RegionId;

use crate::{headers, names};

/// How far a forwarding timestamp may be from the receiver's clock, either way.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(30);

/// Shortest accepted key: HMAC-SHA256 gains nothing past 64 bytes and is weak below 32.
pub const MIN_KEY_LEN: usize = 32;

/// Separates this use of the key from any other, and this message from v1's, which did
/// not cover the target region (a v1 signature verifies as nothing here).
const DOMAIN: &[u8] = b"residency-forward-v2\n";

/// What the forwarding header opens with: the version of its layout and of [`DOMAIN`].
const VERSION: &str = "v2";

/// Bytes of an HMAC-SHA256 tag.
const TAG_LEN: usize = 32;

/// The inter-region forwarding key. Its `Debug` is redacted and it has no accessor for
/// the key bytes: it only signs and verifies.
#[derive(Clone)]
pub struct ForwardingKey(hmac::Key);

impl fmt::Debug for ForwardingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForwardingKey(<redacted>)")
    }
}

/// Why a forwarding key was refused. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("forwarding key is {len} bytes; at least {MIN_KEY_LEN} are required")]
    TooShort { len: usize },
}

impl ForwardingKey {
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: key.len() });
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, key)))
    }

    /// The key named in the catalogue, resolved from its [`catalog::SecretRef`]; its UTF-8
    /// bytes are the HMAC key.
    pub fn from_secret(secret: &catalog::Secret) -> Result<Self, KeyError> {
        Self::new(secret.expose().as_bytes())
    }
}

/// What a forwarding node vouches for about a request it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The region whose endpoint the client called.
    pub entry_region: RegionId,
    /// The client's address as the entry region saw it (an IP address, or `unknown`).
    pub client_address: String,
    /// The request id, also sent as `x-request-id`.
    pub request_id: String,
}

/// What a forwarding node vouches for, borrowed from the request it forwards, so that
/// signing copies nothing it does not send.
#[derive(Debug, Clone, Copy)]
pub struct Vouching<'a> {
    pub entry_region: &'a RegionId,
    pub client_address: &'a str,
    pub request_id: &'a str,
}

/// The same facts as a [`Forwarded`], borrowed, as [`ForwardSigner::sign`] takes them.
impl<'a> From<&'a Forwarded> for Vouching<'a> {
    fn from(forwarded: &'a Forwarded) -> Self {
        Vouching {
            entry_region: &forwarded.entry_region,
            client_address: &forwarded.client_address,
            request_id: &forwarded.request_id,
        }
    }
}

/// The forwarding facts of a request whose signature verified, borrowed from its headers.
/// The entry region is well-formed but not parsed into a [`RegionId`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verified<'a> {
    pub(crate) entry_region: &'a str,
    pub(crate) client_address: &'a str,
    pub(crate) request_id: &'a str,
}

/// Why forwarding headers were not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("no forwarding header")]
    Missing,
    #[error("forwarding {0} is missing or malformed")]
    Malformed(&'static str),
    #[error(
        "forwarding timestamp is {skew_secs} s away from now, more than the {max_secs} s allowed"
    )]
    Stale { skew_secs: u64, max_secs: u64 },
    #[error("forwarding signature does not verify")]
    BadSignature,
}

impl ForwardError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::Stale { .. } => "stale",
            Self::BadSignature => "bad_signature",
        }
    }
}

/// Signs forwarded requests with the current key; verifies with the current key or,
/// during a rotation, the previous one.
#[derive(Debug, Clone)]
pub struct ForwardSigner {
    current: ForwardingKey,
    previous: Option<ForwardingKey>,
    max_skew: Duration,
}

impl ForwardSigner {
    pub fn new(key: ForwardingKey, max_skew: Duration) -> Self {
        Self {
            current: key,
            previous: None,
            max_skew,
        }
    }

    /// Also accepts signatures made with `key` (the key being rotated out). Signing always
    /// uses the current key, so a rotation is: every node verifies with both, then every
    /// node signs with the new one, then the old one is dropped.
    pub fn with_previous(mut self, key: ForwardingKey) -> Self {
        self.previous = Some(key);
        self
    }

    pub fn max_skew(&self) -> Duration {
        self.max_skew
    }

    /// Sets the forwarding header, signed for `target` (the region it is sent to) and
    /// stamped now, and the request id on `request`. Values that cannot be header values
    /// have their offending characters replaced by `_`.
    pub fn sign<'a>(
        &self,
        request: &mut Parts,
        forwarded: impl Into<Vouching<'a>>,
        target: &RegionId,
    ) {
        self.sign_at(request, forwarded, target, SystemTime::now());
    }

    /// [`ForwardSigner::sign`] with an explicit clock (tests of expiry).
    pub fn sign_at<'a>(
        &self,
        request: &mut Parts,
        forwarded: impl Into<Vouching<'a>>,
        target: &RegionId,
        now: SystemTime,
    ) {
        let forwarded: Vouching<'a> = forwarded.into();
        let mut at_digits = itoa::Buffer::new();
        let at = at_digits.format(unix_seconds(now));
        let client = address_safe(forwarded.client_address);
        let request_id = header_safe(forwarded.request_id);
        let entry = forwarded.entry_region.as_str();
        let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let tag = tag(
            &self.current,
            [
                request.method.as_str().as_bytes(),
                path.as_bytes(),
                at.as_bytes(),
                entry.as_bytes(),
                target.as_str().as_bytes(),
                client.as_bytes(),
                request_id.as_bytes(),
            ],
        );
        let mut signature = [0u8; 2 * TAG_LEN];
        hex::encode_to_slice(tag.as_ref(), &mut signature)
            .expect("the buffer holds the hex of a tag");
        let signature = std::str::from_utf8(&signature).expect("hex digits are ASCII");
        let mut text = String::with_capacity(
            VERSION.len() + at.len() + entry.len() + client.len() + signature.len() + 20,
        );
        for piece in [
            VERSION, ";at=", at, ";entry=", entry, ";for=", &client, ";sig=", signature,
        ] {
            text.push_str(piece);
        }
        let h = &mut request.headers;
        h.insert(names::FORWARDED, never_indexed(value(text)));
        // The signed id must be the one sent, once; usually the request already carries
        // exactly that, and it is only marked.
        match h.entry(names::REQUEST_ID) {
            Entry::Occupied(mut carried)
                if carried.iter().count() == 1
                    && carried.get().as_bytes() == request_id.as_bytes() =>
            {
                carried.get_mut().set_sensitive(true);
            }
            Entry::Occupied(mut carried) => {
                carried.insert(never_indexed(value(request_id.into_owned())));
            }
            Entry::Vacant(slot) => {
                slot.insert(never_indexed(value(request_id.into_owned())));
            }
        }
    }

    /// The forwarding facts of a request whose `x-residency-forwarded` header carries a
    /// valid signature made for `local` (this node's region) within `max_skew` of `now`.
    /// The tag is compared in constant time.
    pub fn verify(
        &self,
        parts: &Parts,
        local: &RegionId,
        now: SystemTime,
    ) -> Result<Forwarded, ForwardError> {
        let verified = self.verify_in_place(parts, local, now)?;
        Ok(Forwarded {
            entry_region: RegionId::parse(verified.entry_region)
                .map_err(|_| ForwardError::Malformed("entry region"))?,
            client_address: verified.client_address.to_owned(),
            request_id: verified.request_id.to_owned(),
        })
    }

    /// [`ForwardSigner::verify`] without copying: the facts are borrowed from `parts`.
    pub(crate) fn verify_in_place<'p>(
        &self,
        parts: &'p Parts,
        local: &RegionId,
        now: SystemTime,
    ) -> Result<Verified<'p>, ForwardError> {
        let h = &parts.headers;
        let Some(header) = h.get(names::FORWARDED) else {
            return Err(ForwardError::Missing);
        };
        // UTF-8 is checked a word at a time; every field is then checked by its own parse
        // (digits, a region id, hex), and the client address by the signature.
        let fields = std::str::from_utf8(header.as_bytes())
            .ok()
            .and_then(ForwardingFields::parse)
            .ok_or(ForwardError::Malformed(headers::FORWARDED))?;
        let mut signature = [0u8; TAG_LEN];
        hex::decode_to_slice(fields.signature, &mut signature)
            .map_err(|_| ForwardError::Malformed("signature"))?;
        if !RegionId::is_well_formed(fields.entry) {
            return Err(ForwardError::Malformed("entry region"));
        }
        let at: u64 = fields
            .at
            .parse()
            .map_err(|_| ForwardError::Malformed("timestamp"))?;
        let request_id = h
            .get(names::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .ok_or(ForwardError::Malformed(headers::REQUEST_ID))?;

        let now_secs = unix_seconds(now);
        let skew = now_secs.abs_diff(at);
        if skew > self.max_skew.as_secs() {
            return Err(ForwardError::Stale {
                skew_secs: skew,
                max_secs: self.max_skew.as_secs(),
            });
        }

        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let signed = [
            parts.method.as_str().as_bytes(),
            path.as_bytes(),
            fields.at.as_bytes(),
            fields.entry.as_bytes(),
            local.as_str().as_bytes(),
            fields.client.as_bytes(),
            request_id.as_bytes(),
        ];
        let matches = |key: &ForwardingKey| {
            constant_time::verify_slices_are_equal(tag(key, signed).as_ref(), &signature).is_ok()
        };
        let valid = matches(&self.current) || self.previous.as_ref().is_some_and(matches);
        if !valid {
            return Err(ForwardError::BadSignature);
        }
        Ok(Verified {
            entry_region: fields.entry,
            client_address: fields.client,
            request_id,
        })
    }
}

/// The parts of an `x-residency-forwarded` value, `v2;at=…;entry=…;for=…;sig=…`, in that
/// order and nothing else.
struct ForwardingFields<'a> {
    at: &'a str,
    entry: &'a str,
    client: &'a str,
    signature: &'a str,
}

impl<'a> ForwardingFields<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let mut rest = text.strip_prefix(VERSION)?;
        // `;name=value`, the value running to the next `;` or the end.
        let mut field = |name: &str| -> Option<&'a str> {
            let value = rest
                .strip_prefix(';')?
                .strip_prefix(name)?
                .strip_prefix('=')?;
            let end = value.bytes().position(|b| b == b';').unwrap_or(value.len());
            let (value, tail) = value.split_at(end);
            rest = tail;
            Some(value)
        };
        let fields = Self {
            at: field("at")?,
            entry: field("entry")?,
            client: field("for")?,
            signature: field("sig")?,
        };
        rest.is_empty().then_some(fields)
    }
}

/// Fields of the signed message.
const FIELDS: usize = 7;

/// The tag of the signed message: a domain tag, then each field (method, path and query,
/// timestamp, entry region, target region, client address, request id) as a 4-byte
/// big-endian length and its bytes, so that no two different field lists share an
/// encoding.
fn tag(key: &ForwardingKey, fields: [&[u8]; FIELDS]) -> hmac::Tag {
    // The context (several hundred bytes) stays where it is made: the writer borrows it,
    // as moving it into the writer and out again copies it each time.
    let mut context = hmac::Context::with_key(&key.0);
    let mut message = MessageWriter {
        context: &mut context,
        buffer: [0; MESSAGE_BUFFER],
        used: 0,
    };
    message.put(DOMAIN);
    for field in fields {
        // Header values and paths are far below 4 GiB; saturate rather than wrap anyway.
        message.put_length(u32::try_from(field.len()).unwrap_or(u32::MAX));
        message.put(field);
    }
    message.flush();
    context.sign()
}

/// Bytes of the signed message gathered before they go to the HMAC: a usual message (a
/// path, an address, a request id) fits, and then takes one update instead of thirteen.
const MESSAGE_BUFFER: usize = 512;

/// Feeds the HMAC through a stack buffer; longer messages go through in pieces, with the
/// same result (HMAC is over the concatenation).
struct MessageWriter<'c> {
    context: &'c mut hmac::Context,
    buffer: [u8; MESSAGE_BUFFER],
    used: usize,
}

impl MessageWriter<'_> {
    /// Hands what is gathered to the HMAC.
    fn flush(&mut self) {
        self.context.update(&self.buffer[..self.used]);
        self.used = 0;
    }

    /// A field's length, as 4 bytes big-endian: a fixed-size copy, not a call to `memcpy`.
    fn put_length(&mut self, n: u32) {
        if self.used + 4 > MESSAGE_BUFFER {
            self.flush();
        }
        let end = self.used + 4;
        if let Some(slot) = self.buffer.get_mut(self.used..end) {
            slot.copy_from_slice(&n.to_be_bytes());
            self.used = end;
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        if self.used + bytes.len() > MESSAGE_BUFFER {
            self.flush();
            if bytes.len() > MESSAGE_BUFFER {
                self.context.update(bytes);
                return;
            }
        }
        self.buffer[self.used..self.used + bytes.len()].copy_from_slice(bytes);
        self.used += bytes.len();
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `s` with every character that `HeaderValue::from_str` refuses replaced by `_`.
fn header_safe(s: &str) -> Cow<'_, str> {
    replace_unless(s, |c| c == '\t' || (' '..='~').contains(&c))
}

/// `address` with every character that cannot be part of an IP address (v4, v6, a zone)
/// or `unknown` replaced by `_`, so that it cannot end its field of the forwarding header.
fn address_safe(address: &str) -> Cow<'_, str> {
    replace_unless(address, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '_' | '%')
    })
}

/// `s` with every character that is not `ok` replaced by `_`; borrowed when none is.
fn replace_unless(s: &str, ok: impl Fn(char) -> bool) -> Cow<'_, str> {
    if s.chars().all(&ok) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().map(|c| if ok(c) { c } else { '_' }).collect())
    }
}

/// `value` marked sensitive, which HTTP/2 sends as a literal never indexed (RFC 7541
/// §6.2.3). Both values the signer sets differ on every request: indexed, each would
/// push an entry out of both ends' HPACK tables, so that the headers that do repeat
/// (`via`, the authority, a client's user agent) were evicted and sent in full again,
/// and the per-request values would cost a table insert and eviction on each side. Never
/// indexed, the forwarding header (the client's address, a signature) also cannot be
/// probed through the table's compression by whatever shares the connection.
fn never_indexed(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

fn value(text: String) -> HeaderValue {
    // Every caller passes `header_safe` or `address_safe` output, region ids, digits and
    // hex.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> ForwardingKey {
        ForwardingKey::new(&[byte; 32]).expect("key")
    }

    fn parts(method: &str, uri: &str) -> Parts {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    fn forwarded() -> Forwarded {
        Forwarded {
            entry_region: region("eu-west-1"),
            client_address: "203.0.113.9".to_owned(),
            request_id: "req-1".to_owned(),
        }
    }

    fn region(id: &str) -> RegionId {
        RegionId::parse(id).expect("region")
    }

    fn home() -> RegionId {
        region("us-east-1")
    }

    /// The documented encoding, fed to HMAC in one piece: what every node, of any version,
    /// must compute for the same request.
    fn reference_tag(key_byte: u8, fields: [&[u8]; FIELDS]) -> Vec<u8> {
        let mut message = b"residency-forward-v2\n".to_vec();
        for field in fields {
            message.extend_from_slice(&u32::try_from(field.len()).expect("len").to_be_bytes());
            message.extend_from_slice(field);
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[key_byte; 32]);
        hmac::sign(&key, &message).as_ref().to_vec()
    }

    #[test]
    fn the_tag_is_the_hmac_of_the_length_prefixed_fields_whatever_their_size() {
        let long_path = format!("/v1/tenants/t/records?q={}", "a".repeat(700));
        let near_edge = "b".repeat(MESSAGE_BUFFER - 70);
        for fields in [
            [
                &b"GET"[..],
                b"/v1/tenants/t",
                b"1700000000",
                b"eu-west-1",
                b"us-east-1",
                b"203.0.113.9",
                b"req-1",
            ],
            [
                b"POST",
                long_path.as_bytes(),
                b"1700000000",
                b"eu-west-1",
                b"us-east-1",
                b"::1",
                b"r",
            ],
            [
                b"PUT",
                near_edge.as_bytes(),
                b"1700000000",
                b"eu-west-1",
                b"us-east-1",
                b"198.51.100.7",
                b"id-2",
            ],
            [b"GET", b"/", b"", b"", b"", b"", b""],
        ] {
            assert_eq!(
                tag(&key(7), fields).as_ref(),
                reference_tag(7, fields).as_slice()
            );
        }
    }

    #[test]
    fn a_signed_request_carries_the_signed_request_id_exactly_once() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let now = SystemTime::now();
        for carried in [
            &[][..],
            &["req-1"],
            &["req-other"],
            &["req-1", "req-1"],
            &["req-1", "x"],
        ] {
            let mut p = parts("GET", "/v1/tenants/x");
            for id in carried {
                p.headers
                    .append(names::REQUEST_ID, HeaderValue::from_static(id));
            }
            signer.sign_at(&mut p, &forwarded(), &home(), now);
            let ids: Vec<_> = p.headers.get_all(names::REQUEST_ID).iter().collect();
            assert_eq!(ids, ["req-1"], "carried {carried:?}");
            // Both per-request values go over HTTP/2 as literals never indexed.
            assert!(ids[0].is_sensitive(), "carried {carried:?}");
            assert!(p.headers[names::FORWARDED].is_sensitive());
            let verified = signer.verify(&p, &home(), now).expect("verifies");
            assert_eq!(verified.request_id, "req-1");
        }
    }

    #[test]
    fn a_signed_request_carries_one_forwarding_header_and_verifies_at_its_target() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let mut p = parts("POST", "/v1/tenants/x/records?q=1");
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        signer.sign_at(&mut p, &forwarded(), &home(), at);
        let header = p.headers[headers::FORWARDED].to_str().expect("text");
        let expected_tag = reference_tag(
            1,
            [
                b"POST",
                b"/v1/tenants/x/records?q=1",
                b"1700000000",
                b"eu-west-1",
                b"us-east-1",
                b"203.0.113.9",
                b"req-1",
            ],
        );
        assert_eq!(
            header,
            format!(
                "v2;at=1700000000;entry=eu-west-1;for=203.0.113.9;sig={}",
                hex::encode(expected_tag)
            )
        );
        assert_eq!(p.headers[headers::REQUEST_ID], "req-1");
        assert_eq!(signer.verify(&p, &home(), at), Ok(forwarded()));
    }

    #[test]
    fn a_signature_made_for_one_region_does_not_verify_at_another() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let mut p = parts("GET", "/v1/tenants/a");
        signer.sign(&mut p, &forwarded(), &home());
        assert_eq!(
            signer.verify(&p, &region("ap-south-1"), SystemTime::now()),
            Err(ForwardError::BadSignature)
        );
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let mut p = parts("GET", "/v1/tenants/a?x=1");
        signer.sign(&mut p, &forwarded(), &home());
        let now = SystemTime::now();
        assert!(signer.verify(&p, &home(), now).is_ok());

        let mut other = p.clone();
        other.method = http::Method::DELETE;
        assert_eq!(
            signer.verify(&other, &home(), now),
            Err(ForwardError::BadSignature)
        );
        let mut other = p.clone();
        other.uri = "/v1/tenants/a?x=2".parse().expect("uri");
        assert_eq!(
            signer.verify(&other, &home(), now),
            Err(ForwardError::BadSignature)
        );
        let mut other = p.clone();
        other
            .headers
            .insert(headers::REQUEST_ID, HeaderValue::from_static("req-2"));
        assert_eq!(
            signer.verify(&other, &home(), now),
            Err(ForwardError::BadSignature)
        );
        let header = p.headers[headers::FORWARDED].to_str().expect("text");
        for (from, to) in [
            ("for=203.0.113.9", "for=198.51.100.1"),
            ("entry=eu-west-1", "entry=us-east-1"),
        ] {
            let mut other = p.clone();
            let forged = header.replace(from, to);
            assert_ne!(forged, header);
            other.headers.insert(
                headers::FORWARDED,
                HeaderValue::from_str(&forged).expect("value"),
            );
            assert_eq!(
                signer.verify(&other, &home(), now),
                Err(ForwardError::BadSignature),
                "{to}"
            );
        }
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let signer = ForwardSigner::new(key(1), Duration::from_secs(30));
        let mut p = parts("GET", "/");
        let now = SystemTime::now();
        let f = forwarded();
        signer.sign_at(&mut p, &f, &home(), now - Duration::from_secs(31));
        assert!(matches!(
            signer.verify(&p, &home(), now),
            Err(ForwardError::Stale { .. })
        ));
        signer.sign_at(&mut p, &f, &home(), now + Duration::from_secs(31));
        assert!(matches!(
            signer.verify(&p, &home(), now),
            Err(ForwardError::Stale { .. })
        ));
        signer.sign_at(&mut p, &f, &home(), now - Duration::from_secs(29));
        assert!(signer.verify(&p, &home(), now).is_ok());
    }

    #[test]
    fn the_previous_key_verifies_during_rotation() {
        let old = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let rotating = ForwardSigner::new(key(2), DEFAULT_MAX_SKEW).with_previous(key(1));
        let new_only = ForwardSigner::new(key(2), DEFAULT_MAX_SKEW);
        let mut p = parts("GET", "/");
        old.sign(&mut p, &forwarded(), &home());
        assert!(rotating.verify(&p, &home(), SystemTime::now()).is_ok());
        assert_eq!(
            new_only.verify(&p, &home(), SystemTime::now()),
            Err(ForwardError::BadSignature)
        );
    }

    #[test]
    fn missing_and_malformed_headers() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let now = SystemTime::now();
        assert_eq!(
            signer.verify(&parts("GET", "/"), &home(), now),
            Err(ForwardError::Missing)
        );
        let mut signed = parts("GET", "/");
        signer.sign(&mut signed, &forwarded(), &home());
        let header = signed.headers[headers::FORWARDED]
            .to_str()
            .expect("text")
            .to_owned();
        let sig = header.rsplit_once("sig=").expect("signature").1;
        for (forged, error) in [
            (header.replace("v2;", "v1;"), headers::FORWARDED),
            (header.replace(";entry=", ";region="), headers::FORWARDED),
            (format!("{header};extra=1"), headers::FORWARDED),
            (format!("{header};"), headers::FORWARDED),
            (header.replace("v2;", "v22;"), headers::FORWARDED),
            (header.replace("v2;at=", "v2at="), headers::FORWARDED),
            (header.replace(";for=", ";for"), headers::FORWARDED),
            (
                header.replace(
                    ";entry=eu-west-1;for=203.0.113.9",
                    ";for=203.0.113.9;entry=eu-west-1",
                ),
                headers::FORWARDED,
            ),
            (header.replace(sig, "zz"), "signature"),
            (
                header.replace("entry=eu-west-1", "entry=EU"),
                "entry region",
            ),
        ] {
            let mut p = signed.clone();
            p.headers.insert(
                headers::FORWARDED,
                HeaderValue::from_str(&forged).expect("value"),
            );
            assert_eq!(
                signer.verify(&p, &home(), now),
                Err(ForwardError::Malformed(error)),
                "{forged}"
            );
        }
        // Bytes that are no UTF-8 (obs-text) make no forwarding header.
        let mut p = signed.clone();
        let mut bytes = header.clone().into_bytes();
        bytes.extend_from_slice(b"\xff");
        p.headers.insert(
            headers::FORWARDED,
            HeaderValue::from_bytes(&bytes).expect("obs-text is a header value"),
        );
        assert_eq!(
            signer.verify(&p, &home(), now),
            Err(ForwardError::Malformed(headers::FORWARDED))
        );
        let mut p = signed.clone();
        p.headers.remove(headers::REQUEST_ID);
        assert_eq!(
            signer.verify(&p, &home(), now),
            Err(ForwardError::Malformed(headers::REQUEST_ID))
        );
    }

    #[test]
    fn unsafe_values_are_replaced_and_still_verify() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let mut p = parts("GET", "/");
        let mut f = forwarded();
        f.request_id = "bad\nid\u{e9}".to_owned();
        f.client_address = "1.2.3.4;sig=00 x".to_owned();
        signer.sign(&mut p, &f, &home());
        let got = signer
            .verify(&p, &home(), SystemTime::now())
            .expect("verifies");
        assert_eq!(got.request_id, "bad_id_");
        assert_eq!(got.client_address, "1.2.3.4_sig_00_x");
    }

    #[test]
    fn keys_are_redacted_and_short_keys_refused() {
        assert_eq!(format!("{:?}", key(1)), "ForwardingKey(<redacted>)");
        assert_eq!(
            ForwardingKey::new(b"short").map(|_| ()),
            Err(KeyError::TooShort { len: 5 })
        );
    }
}
