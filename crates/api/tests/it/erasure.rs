//! Erasure of a data subject over real HTTP on a real primary: a subject with records in
//! three collections and two files, among other subjects, is erased in one answer (their
//! export empty, search and reads finding nothing, their objects gone, nothing of the value
//! or the token left outside the ledger and the audit chain), the audit chain verifies and
//! holds `subject.erase` without the value, the ledger entry rests in the audit bucket, a
//! second erasure erases nothing, and a subject beyond the inline bound is erased by a job.

use std::sync::Arc;
use std::time::Duration;

use envelope::objects::ObjectStore as _;
use envelope::objects::local::LocalObjectStore;
use futures::TryStreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service::erasure::{ERASE_INLINE_BOUND, LEDGER_PREFIX, LedgerEntry};
use service::jobs::{ErasureFollowUpJob, SubjectErasureJob};
use store::testing::region_database;

use crate::subjects::{create, export, ids, job_runner, put_collection};
use crate::tenant_api::{Answer, Served, serve};

const ADA: &str = "ada@example.org";
const GRACE: &str = "grace@example.org";
const COLLECTIONS: [&str; 3] = ["patients", "invoices", "tickets"];

/// A schema whose subject field `owner` is also searchable.
fn schema() -> Value {
    json!({
        "fields": {
            "owner": {"type": "string", "class": "identifier", "searchable": true},
            "note": {"type": "string", "class": "sensitive"},
            "plan": {"type": "string", "class": "public"}
        },
        "required": ["owner"],
        "subject_field": "owner"
    })
}

