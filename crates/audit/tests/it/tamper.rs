//! The tamper matrix: every way of altering a bundle is caught, with the right fault and
//! the first bad seq; and what is intact verifies.

use audit::{
    Event, Fault, Hash, KeySet, ManifestInput, SigningKey, VerifyError, build_manifest, event_line,
    manifest_line, next, verify_bundle,
};

use crate::support::{
    Fixture, bundle, chain, edit_json, epoch, join, lines, new_event, other_tenant, region, tenant,
};

fn fault(err: &VerifyError) -> &Fault {
    &err.fault
}

#[test]
fn an_intact_bundle_verifies_and_summarises() {
    let fx = Fixture::new(50);
    let summary = fx.verify(&fx.bundle()).expect("intact");
    assert_eq!(summary.tenant, tenant());
    assert_eq!(summary.region, region());
    assert_eq!(summary.count, 50);
    assert_eq!(summary.first_seq, Some(1));
    assert_eq!(summary.last_seq, Some(50));
    assert_eq!(summary.head_hash, Some(fx.events[49].hash));
    assert_eq!(summary.key_id, fx.key.key_id());
    let shown = summary.to_string();
    assert!(
        shown.starts_with(&format!(
            "bundle intact: tenant {}, region eu-central-1, 50 events (seq 1 to 50), head {}",
            tenant(),
            fx.events[49].hash
        )),
        "{shown}"
    );
}

#[test]
fn an_edited_field_is_a_hash_mismatch_at_its_seq() {
    let fx = Fixture::new(50);
    for (field, value) in [
        ("action", "record.delete"),
        ("resource", "records/someone-else"),
        ("outcome", "error"),
        ("request_id", "req-forged"),
        ("time", "2026-03-01T12:35:16.000008Z"),
        ("via_region", "ap-southeast-1"),
    ] {
        let mut lines = fx.lines();
        lines[19] = edit_json(&lines[19], |v| v[field] = value.into());
        let err = fx.verify(&join(&lines)).expect_err(field);
        assert_eq!(err.seq, Some(20), "{field}");
        assert_eq!(fault(&err), &Fault::HashMismatch, "{field}");
        assert_eq!(
            err.to_string(),
            "event seq 20: hash does not match its contents (edited)"
        );
    }
    let mut lines = fx.lines();
    lines[19] = edit_json(&lines[19], |v| v["actor"]["id"] = "key_9".into());
    fx.assert_refused(&lines, Some(20), &Fault::HashMismatch, "actor edited");
}

#[test]
fn an_edited_event_with_a_recomputed_hash_breaks_the_next_link() {
    let fx = Fixture::new(50);
    let mut forged: Event = fx.events[19].clone();
    forged.resource = "records/elsewhere".to_owned();
    forged.hash = audit::event_hash(&forged.prev_hash, &forged);
    let mut lines = fx.lines();
    lines[19] = forged.to_json();
    fx.assert_refused(&lines, Some(21), &Fault::BrokenLink, "rewritten");
}

#[test]
fn a_deleted_event_is_a_broken_link_at_the_next_seq() {
    let fx = Fixture::new(50);
    let mut lines = fx.lines();
    lines.remove(19);
    let err = fx.assert_refused(&lines, Some(21), &Fault::BrokenLink, "deleted");
    assert!(
        err.to_string()
            .starts_with("event seq 21: prev_hash does not match"),
        "{err}"
    );
}

#[test]
fn deleting_the_first_event_is_caught_by_the_signed_manifest() {
    let fx = Fixture::new(50);
    let mut lines = fx.lines();
    lines.remove(0);
    let err = fx.verify(&join(&lines)).expect_err("first deleted");
    assert_eq!(err.seq, Some(1));
    assert_eq!(
        fault(&err),
        &Fault::CountMismatch {
            manifest: 50,
            actual: 49
        }
    );
}

#[test]
fn swapped_events_are_a_broken_link() {
    let fx = Fixture::new(50);
    let mut lines = fx.lines();
    lines.swap(19, 20);
    fx.assert_refused(&lines, Some(21), &Fault::BrokenLink, "swapped");
}

