//! Signed forwarding headers: the forwarding node signs (HMAC-SHA256, aws-lc-rs) the
//! method, path and query, a timestamp, the entry region, the client address and the
//! request id with the inter-region key; the receiving node trusts those headers only with
//! a valid, fresh signature. The key never appears in `Debug` output or errors.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::{constant_time, hmac};
use http::request::Parts;
use http::{HeaderName, HeaderValue};
use model::RegionId;

use crate::{headers, names};

/// How far a forwarding timestamp may be from the receiver's clock, either way.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(30);

/// Shortest accepted key: HMAC-SHA256 gains nothing past 64 bytes and is weak below 32.
pub const MIN_KEY_LEN: usize = 32;

/// Separates this use of the key from any other.
const DOMAIN: &[u8] = b"residency-forward-v1\n";

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

/// Why forwarding headers were not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("no forwarding signature")]
    Missing,
    #[error("forwarding header {0} is missing or malformed")]
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

    /// Sets the forwarding headers and their signature on `request` (stamped now). Values
    /// that cannot be header values have their offending characters replaced by `_`.
    pub fn sign(&self, request: &mut Parts, forwarded: &Forwarded) {
        self.sign_at(request, forwarded, SystemTime::now());
    }

    /// [`ForwardSigner::sign`] with an explicit clock (tests of expiry).
    pub fn sign_at(&self, request: &mut Parts, forwarded: &Forwarded, now: SystemTime) {
        let at = HeaderValue::from(unix_seconds(now));
        let client = header_safe(&forwarded.client_address);
        let request_id = header_safe(&forwarded.request_id);
        let region = forwarded.entry_region.as_str();
        let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
        let tag = tag(
            &self.current,
            [
                request.method.as_str().as_bytes(),
                path.as_bytes(),
                at.as_bytes(),
                region.as_bytes(),
                client.as_bytes(),
                request_id.as_bytes(),
            ],
        );
        let mut signature = [0u8; 2 * TAG_LEN];
        hex::encode_to_slice(tag.as_ref(), &mut signature)
            .expect("the buffer holds the hex of a tag");
        let h = &mut request.headers;
        h.insert(names::FORWARDED_REGION, value(region));
        h.insert(names::FORWARDED_FOR, value(&client));
        h.insert(names::FORWARDED_AT, at);
        h.insert(names::REQUEST_ID, value(&request_id));
        h.insert(
            names::FORWARDED_SIGNATURE,
            HeaderValue::from_bytes(&signature).expect("hex digits are a header value"),
        );
    }

    /// The forwarding facts of a request whose headers carry a valid signature made within
    /// `max_skew` of `now`. The tag is compared in constant time.
    pub fn verify(&self, parts: &Parts, now: SystemTime) -> Result<Forwarded, ForwardError> {
        let h = &parts.headers;
        let text = |name: HeaderName, label: &'static str| -> Result<&str, ForwardError> {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(ForwardError::Malformed(label))
        };
        let Some(signature_text) = h.get(names::FORWARDED_SIGNATURE) else {
            return Err(ForwardError::Missing);
        };
        let mut signature = [0u8; TAG_LEN];
        hex::decode_to_slice(signature_text.as_bytes(), &mut signature)
            .map_err(|_| ForwardError::Malformed(headers::FORWARDED_SIGNATURE))?;
        let region_text = text(names::FORWARDED_REGION, headers::FORWARDED_REGION)?;
        let entry_region = RegionId::parse(region_text)
            .map_err(|_| ForwardError::Malformed(headers::FORWARDED_REGION))?;
        let client = text(names::FORWARDED_FOR, headers::FORWARDED_FOR)?;
        let at_text = text(names::FORWARDED_AT, headers::FORWARDED_AT)?;
        let at: u64 = at_text
            .parse()
            .map_err(|_| ForwardError::Malformed(headers::FORWARDED_AT))?;
        let request_id = text(names::REQUEST_ID, headers::REQUEST_ID)?;

        let now_secs = unix_seconds(now);
        let skew = now_secs.abs_diff(at);
        if skew > self.max_skew.as_secs() {
            return Err(ForwardError::Stale {
                skew_secs: skew,
                max_secs: self.max_skew.as_secs(),
            });
        }

        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let fields = [
            parts.method.as_str().as_bytes(),
            path.as_bytes(),
            at_text.as_bytes(),
            region_text.as_bytes(),
            client.as_bytes(),
            request_id.as_bytes(),
        ];
        let matches = |key: &ForwardingKey| {
            constant_time::verify_slices_are_equal(tag(key, fields).as_ref(), &signature).is_ok()
        };
        let valid = matches(&self.current) || self.previous.as_ref().is_some_and(matches);
        if !valid {
            return Err(ForwardError::BadSignature);
        }
        Ok(Forwarded {
            entry_region,
            client_address: client.to_owned(),
            request_id: request_id.to_owned(),
        })
    }
}