/// `subject` percent-encoded for a path (a space is `%20` there, not `+`).
fn encoded(subject: &str) -> String {
    url::form_urlencoded::byte_serialize(subject.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn erase(api: &Served, tenant: &str, key: Option<&str>, subject: &str) -> Answer {
    api.call(
        Method::POST,
        &format!("/v1/tenants/{tenant}/subjects/{}/erase", encoded(subject)),
        key,
        None,
        &[],
    )
    .await
}

async fn put_file(api: &Served, tenant: &str, key: &str, collection: &str, id: &str, name: &str) {
    let put = api
        .raw(
            api.http
                .put(format!(
                    "{}/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}",
                    api.base
                ))
                .bearer_auth(key)
                .header("content-type", "text/plain")
                .body(format!("contents of {name}")),
        )
        .await;
    assert!(put.status.is_success(), "{:?}", put.body);
}

/// The stored objects of `tenant` in the node's object store.
async fn objects(api: &Served, tenant: &str) -> Vec<String> {
    api.node
        .state
        .objects()
        .list(&format!("tenants/{tenant}/"))
        .await
        .expect("list objects")
        .iter()
        .map(|key| key.as_str().to_owned())
        .collect()
}

/// The erasure ledger's entries in the node's audit bucket (the test node's directory).
async fn ledger(api: &Served) -> Vec<LedgerEntry> {
    let bucket =
        LocalObjectStore::new(api.node.dir.path().join("audit-bucket")).expect("audit bucket");
    let mut entries = Vec::new();
    for key in bucket.list(LEDGER_PREFIX).await.expect("list the ledger") {
        let chunks: Vec<bytes::Bytes> = bucket
            .get(&key)
            .await
            .expect("get an entry")
            .try_collect()
            .await
            .expect("read an entry");
        entries.push(serde_json::from_slice(&chunks.concat()).expect("a ledger entry"));
    }
    entries
}

/// The rows of every tenant table but the ledger's and the audit chain's whose text holds
/// `needle`, by table.
async fn rows_holding(db: &devstack::testing::TestDatabase, needle: &str) -> Vec<(String, i64)> {
    let (client, connection) = db
        .primary
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect as the owner");
    let connection = tokio::spawn(connection);
    let mut found = Vec::new();
    for table in store::TENANT_TABLES {
        if ["subject_erasures", "audit_events", "audit_heads"].contains(table) {
            continue;
        }
        let count: i64 = client
            .query_one(
                &format!("select count(*) from {table} t where t::text ilike '%' || $1 || '%'"),
                &[&needle],
            )
            .await
            .expect("scan a tenant table")
            .get(0);
        if count > 0 {
            found.push(((*table).to_owned(), count));
        }
    }
    drop(client);
    let _ = connection.await;
    found
}

/// The `COPY` sections of a `pg_dump --data-only` whose lines hold `needle`, by table.
fn dump_tables_holding(dump: &str, needle: &str) -> Vec<String> {
    let mut tables = Vec::new();
    let mut current: Option<&str> = None;
    for line in dump.lines() {
        if let Some(rest) = line.strip_prefix("COPY ") {
            current = rest.split_whitespace().next();
        } else if line == "\\." {
            current = None;
        } else if let Some(table) = current
            && line.to_lowercase().contains(needle)
            && !tables.iter().any(|t| t == table)
        {
            tables.push(table.to_owned());
        }
    }
    tables
}

#[tokio::test]
async fn erasing_a_subject_removes_their_records_files_objects_and_tokens_and_nothing_else() {
    let (db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    let writer = api.key(&tenant, &admin, "writer").await;
    for collection in COLLECTIONS {
        put_collection(&api, &tenant, &admin, collection, schema()).await;
    }
    let mut ada = Vec::new();
    let mut grace = Vec::new();
    for collection in COLLECTIONS {
        ada.push((
            collection,
            create(&api, &tenant, &writer, collection, ADA).await,
        ));
        grace.push((
            collection,
            create(&api, &tenant, &writer, collection, GRACE).await,
        ));
    }
    // Two files of Ada's (on two records), one of Grace's.
    put_file(&api, &tenant, &writer, ada[0].0, &ada[0].1, "scan.txt").await;
    put_file(&api, &tenant, &writer, ada[1].0, &ada[1].1, "letter.txt").await;
    put_file(&api, &tenant, &writer, grace[0].0, &grace[0].1, "scan.txt").await;
    let objects_before = objects(&api, &tenant).await;
    assert_eq!(objects_before.len(), 3);
    // Another tenant holds the same person: an erasure in this tenant leaves it alone.
    let (other, other_admin) = api.tenant().await;
    put_collection(&api, &other, &other_admin, "patients", schema()).await;
    let others_ada = create(&api, &other, &other_admin, "patients", ADA).await;

    let before = export(&api, &tenant, Some(&admin), ADA).await;
    let token = before.body["subject_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(ids(&before).len(), 3);

    // Only an admin key of the tenant erases; a refusal does not echo the subject.
    let reader = api.key(&tenant, &admin, "reader").await;
    let denied = erase(&api, &tenant, Some(&reader), ADA).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(!String::from_utf8_lossy(&denied.bytes).contains("ada"));
    let foreign = erase(&api, &tenant, Some(&other_admin), ADA).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    let long = erase(&api, &tenant, Some(&admin), &"z".repeat(2000)).await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST);
    assert!(!String::from_utf8_lossy(&long.bytes).contains("zzzz"));
    assert_eq!(
        ids(&export(&api, &tenant, Some(&admin), ADA).await).len(),
        3
    );

    // The subject as the caller spelt it (another case, spaces): the same person.
    let asked = " ADA@example.org ";
    let erased = erase(&api, &tenant, Some(&admin), asked).await;
    assert_eq!(erased.status, StatusCode::OK, "{:?}", erased.body);
    assert_eq!(erased.body["subject"], asked);
    assert_eq!(erased.body["records_erased"], 3);
    assert_eq!(erased.body["files_erased"], 2);
    let audit_seq = erased.body["audit_seq"].as_u64().expect("audit seq");

    // Nothing of Ada is found, read or exported; Grace and the other tenant are untouched.
    assert_eq!(ids(&export(&api, &tenant, Some(&admin), ADA).await), []);
    for (collection, id) in &ada {
        let read = api
            .call(
                Method::GET,
                &format!("/v1/tenants/{tenant}/collections/{collection}/records/{id}"),
                Some(&admin),
                None,
                &[],
            )
            .await;
        assert_eq!(read.status, StatusCode::NOT_FOUND);
        let search = api
            .call(
                Method::GET,
                &format!(
                    "/v1/tenants/{tenant}/collections/{collection}/records?owner={}",
                    encoded(ADA)
                ),
                Some(&admin),
                None,
                &[],
            )
            .await;
        assert_eq!(search.status, StatusCode::OK, "{:?}", search.body);
        assert_eq!(search.body["records"], json!([]));
    }
    let mut grace_ids: Vec<(String, String)> = grace
        .iter()
        .map(|(c, id)| ((*c).to_owned(), id.clone()))
        .collect();
    grace_ids.sort();
    assert_eq!(
        ids(&export(&api, &tenant, Some(&admin), GRACE).await),
        grace_ids
    );
    let grace_file = api
        .call(
            Method::GET,
            &format!(
                "/v1/tenants/{tenant}/collections/{}/records/{}/files/scan.txt",
                grace[0].0, grace[0].1
            ),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(grace_file.status, StatusCode::OK);
    assert_eq!(
        ids(&export(&api, &other, Some(&other_admin), ADA).await),
        [("patients".to_owned(), others_ada)]
    );

    // Ada's two objects are gone from the store, Grace's is there.
    let objects_after = objects(&api, &tenant).await;
    assert_eq!(objects_after.len(), 1, "{objects_after:?}");
    assert!(objects_before.contains(&objects_after[0]));

    // Neither the value nor the token rests outside the ledger's table and the audit
    // chain (whose events name the token's first 16 hex digits only).
    let dump = crate::tenant_api::pg_dump(&db).await;
    assert!(!dump.to_lowercase().contains("ada@"));
    assert_eq!(
        dump_tables_holding(&dump, &token),
        ["public.subject_erasures"]
    );
    for table in dump_tables_holding(&dump, &token[..16]) {
        assert!(
            ["public.subject_erasures", "public.audit_events"].contains(&table.as_str()),
            "{table}"
        );
    }
    assert_eq!(rows_holding(&db, &token).await, []);
    assert_eq!(rows_holding(&db, "ada@").await, []);

    // The ledger entry in the audit bucket: the token, the counts, never the value.
    let entries = ledger(&api).await;
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.tenant, tenant);
    assert_eq!(entry.subject_token, token);
    assert_eq!((entry.records_erased, entry.files_erased), (3, 2));
    assert_eq!(entry.audit_seq, audit_seq);
    let mut collections: Vec<String> = COLLECTIONS.iter().map(|c| (*c).to_owned()).collect();
    collections.sort();
    assert_eq!(entry.collections, collections);

    // The chain verifies and holds the erasure, by token, at the seq answered.
    let auditor = api.key(&tenant, &admin, "auditor").await;
    let (bundle, _) = api.verified_export(&tenant, &auditor).await;
    let events = String::from_utf8_lossy(&bundle.bytes);
    assert!(!events.to_lowercase().contains("ada@"));
    let erase_event = events
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["seq"] == audit_seq)
        .expect("the erasure's event");
    // (The refused attempts above are audited as denials of `subject.erase` too.)
    assert_eq!(erase_event["action"], "subject.erase");
    assert_eq!(erase_event["outcome"], "success");
    assert_eq!(
        erase_event["resource"],
        format!("subjects/{}", &token[..16])
    );

    // A second erasure erases nothing, and is audited again.
    let again = erase(&api, &tenant, Some(&admin), ADA).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["records_erased"], 0);
    assert_eq!(again.body["files_erased"], 0);
    assert!(again.body["audit_seq"].as_u64().expect("seq") > audit_seq);
    assert_eq!(ledger(&api).await.len(), 2);
}

/// A job runner of this node's region running the erasure's jobs.
fn erasure_runner(api: &Served, batch_size: usize) -> service::jobs::RunnerTask {
    let service = api.node.state.service();
    job_runner(
        api,
        vec![
            Arc::new(SubjectErasureJob::new(service.clone())),
            Arc::new(ErasureFollowUpJob::new(service.clone())),
        ],
        batch_size,
    )
}

#[tokio::test]
async fn a_subject_beyond_the_bound_is_erased_by_a_job_that_reports_its_progress() {
    let (db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    put_collection(&api, &tenant, &admin, "events", schema()).await;
    let many = usize::try_from(ERASE_INLINE_BOUND).expect("bound") + 1;
    let creates = (0..many).map(|_| create(&api, &tenant, &admin, "events", ADA));
    futures::stream::iter(creates)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let grace = create(&api, &tenant, &admin, "events", GRACE).await;

    let started = erase(&api, &tenant, Some(&admin), ADA).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    assert_eq!(started.body["subject"], ADA);
    assert_eq!(started.body["job"]["total"], many);
    assert_eq!(started.body["job"]["state"], "queued");
    let job = started.body["job"]["id"].as_str().expect("job").to_owned();
    // Asked again while it runs: the same job, not a second one.
    let again = erase(&api, &tenant, Some(&admin), ADA).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["job"]["id"], job.as_str());

    let runner = erasure_runner(&api, 400);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let shown = api
            .call(
                Method::GET,
                &format!("/v1/jobs/{job}"),
                Some(crate::OPERATOR_TOKEN),
                None,
                &[],
            )
            .await;
        if shown.body["state"] == "done" {
            break shown;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", shown.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shown.body["progress"]["done"], many);
    assert_eq!(ids(&export(&api, &tenant, Some(&admin), ADA).await), []);
    assert_eq!(
        ids(&export(&api, &tenant, Some(&admin), GRACE).await),
        [("events".to_owned(), grace)]
    );
    // The ledger holds one entry with the totals, and the job's row no longer the token.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let entries = loop {
        let entries = ledger(&api).await;
        if !entries.is_empty() {
            break entries;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    runner.stop().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].records_erased, many as u64);
    assert_eq!(rows_holding(&db, &entries[0].subject_token).await, []);
    // Now nothing is left: a plain 200 with nothing erased.
    let done = erase(&api, &tenant, Some(&admin), ADA).await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    assert_eq!(done.body["records_erased"], 0);
}

use futures::StreamExt as _;