#[test]
fn a_forged_event_with_a_wrong_link_is_a_broken_link() {
    let fx = Fixture::new(50);
    // Self-consistent (its hash matches its contents) but linked to nothing real.
    let forged = next(
        Some(audit::Head {
            seq: 20,
            hash: Hash::from_bytes([0x5a; 32]),
        }),
        new_event(tenant(), 999),
    );
    assert_eq!(forged.seq, 21);
    let mut lines = fx.lines();
    lines.insert(20, forged.to_json());
    fx.assert_refused(&lines, Some(21), &Fault::BrokenLink, "forged");
}

#[test]
fn a_forged_event_linked_correctly_breaks_its_successor() {
    let fx = Fixture::new(50);
    let forged = next(Some(fx.events[19].head()), new_event(tenant(), 999));
    let mut lines = fx.lines();
    lines.insert(20, forged.to_json());
    fx.assert_refused(&lines, Some(21), &Fault::BrokenLink, "forged");
}

#[test]
fn a_forged_event_appended_at_the_end_is_caught_by_the_manifest() {
    let fx = Fixture::new(50);
    let forged = next(Some(fx.events[49].head()), new_event(tenant(), 51));
    let mut lines = fx.lines();
    lines.insert(50, forged.to_json());
    let err = fx.verify(&join(&lines)).expect_err("appended");
    assert_eq!(err.seq, Some(51));
    assert_eq!(
        fault(&err),
        &Fault::CountMismatch {
            manifest: 50,
            actual: 51
        }
    );
}

#[test]
fn a_forged_first_event_does_not_link_to_genesis() {
    let fx = Fixture::new(50);
    let forged = next(
        Some(audit::Head {
            seq: 0,
            hash: Hash::from_bytes([0; 32]),
        }),
        new_event(tenant(), 1),
    );
    let mut lines = fx.lines();
    lines[0] = forged.to_json();
    fx.assert_refused(&lines, Some(1), &Fault::BrokenLink, "forged genesis");
}

#[test]
fn a_truncated_end_with_the_manifest_kept_is_a_count_mismatch() {
    let fx = Fixture::new(50);
    let mut lines = fx.lines();
    lines.drain(45..50);
    assert!(lines[45].starts_with("{\"manifest\""));
    let err = fx.verify(&join(&lines)).expect_err("truncated");
    assert_eq!(err.seq, Some(46), "the first missing seq");
    assert_eq!(
        fault(&err),
        &Fault::CountMismatch {
            manifest: 50,
            actual: 45
        }
    );
    assert_eq!(
        err.to_string(),
        "event seq 46: manifest lists 50 events, the bundle holds 45 (events removed or added)"
    );
}

#[test]
fn a_truncated_bundle_without_its_manifest_is_missing_the_manifest() {
    let fx = Fixture::new(50);
    let mut lines = fx.lines();
    lines.pop();
    fx.assert_refused(&lines, None, &Fault::MissingManifest, "no manifest");
    lines.truncate(30);
    let err = fx.verify(&join(&lines)).expect_err("no manifest");
    assert_eq!(fault(&err), &Fault::MissingManifest);
    // Cut in the middle of a line.
    let text = fx.bundle();
    let err = fx.verify(&text[..text.len() / 2]).expect_err("cut");
    assert!(matches!(fault(&err), Fault::Malformed { .. }), "{err}");
}

#[test]
fn a_changed_manifest_is_a_bad_signature() {
    // Signature first: a manifest field that was changed is never believed, so a changed
    // count is reported as a bad signature rather than as a count mismatch.
    let fx = Fixture::new(50);
    for edit in [
        (|m: &mut serde_json::Value| m["count"] = 49.into()) as fn(&mut serde_json::Value),
        |m| m["last_seq"] = 49.into(),
        |m| m["head_hash"] = "00".repeat(32).into(),
        |m| m["checkpoint"]["seq"] = 49.into(),
        |m| m["checkpoint"]["signed_at"] = "2026-03-03T00:00:00.000000Z".into(),
        |m| m["from"] = "2026-03-01T00:00:00.000000Z".into(),
        |m| m["tenant"] = other_tenant().to_string().into(),
    ] {
        let mut lines = fx.lines();
        lines[50] = edit_json(&lines[50], |v| edit(&mut v["manifest"]));
        let err = fx.verify(&join(&lines)).expect_err("manifest edited");
        assert_eq!(
            (err.seq, fault(&err)),
            (None, &Fault::BadSignature),
            "{}",
            lines[50]
        );
    }
}

