//! The tamper test of issue 30 through `residency dev`: checkpoints are anchored in the
//! region's audit bucket; whoever has full access to the database deletes the last events
//! of a chain and resets its head; the bundle exported then verifies on its own, and
//! `residency audit verify --anchors` refuses it, naming the missing range.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dev::{Dev, api_endpoint, operator_token};
use crate::residency;

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("send request");
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

async fn head_seq(db: &tokio_postgres::Client, tenant: &str) -> i64 {
    db.query_one(
        "select seq from audit_heads where tenant_id = $1",
        &[&tenant],
    )
    .await
    .expect("the tenant's head")
    .get(0)
}

/// Waits until the checkpoint of `seq` is anchored in the bucket directory.
async fn wait_for_anchor(bucket: &Path, tenant: &str, seq: i64, dev: &Dev) {
    let file = bucket.join(format!("checkpoints/{tenant}/{seq:020}.json"));
    let started = Instant::now();
    while !file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "seq {seq} was never anchored in {}:\n{}",
            bucket.display(),
            dev.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `residency audit verify` of `bundle` with `args` (keys, anchors), with moto's fixed
/// credentials in the environment (for `--anchors s3://…`).
fn verify(bundle: &str, args: &[&str]) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().expect("bundle file");
    std::fs::write(file.path(), bundle).expect("write bundle");
    crate::outcome(
        residency()
            .args(["audit", "verify", "--bundle"])
            .arg(file.path())
            .args(args)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true"),
    )
}

