//! Key rotation through the API: `POST /v1/tenants/{t}/keys/rotate` under concurrent
//! writes and reads (no lost update, every record and file readable throughout with the
//! same data and SHA-256, nothing left on the old version, checked in SQL by each sealed
//! value's version bytes and in the object store by each object's header), a runner that
//! dies mid-job resumed by another, `GET /v1/tenants/{t}/keys`, 409 while a re-encryption
//! runs, the audit trail, and who may call them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envelope::objects::ObjectKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service::jobs::{
    BatchDone, BatchError, BatchInput, JobHandler, JobRunner, JobSettings, ReencryptJob,
};
use sha2::{Digest, Sha256};
use store::testing::region_database;
use telemetry::NodeMetrics;
use tokio::sync::oneshot;

use crate::OPERATOR_TOKEN;
use crate::tenant_api::{Answer, Served, person, serve};

/// Quick polls, small batches and a short lease, so that a takeover happens within about
/// a second and a rotation of a few hundred items takes many batches.
fn quick(batch_size: usize) -> JobSettings {
    JobSettings {
        batch_size,
        poll_interval: Duration::from_millis(50),
        lease: Duration::from_millis(900),
        retry_delay: Duration::from_millis(20),
        max_batch_failures: 3,
        ..JobSettings::default()
    }
}

fn runner(api: &Served, handler: Arc<dyn JobHandler>, batch_size: usize) -> JobRunner {
    let state = &api.node.state;
    JobRunner::new(
        state.database().clone(),
        vec![handler],
        quick(batch_size),
        Arc::new(NodeMetrics::new(state.region().as_str())),
    )
}

fn reencrypt(api: &Served) -> Arc<dyn JobHandler> {
    Arc::new(ReencryptJob::new(api.node.state.service().clone()))
}

fn records_path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/collections/people/records")
}