#[test]
fn a_bundle_signed_with_another_key_is_refused() {
    let fx = Fixture::new(50);
    let stranger = SigningKey::generate(region());
    let text = bundle(&stranger, tenant(), &fx.events, None, None);
    let err = fx.verify(&text).expect_err("unknown key");
    assert_eq!(
        fault(&err),
        &Fault::UnknownKey {
            key_id: stranger.key_id().to_owned()
        }
    );

    // The stranger's manifest relabelled with the trusted key's id.
    let mut lines = lines(&text);
    lines[50] = edit_json(&lines[50], |v| {
        v["manifest"]["key_id"] = fx.key.key_id().into()
    });
    let err = fx.verify(&join(&lines)).expect_err("relabelled");
    assert_eq!(fault(&err), &Fault::BadSignature);
}

#[test]
fn a_key_of_another_region_is_not_trusted_for_this_one() {
    let fx = Fixture::new(5);
    let text = fx.bundle();
    let mut lines = lines(&text);
    lines[5] = edit_json(&lines[5], |v| v["manifest"]["region"] = "us-east-1".into());
    let err = fx.verify(&join(&lines)).expect_err("foreign region");
    assert!(matches!(fault(&err), Fault::UnknownKey { .. }), "{err}");
}

#[test]
fn a_range_starting_mid_chain_verifies() {
    let fx = Fixture::new(50);
    let from = fx.events[19].time;
    let text = bundle(&fx.key, tenant(), &fx.events[19..], Some(from), None);
    let summary = fx.verify(&text).expect("mid-chain range");
    assert_eq!(
        (summary.first_seq, summary.last_seq, summary.count),
        (Some(20), Some(50), 31)
    );
    assert_eq!(summary.from, Some(from));
    assert_eq!(summary.to, None);

    // Its first event is taken as given, but the rest still link.
    let mut lines = lines(&text);
    lines.remove(1);
    fx.assert_refused(&lines, Some(22), &Fault::BrokenLink, "second removed");
}

#[test]
fn a_range_in_the_middle_verifies() {
    let fx = Fixture::new(50);
    let text = bundle(
        &fx.key,
        tenant(),
        &fx.events[9..30],
        Some(fx.events[9].time),
        Some(fx.events[30].time),
    );
    let summary = fx.verify(&text).expect("middle range");
    assert_eq!((summary.first_seq, summary.last_seq), (Some(10), Some(30)));
}

#[test]
fn an_empty_bundle_verifies() {
    let fx = Fixture::new(0);
    let text = fx.bundle();
    assert_eq!(lines(&text).len(), 1);
    let summary = fx.verify(&text).expect("empty");
    assert_eq!(summary.count, 0);
    assert_eq!(summary.head_hash, None);
    assert!(summary.to_string().contains("0 events"), "{summary}");
}

#[test]
fn an_edited_seq_is_a_gap_or_out_of_order() {
    let fx = Fixture::new(50);
    let mut lines = fx.lines();
    lines[19] = edit_json(&lines[19], |v| v["seq"] = 25.into());
    let err = fx.verify(&join(&lines)).expect_err("seq skipped");
    assert_eq!(err.seq, Some(25));
    assert_eq!(
        fault(&err),
        &Fault::SeqGap {
            expected: 20,
            found: 25
        }
    );

    let mut lines = fx.lines();
    lines[19] = edit_json(&lines[19], |v| v["seq"] = 18.into());
    let err = fx.verify(&join(&lines)).expect_err("seq repeated");
    assert_eq!(
        fault(&err),
        &Fault::SeqOutOfOrder {
            expected: 20,
            found: 18
        }
    );
}

#[test]
fn an_event_of_another_tenant_is_refused() {
    let fx = Fixture::new(50);
    let foreign = chain(other_tenant(), 20);
    let mut lines = fx.lines();
    lines[19] = foreign[19].to_json();
    fx.assert_refused(&lines, Some(20), &Fault::WrongTenant, "foreign event");
}

