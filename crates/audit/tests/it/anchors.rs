//! Bundles against anchored checkpoints: an intact chain passes; a cut tail with a reset
//! head (which the bundle alone cannot show) fails naming the missing range; a rewritten
//! head fails naming the seq; anchors that are not the region's word are refused.

use std::time::Duration;

use audit::{
    Checkpoint, CheckpointError, Event, Fault, Hash, SigningKey, anchor_json, next, parse_anchor,
    sign_checkpoint, verify_bundle_against_anchors,
};

use crate::support::{Fixture, bundle, epoch, new_event, other_tenant, region, tenant};

/// The checkpoint of `events[seq - 1]`, signed `seq` seconds after the epoch (before the
/// fixtures' export, a day after it), as it would be read back from the bucket.
fn anchor(fx: &Fixture, seq: u64) -> Checkpoint {
    let event = &fx.events[usize::try_from(seq - 1).expect("small")];
    anchor_at(&fx.key, event, epoch() + Duration::from_secs(seq))
}

fn anchor_at(key: &SigningKey, event: &Event, signed_at: std::time::SystemTime) -> Checkpoint {
    let signed = sign_checkpoint(key, &event.tenant, event.seq, &event.hash, signed_at);
    parse_anchor(&anchor_json(&signed)).expect("an anchor reads back")
}

#[test]
fn an_intact_bundle_matches_its_anchors() {
    let fx = Fixture::new(50);
    let anchors = [anchor(&fx, 50), anchor(&fx, 10), anchor(&fx, 30)];
    let verified = verify_bundle_against_anchors(fx.bundle().as_bytes(), &fx.keys, &anchors)
        .expect("intact and anchored");
    assert_eq!(verified.matched, 3);
    assert_eq!(verified.later, 0);
    assert_eq!(verified.newest_matched.map(|(seq, _)| seq), Some(50));
    assert_eq!(verified.summary.last_seq, Some(50));
    let shown = verified.to_string();
    assert!(shown.starts_with("bundle intact: "), "{shown}");
    assert!(
        shown.contains("; 3 anchored checkpoints match (newest at seq 50"),
        "{shown}"
    );

    // A bundle starting mid-chain is held to the anchor just before it by its first
    // `prev_hash`, and ignores those it cannot check.
    let mid = bundle(&fx.key, tenant(), &fx.events[30..], None, None);
    let verified =
        verify_bundle_against_anchors(mid.as_bytes(), &fx.keys, &anchors).expect("intact");
    assert_eq!(verified.matched, 2, "seq 30 (the predecessor) and 50");

    // Anchors signed after the export, past its end, are the chain growing since.
    let mut grown = fx.events.clone();
    for i in 51..=55 {
        let event = next(Some(grown[grown.len() - 1].head()), new_event(tenant(), i));
        grown.push(event);
    }
    let later = anchor_at(
        &fx.key,
        &grown[54],
        epoch() + Duration::from_secs(2 * 86_400),
    );
    let verified =
        verify_bundle_against_anchors(fx.bundle().as_bytes(), &fx.keys, &[later]).expect("intact");
    assert_eq!((verified.matched, verified.later), (0, 1));
}