/// Bytes of a file that differ per file and cross several object segments.
fn file_bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A tenant with the `people` schema, `records` records and `files` files (on the first
/// records); returns (tenant, admin, writer, record ids, file path → SHA-256).
async fn tenant_with_data(
    api: &Served,
    records: usize,
    files: usize,
) -> (String, String, String, Vec<String>, HashMap<String, String>) {
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let mut ids = Vec::new();
    for n in 0..records {
        let created = api
            .create_person(&tenant, &writer, person(&format!("p{n}@example.com")))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        ids.push(created.body["id"].as_str().expect("id").to_owned());
    }
    let mut sums = HashMap::new();
    for (n, id) in ids.iter().take(files).enumerate() {
        let bytes = file_bytes(n as u8, 200_000 + n * 1000);
        let path = format!("{}/{id}/files/scan.pdf", records_path(&tenant));
        let put = api
            .raw(
                api.http
                    .put(format!("{}{path}", api.base))
                    .bearer_auth(&writer)
                    .header("content-type", "application/pdf")
                    .body(bytes.clone()),
            )
            .await;
        assert_eq!(put.status, StatusCode::CREATED, "{:?}", put.body);
        assert_eq!(put.body["sha256"], sha256_hex(&bytes));
        sums.insert(path, sha256_hex(&bytes));
    }
    (tenant, admin, writer, ids, sums)
}

async fn rotate(api: &Served, tenant: &str, admin: &str) -> Answer {
    api.call(
        Method::POST,
        &format!("/v1/tenants/{tenant}/keys/rotate"),
        Some(admin),
        None,
        &[],
    )
    .await
}

async fn key_status(api: &Served, tenant: &str, admin: &str) -> wire::api::KeyStatus {
    let answer = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/keys"),
            Some(admin),
            None,
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    serde_json::from_slice(&answer.bytes).expect("a key status")
}

/// Each data key version and its state, oldest first.
fn states(status: &wire::api::KeyStatus) -> Vec<(u32, &str)> {
    status
        .versions
        .iter()
        .map(|v| (v.version, v.state.as_str()))
        .collect()
}

/// Waits (up to 60 s) until the tenant's re-encryption is done.
async fn reencrypted(api: &Served, tenant: &str, admin: &str) -> wire::api::KeyStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = key_status(api, tenant, admin).await;
        let state = status.reencryption.as_ref().map(|r| r.status.as_str());
        assert_ne!(state, Some("failed"), "{status:?}");
        if state == Some("done") {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not re-encrypted: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The rows of `sql` (one parameter: the tenant) on the primary, as its owner (no
/// row-level security: what is really stored).
async fn tenant_rows(api: &Served, sql: &str, tenant: &str) -> Vec<tokio_postgres::Row> {
    let primary = api.node.state.database().as_owner().primary().get().await;
    let primary = primary.expect("primary");
    primary.client().query(sql, &[&tenant]).await.expect(sql)
}

/// The key version of every sealed value of the tenant's records, read in SQL: each
/// record's `sealed` column is, per field, a name length byte, the name, a 4-byte length
/// and the sealed value, whose bytes 1..5 are its key version.
async fn sealed_versions(api: &Served, tenant: &str) -> Vec<u32> {
    let rows = tenant_rows(
        api,
        "select sealed from records where tenant_id = $1",
        tenant,
    )
    .await;
    let mut versions = Vec::new();
    for row in rows {
        let sealed: Vec<u8> = row.get(0);
        let mut rest = sealed.as_slice();
        while let Some((&name_len, after)) = rest.split_first() {
            let after = &after[usize::from(name_len)..];
            let len = u32::from_be_bytes(after[..4].try_into().expect("4 bytes")) as usize;
            let value = &after[4..4 + len];
            versions.push(u32::from_be_bytes(value[1..5].try_into().expect("4 bytes")));
            rest = &after[4 + len..];
        }
    }
    versions
}

/// Each file's key version as its row says and as its object's header says.
async fn object_versions(api: &Served, tenant: &str) -> Vec<(i32, u32)> {
    let sql = "select object_key, key_version from files where tenant_id = $1";
    let rows = tenant_rows(api, sql, tenant).await;
    let mut versions = Vec::new();
    for row in rows {
        let object = ObjectKey::parse(row.get::<_, &str>(0)).expect("object key");
        let header = envelope::sealed_objects::sealed_object_version(
            api.node.state.objects().as_ref(),
            &object,
        )
        .await
        .expect("object header");
        versions.push((row.get(1), header.get()));
    }
    versions
}

/// The tenant's successful `key.rotate` events (resource, actor kind, actor id, request
/// id); refused attempts are `key.rotate` events too, with outcome `denied`.
async fn rotation_events(api: &Served, tenant: &str, admin: &str) -> Vec<[String; 4]> {
    let auditor = api.key(tenant, admin, "auditor").await;
    let answer = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/audit/events?action=key.rotate"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let text = |value: &Value| value.as_str().expect("a text field").to_owned();
    answer.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|event| event["outcome"] == "success")
        .map(|event: &Value| {
            [
                text(&event["resource"]),
                text(&event["actor"]["kind"]),
                text(&event["actor"]["id"]),
                text(&event["request_id"]),
            ]
        })
        .collect()
}

/// Concurrent writers in the rotation test, and how many records they update.
const WRITERS: usize = 4;
const HOT: usize = 80;

#[tokio::test]
async fn rotation_under_live_traffic_loses_no_update_and_leaves_nothing_on_the_old_version() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = Arc::new(serve(database).await);
    let (tenant, admin, writer, ids, sums) = tenant_with_data(&api, 240, 6).await;
    assert!(sealed_versions(&api, &tenant).await.iter().all(|v| *v == 1));
    let jobs = runner(&api, reencrypt(&api), 120).spawn();

    // Live traffic through the rotation: each record updated in turn (its last written age
    // remembered), every file and a record read back and checked, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let last_age: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let mut traffic = tokio::task::JoinSet::new();
    // Writers, each owning a share of the first HOT records (one writer a record, so its
    // last write is known), updating them as fast as they can: the job's batches over
    // them race these updates.
    for writer_no in 0..WRITERS {
        let (api, tenant, writer) = (api.clone(), tenant.clone(), writer.clone());
        let mine: Vec<(usize, String)> = ids
            .iter()
            .cloned()
            .enumerate()
            .take(HOT)
            .filter(|(n, _)| n % WRITERS == writer_no)
            .collect();
        let (stop, last_age) = (stop.clone(), last_age.clone());
        traffic.spawn(async move {
            let mut round = 0i64;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                for (n, id) in &mine {
                    let age = round * 1000 + *n as i64;
                    let mut data = person(&format!("p{n}@example.com"));
                    data["age"] = json!(age);
                    let path = format!("{}/{id}", records_path(&tenant));
                    let body = Some(json!({ "data": data }));
                    let put = api.call(Method::PUT, &path, Some(&writer), body, &[]).await;
                    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
                    last_age.lock().expect("ages").insert(id.clone(), age);
                    if round % 4 == 0 {
                        let read = api.call(Method::GET, &path, Some(&writer), None, &[]).await;
                        assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
                        assert_eq!(read.body["data"]["age"], age, "a read sees the write");
                    }
                }
            }
        });
    }
    // A reader of every record and file, checking what it gets.
    {
        let (api, tenant, writer, ids, sums) = (
            api.clone(),
            tenant.clone(),
            writer.clone(),
            ids.clone(),
            sums.clone(),
        );
        let stop = stop.clone();
        traffic.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (path, sum) in &sums {
                    let got = api.call(Method::GET, path, Some(&writer), None, &[]).await;
                    assert_eq!(got.status, StatusCode::OK);
                    assert_eq!(&sha256_hex(&got.bytes), sum, "a file reads the same");
                }
                for id in ids.iter().step_by(7) {
                    let path = format!("{}/{id}", records_path(&tenant));
                    let read = api.call(Method::GET, &path, Some(&writer), None, &[]).await;
                    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
                    assert_eq!(read.body["data"]["diagnosis"], "flu");
                    assert_eq!(read.body["data"]["name"], "Ada Lovelace");
                }
            }
        });
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = rotate(&api, &tenant, &admin).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    assert_eq!(started.body["key_version"], 2);
    // As it stands when the answer is written: a node's runner may have leased it already.
    assert!(
        ["queued", "running"].contains(
            &started.body["reencryption"]["status"]
                .as_str()
                .unwrap_or("")
        ),
        "{:?}",
        started.body
    );
    // The writers stop once the records are re-sealed (files come after), so that a
    // write the job overwrote with what it had read would not be healed by a later one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = key_status(&api, &tenant, &admin).await;
        let progress = status.reencryption.expect("a re-encryption");
        assert_ne!(progress.status, "failed");
        if progress.done >= 240 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{progress:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = traffic.join_next().await {
        done.expect("the traffic saw nothing wrong");
    }
    let status = reencrypted(&api, &tenant, &admin).await;
    jobs.stop().await;

    assert_eq!(states(&status), [(1, "retired"), (2, "active")]);
    let reencryption = status.reencryption.expect("a re-encryption");
    assert_eq!(reencryption.done, reencryption.total);
    assert_eq!(reencryption.total, 246, "240 records and 6 files");

    // No lost update: every record holds its last write (or its first, if never updated).
    let last_age = last_age.lock().expect("ages").clone();
    for id in &ids {
        let path = format!("{}/{id}", records_path(&tenant));
        let read = api.call(Method::GET, &path, Some(&writer), None, &[]).await;
        assert_eq!(read.status, StatusCode::OK);
        let expected = last_age.get(id).copied().unwrap_or(36);
        assert_eq!(read.body["data"]["age"], expected, "{id}");
        assert_eq!(read.body["data"]["name"], "Ada Lovelace");
    }
    for (path, sum) in &sums {
        let got = api.call(Method::GET, path, Some(&writer), None, &[]).await;
        assert_eq!(&sha256_hex(&got.bytes), sum);
    }
    // Nothing on the old version, in the database or the object store.
    let versions = sealed_versions(&api, &tenant).await;
    assert_eq!(versions.len(), 240 * 5, "five sealed fields a record");
    assert!(versions.iter().all(|v| *v == 2), "{versions:?}");
    let objects = object_versions(&api, &tenant).await;
    assert_eq!(objects.len(), 6);
    assert!(objects.iter().all(|v| *v == (2, 2)), "{objects:?}");

    // Audited: the admin's rotation and the system's completion, both naming the job.
    let events = rotation_events(&api, &tenant, &admin).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0][0].starts_with("keys/data/v2?job="), "{events:?}");
    assert_eq!(events[0][1], "api_key");
    assert_eq!(events[1][0], format!("{}&reencryption=done", events[0][0]));
    assert_eq!(events[1][1..3], ["system", "reencryption"]);
    api.verified_export(&tenant, &api.key(&tenant, &admin, "auditor").await)
        .await;
}

