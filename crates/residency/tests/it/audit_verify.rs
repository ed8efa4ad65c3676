//! `residency audit verify` on bundles built with the region's signing code: an intact
//! bundle passes with each way of giving keys; an edited one is rejected naming the seq.

use std::io::Write as _;
use std::time::SystemTime;

use audit::{Action, Actor, ActorKind, BundleWriter, KeyList, NewEvent, Outcome, SigningKey};
use model::{RegionId, TenantId};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::residency;

fn bundle(key: &SigningKey, events: u64) -> String {
    let region = RegionId::parse("eu-central-1").expect("region");
    let tenant = TenantId::from_random_bytes(rand::random());
    let mut writer = BundleWriter::new(tenant, region.clone(), None, None);
    let mut out = Vec::new();
    let mut head = None;
    for i in 0..events {
        let event = audit::next(
            head,
            NewEvent {
                time: SystemTime::now(),
                region: region.clone(),
                tenant,
                actor: Actor {
                    kind: ActorKind::ApiKey,
                    id: "key_1".into(),
                },
                action: Action::RecordRead,
                resource: format!("records/r{i}"),
                outcome: Outcome::Success,
                request_id: format!("req-{i}"),
                via_region: region.clone(),
            },
        );
        head = Some(event.head());
        writer.write_event(&event, &mut out).expect("event line");
    }
    out.extend_from_slice(
        writer
            .finish(key, SystemTime::now())
            .expect("manifest")
            .as_bytes(),
    );
    String::from_utf8(out).expect("utf-8")
}

fn verify(bundle: &str, key_args: &[&str]) -> (bool, String) {
    let mut file = tempfile::NamedTempFile::new().expect("bundle file");
    file.write_all(bundle.as_bytes()).expect("write bundle");
    crate::outcome(
        residency()
            .args(["audit", "verify", "--bundle"])
            .arg(file.path())
            .args(key_args),
    )
}

fn public_key_b64(key: &SigningKey) -> String {
    key.public().public_key.clone()
}

#[test]
fn an_intact_bundle_verifies_and_an_edited_one_names_the_first_bad_seq() {
    let key = SigningKey::generate(RegionId::parse("eu-central-1").expect("region"));
    let intact = bundle(&key, 40);
    let b64 = public_key_b64(&key);
    let (ok, out) = verify(&intact, &["--public-key", &b64]);
    assert!(ok, "{out}");
    assert!(out.contains("bundle intact") && out.contains("40"), "{out}");

    let edited = intact.replacen("records/r7\"", "records/r99\"", 1);
    assert_ne!(edited, intact);
    let (ok, out) = verify(&edited, &["--public-key", &b64]);
    assert!(!ok, "an edited bundle must be rejected");
    assert!(out.contains("seq 8"), "names the first bad seq: {out}");

    let lines: Vec<&str> = intact.lines().collect();
    let without_one: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 12)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let (ok, out) = verify(&without_one, &["--public-key", &b64]);
    assert!(
        !ok && out.contains("seq 14"),
        "a deleted event is named by the next seq: {out}"
    );

    let other = SigningKey::generate(RegionId::parse("eu-central-1").expect("region"));
    let (ok, out) = verify(&intact, &["--public-key", &public_key_b64(&other)]);
    assert!(!ok, "another key must not verify: {out}");
}

#[test]
fn keys_come_from_a_saved_keys_document() {
    let key = SigningKey::generate(RegionId::parse("eu-central-1").expect("region"));
    let keys = tempfile::NamedTempFile::new().expect("keys file");
    std::fs::write(
        keys.path(),
        serde_json::to_string(&KeyList {
            keys: vec![key.public()],
        })
        .expect("json"),
    )
    .expect("write");
    let (ok, out) = verify(
        &bundle(&key, 5),
        &["--keys-file", &keys.path().to_string_lossy()],
    );
    assert!(ok, "{out}");
}

#[tokio::test]
async fn keys_come_from_a_keys_url() {
    let key = SigningKey::generate(RegionId::parse("eu-central-1").expect("region"));
    let body = serde_json::to_string(&KeyList {
        keys: vec![key.public()],
    })
    .expect("json");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/v1/audit/keys",
        listener.local_addr().expect("addr")
    );
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).await;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket
            .write_all(response.as_bytes())
            .await
            .expect("respond");
    });
    let bundle = bundle(&key, 3);
    let (ok, out) = tokio::task::spawn_blocking(move || verify(&bundle, &["--keys-url", &url]))
        .await
        .expect("join");
    assert!(ok, "{out}");
    server.await.expect("server");
}
