//! The formats round-trip exactly and stay stable: event JSON, the canonical encoding
//! (golden), genesis, timestamps, checkpoints, the key list.

use std::time::{Duration, UNIX_EPOCH};

use audit::{
    Action, Actor, ActorKind, Event, KeyList, KeySet, NewEvent, Outcome, SigningKey, canonical,
    genesis, next, sign_checkpoint, truncate_to_micros, verify_checkpoint,
};
use model::RegionId;

use crate::support::{chain, other_tenant, region, tenant};

fn golden_event() -> Event {
    next(
        None,
        NewEvent {
            time: UNIX_EPOCH + Duration::new(1_772_368_496, 789_012_345),
            region: region(),
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
        },
    )
}

/// If this fails, the canonical encoding changed and every stored chain stops verifying:
/// that needs a new format version, not a new expected value. The expected values were
/// computed independently of this crate (a few lines of Python over docs/audit.md).
#[test]
fn canonical_encoding_and_hash_are_golden() {
    let event = golden_event();
    let expected_canonical = concat!(
        "01",
        "0000000000000001",
        "00064bf5b2a98614",
        "0000000c",
        "65752d63656e7472616c2d31",
        "00000024",
        "32663163366130652d386434622d346637652d396135312d306333643262316534663630",
        "00000007",
        "6170695f6b6579",
        "00000006",
        "6b65795f3031",
        "0000000d",
        "7265636f72642e637265617465",
        "0000000c",
        "7265636f7264732f37643263",
        "00000007",
        "73756363657373",
        "00000005",
        "7265712d31",
        "00000009",
        "75732d656173742d31",
    );
    let hex: String = canonical(&event)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, expected_canonical);
    assert_eq!(
        genesis(&tenant()).to_hex(),
        "f8be239fb08ba1cd7b717e6aa9c5bc03f08c54dac9fb6c78650ecd72532cc544"
    );
    assert_eq!(event.prev_hash, genesis(&tenant()));
    assert_eq!(
        event.hash.to_hex(),
        "8dee59ce4910c6ab54cd29c05e15f11e4d1344937cecf5f047870c32aca68a17"
    );
}

#[test]
fn event_json_round_trips_exactly() {
    for event in chain(tenant(), 30) {
        let json = event.to_json();
        let back = Event::from_json(&json).expect("parses");
        assert_eq!(back, event);
        assert_eq!(back.to_json(), json, "one event, one spelling");
    }
    let json = golden_event().to_json();
    assert_eq!(
        json,
        concat!(
            r#"{"seq":1,"time":"2026-03-01T12:34:56.789012Z","region":"eu-central-1","#,
            r#""tenant":"2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60","actor":{"kind":"api_key","id":"key_01"},"#,
            r#""action":"record.create","resource":"records/7d2c","outcome":"success","#,
            r#""request_id":"req-1","via_region":"us-east-1","#,
            r#""prev_hash":"f8be239fb08ba1cd7b717e6aa9c5bc03f08c54dac9fb6c78650ecd72532cc544","#,
            r#""hash":"8dee59ce4910c6ab54cd29c05e15f11e4d1344937cecf5f047870c32aca68a17"}"#
        )
    );
}

#[test]
fn escaped_strings_round_trip() {
    let mut new = crate::support::new_event(tenant(), 1);
    new.actor.id = "op \"one\"\\\n\u{e9}\u{1f600}".to_owned();
    new.request_id = "\u{0}\t".to_owned();
    let event = next(None, new);
    let back = Event::from_json(&event.to_json()).expect("parses");
    assert_eq!(back, event);
}

#[test]
fn genesis_differs_per_tenant() {
    assert_ne!(genesis(&tenant()), genesis(&other_tenant()));
    let a = chain(tenant(), 1);
    let b = chain(other_tenant(), 1);
    assert_ne!(a[0].prev_hash, b[0].prev_hash);
}

#[test]
fn truncated_times_round_trip() {
    let t = UNIX_EPOCH + Duration::new(1_772_368_496, 123_456_789);
    let truncated = truncate_to_micros(t);
    assert_eq!(
        truncated,
        UNIX_EPOCH + Duration::new(1_772_368_496, 123_456_000)
    );
    assert_eq!(truncate_to_micros(truncated), truncated);
    assert_eq!(audit::time::parse(&audit::time::format(t)), Ok(truncated));
    assert_eq!(audit::time::format(t), "2026-03-01T12:34:56.123456Z");
}

#[test]
fn checkpoints_sign_and_verify() {
    let key = SigningKey::generate(region());
    let keys = KeySet::from_keys([key.public()]).expect("valid key");
    let events = chain(tenant(), 5);
    let cp = sign_checkpoint(&key, &tenant(), 5, &events[4].hash, events[4].time);
    assert_eq!(cp.region, region());
    assert_eq!(cp.key_id, key.key_id());
    verify_checkpoint(&keys, &cp).expect("verifies");
    let mut moved = cp.clone();
    moved.hash = events[3].hash;
    assert!(verify_checkpoint(&keys, &moved).is_err());
}

#[test]
fn key_list_has_the_api_shape() {
    let key = SigningKey::from_bytes(region(), &[7; 32]);
    let body = serde_json::to_value(KeyList {
        keys: vec![key.public()],
    })
    .expect("serializes");
    let item = &body["keys"][0];
    assert_eq!(item["key_id"], key.key_id());
    assert_eq!(item["region"], "eu-central-1");
    assert_eq!(item["algorithm"], "ed25519");
    assert_eq!(item.as_object().expect("object").len(), 4);
    let again = SigningKey::from_bytes(region(), &key.to_bytes());
    assert_eq!(again.public(), key.public());
    let other_region = SigningKey::from_bytes(
        RegionId::parse("us-east-1").expect("valid region"),
        &[7; 32],
    );
    assert_ne!(
        other_region.key_id(),
        key.key_id(),
        "key ids name their region"
    );
}
