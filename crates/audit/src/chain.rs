//! The canonical byte encoding of an event and the per-tenant hash chain over it. The
//! layout is specified in `docs/audit.md` and pinned by a golden test: changing it breaks
//! every stored chain, so a new layout needs a new `CANONICAL_VERSION`.

use std::time::SystemTime;

use model::TenantId;
use sha2::{Digest, Sha256};

use crate::event::{Event, Hash, NewEvent};
use crate::time;

/// The first byte of every canonical encoding.
pub const CANONICAL_VERSION: u8 = 1;

/// Domain string of a tenant's genesis value.
const GENESIS_DOMAIN: &str = "residency/audit/genesis/v1";

/// Where a chain ends: the seq and hash of its last event. A chain with no events has no
/// head (`None` where an `Option<Head>` is taken); its next event links to [`genesis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: Hash,
}

impl Event {
    /// This event as the head of its chain.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// The value the first event of `tenant`'s chain links to:
/// `SHA-256(lp("residency/audit/genesis/v1") || lp(tenant id))`, where `lp` is a u32
/// big-endian length followed by the bytes. Different for every tenant, so an event cannot
/// be moved to the start of another tenant's chain.
pub fn genesis(tenant: &TenantId) -> Hash {
    let mut buf = Vec::with_capacity(4 + GENESIS_DOMAIN.len() + 4 + 36);
    put_str(&mut buf, GENESIS_DOMAIN);
    put_str(&mut buf, tenant.as_str());
    Hash::from_bytes(Sha256::digest(&buf).into())
}

/// `time` truncated to whole microseconds (towards the past) and clamped into the years
/// 0000–9999: the precision and range events are stored, hashed and written at.
pub fn truncate_to_micros(time: SystemTime) -> SystemTime {
    time::from_unix_micros(time::to_unix_micros(time))
}

/// Links `new` after `prev` (or, with `None`, as the first event of `new.tenant`'s chain):
/// assigns its seq, truncates its time to microseconds, and computes its hash.
pub fn next(prev: Option<Head>, new: NewEvent) -> Event {
    let (seq, prev_hash) = match prev {
        Some(head) => (
            head.seq
                .checked_add(1)
                .expect("a chain never holds u64::MAX events"),
            head.hash,
        ),
        None => (1, genesis(&new.tenant)),
    };
    let mut event = Event {
        seq,
        time: truncate_to_micros(new.time),
        region: new.region,
        tenant: new.tenant,
        actor: new.actor,
        action: new.action,
        resource: new.resource,
        outcome: new.outcome,
        request_id: new.request_id,
        via_region: new.via_region,
        prev_hash,
        hash: Hash::from_bytes([0; 32]),
    };
    event.hash = event_hash(&prev_hash, &event);
    event
}

/// The canonical encoding of `event` without its `prev_hash` and `hash` (see
/// `docs/audit.md`).
pub fn canonical(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    encode(&Fields::of(event), &mut out);
    out
}

/// `SHA-256(prev_hash || canonical(event))`: what `event.hash` must be when `event`
/// follows an event whose hash is `prev_hash`. The event's own `prev_hash` and `hash`
/// fields are not read.
pub fn event_hash(prev_hash: &Hash, event: &Event) -> Hash {
    let mut buf = Vec::with_capacity(256);
    encode(&Fields::of(event), &mut buf);
    chain_hash(prev_hash, &buf)
}

/// Whether `event` correctly follows an event whose hash is `prev_hash`: it names it as
/// its `prev_hash`, and its `hash` matches its contents.
pub fn verify_link(prev_hash: &Hash, event: &Event) -> bool {
    event.prev_hash == *prev_hash && event_hash(prev_hash, event) == event.hash
}

/// The fields the canonical encoding covers, borrowed, so that the verifier can encode an
/// event parsed from JSON without building an [`Event`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub seq: u64,
    pub time_micros: i64,
    pub region: &'a str,
    pub tenant: &'a str,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub outcome: &'a str,
    pub request_id: &'a str,
    pub via_region: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn of(event: &'a Event) -> Self {
        Self {
            seq: event.seq,
            time_micros: time::to_unix_micros(event.time),
            region: event.region.as_str(),
            tenant: event.tenant.as_str(),
            actor_kind: event.actor.kind.as_str(),
            actor_id: &event.actor.id,
            action: event.action.as_str(),
            resource: &event.resource,
            outcome: event.outcome.as_str(),
            request_id: &event.request_id,
            via_region: event.via_region.as_str(),
        }
    }
}