/// The tag of the signed message: a domain tag, then each field (method, path and query,
/// timestamp, entry region, client address, request id) as a 4-byte big-endian length and
/// its bytes, so that no two different field lists share an encoding.
fn tag(key: &ForwardingKey, fields: [&[u8]; 6]) -> hmac::Tag {
    let mut message = MessageWriter {
        context: hmac::Context::with_key(&key.0),
        buffer: [0; MESSAGE_BUFFER],
        used: 0,
    };
    message.put(DOMAIN);
    for field in fields {
        // Header values and paths are far below 4 GiB; saturate rather than wrap anyway.
        let n = u32::try_from(field.len()).unwrap_or(u32::MAX);
        message.put(&n.to_be_bytes());
        message.put(field);
    }
    // Taken apart in place: a method taking the writer by value would copy its buffer.
    let MessageWriter {
        mut context,
        buffer,
        used,
    } = message;
    context.update(&buffer[..used]);
    context.sign()
}

/// Bytes of the signed message gathered before they go to the HMAC: a usual message (a
/// path, an address, a request id) fits, and then takes one update instead of thirteen.
const MESSAGE_BUFFER: usize = 512;

/// Feeds the HMAC through a stack buffer; longer messages go through in pieces, with the
/// same result (HMAC is over the concatenation).
struct MessageWriter {
    context: hmac::Context,
    buffer: [u8; MESSAGE_BUFFER],
    used: usize,
}

impl MessageWriter {
    fn put(&mut self, bytes: &[u8]) {
        if self.used + bytes.len() > MESSAGE_BUFFER {
            self.context.update(&self.buffer[..self.used]);
            self.used = 0;
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
pub(crate) fn header_safe(s: &str) -> Cow<'_, str> {
    let ok = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b);
    if s.bytes().all(ok) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if c.is_ascii() && ok(c as u8) { c } else { '_' })
                .collect(),
        )
    }
}

