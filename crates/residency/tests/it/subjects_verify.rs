//! `residency subjects verify-export` on exports signed with the region's signing code:
//! an intact export passes and its summary never names the subject; an edited one, or
//! one checked against another key, is rejected.

use std::io::Write as _;

use audit::SigningKey;
use model::RegionId;
use serde_json::json;

use crate::residency;

fn signed_export(key: &SigningKey) -> wire::api::SubjectExport {
    let mut export = wire::api::SubjectExport {
        subject: "ada@example.org".into(),
        subject_token: "ab".repeat(32),
        tenant: "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60".into(),
        region: "eu-central-1".into(),
        records: vec![wire::api::SubjectRecord {
            collection: "patients".into(),
            id: "r-1".into(),
            version: 2,
            data: json!({"owner": "ada@example.org", "note": "flu", "age": 36})
                .as_object()
                .expect("object")
                .clone(),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-02T00:00:00Z".into(),
            files: vec![],
            audit_events: vec![wire::api::SubjectAuditEvent {
                seq: 3,
                time: "2026-01-01T00:00:00Z".into(),
                action: "record.create".into(),
            }],
        }],
        cursor: None,
        next_cursor: None,
        generated_at: "2026-01-03T00:00:00Z".into(),
        key_id: key.key_id().to_owned(),
        signature: String::new(),
    };
    let payload = export.signed_payload().expect("payload");
    export.signature = key.sign(&payload).to_base64();
    export
}

fn verify(export: &str, public_key: &str) -> (bool, String) {
    let mut file = tempfile::NamedTempFile::new().expect("export file");
    file.write_all(export.as_bytes()).expect("write export");
    crate::outcome(
        residency()
            .args(["subjects", "verify-export", "--file"])
            .arg(file.path())
            .args(["--public-key", public_key]),
    )
}

#[test]
fn an_intact_export_verifies_and_an_edited_one_does_not() {
    let key = SigningKey::generate(RegionId::parse("eu-central-1").expect("region"));
    let public = key.public().public_key.clone();
    let intact = serde_json::to_string_pretty(&signed_export(&key)).expect("json");
    let (ok, out) = verify(&intact, &public);
    assert!(ok, "{out}");
    assert!(
        out.contains("export intact") && out.contains("1 records"),
        "{out}"
    );
    assert!(
        !out.contains("ada@"),
        "the summary never names the subject: {out}"
    );

    let edited = intact.replacen("\"flu\"", "\"cold\"", 1);
    assert_ne!(edited, intact);
    let (ok, out) = verify(&edited, &public);
    assert!(!ok && out.contains("export rejected"), "{out}");

    let other = SigningKey::generate(RegionId::parse("eu-central-1").expect("region"));
    let (ok, out) = verify(&intact, &other.public().public_key);
    assert!(!ok, "another key must not verify: {out}");
}