/// The re-encryption on a node that dies (without giving its lease up) right after its
/// third batch did its writes, before the checkpoint.
#[derive(Debug)]
struct DiesAfterBatch {
    inner: Arc<dyn JobHandler>,
    batches: AtomicU32,
    die_after: u32,
    dying: Mutex<Option<oneshot::Sender<()>>>,
}

#[async_trait::async_trait]
impl JobHandler for DiesAfterBatch {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        let done = self.inner.run_batch(input).await;
        if self.batches.fetch_add(1, Ordering::SeqCst) + 1 == self.die_after {
            if let Some(dying) = self.dying.lock().expect("dying").take() {
                let _ = dying.send(());
            }
            std::future::pending::<()>().await;
        }
        done
    }
}

#[tokio::test]
async fn a_reencryption_cut_short_on_a_dead_node_is_completed_by_another() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin, writer, ids, sums) = tenant_with_data(&api, 40, 3).await;
    let started = rotate(&api, &tenant, &admin).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);

    let (dying, died) = oneshot::channel();
    let doomed = runner(
        &api,
        Arc::new(DiesAfterBatch {
            inner: reencrypt(&api),
            batches: AtomicU32::new(0),
            die_after: 3,
            dying: Mutex::new(Some(dying)),
        }),
        5,
    )
    .spawn();
    tokio::time::timeout(Duration::from_secs(30), died)
        .await
        .expect("the doomed node reached its third batch")
        .expect("signalled");
    doomed.abort();
    let midway = key_status(&api, &tenant, &admin).await;
    let midway = midway.reencryption.expect("a re-encryption");
    assert_eq!(midway.status, "running");
    assert_eq!(
        midway.done, 10,
        "two batches checkpointed, the third cut short"
    );

    let survivor = runner(&api, reencrypt(&api), 5).spawn();
    let status = reencrypted(&api, &tenant, &admin).await;
    survivor.stop().await;
    let reencryption = status.reencryption.expect("a re-encryption");
    assert_eq!((reencryption.done, reencryption.total), (43, 43));
    assert!(sealed_versions(&api, &tenant).await.iter().all(|v| *v == 2));
    assert!(
        object_versions(&api, &tenant)
            .await
            .iter()
            .all(|v| *v == (2, 2))
    );
    for id in &ids {
        let read = api
            .call(
                Method::GET,
                &format!("{}/{id}", records_path(&tenant)),
                Some(&writer),
                None,
                &[],
            )
            .await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.body["data"]["diagnosis"], "flu");
    }
    for (path, sum) in &sums {
        let got = api.call(Method::GET, path, Some(&writer), None, &[]).await;
        assert_eq!(&sha256_hex(&got.bytes), sum);
    }
    let events = rotation_events(&api, &tenant, &admin).await;
    assert_eq!(events.len(), 2, "one rotation, one completion: {events:?}");
}

