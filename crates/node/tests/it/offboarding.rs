//! Offboarding through two nodes of one region: `DELETE /v1/tenants/{tenant}` makes every
//! path of the tenant answer 404 at once on the node that took it and within a second on
//! the other (which had the tenant and its keys cached); the purge job then leaves no row
//! of the tenant outside its audit chain and its job, and no object; the certificate
//! verifies with the region's published keys, a tampered one does not; the chain as
//! stored verifies, holds `tenant.delete` and the certificate names its head.

use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::testing::{TestDatabase, connect};
use envelope::kms::local::LocalKms;
use model::RegionId;
use reqwest::Method;
use serde_json::{Value, json};

use crate::jobs::{OPERATOR, call, start, tenant_with_record};

/// Tables whose rows about an offboarded tenant stay: its audit chain, its jobs, and what
/// the purge function recorded of each step (ids and counts).
const KEPT: &[&str] = &[
    "audit_events",
    "audit_heads",
    "audit_checkpoints",
    "jobs",
    "tenant_purges",
];

#[tokio::test]
async fn an_offboarded_tenant_is_gone_everywhere_purged_and_certified() {
    let dir = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let database = TestDatabase::create(None).await;
    let kms = Arc::new(LocalKms::open_or_create(&dir.path().join("kms"), id.clone()).expect("kms"));
    let first = start(&id, &database, kms.clone(), dir.path()).await;
    let second = start(&id, &database, kms, dir.path()).await;
    let (api, other) = (
        format!("http://{}", first.address),
        format!("http://{}", second.address),
    );

    let (tenant_id, admin, record) =
        tenant_with_record(&api, "Leaving", "leaving@example.com").await;
    let base = format!("/v1/tenants/{tenant_id}");
    let record_path = format!("{base}/collections/people/records/{record}");
    let file_path = format!("{record_path}/files/contract.pdf");
    let put = reqwest::Client::new()
        .put(format!("{api}{file_path}"))
        .bearer_auth(&admin)
        .body(vec![7u8; 100_000])
        .send()
        .await
        .expect("put file");
    assert_eq!(put.status().as_u16(), 201);
    // The second node serves the tenant too, and so caches it and its keys.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, read) =
            call(Method::GET, &format!("{other}{record_path}"), &admin, None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{status} {read}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, answer) = call(Method::DELETE, &format!("{api}{base}"), &admin, None).await;
    assert_eq!(status, 403, "only the operator offboards: {answer}");
    let deleted = Instant::now();
    let (status, answer) = call(Method::DELETE, &format!("{api}{base}"), OPERATOR, None).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({"status": "offboarding"}));

    // At once on the node that took it: every path of the tenant.
    let paths = [
        (Method::GET, base.clone(), OPERATOR),
        (Method::GET, format!("{base}/collections/people"), &admin),
        (
            Method::GET,
            format!("{base}/collections/people/records"),
            &admin,
        ),
        (Method::GET, record_path.clone(), &admin),
        (Method::GET, file_path.clone(), &admin),
        (Method::GET, format!("{base}/audit/events"), &admin),
        (Method::GET, format!("{base}/residency"), &admin),
        (Method::POST, format!("{base}/api-keys"), &admin),
    ];
    for (method, path, token) in &paths {
        let (status, body) = call(method.clone(), &format!("{api}{path}"), token, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    // Within a second on the other node, which had it all cached.
    loop {
        let (status, body) =
            call(Method::GET, &format!("{other}{record_path}"), &admin, None).await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "the second node still serves the tenant after {:?}",
            deleted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (method, path, token) in &paths {
        let (status, body) = call(method.clone(), &format!("{other}{path}"), token, None).await;
        assert_eq!(status, 404, "{method} {path} on the second node: {body}");
    }
    // Offboarding again is idempotent; a tenant never known is 404.
    let (status, again) = call(Method::DELETE, &format!("{other}{base}"), OPERATOR, None).await;
    assert_eq!(status, 202, "{again}");
    let (status, _) = call(
        Method::DELETE,
        &format!("{api}/v1/tenants/2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60"),
        OPERATOR,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let deadline = Instant::now() + Duration::from_secs(30);
    let certificate = loop {
        let (status, body) = call(
            Method::GET,
            &format!("{api}{base}/offboarding"),
            OPERATOR,
            None,
        )
        .await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 202, "{body}");
        assert_eq!(body, json!({"status": "offboarding"}));
        assert!(Instant::now() < deadline, "the purge did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(certificate["tenant"], tenant_id.as_str());
    assert_eq!(certificate["region"], "eu-west-1");
    // One record with one searchable field and a subject field (two index tokens: the
    // field's and the subject's) and one file.
    assert_eq!(
        certificate["purged"],
        json!({"records": 1, "index_tokens": 2, "files": 1, "objects": 1, "api_keys": 1, "collections": 1})
    );
    assert_eq!(
        certificate["key_versions_destroyed"],
        json!([{"purpose": "data", "version": 1}, {"purpose": "index", "version": 1}])
    );
    let (status, again) = call(Method::DELETE, &format!("{api}{base}"), OPERATOR, None).await;
    assert_eq!((status, again), (202, json!({"status": "offboarded"})));

    // The certificate verifies with the region's published keys; a tampered one does not.
    let (status, keys) = call(Method::GET, &format!("{api}/v1/audit/keys"), "", None).await;
    assert_eq!(status, 200);
    let keys = audit::KeySet::from_json(&keys.to_string()).expect("keys");
    let verifies = |certificate: &Value| {
        let certificate: wire::api::OffboardingCertificate =
            serde_json::from_value(certificate.clone()).expect("a certificate");
        let signature = audit::Signature::from_base64(&certificate.signature).expect("base64");
        keys.verify_signature(
            &certificate.key_id,
            &certificate.region,
            &certificate.signed_payload(),
            &signature,
        )
    };
    assert!(verifies(&certificate), "{certificate}");
    let mut tampered = certificate.clone();
    tampered["purged"]["records"] = json!(0);
    assert!(!verifies(&tampered));

    // Nothing of the tenant is left but its chain and its job.
    let client = connect(database.primary.clone()).await;
    for table in store::TENANT_TABLES {
        let count: i64 = client
            .query_one(
                &format!("select count(*) from {table} where tenant_id = $1"),
                &[&tenant_id],
            )
            .await
            .expect("count")
            .get(0);
        if KEPT.contains(table) {
            // (No checkpoint may have been signed yet for so young a tenant.)
            assert!(
                count > 0 || *table == "audit_checkpoints",
                "{table} keeps the tenant's evidence"
            );
        } else {
            assert_eq!(count, 0, "{table} still holds rows of the tenant");
        }
    }
    let mut left = Vec::new();
    let mut pending = vec![dir.path().join("objects")];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.to_string_lossy().contains(&tenant_id) {
                left.push(path);
            }
        }
    }
    assert!(left.is_empty(), "objects of the tenant left: {left:?}");

    // The chain as stored verifies and ends with `tenant.delete`, at the certified head.
    let tenant = model::TenantId::parse(&tenant_id).expect("tenant id");
    let rows = store::audit::events(
        &client,
        &tenant,
        &store::audit::EventFilter {
            from: None,
            to: None,
            action: None,
            after_seq: 0,
            limit: 10_000,
        },
    )
    .await
    .expect("events");
    let mut previous = audit::genesis(&tenant);
    for row in &rows {
        let event = service::audit::from_row(row).expect("an event");
        assert!(audit::verify_link(&previous, &event), "seq {}", event.seq);
        previous = event.hash;
    }
    // Closed by the offboarding's transaction: reads either node queued before it heard of
    // the offboarding went in before `tenant.delete` (this node flushed its queue first)
    // or were refused by the closed chain (counted, logged); none follows it.
    let deletes: Vec<_> = rows
        .iter()
        .filter(|row| row.action == "tenant.delete")
        .collect();
    assert_eq!(deletes.len(), 1, "one tenant.delete");
    assert_eq!(
        rows.last().map(|row| row.action.as_str()),
        Some("tenant.delete"),
        "the chain ends with tenant.delete"
    );
    assert!(
        store::audit::is_closed(&client, &tenant)
            .await
            .expect("closed?"),
        "the chain is closed"
    );
    let last = rows.last().expect("events");
    assert_eq!(certificate["audit_head"]["seq"], last.seq);
    assert_eq!(certificate["audit_head"]["hash"], previous.to_string());

    first.stop().await.expect("stop");
    second.stop().await.expect("stop");
}