#[test]
fn a_cut_tail_with_a_reset_head_fails_naming_the_missing_range() {
    let fx = Fixture::new(50);
    // Whoever can write the database deletes events 41..50 and moves the head back to 40:
    // the export of the whole chain ends at 40 and verifies on its own.
    let cut = bundle(&fx.key, tenant(), &fx.events[..40], None, None);
    fx.verify(&cut).expect("the bundle alone cannot show it");

    let err = verify_bundle_against_anchors(
        cut.as_bytes(),
        &fx.keys,
        &[anchor(&fx, 20), anchor(&fx, 45)],
    )
    .expect_err("anchored at 45");
    assert_eq!(
        (err.seq, &err.fault),
        (
            None,
            &Fault::TailMissing {
                first_missing: 41,
                anchored_seq: 45
            }
        )
    );
    assert_eq!(
        err.to_string(),
        "events 41..45 are missing: anchored checkpoint at seq 45 (the chain's tail was cut)"
    );

    // The newest anchor names the whole known range.
    let err = verify_bundle_against_anchors(
        cut.as_bytes(),
        &fx.keys,
        &[anchor(&fx, 45), anchor(&fx, 50)],
    )
    .expect_err("anchored at 50");
    assert!(
        err.to_string().starts_with("events 41..50 are missing"),
        "{err}"
    );

    // The export's own event (or any new one) lands at the first cut seq: the cut tail is
    // what is reported, not the differing event before it.
    let mut appended = fx.events[..40].to_vec();
    appended.push(next(Some(appended[39].head()), new_event(tenant(), 99)));
    let text = bundle(&fx.key, tenant(), &appended, None, None);
    let err = verify_bundle_against_anchors(
        text.as_bytes(),
        &fx.keys,
        &[anchor(&fx, 41), anchor(&fx, 45)],
    )
    .expect_err("anchored at 41 and 45");
    assert_eq!(
        err.fault,
        Fault::TailMissing {
            first_missing: 42,
            anchored_seq: 45
        }
    );

    // Every event gone: an export of nothing, to now, while anchors exist.
    let empty = bundle(&fx.key, tenant(), &[], None, None);
    let err = verify_bundle_against_anchors(empty.as_bytes(), &fx.keys, &[anchor(&fx, 3)])
        .expect_err("anchored at 3");
    assert!(
        err.to_string().starts_with("events 1..3 are missing"),
        "{err}"
    );

    // A bundle bounded in time does not claim to reach the head.
    let bounded = bundle(
        &fx.key,
        tenant(),
        &fx.events[..40],
        None,
        Some(epoch() + Duration::from_secs(41)),
    );
    let verified = verify_bundle_against_anchors(bounded.as_bytes(), &fx.keys, &[anchor(&fx, 45)])
        .expect("a time range ending before seq 45");
    assert_eq!(verified.later, 1);
}

#[test]
fn a_reset_head_fails_naming_the_seq() {
    let fx = Fixture::new(50);
    // Events 41..50 deleted, the head reset to 40, and new events appended since: the
    // chain links again and reaches past the anchor, with other events at 41..
    let mut rewritten = fx.events[..40].to_vec();
    for i in 41..=52 {
        let mut new = new_event(tenant(), i);
        new.resource = format!("records/forged-{i}");
        let event = next(Some(rewritten[rewritten.len() - 1].head()), new);
        rewritten.push(event);
    }
    let text = bundle(&fx.key, tenant(), &rewritten, None, None);
    fx.verify(&text).expect("the bundle alone cannot show it");
    let err = verify_bundle_against_anchors(
        text.as_bytes(),
        &fx.keys,
        &[anchor(&fx, 20), anchor(&fx, 45)],
    )
    .expect_err("rewritten at 45");
    assert_eq!(err.seq, Some(45));
    assert_eq!(
        err.fault,
        Fault::AnchorMismatch {
            anchored: fx.events[44].hash
        }
    );
    assert!(
        err.to_string().starts_with(&format!(
            "event seq 45: hash differs from the anchored checkpoint {}",
            fx.events[44].hash
        )),
        "{err}"
    );

    // A bundle starting right after the rewrite is caught by its first `prev_hash`.
    let tail = bundle(&fx.key, tenant(), &rewritten[45..], None, None);
    let err = verify_bundle_against_anchors(tail.as_bytes(), &fx.keys, &[anchor(&fx, 45)])
        .expect_err("predecessor rewritten");
    assert_eq!(err.seq, Some(45));
}

#[test]
fn anchors_that_are_not_the_regions_word_are_refused() {
    let fx = Fixture::new(10);
    let text = fx.bundle();

    let mut forged = anchor(&fx, 5);
    forged.hash = Hash::from_bytes([9; 32]);
    let err = verify_bundle_against_anchors(text.as_bytes(), &fx.keys, &[forged])
        .expect_err("edited anchor");
    assert_eq!(
        err.fault,
        Fault::AnchorInvalid {
            seq: 5,
            reason: CheckpointError::BadSignature
        }
    );
    assert_eq!(
        err.to_string(),
        "anchored checkpoint at seq 5 rejected: checkpoint signature does not verify"
    );

    let stranger = SigningKey::generate(region());
    let unknown = anchor_at(&stranger, &fx.events[4], epoch());
    let err = verify_bundle_against_anchors(text.as_bytes(), &fx.keys, &[unknown])
        .expect_err("unknown key");
    assert!(
        matches!(err.fault, Fault::AnchorInvalid { seq: 5, .. }),
        "{err}"
    );

    let other = crate::support::chain(other_tenant(), 5);
    let misplaced = anchor_at(&fx.key, &other[4], epoch());
    let err = verify_bundle_against_anchors(text.as_bytes(), &fx.keys, &[misplaced])
        .expect_err("another tenant's anchor");
    assert_eq!(err.fault, Fault::AnchorOfAnotherChain { seq: 5 });
}