#[tokio::test]
async fn a_second_rotation_waits_for_the_first_reencryption_and_only_admins_may_rotate() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin, writer, _, _) = tenant_with_data(&api, 3, 0).await;
    let (other, other_admin) = api.tenant().await;
    let rotate_path = format!("/v1/tenants/{tenant}/keys/rotate");
    let keys_path = format!("/v1/tenants/{tenant}/keys");
    for (method, path) in [(Method::POST, &rotate_path), (Method::GET, &keys_path)] {
        let anonymous = api.call(method.clone(), path, None, None, &[]).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        let writer = api
            .call(method.clone(), path, Some(&writer), None, &[])
            .await;
        assert_eq!(writer.status, StatusCode::FORBIDDEN);
        let operator = api
            .call(method.clone(), path, Some(OPERATOR_TOKEN), None, &[])
            .await;
        assert_eq!(operator.status, StatusCode::FORBIDDEN);
        let stranger = api
            .call(method.clone(), path, Some(&other_admin), None, &[])
            .await;
        assert_eq!(
            stranger.status,
            StatusCode::NOT_FOUND,
            "another tenant's admin"
        );
        for answer in [&anonymous, &writer, &operator, &stranger] {
            assert_eq!(
                answer.header("content-type"),
                Some("application/problem+json")
            );
        }
    }
    let before = key_status(&api, &tenant, &admin).await;
    assert_eq!(before.reencryption, None, "never rotated");
    assert_eq!(before.versions.len(), 1);
    assert_eq!(before.versions[0].state, "active");
    assert!(rotation_events(&api, &tenant, &admin).await.is_empty());

    // No runner: the first rotation's re-encryption stays queued, and a second rotation is
    // refused without changing anything.
    let first = rotate(&api, &tenant, &admin).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = rotate(&api, &tenant, &admin).await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{:?}", second.body);
    let status = key_status(&api, &tenant, &admin).await;
    assert_eq!(states(&status), [(1, "retired"), (2, "active")]);
    let queued = status.reencryption.expect("queued");
    assert_eq!((queued.status.as_str(), queued.total), ("queued", 0));
    // Another tenant rotates on its own; two rotations of it at once serialize, and the
    // second finds the first's re-encryption.
    let (one, two) = tokio::join!(
        rotate(&api, &other, &other_admin),
        rotate(&api, &other, &other_admin)
    );
    let mut statuses = [one.status, two.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::CONFLICT]);
    let other_status = key_status(&api, &other, &other_admin).await;
    assert_eq!(states(&other_status), [(1, "retired"), (2, "active")]);

    // Once it is done, the next rotation goes ahead (and re-encrypts to version 3).
    let jobs = runner(&api, reencrypt(&api), 100).spawn();
    reencrypted(&api, &tenant, &admin).await;
    let third = rotate(&api, &tenant, &admin).await;
    assert_eq!(third.status, StatusCode::ACCEPTED, "{:?}", third.body);
    assert_eq!(third.body["key_version"], 3);
    let status = reencrypted(&api, &tenant, &admin).await;
    jobs.stop().await;
    let versions: Vec<(u32, &str)> = states(&status);
    assert_eq!(versions, [(1, "retired"), (2, "retired"), (3, "active")]);
    assert!(sealed_versions(&api, &tenant).await.iter().all(|v| *v == 3));
}