fn value(s: &str) -> HeaderValue {
    // Every caller passes `header_safe` output, a region id, digits or hex.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("_"))
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
            entry_region: RegionId::parse("eu-west-1").expect("region"),
            client_address: "203.0.113.9".to_owned(),
            request_id: "req-1".to_owned(),
        }
    }

    /// The documented encoding, fed to HMAC in one piece: what every node, of any version,
    /// must compute for the same request.
    fn reference_tag(key_byte: u8, fields: [&[u8]; 6]) -> Vec<u8> {
        let mut message = DOMAIN.to_vec();
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
        let near_edge = "b".repeat(MESSAGE_BUFFER - 60);
        for fields in [
            [
                &b"GET"[..],
                b"/v1/tenants/t",
                b"1700000000",
                b"eu-west-1",
                b"203.0.113.9",
                b"req-1",
            ],
            [
                b"POST",
                long_path.as_bytes(),
                b"1700000000",
                b"eu-west-1",
                b"::1",
                b"r",
            ],
            [
                b"PUT",
                near_edge.as_bytes(),
                b"1700000000",
                b"eu-west-1",
                b"198.51.100.7",
                b"id-2",
            ],
            [b"GET", b"/", b"", b"", b"", b""],
        ] {
            assert_eq!(
                tag(&key(7), fields).as_ref(),
                reference_tag(7, fields).as_slice()
            );
        }
    }

    #[test]
    fn a_signed_request_verifies() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let mut p = parts("POST", "/v1/tenants/x/records?q=1");
        signer.sign(&mut p, &forwarded());
        assert_eq!(signer.verify(&p, SystemTime::now()), Ok(forwarded()));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let mut p = parts("GET", "/v1/tenants/a?x=1");
        signer.sign(&mut p, &forwarded());

        let mut other = p.clone();
        other.method = http::Method::DELETE;
        assert_eq!(
            signer.verify(&other, SystemTime::now()),
            Err(ForwardError::BadSignature)
        );
        let mut other = p.clone();
        other.uri = "/v1/tenants/a?x=2".parse().expect("uri");
        assert_eq!(
            signer.verify(&other, SystemTime::now()),
            Err(ForwardError::BadSignature)
        );
        for (name, v) in [
            (headers::FORWARDED_FOR, "198.51.100.1"),
            (headers::FORWARDED_REGION, "us-east-1"),
            (headers::REQUEST_ID, "req-2"),
        ] {
            let mut other = p.clone();
            other.headers.insert(name, HeaderValue::from_static(v));
            assert_eq!(
                signer.verify(&other, SystemTime::now()),
                Err(ForwardError::BadSignature),
                "{name}"
            );
        }
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let signer = ForwardSigner::new(key(1), Duration::from_secs(30));
        let mut p = parts("GET", "/");
        let now = SystemTime::now();
        signer.sign_at(&mut p, &forwarded(), now - Duration::from_secs(31));
        assert!(matches!(
            signer.verify(&p, now),
            Err(ForwardError::Stale { .. })
        ));
        signer.sign_at(&mut p, &forwarded(), now + Duration::from_secs(31));
        assert!(matches!(
            signer.verify(&p, now),
            Err(ForwardError::Stale { .. })
        ));
        signer.sign_at(&mut p, &forwarded(), now - Duration::from_secs(29));
        assert!(signer.verify(&p, now).is_ok());
    }

    #[test]
    fn the_previous_key_verifies_during_rotation() {
        let old = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let rotating = ForwardSigner::new(key(2), DEFAULT_MAX_SKEW).with_previous(key(1));
        let new_only = ForwardSigner::new(key(2), DEFAULT_MAX_SKEW);
        let mut p = parts("GET", "/");
        old.sign(&mut p, &forwarded());
        assert!(rotating.verify(&p, SystemTime::now()).is_ok());
        assert_eq!(
            new_only.verify(&p, SystemTime::now()),
            Err(ForwardError::BadSignature)
        );
    }

    #[test]
    fn missing_and_malformed_headers() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let p = parts("GET", "/");
        assert_eq!(
            signer.verify(&p, SystemTime::now()),
            Err(ForwardError::Missing)
        );
        let mut p = parts("GET", "/");
        signer.sign(&mut p, &forwarded());
        p.headers
            .insert(headers::FORWARDED_SIGNATURE, HeaderValue::from_static("zz"));
        assert_eq!(
            signer.verify(&p, SystemTime::now()),
            Err(ForwardError::Malformed(headers::FORWARDED_SIGNATURE))
        );
    }

    #[test]
    fn unsafe_values_are_replaced_and_still_verify() {
        let signer = ForwardSigner::new(key(1), DEFAULT_MAX_SKEW);
        let mut p = parts("GET", "/");
        let mut f = forwarded();
        f.request_id = "bad\nid\u{e9}".to_owned();
        signer.sign(&mut p, &f);
        let got = signer.verify(&p, SystemTime::now()).expect("verifies");
        assert_eq!(got.request_id, "bad_id_");
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
