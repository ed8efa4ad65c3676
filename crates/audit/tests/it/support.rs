//! Shared fixtures: a tenant's chain of events, a signing key, bundles as text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use audit::{
    Action, Actor, ActorKind, BundleWriter, Event, Fault, Head, KeySet, NewEvent, Outcome,
    SigningKey, Summary, VerifyError, next, verify_bundle,
};
use model::{RegionId, TenantId};

pub fn region() -> RegionId {
    RegionId::parse("eu-central-1").expect("valid region")
}

pub fn tenant() -> TenantId {
    TenantId::parse("2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60").expect("valid tenant")
}

pub fn other_tenant() -> TenantId {
    TenantId::parse("9a7b6c5d-1e2f-4a3b-8c4d-5e6f7a8b9c0d").expect("valid tenant")
}

/// A fixed point in time: event `seq` happens `seq` seconds and some microseconds later.
pub fn epoch() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_772_368_496)
}

const ACTIONS: [Action; 6] = [
    Action::RecordCreate,
    Action::RecordRead,
    Action::RecordUpdate,
    Action::FilePut,
    Action::RecordSearch,
    Action::RecordDelete,
];

pub fn new_event(tenant: TenantId, i: u64) -> NewEvent {
    let via = if i.is_multiple_of(3) {
        "us-east-1"
    } else {
        "eu-central-1"
    };
    NewEvent {
        time: epoch() + Duration::from_micros(i * 1_000_001 + 7) + Duration::from_nanos(999),
        region: region(),
        tenant,
        actor: Actor {
            kind: if i.is_multiple_of(5) {
                ActorKind::Operator
            } else {
                ActorKind::ApiKey
            },
            id: format!("key_{}", i % 4),
        },
        action: ACTIONS[usize::try_from(i % 6).expect("small")],
        resource: format!("records/{i:08x}"),
        outcome: if i.is_multiple_of(7) {
            Outcome::Denied
        } else {
            Outcome::Success
        },
        request_id: format!("req-{i}"),
        via_region: RegionId::parse(via).expect("valid region"),
    }
}

/// Events 1..=n of `tenant`'s chain.
pub fn chain(tenant: TenantId, n: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let mut head: Option<Head> = None;
    for i in 1..=n {
        let event = next(head, new_event(tenant, i));
        head = Some(event.head());
        events.push(event);
    }
    events
}

pub struct Fixture {
    pub key: SigningKey,
    pub keys: KeySet,
    pub events: Vec<Event>,
}

impl Fixture {
    pub fn new(n: u64) -> Self {
        let key = SigningKey::generate(region());
        let keys = KeySet::from_keys([key.public()]).expect("valid key");
        Self {
            key,
            keys,
            events: chain(tenant(), n),
        }
    }

    /// The whole chain as a bundle.
    pub fn bundle(&self) -> String {
        bundle(&self.key, tenant(), &self.events, None, None)
    }

    pub fn lines(&self) -> Vec<String> {
        lines(&self.bundle())
    }

    pub fn verify(&self, text: &str) -> Result<Summary, VerifyError> {
        verify_bundle(text.as_bytes(), &self.keys)
    }

    /// Verifies the bundle of `lines`, which must be refused (`why`) at `seq` with `fault`;
    /// the refusal.
    pub fn assert_refused(
        &self,
        lines: &[String],
        seq: Option<u64>,
        fault: &Fault,
        why: &str,
    ) -> VerifyError {
        let err = self.verify(&join(lines)).expect_err(why);
        assert_eq!((err.seq, &err.fault), (seq, fault), "{why}");
        err
    }
}

pub fn bundle(
    key: &SigningKey,
    tenant: TenantId,
    events: &[Event],
    from: Option<SystemTime>,
    to: Option<SystemTime>,
) -> String {
    let mut writer = BundleWriter::new(tenant, key.region().clone(), from, to);
    let mut out = Vec::new();
    for event in events {
        writer
            .write_event(event, &mut out)
            .expect("event of the bundle's tenant");
    }
    let mut text = String::from_utf8(out).expect("JSON is UTF-8");
    text.push_str(
        &writer
            .finish(key, epoch() + Duration::from_secs(86_400))
            .expect("key of the bundle's region"),
    );
    text
}

/// The lines of a bundle, without newlines.
pub fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

pub fn join(lines: &[String]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// `line` parsed, changed by `edit`, and written back.
pub fn edit_json(line: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value = serde_json::from_str(line).expect("valid JSON line");
    edit(&mut value);
    serde_json::to_string(&value).expect("serializes")
}