#[tokio::test]
async fn keys_rotate_on_their_own_once_a_version_reaches_its_seal_or_age_bound() {
    let (_db, database) = region_database("eu-central-1").await;
    let dir = tempfile::tempdir().expect("node dir");
    let mut parts = crate::node_parts(database, dir.path(), Default::default());
    parts.service.key_policy = service::key_policy::KeyPolicy {
        max_seals: 10,
        max_age: Duration::from_secs(24 * 3600),
        interval: Duration::from_secs(3600),
    };
    let node = crate::Node {
        state: api::NodeState::new(parts),
        dir,
    };
    let api = crate::tenant_api::serve_node(node).await;
    let service = api.node.state.service().clone();

    // `busy` seals 15 values (three records of five sealed fields) over the region's
    // bound of 10; `tolerant` as many under its own bound of 1000; `old` seals nothing,
    // and later gets a bound on age of one second.
    let (busy, busy_admin) = api.tenant().await;
    let (tolerant, tolerant_admin) = api.tenant().await;
    let (old, old_admin) = api.tenant().await;
    let bound_seals = "update tenants set key_max_seals = 1000 where tenant_id = $1";
    tenant_rows(&api, bound_seals, &tolerant).await;
    for (tenant, admin) in [(&busy, &busy_admin), (&tolerant, &tolerant_admin)] {
        api.people(tenant, admin).await;
        for n in 0..3 {
            let created = api
                .create_person(tenant, admin, person(&format!("p{n}@example.com")))
                .await;
            assert_eq!(created.status, StatusCode::CREATED);
        }
    }
    let tenant_id = |id: &str| model::TenantId::parse(id).expect("tenant id");
    assert_eq!(
        service.enforce_key_policy().await.expect("a round"),
        [tenant_id(&busy)],
        "the round adds the counts, then rotates what is over a bound"
    );
    let seals = async |tenant: &str| {
        let sql = "select seals from tenant_keys
                   where tenant_id = $1 and purpose = 'data' and version = 1";
        tenant_rows(&api, sql, tenant).await[0].get::<_, i64>(0)
    };
    assert_eq!(seals(&busy).await, 15, "the counts reached the database");
    assert_eq!(seals(&tolerant).await, 15);

    let bound_age = "update tenants set key_max_age_seconds = 1 where tenant_id = $1";
    tenant_rows(&api, bound_age, &old).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        service.enforce_key_policy().await.expect("a round"),
        [tenant_id(&old)],
        "the busy tenant's re-encryption is queued: it is not rotated again"
    );

    for (tenant, admin, reason) in [(&busy, &busy_admin, "seals"), (&old, &old_admin, "age")] {
        let status = key_status(&api, tenant, admin).await;
        assert_eq!(states(&status), [(1, "retired"), (2, "active")], "{tenant}");
        assert_eq!(
            status.reencryption.expect("queued").status,
            "queued",
            "{tenant}"
        );
        let events = rotation_events(&api, tenant, admin).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(events[0][0].starts_with("keys/data/v2?job="), "{events:?}");
        assert_eq!(events[0][1..3], ["system", "key-policy"]);
        assert_eq!(events[0][3], format!("key-policy-{reason}"));
    }
    let status = key_status(&api, &tolerant, &tolerant_admin).await;
    assert_eq!(status.versions.len(), 1, "under its own bound");
    // Their re-encryptions are queued: nothing rotates twice.
    assert!(
        service
            .enforce_key_policy()
            .await
            .expect("a round")
            .is_empty()
    );
}