#[tokio::test]
async fn a_cut_tail_and_a_reset_head_pass_verify_but_not_verify_against_the_anchors() {
    let state = tempfile::tempdir().expect("state dir");
    let mut dev = Dev::spawn_with_env(
        state.path(),
        "eu-central-1",
        &[("RESIDENCY_AUDIT_CHECKPOINT_INTERVAL", "1")],
    );
    let endpoints = dev.endpoints().await;
    let operator: &str = &operator_token(&endpoints);
    let api = api_endpoint(&endpoints, "eu-central-1");
    let bucket = state.path().join("eu-central-1/audit-bucket");
    let bucket_arg = bucket.to_string_lossy().into_owned();
    let keys_url = format!("{api}/v1/audit/keys");
    let http = reqwest::Client::new();

    let (status, tenant) = send(
        http.post(format!("{api}/v1/tenants"))
            .bearer_auth(operator)
            .json(&json!({"name": "Anchored Ltd", "home_region": "eu-central-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{tenant:?}\n{}", dev.output());
    let id = tenant["id"].as_str().expect("tenant id").to_owned();
    let admin = tenant["admin_key"].as_str().expect("admin key");
    let base = format!("{api}/v1/tenants/{id}");
    let mut keys = Vec::new();
    for role in ["auditor", "writer"] {
        let (status, key) = send(
            http.post(format!("{base}/api-keys"))
                .bearer_auth(admin)
                .json(&json!({"name": role, "role": role})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{key:?}");
        keys.push(key["key"].as_str().expect("key").to_owned());
    }
    let (auditor, writer) = (&keys[0], &keys[1]);
    let (status, _) = send(
        http.put(format!("{base}/collections/notes"))
            .bearer_auth(admin)
            .json(&json!({"fields": {"title": {"type": "string", "class": "identifier"}}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for i in 0..4 {
        let (status, _) = send(
            http.post(format!("{base}/collections/notes/records"))
                .bearer_auth(writer)
                .json(&json!({"data": {"title": format!("note {i}")}})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let export = || async {
        let response = http
            .get(format!("{base}/audit/export"))
            .bearer_auth(auditor)
            .send()
            .await
            .expect("export");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("bundle")
    };

    let primary = endpoints["regions"]["eu-central-1"]["primary"]
        .as_str()
        .expect("primary url");
    let (db, connection) = tokio_postgres::connect(primary, tokio_postgres::NoTls)
        .await
        .expect("connect to the primary");
    tokio::spawn(connection);

    // Intact: the bundle matches the anchors.
    wait_for_anchor(&bucket, &id, head_seq(&db, &id).await, &dev).await;
    let intact = export().await;
    let (ok, out) = verify(
        &intact,
        &["--keys-url", &keys_url, "--anchors", &bucket_arg],
    );
    assert!(ok, "{out}");
    assert!(out.contains("anchored checkpoint"), "{out}");

    // Everything up to the export's own event is anchored; then, with full access to the
    // database, the last events are deleted (with their checkpoints) and the head reset.
    let anchored = head_seq(&db, &id).await;
    wait_for_anchor(&bucket, &id, anchored, &dev).await;
    let kept: i64 = 3;
    db.execute(
        "delete from audit_events where tenant_id = $1 and seq > $2",
        &[&id, &kept],
    )
    .await
    .expect("delete the last events");
    db.execute(
        "delete from audit_checkpoints where tenant_id = $1 and seq > $2",
        &[&id, &kept],
    )
    .await
    .expect("delete their checkpoints");
    db.execute(
        "update audit_heads set seq = $2,
             hash = (select hash from audit_events where tenant_id = $1 and seq = $2)
         where tenant_id = $1",
        &[&id, &kept],
    )
    .await
    .expect("reset the head");

    let cut = export().await;
    let manifest: Value =
        serde_json::from_str(cut.lines().last().expect("manifest line")).expect("manifest JSON");
    let last = manifest["manifest"]["last_seq"].as_i64().expect("last seq");
    assert!(
        last < anchored,
        "the export ends before the anchor ({last})"
    );

    // Today's weakness: the bundle alone verifies.
    let (ok, out) = verify(&cut, &["--keys-url", &keys_url]);
    assert!(ok, "the cut bundle verifies on its own: {out}");
    assert!(out.contains("bundle intact"), "{out}");

    // Against the anchors it is refused, naming the missing range.
    let (ok, out) = verify(&cut, &["--keys-url", &keys_url, "--anchors", &bucket_arg]);
    assert!(!ok, "the cut tail must be caught: {out}");
    let expected = format!(
        "bundle rejected: events {}..{anchored} are missing: anchored checkpoint at seq {anchored}",
        last + 1
    );
    assert!(out.contains(&expected), "expected {expected:?} in {out}");

    // The flag is checked: a directory that is not there is no silent pass.
    let nowhere = state.path().join("nowhere").to_string_lossy().into_owned();
    let (ok, out) = verify(&cut, &["--keys-url", &keys_url, "--anchors", &nowhere]);
    assert!(!ok && out.contains("is not a directory"), "{out}");
}

/// Events 1..=n of a new tenant's chain in `region`.
fn chain(region: &model::RegionId, n: u64) -> Vec<audit::Event> {
    let tenant = model::TenantId::from_random_bytes(rand::random());
    let mut events: Vec<audit::Event> = Vec::new();
    for i in 1..=n {
        let event = audit::next(
            events.last().map(audit::Event::head),
            audit::NewEvent {
                time: std::time::SystemTime::now(),
                region: region.clone(),
                tenant,
                actor: audit::Actor {
                    kind: audit::ActorKind::ApiKey,
                    id: "key_1".into(),
                },
                action: audit::Action::RecordCreate,
                resource: format!("records/r{i}"),
                outcome: audit::Outcome::Success,
                request_id: format!("req-{i}"),
                via_region: region.clone(),
            },
        );
        events.push(event);
    }
    events
}

/// The bundle of `events`, exported now, to now.
fn export_of(key: &audit::SigningKey, events: &[audit::Event]) -> String {
    let first = &events[0];
    let mut writer = audit::BundleWriter::new(first.tenant, first.region.clone(), None, None);
    let mut out = Vec::new();
    for event in events {
        writer.write_event(event, &mut out).expect("event line");
    }
    out.extend_from_slice(
        writer
            .finish(key, std::time::SystemTime::now())
            .expect("manifest")
            .as_bytes(),
    );
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test]
async fn anchors_are_read_from_an_s3_bucket() {
    use envelope::objects::ObjectStore as _;

    // us-east-1: a bucket there needs no location constraint.
    let region = model::RegionId::parse("us-east-1").expect("region");
    let moto = devstack::testing::shared_moto().endpoint_url();
    let settings = envelope::aws::AwsSettings {
        region: region.clone(),
        endpoint_url: Some(moto.clone()),
        credentials: envelope::aws::AwsCredentials::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    };
    let name = format!("audit-{}", hex::encode(rand::random::<[u8; 5]>()));
    envelope::aws::s3_client(&settings, true)
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create bucket");
    let bucket = envelope::objects::s3::S3ObjectStore::new(&settings, name.clone(), true);

    let key = audit::SigningKey::generate(region.clone());
    let events = chain(&region, 10);
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for seq in [5u64, 10] {
        let event = &events[usize::try_from(seq - 1).expect("small")];
        let checkpoint = audit::sign_checkpoint(&key, &event.tenant, seq, &event.hash, an_hour_ago);
        let bytes = bytes::Bytes::from(audit::anchor_json(&checkpoint));
        let object = envelope::objects::ObjectKey::parse(&audit::anchor_name(&event.tenant, seq))
            .expect("object key");
        bucket
            .put(
                &object,
                Box::pin(futures::stream::once(async { Ok(bytes) })),
            )
            .await
            .expect("put anchor");
    }
    let public_key = key.public().public_key.clone();
    let url = format!("s3://{name}");
    let check = |bundle: String| {
        let args = [
            "--public-key".to_owned(),
            public_key.clone(),
            "--anchors".to_owned(),
            url.clone(),
            "--anchors-endpoint".to_owned(),
            moto.clone(),
        ];
        async move {
            tokio::task::spawn_blocking(move || {
                verify(
                    &bundle,
                    &args.iter().map(String::as_str).collect::<Vec<_>>(),
                )
            })
            .await
            .expect("join")
        }
    };

    let (ok, out) = check(export_of(&key, &events)).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("; 2 anchored checkpoints match (newest at seq 10"),
        "{out}"
    );
    let (ok, out) = check(export_of(&key, &events[..7])).await;
    assert!(!ok, "a cut tail must be caught: {out}");
    assert!(
        out.contains("bundle rejected: events 8..10 are missing: anchored checkpoint at seq 10"),
        "{out}"
    );
}
