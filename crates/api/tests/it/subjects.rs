//! Data subjects over real HTTP on a real primary: the subject index follows records
//! (create, update, delete), the backfill job indexes records written before a collection
//! had a subject field, and the DSAR export holds exactly the subject's records (opened),
//! files and audit events, verifies offline with the region's published key, and names
//! the subject in no audit event.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service::jobs::{JobRunner, JobSettings, SUBJECT_INDEX, SubjectIndexJob};
use store::testing::region_database;

use crate::tenant_api::{Answer, Served, serve};

const ADA: &str = "ada@example.org";
const GRACE: &str = "grace@example.org";

/// A schema with a subject field `owner` (and no other searchable field).
fn schema(subject: bool) -> Value {
    let mut schema = json!({
        "fields": {
            "owner": {"type": "string", "class": "identifier"},
            "note": {"type": "string", "class": "sensitive"},
            "plan": {"type": "string", "class": "public"}
        },
        "required": ["owner"]
    });
    if subject {
        schema["subject_field"] = json!("owner");
    }
    schema
}

pub(crate) async fn put_collection(
    api: &Served,
    tenant: &str,
    admin: &str,
    name: &str,
    schema: Value,
) {
    let answer = api
        .call(
            Method::PUT,
            &format!("/v1/tenants/{tenant}/collections/{name}"),
            Some(admin),
            Some(schema),
            &[],
        )
        .await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
}

pub(crate) async fn create(
    api: &Served,
    tenant: &str,
    key: &str,
    collection: &str,
    owner: &str,
) -> String {
    let answer = api
        .call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/collections/{collection}/records"),
            Some(key),
            Some(json!({"data": {"owner": owner, "note": format!("note of {owner} in {collection}"), "plan": "pro"}})),
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    answer.body["id"].as_str().expect("id").to_owned()
}

pub(crate) async fn export(api: &Served, tenant: &str, key: Option<&str>, subject: &str) -> Answer {
    let subject: String = url::form_urlencoded::byte_serialize(subject.as_bytes()).collect();
    api.call(
        Method::GET,
        &format!("/v1/tenants/{tenant}/subjects/{subject}/export"),
        key,
        None,
        &[],
    )
    .await
}