#[test]
fn a_manifest_of_another_tenant_is_refused() {
    let fx = Fixture::new(10);
    let mut lines = fx.lines();
    let manifest = build_manifest(
        &fx.key,
        ManifestInput {
            tenant: other_tenant(),
            from: None,
            to: None,
            first_seq: Some(1),
            last: Some(fx.events[9].head()),
            count: 10,
            signed_at: epoch(),
        },
    );
    lines[10] = manifest_line(&manifest).trim_end().to_owned();
    let err = fx
        .verify(&join(&lines))
        .expect_err("other tenant's manifest");
    assert_eq!(fault(&err), &Fault::WrongTenant);
}

#[test]
fn a_manifest_with_another_head_is_a_head_mismatch() {
    let fx = Fixture::new(10);
    let mut lines = fx.lines();
    let mut head = fx.events[9].head();
    head.hash = Hash::from_bytes([1; 32]);
    let manifest = build_manifest(
        &fx.key,
        ManifestInput {
            tenant: tenant(),
            from: None,
            to: None,
            first_seq: Some(1),
            last: Some(head),
            count: 10,
            signed_at: epoch(),
        },
    );
    lines[10] = manifest_line(&manifest).trim_end().to_owned();
    fx.assert_refused(&lines, Some(10), &Fault::HeadMismatch, "other head");

    let manifest = build_manifest(
        &fx.key,
        ManifestInput {
            tenant: tenant(),
            from: None,
            to: None,
            first_seq: Some(2),
            last: Some(fx.events[9].head()),
            count: 10,
            signed_at: epoch(),
        },
    );
    lines[10] = manifest_line(&manifest).trim_end().to_owned();
    let err = fx.verify(&join(&lines)).expect_err("other range");
    assert_eq!(err.seq, Some(1));
    assert_eq!(
        fault(&err),
        &Fault::RangeMismatch {
            manifest: Some((2, 10)),
            actual: Some((1, 10))
        }
    );
}

#[test]
fn data_after_the_manifest_is_refused() {
    let fx = Fixture::new(10);
    let mut lines = fx.lines();
    lines.push(event_line(&fx.events[9]).trim_end().to_owned());
    let err = fx.verify(&join(&lines)).expect_err("event after manifest");
    assert_eq!(fault(&err), &Fault::TrailingData { line: 12 });

    let mut text = fx.bundle();
    text.push_str("\n  \n");
    fx.verify(&text).expect("trailing whitespace is fine");
    text.push('x');
    let err = fx.verify(&text).expect_err("garbage");
    assert!(matches!(fault(&err), Fault::TrailingData { .. }), "{err}");
}