#[tokio::test]
async fn files_in_an_s3_bucket_are_reencrypted_on_moto() {
    use envelope::aws::{AwsCredentials, AwsSettings, s3_client};
    let moto = devstack::testing::shared_moto();
    // us-east-1: the one S3 region whose buckets take no location constraint.
    let settings = AwsSettings {
        region: model::RegionId::parse("us-east-1").expect("region"),
        endpoint_url: Some(moto.endpoint_url()),
        credentials: AwsCredentials::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    };
    let bucket = format!(
        "residency-rotation-{}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    s3_client(&settings, true)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let (_db, database) = region_database("eu-central-1").await;
    let dir = tempfile::tempdir().expect("node dir");
    let mut parts = crate::node_parts(database, dir.path(), Default::default());
    parts.objects = Arc::new(envelope::objects::s3::S3ObjectStore::new(
        &settings, bucket, true,
    ));
    let node = crate::Node {
        state: api::NodeState::new(parts),
        dir,
    };
    let api = crate::tenant_api::serve_node(node).await;
    let (tenant, admin, writer, _, sums) = tenant_with_data(&api, 4, 4).await;
    assert!(
        object_versions(&api, &tenant)
            .await
            .iter()
            .all(|v| *v == (1, 1))
    );

    let started = rotate(&api, &tenant, &admin).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let jobs = runner(&api, reencrypt(&api), 3).spawn();
    let status = reencrypted(&api, &tenant, &admin).await;
    jobs.stop().await;
    let reencryption = status.reencryption.expect("a re-encryption");
    assert_eq!((reencryption.done, reencryption.total), (8, 8));
    let objects = object_versions(&api, &tenant).await;
    assert_eq!(objects.len(), 4);
    assert!(objects.iter().all(|v| *v == (2, 2)), "{objects:?}");
    for (path, sum) in &sums {
        let got = api.call(Method::GET, path, Some(&writer), None, &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(&sha256_hex(&got.bytes), sum);
    }
}

async fn destroy(api: &Served, tenant: &str, key: &str, version: &str) -> Answer {
    api.call(
        Method::DELETE,
        &format!("/v1/tenants/{tenant}/keys/{version}"),
        Some(key),
        None,
        &[],
    )
    .await
}

#[tokio::test]
async fn a_retired_version_no_value_uses_is_destroyed_and_every_node_hears_it() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin, writer, ids, sums) = tenant_with_data(&api, 5, 2).await;
    let (_, other_admin) = api.tenant().await;

    // Who may: the tenant's admin only.
    for (key, expected) in [
        (writer.as_str(), StatusCode::FORBIDDEN),
        (OPERATOR_TOKEN, StatusCode::FORBIDDEN),
        (other_admin.as_str(), StatusCode::NOT_FOUND),
    ] {
        let answer = destroy(&api, &tenant, key, "1").await;
        assert_eq!(answer.status, expected, "{:?}", answer.body);
    }
    // The active version, and versions the tenant never had.
    let active = destroy(&api, &tenant, &admin, "1").await;
    assert_eq!(active.status, StatusCode::CONFLICT, "{:?}", active.body);
    assert_eq!(
        active.header("content-type"),
        Some("application/problem+json")
    );
    for unknown in ["9", "0", "v1", "-1", "99999999999"] {
        let answer = destroy(&api, &tenant, &admin, unknown).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{unknown}: {:?}",
            answer.body
        );
    }

    // Retired but still sealing every value and file (no runner yet): refused.
    assert_eq!(
        rotate(&api, &tenant, &admin).await.status,
        StatusCode::ACCEPTED
    );
    let in_use = destroy(&api, &tenant, &admin, "1").await;
    assert_eq!(in_use.status, StatusCode::CONFLICT, "{:?}", in_use.body);
    assert_eq!(
        states(&key_status(&api, &tenant, &admin).await),
        [(1, "retired"), (2, "active")],
        "a refusal changes nothing"
    );
    // The records' sealed fields alone keep it (the files' rows made to say version 2 for
    // a moment): the walk over each record's sealed fields finds version 1.
    let files_at = async |version: i32| {
        let sql = format!("update files set key_version = {version} where tenant_id = $1");
        tenant_rows(&api, &sql, &tenant).await;
    };
    files_at(2).await;
    let by_records = destroy(&api, &tenant, &admin, "1").await;
    assert_eq!(
        by_records.status,
        StatusCode::CONFLICT,
        "{:?}",
        by_records.body
    );
    files_at(1).await;

    // Re-encrypted but for one file, whose row still names version 1 (as it would while
    // the job has not reached it): still refused, by the file alone.
    let jobs = runner(&api, reencrypt(&api), 100).spawn();
    reencrypted(&api, &tenant, &admin).await;
    jobs.stop().await;
    assert!(sealed_versions(&api, &tenant).await.iter().all(|v| *v == 2));
    let back = "update files set key_version = 1
                where tenant_id = $1 and name = (select min(name) from files where tenant_id = $1)";
    tenant_rows(&api, back, &tenant).await;
    let by_file = destroy(&api, &tenant, &admin, "1").await;
    assert_eq!(by_file.status, StatusCode::CONFLICT, "{:?}", by_file.body);
    files_at(2).await;

    // Now nothing uses it: destroyed, and the region's listeners hear it.
    let (notices, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let listener = api.node.state.database().listen(
        store::notifications::ListenerSettings::default(),
        Arc::new(move |notice| {
            let _ = notices.send(notice);
        }),
    );
    let mut sessions = listener.sessions();
    tokio::time::timeout(Duration::from_secs(10), sessions.wait_for(|s| *s > 0))
        .await
        .expect("listening in time")
        .expect("listener");
    let destroyed = destroy(&api, &tenant, &admin, "1").await;
    assert_eq!(
        destroyed.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        destroyed.body
    );
    let tenant_id = model::TenantId::parse(&tenant).expect("id");
    tokio::time::timeout(Duration::from_secs(1), async {
        // (A listener's first notice is its resynchronization after connecting.)
        while let Some(notice) = heard.recv().await {
            if notice == store::notifications::Notice::TenantKeys(tenant_id) {
                return;
            }
        }
        panic!("the listener stopped");
    })
    .await
    .expect("the tenant's key change heard within a second");
    listener.stop().await;
    let status = key_status(&api, &tenant, &admin).await;
    assert_eq!(states(&status), [(1, "destroyed"), (2, "active")]);
    let wrapped = "select count(*) from tenant_keys
                   where tenant_id = $1 and purpose = 'data' and version = 1
                     and wrapped_key is null and kms_key_id is null";
    assert_eq!(
        tenant_rows(&api, wrapped, &tenant).await[0].get::<_, i64>(0),
        1
    );
    // Everything stays readable (it is all under version 2), and writes go on.
    for id in &ids {
        let path = format!("{}/{id}", records_path(&tenant));
        let got = api.call(Method::GET, &path, Some(&writer), None, &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    }
    for (path, sum) in &sums {
        let got = api.call(Method::GET, path, Some(&writer), None, &[]).await;
        assert_eq!(&sha256_hex(&got.bytes), sum);
    }
    let created = api
        .create_person(&tenant, &writer, person("after@example.com"))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);

    // Again: nothing changes, nothing is audited twice; the active version still refuses.
    let again = destroy(&api, &tenant, &admin, "1").await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    assert_eq!(
        destroy(&api, &tenant, &admin, "2").await.status,
        StatusCode::CONFLICT
    );
    let auditor = api.key(&tenant, &admin, "auditor").await;
    let events = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/audit/events?action=key.destroy"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    assert_eq!(events.status, StatusCode::OK);
    let outcomes: Vec<(&str, &str, &str)> = events.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["resource"].as_str().expect("resource"),
                e["outcome"].as_str().expect("outcome"),
                e["actor"]["kind"].as_str().expect("actor"),
            )
        })
        .collect();
    let successes: Vec<_> = outcomes.iter().filter(|e| e.1 == "success").collect();
    assert_eq!(
        successes,
        [&("keys/data/v1", "success", "api_key")],
        "{outcomes:?}"
    );
}

