//! Rotating a region's audit signing key on a running region: two nodes of one region
//! started from the same key text; an operator rotates through one of them; within a
//! second the other signs with the new key too, and both publish the old key with its
//! validity, so a bundle exported before the rotation still verifies.

use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::testing::TestDatabase;
use envelope::kms::local::LocalKms;
use model::RegionId;
use node::{ApiSettings, Platform, RunningNode};
use serde_json::{Value, json};
use service::AuditKeys;

use crate::support::node_config;

const OPERATOR: &str = "rso.audit-key-rotation-test-operator-token-0123";

struct Call {
    status: u16,
    body: Value,
    text: String,
}

async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Call {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("{url}: {err}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Call { status, body, text }
}

async fn start(
    id: &RegionId,
    database: &TestDatabase,
    kms: &Arc<LocalKms>,
    state: &std::path::Path,
    key_text: &str,
) -> RunningNode {
    let mut config = node_config(
        id,
        database,
        kms.clone(),
        state,
        Platform {
            regions: vec![id.clone()],
            operator: service::access::OperatorToken::new(OPERATOR),
            api: ApiSettings::default(),
            routing: None,
        },
    );
    config.audit.keys = AuditKeys::parse(id, key_text).expect("key text");
    node::start(
        config,
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    )
    .await
    .expect("start the node")
}

fn key_ids(keys: &Call) -> Vec<String> {
    keys.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| key["key_id"].as_str().expect("key id").to_owned())
        .collect()
}

#[tokio::test]
async fn an_operator_rotates_the_audit_key_and_every_node_signs_with_it() {
    use reqwest::Method;
    let state = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let database = TestDatabase::create(None).await;
    let kms =
        Arc::new(LocalKms::open_or_create(&state.path().join("kms"), id.clone()).expect("kms"));
    let text = AuditKeys::generate(id.clone()).to_text();
    let first = start(&id, &database, &kms, state.path(), text.expose()).await;
    let second = start(&id, &database, &kms, state.path(), text.expose()).await;
    let (a, b) = (
        format!("http://{}", first.address),
        format!("http://{}", second.address),
    );

    let created = call(
        Method::POST,
        &format!("{a}/v1/tenants"),
        Some(OPERATOR),
        Some(json!({"name": "Acme", "home_region": "eu-west-1"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let tenant = created.body["id"].as_str().expect("id").to_owned();
    let admin = created.body["admin_key"]
        .as_str()
        .expect("admin")
        .to_owned();
    let auditor = call(
        Method::POST,
        &format!("{a}/v1/tenants/{tenant}/api-keys"),
        Some(&admin),
        Some(json!({"name": "audit", "role": "auditor"})),
    )
    .await;
    assert_eq!(auditor.status, 201, "{}", auditor.text);
    let auditor = auditor.body["key"].as_str().expect("key").to_owned();
    let export = |base: String| {
        let (tenant, auditor) = (tenant.clone(), auditor.clone());
        async move {
            let export = call(
                Method::GET,
                &format!("{base}/v1/tenants/{tenant}/audit/export"),
                Some(&auditor),
                None,
            )
            .await;
            assert_eq!(export.status, 200, "{}", export.text);
            export.text
        }
    };
    let before = export(a.clone()).await;
    let evidence = |base: String| {
        let (tenant, auditor) = (tenant.clone(), auditor.clone());
        async move {
            let evidence = call(
                Method::GET,
                &format!("{base}/v1/tenants/{tenant}/residency"),
                Some(&auditor),
                None,
            )
            .await;
            assert_eq!(evidence.status, 200, "{}", evidence.text);
            serde_json::from_value::<wire::api::ResidencyEvidence>(evidence.body).expect("evidence")
        }
    };
    let evidence_before = evidence(b.clone()).await;
    let keys_before = call(Method::GET, &format!("{b}/v1/audit/keys"), None, None).await;
    let original = key_ids(&keys_before);
    assert_eq!(original.len(), 1, "{}", keys_before.text);

    // Operators only, and nothing changes on a refusal.
    let rotate = format!("{a}/v1/audit/keys/rotate");
    let refused = call(Method::POST, &rotate, None, None).await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let refused = call(Method::POST, &rotate, Some(&admin), None).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    let unchanged = call(Method::GET, &format!("{a}/v1/audit/keys"), None, None).await;
    assert_eq!(key_ids(&unchanged), original);

    let rotated = call(Method::POST, &rotate, Some(OPERATOR), None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    let new_key = rotated.body["key_id"].as_str().expect("key id").to_owned();
    assert_eq!(rotated.body["previous_key_id"], original[0].as_str());
    assert_ne!(new_key, original[0]);

    // The other node hears of it within a second.
    let started = Instant::now();
    let listed = loop {
        let listed = call(Method::GET, &format!("{b}/v1/audit/keys"), None, None).await;
        if key_ids(&listed).first() == Some(&new_key) {
            break listed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the second node publishes the new key within a second: {}",
            listed.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(key_ids(&listed), [new_key.clone(), original[0].clone()]);
    let (current, retired) = (&listed.body["keys"][0], &listed.body["keys"][1]);
    assert!(current["valid_from"].is_string() && current.get("valid_until").is_none());
    assert!(retired["valid_until"].is_string(), "{}", listed.text);
    assert!(
        retired.get("valid_from").is_none(),
        "the imported key signed since before the region recorded it"
    );

    // A bundle exported before verifies with the keys published after; one exported by
    // the second node now carries the new key.
    let keys = audit::KeySet::from_json(&listed.text).expect("published keys");
    let old = audit::verify_bundle(before.as_bytes(), &keys).expect("the old bundle verifies");
    assert_eq!(old.key_id, original[0]);
    let after = export(b.clone()).await;
    let new = audit::verify_bundle(after.as_bytes(), &keys).expect("the new bundle verifies");
    assert_eq!(new.key_id, new_key);
    // Residency evidence signed before and after verifies with the same published list.
    let evidence_after = evidence(b.clone()).await;
    assert_eq!(evidence_before.key_id, original[0]);
    assert_eq!(evidence_after.key_id, new_key);
    for signed in [&evidence_before, &evidence_after] {
        let payload = service::compliance::evidence_payload(signed).expect("payload");
        let signature = audit::Signature::from_base64(&signed.signature).expect("signature");
        assert!(
            keys.verify_signature(&signed.key_id, "eu-west-1", &payload, &signature),
            "evidence signed by {} verifies",
            signed.key_id
        );
    }

    first.stop().await.expect("stop");
    second.stop().await.expect("stop");
    // Restarted from the same (old) key text, a node signs with the region's key.
    let again = start(&id, &database, &kms, state.path(), text.expose()).await;
    let relisted = call(
        Method::GET,
        &format!("http://{}/v1/audit/keys", again.address),
        None,
        None,
    )
    .await;
    assert_eq!(key_ids(&relisted), [new_key, original[0].clone()]);
    again.stop().await.expect("stop");
}