#[test]
fn malformed_lines_are_refused_with_their_line_number() {
    let fx = Fixture::new(10);
    for (i, bad) in [
        (3, "not json".to_owned()),
        (3, String::new()),
        (4, edit_json(&fx.lines()[4], |v| v["extra"] = 1.into())),
        (
            4,
            edit_json(&fx.lines()[4], |v| v["action"] = "record.steal".into()),
        ),
        (
            4,
            edit_json(&fx.lines()[4], |v| {
                v["time"] = "2026-03-01T12:34:56Z".into()
            }),
        ),
        (
            4,
            edit_json(&fx.lines()[4], |v| v["hash"] = "AB".repeat(32).into()),
        ),
        (10, r#"{"manifest":{"count":3}}"#.to_owned()),
    ] {
        let mut lines = fx.lines();
        lines[i] = bad.clone();
        let err = fx.verify(&join(&lines)).expect_err(&bad);
        let expected_line = u64::try_from(i).expect("small") + 1;
        assert!(
            matches!(fault(&err), Fault::Malformed { line, .. } if *line == expected_line),
            "{bad}: {err}"
        );
    }
}

#[test]
fn an_overlong_line_is_refused_without_reading_it_all() {
    let fx = Fixture::new(2);
    let mut text = "x".repeat(audit::MAX_LINE_BYTES + 10);
    text.push('\n');
    text.push_str(&fx.bundle());
    let err = fx.verify(&text).expect_err("overlong");
    assert!(
        matches!(fault(&err), Fault::Malformed { line: 1, .. }),
        "{err}"
    );
}

#[test]
fn crlf_line_endings_verify() {
    let fx = Fixture::new(10);
    let text = fx.bundle().replace('\n', "\r\n");
    fx.verify(&text).expect("CRLF");
}

#[test]
fn a_bare_public_key_and_a_key_list_both_verify() {
    let fx = Fixture::new(10);
    let text = fx.bundle();
    let bare = KeySet::from_public_key(&fx.key.public().public_key).expect("valid key");
    verify_bundle(text.as_bytes(), &bare).expect("bare key");

    let retired = SigningKey::generate(region());
    let list = format!(
        r#"{{"keys":[{},{}]}}"#,
        serde_json::to_string(&retired.public()).expect("serializes"),
        serde_json::to_string(&fx.key.public()).expect("serializes")
    );
    let listed = KeySet::from_json(&list).expect("valid list");
    assert_eq!(listed.len(), 2);
    verify_bundle(text.as_bytes(), &listed).expect("listed key");

    let other = KeySet::from_public_key(&retired.public().public_key).expect("valid key");
    let err = verify_bundle(text.as_bytes(), &other).expect_err("wrong key");
    assert!(matches!(fault(&err), Fault::UnknownKey { .. }), "{err}");
}

#[test]
fn ten_thousand_events_verify() {
    let fx = Fixture::new(10_000);
    let text = fx.bundle();
    let summary = fx.verify(&text).expect("intact");
    assert_eq!(summary.count, 10_000);
    assert_eq!(summary.head_hash, Some(fx.events[9_999].hash));

    let mut lines = lines(&text);
    lines[7_776] = edit_json(&lines[7_776], |v| v["resource"] = "records/x".into());
    fx.assert_refused(&lines, Some(7_777), &Fault::HashMismatch, "edited");
}

#[test]
fn event_times_keep_microseconds_through_the_bundle() {
    let fx = Fixture::new(3);
    for (event, line) in fx.events.iter().zip(fx.lines()) {
        let parsed = Event::from_json(&line).expect("event line");
        assert_eq!(&parsed, event);
        assert_eq!(parsed.time, audit::truncate_to_micros(parsed.time));
        assert_ne!(
            parsed
                .time
                .duration_since(epoch())
                .expect("later")
                .subsec_micros()
                % 1_000,
            0,
            "microseconds are kept"
        );
    }
}

#[test]
fn a_respelled_bundle_verifies_the_same() {
    // Keys reordered, whitespace added, characters escaped: the same JSON values, so the
    // same verdicts (these lines take the verifier's serde path, not its fast path).
    let fx = Fixture::new(20);
    let respell = |line: &String| {
        let value: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        serde_json::to_string_pretty(&value)
            .expect("serializes")
            .replace('\n', "")
            .replace("\"records/", "\"rec\\u006frds/")
    };
    let lines: Vec<String> = fx.lines().iter().map(respell).collect();
    assert!(lines[0].contains("\\u006f") && lines[0].starts_with("{  \"action\""));
    let summary = fx.verify(&join(&lines)).expect("respelled");
    assert_eq!(summary.count, 20);

    let mut edited = lines.clone();
    edited[4] = edited[4].replace("rec\\u006frds/", "rec\\u006Frds/x");
    fx.assert_refused(&edited, Some(5), &Fault::HashMismatch, "edited");
}

#[test]
fn lines_split_across_reader_buffers_verify() {
    let fx = Fixture::new(50);
    let text = fx.bundle();
    for capacity in [1, 64, 333, 1_000, 4_096] {
        let reader = std::io::BufReader::with_capacity(capacity, text.as_bytes());
        verify_bundle(reader, &fx.keys).expect("intact");
    }
    let mut lines = fx.lines();
    lines[30] = edit_json(&lines[30], |v| v["action"] = "file.get".into());
    let text = join(&lines);
    for capacity in [1, 333, 4_096] {
        let reader = std::io::BufReader::with_capacity(capacity, text.as_bytes());
        let err = verify_bundle(reader, &fx.keys).expect_err("edited");
        assert_eq!((err.seq, fault(&err)), (Some(31), &Fault::HashMismatch));
    }
}