/// Appends the canonical encoding of `fields` to `out` (cleared first).
pub(crate) fn encode(fields: &Fields<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.push(CANONICAL_VERSION);
    out.extend_from_slice(&fields.seq.to_be_bytes());
    out.extend_from_slice(&fields.time_micros.to_be_bytes());
    put_str(out, fields.region);
    put_str(out, fields.tenant);
    put_str(out, fields.actor_kind);
    put_str(out, fields.actor_id);
    put_str(out, fields.action);
    put_str(out, fields.resource);
    put_str(out, fields.outcome);
    put_str(out, fields.request_id);
    put_str(out, fields.via_region);
}

pub(crate) fn chain_hash(prev_hash: &Hash, canonical: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical);
    Hash::from_bytes(hasher.finalize().into())
}

/// A u32 big-endian byte length, then the bytes.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Bundle lines are at most `MAX_LINE_BYTES` long and events are built by this
    // product, so no field comes near 4 GiB.
    let len = u32::try_from(bytes.len()).expect("an audit field is shorter than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use model::RegionId;

    use super::*;
    use crate::event::{Action, Actor, ActorKind, Outcome};

    fn tenant() -> TenantId {
        TenantId::parse("2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60").expect("valid tenant")
    }

    fn golden_new() -> NewEvent {
        let region = RegionId::parse("eu-central-1").expect("valid region");
        NewEvent {
            time: UNIX_EPOCH + Duration::new(1_772_368_496, 789_012_345),
            region: region.clone(),
            tenant: tenant(),
            actor: Actor {
                kind: ActorKind::ApiKey,
                id: "key_01".to_owned(),
            },
            action: Action::RecordCreate,
            resource: "records/7d2c".to_owned(),
            outcome: Outcome::Success,
            request_id: "req-1".to_owned(),
            via_region: RegionId::parse("us-east-1").expect("valid region"),
        }
    }

    #[test]
    fn canonical_layout_is_stable() {
        let event = next(None, golden_new());
        let mut expected = vec![1u8];
        expected.extend_from_slice(&1u64.to_be_bytes());
        expected.extend_from_slice(&1_772_368_496_789_012i64.to_be_bytes());
        for s in [
            "eu-central-1",
            "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60",
            "api_key",
            "key_01",
            "record.create",
            "records/7d2c",
            "success",
            "req-1",
            "us-east-1",
        ] {
            expected.extend_from_slice(&u32::try_from(s.len()).expect("short").to_be_bytes());
            expected.extend_from_slice(s.as_bytes());
        }
        assert_eq!(canonical(&event), expected);
    }

    /// Pins the encoding, the genesis value and the chain rule: if this fails, stored
    /// chains no longer verify.
    #[test]
    fn golden_hashes() {
        assert_eq!(
            genesis(&tenant()).to_hex(),
            "f8be239fb08ba1cd7b717e6aa9c5bc03f08c54dac9fb6c78650ecd72532cc544"
        );
        let first = next(None, golden_new());
        assert_eq!(first.seq, 1);
        assert_eq!(first.prev_hash, genesis(&tenant()));
        assert_eq!(
            first.hash.to_hex(),
            "8dee59ce4910c6ab54cd29c05e15f11e4d1344937cecf5f047870c32aca68a17"
        );
    }

    #[test]
    fn genesis_differs_per_tenant() {
        let other = TenantId::from_random_bytes([7; 16]);
        assert_ne!(genesis(&tenant()), genesis(&other));
        assert_eq!(genesis(&tenant()), genesis(&tenant()));
    }

    #[test]
    fn next_links_and_counts() {
        let first = next(None, golden_new());
        let second = next(Some(first.head()), golden_new());
        assert_eq!(second.seq, 2);
        assert_eq!(second.prev_hash, first.hash);
        assert!(verify_link(&first.hash, &second));
        assert!(verify_link(&genesis(&tenant()), &first));
        assert!(!verify_link(&genesis(&tenant()), &second));
        assert_ne!(first.hash, second.hash, "seq is hashed");

        let mut edited = second.clone();
        edited.resource = "records/other".to_owned();
        assert!(!verify_link(&first.hash, &edited));
    }

    #[test]
    fn time_is_truncated_to_micros() {
        let event = next(None, golden_new());
        assert_eq!(
            event.time,
            UNIX_EPOCH + Duration::new(1_772_368_496, 789_012_000)
        );
        assert_eq!(truncate_to_micros(event.time), event.time);
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let mut a = next(None, golden_new());
        let mut b = a.clone();
        a.actor.id = "ab".to_owned();
        a.resource = "c".to_owned();
        b.actor.id = "a".to_owned();
        b.resource = "bc".to_owned();
        assert_ne!(canonical(&a), canonical(&b));
    }
}