async fn put_policy(api: &Served, tenant: &str, key: &str, body: Value) -> Answer {
    api.call(
        Method::PUT,
        &format!("/v1/tenants/{tenant}/keys/policy"),
        Some(key),
        Some(body),
        &[],
    )
    .await
}

async fn policy(api: &Served, tenant: &str, admin: &str) -> Value {
    let answer = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/keys/policy"),
            Some(admin),
            None,
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body
}

#[tokio::test]
async fn a_tenants_rotation_bounds_are_set_through_the_api_within_the_regions_and_applied() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    let (_, other_admin) = api.tenant().await;
    let writer = api.key(&tenant, &admin, "writer").await;
    const DAYS_90: u64 = 90 * 24 * 3600;
    let defaults = json!({
        "max_seals": null, "max_age_seconds": null,
        "default_max_seals": 1u64 << 30, "default_max_age_seconds": DAYS_90
    });
    assert_eq!(policy(&api, &tenant, &admin).await, defaults);

    let tight = json!({"max_seals": 10, "max_age_seconds": 86_400});
    for (key, expected) in [
        (writer.as_str(), StatusCode::FORBIDDEN),
        (OPERATOR_TOKEN, StatusCode::FORBIDDEN),
        (other_admin.as_str(), StatusCode::NOT_FOUND),
    ] {
        let answer = put_policy(&api, &tenant, key, tight.clone()).await;
        assert_eq!(answer.status, expected, "{:?}", answer.body);
    }
    // Out of bounds: 422 naming the field, nothing changed.
    for (body, field) in [
        (json!({"max_seals": 0}), "max_seals"),
        (json!({"max_seals": (1u64 << 30) + 1}), "max_seals"),
        (json!({"max_seals": -5}), "max_seals"),
        (json!({"max_age_seconds": 3599}), "max_age_seconds"),
        (json!({"max_age_seconds": DAYS_90 + 1}), "max_age_seconds"),
        (json!({"max_seals": 10, "rotate": true}), "rotate"),
    ] {
        let answer = put_policy(&api, &tenant, &admin, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            answer.body
        );
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{body}: {detail}");
    }
    assert_eq!(policy(&api, &tenant, &admin).await, defaults);

    // Within bounds: stored (in the tenant's row), shown, audited.
    let set = put_policy(&api, &tenant, &admin, tight.clone()).await;
    assert_eq!(set.status, StatusCode::OK, "{:?}", set.body);
    let expected = json!({
        "max_seals": 10, "max_age_seconds": 86_400,
        "default_max_seals": 1u64 << 30, "default_max_age_seconds": DAYS_90
    });
    assert_eq!(set.body, expected);
    assert_eq!(policy(&api, &tenant, &admin).await, expected);
    let stored = "select key_max_seals, key_max_age_seconds from tenants where tenant_id = $1";
    let row = &tenant_rows(&api, stored, &tenant).await[0];
    assert_eq!(
        (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)),
        (Some(10), Some(86_400))
    );

    // Applied: 15 seals (three records of five sealed fields) are over the tenant's 10,
    // far under the region's 2^30.
    api.people(&tenant, &admin).await;
    for n in 0..3 {
        let created = api
            .create_person(&tenant, &writer, person(&format!("p{n}@example.com")))
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    let service = api.node.state.service().clone();
    assert_eq!(
        service.enforce_key_policy().await.expect("a round"),
        [model::TenantId::parse(&tenant).expect("id")]
    );
    assert_eq!(
        states(&key_status(&api, &tenant, &admin).await),
        [(1, "retired"), (2, "active")]
    );

    // Back to the region's defaults (absent fields are null).
    let reset = put_policy(&api, &tenant, &admin, json!({})).await;
    assert_eq!(reset.status, StatusCode::OK, "{:?}", reset.body);
    assert_eq!(reset.body, defaults);
    let auditor = api.key(&tenant, &admin, "auditor").await;
    let events = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/audit/events?action=key.policy"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    let resources: Vec<&str> = events.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["outcome"] == "success")
        .map(|e| e["resource"].as_str().expect("resource"))
        .collect();
    assert_eq!(
        resources,
        [
            "keys/policy?max_seals=10&max_age_seconds=86400",
            "keys/policy?max_seals=default&max_age_seconds=default"
        ]
    );
}
