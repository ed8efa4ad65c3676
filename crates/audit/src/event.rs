//! The audit event model: who did what to which resource of which tenant, where, and with
//! what outcome. Events carry ids, never field values: `resource` is an id path such as
//! `records/<record-id>` or `files/<record-id>/<name-hash>`, and must never hold a value a
//! tenant stored (a name, an email address, a file name in clear).

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use model::{RegionId, TenantId};

/// An event as a use case records it, before it is linked into its tenant's chain with
/// [`crate::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// When it happened; stored at microsecond precision (see [`crate::truncate_to_micros`]).
    pub time: SystemTime,
    /// The tenant's home region, which served the request and keeps the chain.
    pub region: RegionId,
    pub tenant: TenantId,
    pub actor: Actor,
    pub action: Action,
    /// An id path (`records/<id>`, `files/<record>/<name-hash>`, `apikeys/<id>`), never a
    /// field value.
    pub resource: String,
    pub outcome: Outcome,
    pub request_id: String,
    /// The region whose endpoint received the request (equal to `region` when local).
    pub via_region: RegionId,
}

/// A recorded event: a [`NewEvent`] with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// 1 for a tenant's first event, then +1 each.
    pub seq: u64,
    /// Whole microseconds.
    pub time: SystemTime,
    pub region: RegionId,
    pub tenant: TenantId,
    pub actor: Actor,
    pub action: Action,
    pub resource: String,
    pub outcome: Outcome,
    pub request_id: String,
    pub via_region: RegionId,
    /// The previous event's `hash`, or the tenant's genesis value for seq 1.
    pub prev_hash: Hash,
    /// `SHA-256(prev_hash || canonical(event))`.
    pub hash: Hash,
}

/// Who acted: an operator, one of the tenant's API keys, or the system itself (scheduled
/// work such as checkpoints or rewraps). `id` is an operator name, an API key id (never
/// the secret) or a component name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

/// A value that is not one of a closed set of names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}`")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
}

macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The name used in JSON and in the canonical encoding.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(raw: &str) -> Result<Self, UnknownValue> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { what: $what, value: raw.to_owned() }),
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

named_enum! {
    /// The kind of [`Actor`].
    ActorKind, "actor kind" {
        Operator => "operator",
        ApiKey => "api_key",
        System => "system",
    }
}

named_enum! {
    /// What was done. Reads are events too (`record.read`, `file.get`, `audit.read`).
    Action, "action" {
        TenantCreate => "tenant.create",
        TenantDelete => "tenant.delete",
        TenantRelocate => "tenant.relocate",
        RecordCreate => "record.create",
        RecordRead => "record.read",
        RecordUpdate => "record.update",
        RecordDelete => "record.delete",
        RecordSearch => "record.search",
        FilePut => "file.put",
        FileGet => "file.get",
        FileDelete => "file.delete",
        SubjectExport => "subject.export",
        SubjectErase => "subject.erase",
        KeyRotate => "key.rotate",
        /// Destroying one retired data key version (its resource names the version).
        KeyDestroy => "key.destroy",
        /// Setting the tenant's automatic rotation bounds.
        KeyPolicy => "key.policy",
        ApiKeyCreate => "apikey.create",
        ApiKeyDelete => "apikey.delete",
        /// Creating or replacing a collection's schema.
        CollectionPut => "collection.put",
        /// Reading the event list (`GET /v1/tenants/{tenant}/audit/events`).
        AuditRead => "audit.read",
        AuditExport => "audit.export",
        /// Requests refused before their caller was authenticated (no token, a malformed
        /// one, an unknown key, a wrong secret), counted per tenant and reason: one event
        /// stands for a window of them, its `resource` names the reason and the count
        /// (`denials/<reason>?count=<n>`), never anything the callers sent.
        AuthFailed => "auth.failed",
    }
}

named_enum! {
    /// How the attempt ended. Denied attempts are recorded like successful ones.
    Outcome, "outcome" {
        Success => "success",
        Denied => "denied",
        Error => "error",
    }
}

/// A SHA-256 value of the chain: lowercase hex in JSON and text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed hash: expected 64 lowercase hex digits")]
pub struct HashParseError;

impl Hash {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 lowercase hex digits (upper case is refused: one value, one spelling).
    pub fn from_hex(raw: &str) -> Result<Self, HashParseError> {
        let raw: &[u8; 64] = raw.as_bytes().try_into().map_err(|_| HashParseError)?;
        let mut out = [0u8; 32];
        // Branch-free: invalid digits map to 0xff and are detected once at the end. The
        // verifier decodes two hashes per event, so this is on its hot path.
        let mut invalid = 0u8;
        for (byte, pair) in out.iter_mut().zip(raw.chunks_exact(2)) {
            let hi = HEX_VALUE[usize::from(pair[0])];
            let lo = HEX_VALUE[usize::from(pair[1])];
            invalid |= hi | lo;
            *byte = (hi << 4) | (lo & 0x0f);
        }
        if invalid & 0xf0 != 0 {
            return Err(HashParseError);
        }
        Ok(Self(out))
    }

    pub fn to_hex(&self) -> String {
        let mut buf = [0u8; 64];
        self.write_hex(&mut buf).to_owned()
    }

    /// Writes the hex form into `buf` without allocating.
    pub(crate) fn write_hex<'b>(&self, buf: &'b mut [u8; 64]) -> &'b str {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, byte) in buf.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        std::str::from_utf8(buf).expect("hex digits are ASCII")
    }
}

/// The value of each lowercase hex digit, 0xff for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

impl FromStr for Hash {
    type Err = HashParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_hex(s)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        f.pad(self.write_hex(&mut buf))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        write!(f, "Hash({})", self.write_hex(&mut buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Ok(*a));
            assert!(seen.insert(a.as_str()), "duplicate {a}");
        }
        assert_eq!(Action::ALL.len(), 22);
        for k in ActorKind::ALL {
            assert_eq!(ActorKind::parse(k.as_str()), Ok(*k));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::parse(o.as_str()), Ok(*o));
        }
        let err = Action::parse("record.steal").expect_err("unknown action");
        assert_eq!(err.to_string(), "unknown action `record.steal`");
    }

    #[test]
    fn hashes_are_lowercase_hex() {
        let h = Hash::from_bytes([0xab; 32]);
        assert_eq!(h.to_hex(), "ab".repeat(32));
        assert_eq!(h.to_string(), h.to_hex());
        assert_eq!(format!("{h:?}"), format!("Hash({})", "ab".repeat(32)));
        assert_eq!(Hash::from_hex(&h.to_hex()), Ok(h));
        assert_eq!(Hash::from_hex(&"AB".repeat(32)), Err(HashParseError));
        assert_eq!(Hash::from_hex(&"ab".repeat(31)), Err(HashParseError));
        assert_eq!(Hash::from_hex(&"zz".repeat(32)), Err(HashParseError));
    }
}