/// The (collection, id) pairs of an export, sorted.
pub(crate) fn ids(export: &Answer) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = export.body["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|record| {
            (
                record["collection"]
                    .as_str()
                    .expect("collection")
                    .to_owned(),
                record["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    ids.sort();
    ids
}

fn verifies(api_keys: &audit::KeySet, export: &wire::api::SubjectExport) -> bool {
    let payload = export.signed_payload().expect("payload");
    let Ok(signature) = audit::Signature::from_base64(&export.signature) else {
        return false;
    };
    api_keys.verify_signature(&export.key_id, &export.region, &payload, &signature)
}

#[tokio::test]
async fn a_subjects_export_holds_exactly_their_records_files_and_events_and_verifies() {
    let (db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    let writer = api.key(&tenant, &admin, "writer").await;
    for collection in ["patients", "invoices", "tickets"] {
        put_collection(&api, &tenant, &admin, collection, schema(true)).await;
    }
    let mut ada = Vec::new();
    for collection in ["patients", "invoices", "tickets"] {
        ada.push((
            collection.to_owned(),
            create(&api, &tenant, &writer, collection, ADA).await,
        ));
        create(&api, &tenant, &writer, collection, GRACE).await;
    }
    // The subject's value differs in case and surrounding space: the same person.
    ada.push((
        "tickets".to_owned(),
        create(&api, &tenant, &writer, "tickets", " Ada@Example.org").await,
    ));
    // Two files on Ada's patient record.
    let (patients, patient) = (&ada[0].0, &ada[0].1);
    for (name, content) in [("scan.txt", "scan bytes"), ("letter.txt", "letter bytes")] {
        let put = api
            .raw(
                api.http
                    .put(format!(
                        "{}/v1/tenants/{tenant}/collections/{patients}/records/{patient}/files/{name}",
                        api.base
                    ))
                    .bearer_auth(&writer)
                    .header("content-type", "text/plain")
                    .body(content),
            )
            .await;
        assert!(put.status.is_success(), "{:?}", put.body);
    }
    // Another tenant with the same subject: nothing of it in this tenant's export.
    let (other, other_admin) = api.tenant().await;
    put_collection(&api, &other, &other_admin, "patients", schema(true)).await;
    create(&api, &other, &other_admin, "patients", ADA).await;

    let answer = export(&api, &tenant, Some(&admin), ADA).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let mut expected = ada.clone();
    expected.sort();
    assert_eq!(
        ids(&answer),
        expected,
        "exactly Ada's records, in three collections"
    );
    assert_eq!(answer.body["subject"], ADA);
    assert!(answer.body["next_cursor"].is_null());
    for record in answer.body["records"].as_array().expect("records") {
        assert!(
            record["data"]["owner"]
                .as_str()
                .expect("opened")
                .eq_ignore_ascii_case(ADA.trim())
                || record["data"]["owner"] == " Ada@Example.org"
        );
        assert!(
            record["data"]["note"]
                .as_str()
                .expect("sealed field opened")
                .starts_with("note of")
        );
        assert!(
            record["audit_events"]
                .as_array()
                .expect("events")
                .iter()
                .any(|event| event["action"] == "record.create"),
            "{record}"
        );
    }
    let patient_record = answer.body["records"]
        .as_array()
        .expect("records")
        .iter()
        .find(|record| record["id"] == patient.as_str())
        .expect("the patient record");
    let files = patient_record["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    let mut sizes: Vec<u64> = files
        .iter()
        .map(|f| f["size"].as_u64().expect("size"))
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [10, 12]);
    assert!(files.iter().all(|f| f["content_type"] == "text/plain"
        && f["sha256"].as_str().is_some_and(|h| h.len() == 64)));
    // Each file downloads from the path the export gives, with its name.
    let download = api
        .call(
            Method::GET,
            &format!(
                "{}/scan.txt",
                files[0]["files_path"].as_str().expect("path")
            ),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(download.status, StatusCode::OK);
    assert!(
        patient_record["audit_events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|event| event["action"] == "file.put"),
        "{patient_record}"
    );

    // Verifies offline with the published keys; a tampered copy does not.
    let keys = api
        .call(Method::GET, "/v1/audit/keys", None, None, &[])
        .await;
    let key_set = audit::KeySet::from_json(&String::from_utf8_lossy(&keys.bytes)).expect("keys");
    let signed: wire::api::SubjectExport =
        serde_json::from_slice(&answer.bytes).expect("a subject export");
    assert!(verifies(&key_set, &signed));
    let mut tampered = signed.clone();
    tampered.records[0]
        .data
        .insert("note".into(), json!("forged"));
    assert!(!verifies(&key_set, &tampered));
    let mut dropped = signed.clone();
    dropped.records.pop();
    assert!(!verifies(&key_set, &dropped));

    // Grace's export holds nothing of Ada's; an unknown subject's is empty.
    let grace = export(&api, &tenant, Some(&admin), GRACE).await;
    assert_eq!(ids(&grace).len(), 3);
    assert!(ids(&grace).iter().all(|id| !ada.contains(id)));
    let nobody = export(&api, &tenant, Some(&admin), "nobody@example.org").await;
    assert_eq!(ids(&nobody), []);

    // Pages: one record a page, the cursors walk all four.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let subject: String = url::form_urlencoded::byte_serialize(ADA.as_bytes()).collect();
        let mut path = format!("/v1/tenants/{tenant}/subjects/{subject}/export?limit=1");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = api.call(Method::GET, &path, Some(&admin), None, &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        seen.extend(ids(&page));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, expected);

    // The export is audited with the subject's token, never its value; no event and no
    // row of the region's database holds the value outside sealed fields.
    let dump = crate::tenant_api::pg_dump(&db).await;
    assert!(
        !dump.contains(ADA),
        "the subject's value rests nowhere in the clear"
    );
    let auditor = api.key(&tenant, &admin, "auditor").await;
    let (bundle, _) = api.verified_export(&tenant, &auditor).await;
    let events = String::from_utf8_lossy(&bundle.bytes);
    assert!(events.contains("subject.export"));
    assert!(
        !events.to_lowercase().contains("ada@"),
        "no event names the subject"
    );
    let token = &signed.subject_token[..16];
    assert!(events.contains(&format!("subjects/{token}")));
}

#[tokio::test]
async fn a_record_whose_subject_changes_moves_and_a_deleted_one_leaves_the_export() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    put_collection(&api, &tenant, &admin, "patients", schema(true)).await;
    let moved = create(&api, &tenant, &admin, "patients", ADA).await;
    let deleted = create(&api, &tenant, &admin, "patients", ADA).await;
    let updated = api
        .call(
            Method::PUT,
            &format!("/v1/tenants/{tenant}/collections/patients/records/{moved}"),
            Some(&admin),
            Some(json!({"data": {"owner": GRACE, "note": "moved", "plan": "pro"}})),
            &[],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let gone = api
        .call(
            Method::DELETE,
            &format!("/v1/tenants/{tenant}/collections/patients/records/{deleted}"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert!(gone.status.is_success());
    assert_eq!(ids(&export(&api, &tenant, Some(&admin), ADA).await), []);
    let grace = export(&api, &tenant, Some(&admin), GRACE).await;
    assert_eq!(ids(&grace), [("patients".to_owned(), moved)]);
    assert_eq!(grace.body["records"][0]["data"]["note"], "moved");
}

/// A job runner of this node's region running `handlers`, `batch_size` items a batch.
pub(crate) fn job_runner(
    api: &Served,
    handlers: Vec<Arc<dyn service::jobs::JobHandler>>,
    batch_size: usize,
) -> service::jobs::RunnerTask {
    JobRunner::new(
        api.node.state.database().clone(),
        handlers,
        JobSettings {
            poll_interval: Duration::from_millis(50),
            batch_size,
            ..JobSettings::default()
        },
        Arc::new(telemetry::NodeMetrics::new("eu-central-1")),
    )
    .spawn()
}

/// A job runner of this node's region running the subject-index backfill, `batch_size`
/// records a batch.
fn backfill_runner(api: &Served, batch_size: usize) -> service::jobs::RunnerTask {
    let state = &api.node.state;
    let backfill = SubjectIndexJob::new(state.keyring().clone(), state.database().clone());
    job_runner(api, vec![Arc::new(backfill)], batch_size)
}

#[tokio::test]
async fn the_backfill_job_indexes_records_written_before_the_subject_field() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    put_collection(&api, &tenant, &admin, "patients", schema(false)).await;
    let mut ada = Vec::new();
    for _ in 0..5 {
        ada.push((
            "patients".to_owned(),
            create(&api, &tenant, &admin, "patients", ADA).await,
        ));
        create(&api, &tenant, &admin, "patients", GRACE).await;
    }
    ada.sort();
    assert_eq!(ids(&export(&api, &tenant, Some(&admin), ADA).await), []);

    // The schema change queues the backfill; a runner with small batches runs it.
    put_collection(&api, &tenant, &admin, "patients", schema(true)).await;
    let runner = backfill_runner(&api, 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let jobs = api
            .call(
                Method::GET,
                &format!("/v1/jobs?kind={SUBJECT_INDEX}&tenant={tenant}"),
                Some(crate::OPERATOR_TOKEN),
                None,
                &[],
            )
            .await;
        let job = jobs.body["jobs"][0].clone();
        if job["state"] == "done" {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", jobs.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    runner.stop().await;
    assert_eq!(job["progress"]["done"], 10);
    assert_eq!(job["progress"]["failed"], 0);
    assert_eq!(ids(&export(&api, &tenant, Some(&admin), ADA).await), ada);
    assert_eq!(
        ids(&export(&api, &tenant, Some(&admin), GRACE).await).len(),
        5
    );

    // Removing the subject field takes the tokens away again.
    put_collection(&api, &tenant, &admin, "patients", schema(false)).await;
    let runner = backfill_runner(&api, 100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ids(&export(&api, &tenant, Some(&admin), ADA).await).is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runner.stop().await;
}

#[tokio::test]
async fn the_export_needs_an_admin_key_of_the_tenant_and_never_echoes_the_subject() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    put_collection(&api, &tenant, &admin, "patients", schema(true)).await;
    create(&api, &tenant, &admin, "patients", ADA).await;
    let reader = api.key(&tenant, &admin, "reader").await;
    let auditor = api.key(&tenant, &admin, "auditor").await;
    let (_other, other_admin) = api.tenant().await;

    let none = export(&api, &tenant, None, ADA).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    for key in [&reader, &auditor] {
        let denied = export(&api, &tenant, Some(key), ADA).await;
        assert_eq!(denied.status, StatusCode::FORBIDDEN, "{:?}", denied.body);
        assert!(!String::from_utf8_lossy(&denied.bytes).contains("ada"));
    }
    let foreign = export(&api, &tenant, Some(&other_admin), ADA).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert!(!String::from_utf8_lossy(&foreign.bytes).contains("ada"));
    // A subject too long to be one: 400, without the value.
    let long = "x".repeat(2000);
    let refused = export(&api, &tenant, Some(&admin), &long).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        refused.body
    );
    assert!(!String::from_utf8_lossy(&refused.bytes).contains("xxxx"));
    // A record whose subject is too long to be one: 422 naming the field, not the value.
    let too_long = api
        .call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/collections/patients/records"),
            Some(&admin),
            Some(json!({"data": {"owner": "y".repeat(1100), "note": "n", "plan": "pro"}})),
            &[],
        )
        .await;
    assert_eq!(
        too_long.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        too_long.body
    );
    let text = String::from_utf8_lossy(&too_long.bytes);
    assert!(text.contains("owner") && !text.contains("yyyy"), "{text}");
    // A path that is not UTF-8 once decoded: refused without echoing it.
    let not_utf8 = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/subjects/%FFada%40example.org/export"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert!(not_utf8.status.is_client_error(), "{:?}", not_utf8.status);
    assert!(!String::from_utf8_lossy(&not_utf8.bytes).contains("ada"));
    let bad_cursor = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/subjects/someone/export?cursor=nonsense"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(bad_cursor.status, StatusCode::BAD_REQUEST);
}
