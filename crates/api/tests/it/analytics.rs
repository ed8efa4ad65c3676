//! The analytics export end to end: records written through the API, then released from
//! the replica as the export role into an analytics directory. An independent reading of
//! the Parquet output checks k-anonymity and l-diversity; planted identifiers appear in no
//! byte; pseudonyms are stable across runs and differ between tenants; a run stopped
//! before its manifest is completed by the next, once; an unchanged collection is skipped.
//! After a data subject's erasure, the collection (which releases pseudonyms) is released
//! afresh without them and the runs before are withdrawn.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use async_trait::async_trait;
use envelope::kms::Kms;
use envelope::kms::local::LocalKms;
use envelope::objects::local::LocalObjectStore;
use envelope::objects::{ByteStream, ObjectKey, ObjectStore, ObjectStoreError, ObjectStoreKind};
use model::RegionId;
use reqwest::{Method, StatusCode};
use serde_json::json;
use service::analytics::{ExportKeys, ExportTarget, export_once};
use store::RegionDatabase;
use store::export::{EXPORT_ROLE, ExportReplica};
use store::testing::region_database;

use crate::OPERATOR_TOKEN;
use crate::tenant_api::{Served, collect_files, contains, serve};

const PASSWORD: &str = "analytics-test-password";
const PER_TENANT: usize = 40;

/// An object store that refuses manifests while `failing`: a run stopped after its parts.
#[derive(Debug)]
struct StopBeforeManifest {
    inner: Arc<dyn ObjectStore>,
    failing: AtomicBool,
}

#[async_trait]
impl ObjectStore for StopBeforeManifest {
    fn kind(&self) -> ObjectStoreKind {
        self.inner.kind()
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn put(&self, key: &ObjectKey, body: ByteStream) -> Result<u64, ObjectStoreError> {
        if self.failing.load(Ordering::SeqCst) && key.as_str().ends_with("_manifest.json") {
            return Err(ObjectStoreError::Unavailable("the run was stopped".into()));
        }
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, ObjectStoreError> {
        self.inner.get(key).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectStoreError> {
        self.inner.list(prefix).await
    }
    async fn check(&self) -> Result<(), ObjectStoreError> {
        self.inner.check().await
    }
}

async fn exporting_tenant(served: &Served, name: &str, marker: &str) -> (String, String) {
    let created = served
        .call(
            Method::POST,
            "/v1/tenants",
            Some(OPERATOR_TOKEN),
            Some(json!({"name": name, "home_region": "eu-central-1", "analytics_export": true})),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let admin = created.body["admin_key"].as_str().expect("key").to_owned();
    served.people(&id, &admin).await;
    for i in 0..PER_TENANT {
        let email = if i == 0 {
            "shared@example.com".to_owned()
        } else {
            format!("{marker}-{i}@example.com")
        };
        let diagnosis = ["flu", "cold", "asthma"][i % 3];
        let person = json!({
            "email": email,
            "name": format!("{marker}NAME{i}"),
            "age": 20 + (i * 7) % 45,
            "zip": format!("10{:03}", (i * 13) % 200),
            "diagnosis": diagnosis,
            "plan": "pro"
        });
        let answer = served.create_person(&id, &admin, person).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    }
    (id, admin)
}

/// The released rows of every `.parquet` file under `dir`, read with the parquet crate.
fn read_parts(dir: &std::path::Path) -> Vec<RecordBatch> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files.sort();
    let mut batches = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
    {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(file).expect("open part"),
        )
        .expect("a parquet file")
        .build()
        .expect("reader");
        batches.extend(reader.map(|batch| batch.expect("batch")));
    }
    batches
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    let array = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("column {column}"));
    let array = array
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap_or_else(|| panic!("{column} is text"));
    (0..array.len())
        .map(|i| array.value(i).to_owned())
        .collect()
}

fn integers(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let array = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("column {column}"));
    let array = array
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap_or_else(|| panic!("{column} is an integer"));
    (0..array.len()).map(|i| array.value(i)).collect()
}

/// Checks, without the engine's code, that every class of equal generalized
/// quasi-identifiers holds at least `k` rows and `l` distinct diagnoses; returns the email
/// pseudonyms released.
fn check_release(dir: &std::path::Path, k: usize, l: usize) -> BTreeSet<String> {
    let mut classes: BTreeMap<(i64, i64, String), (usize, BTreeSet<String>)> = BTreeMap::new();
    let mut pseudonyms = BTreeSet::new();
    let batches = read_parts(dir);
    assert!(!batches.is_empty(), "a release under {}", dir.display());
    for batch in &batches {
        assert!(batch.column_by_name("name").is_none(), "names are dropped");
        let (lo, hi) = (integers(batch, "age_lo"), integers(batch, "age_hi"));
        let (zip, diagnosis) = (strings(batch, "zip"), strings(batch, "diagnosis"));
        for (i, email) in strings(batch, "email").into_iter().enumerate() {
            assert_eq!(email.len(), 64, "a pseudonym is 32 bytes of hex");
            pseudonyms.insert(email);
            let class = classes.entry((lo[i], hi[i], zip[i].clone())).or_default();
            class.0 += 1;
            class.1.insert(diagnosis[i].clone());
        }
    }
    for (class, (rows, diagnoses)) in &classes {
        assert!(*rows >= k, "class {class:?} has {rows} rows < k = {k}");
        assert!(
            diagnoses.len() >= l,
            "class {class:?} has {} diagnoses < l = {l}",
            diagnoses.len()
        );
    }
    pseudonyms
}

/// The run directories (`run=…`) under a tenant's collection, and which have a manifest.
fn runs(collection: &std::path::Path) -> Vec<(String, bool)> {
    let mut runs: Vec<(String, bool)> = std::fs::read_dir(collection)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    (name, entry.path().join("_manifest.json").is_file())
                })
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs
}

/// Gives the export role its password, as a deployment would.
async fn export_role_password(db: &RegionDatabase) {
    let owner = db.as_owner().primary().get().await.expect("primary");
    owner
        .batch_execute(&format!("alter role {EXPORT_ROLE} password '{PASSWORD}'"))
        .await
        .expect("export password");
}

/// Waits until `count` (a `select count(*)`) on the replica answers `expected`.
async fn replica_counts(db: &RegionDatabase, count: &str, expected: i64) {
    for _ in 0..500 {
        let replayed: i64 = db.as_owner().replicas()[0]
            .get()
            .await
            .expect("replica")
            .query_one(count, &[])
            .await
            .expect("count")
            .get(0);
        if replayed == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the replica never caught up: {count} is not {expected}");
}

/// A connection as the export role to the replica, once it has replayed up to
/// `expected` records in all.
async fn caught_up_replica(
    db: &RegionDatabase,
    replica_config: &tokio_postgres::Config,
    expected: i64,
) -> ExportReplica {
    replica_counts(db, "select count(*) from records", expected).await;
    ExportReplica::connect(replica_config, &store::PgTls::Disabled, "replica")
        .await
        .expect("connect to the replica as the export role")
}

#[tokio::test]
async fn the_analytics_export_releases_anonymized_snapshots_once_per_change() {
    let (database, db) = region_database("eu-central-1").await;
    let served = serve(db.clone()).await;
    let (a, a_admin) = exporting_tenant(&served, "Acme", "PLANTEDA").await;
    let (b, _) = exporting_tenant(&served, "Globex", "PLANTEDB").await;
    // A tenant without export is never released.
    let (quiet, quiet_admin) = served.tenant().await;
    served.people(&quiet, &quiet_admin).await;
    let answer = served
        .create_person(
            &quiet,
            &quiet_admin,
            crate::tenant_api::person("PLANTEDQUIET@example.com"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);

    export_role_password(&db).await;
    let expected = (2 * PER_TENANT + 1) as i64;
    let mut replica_config = database.replica.clone();
    replica_config.user(EXPORT_ROLE).password(PASSWORD);
    let connect = || caught_up_replica(&db, &replica_config, expected);

    let region = RegionId::parse("eu-central-1").expect("region");
    let kms: Arc<dyn Kms> = Arc::new(
        LocalKms::open_or_create(&served.node.dir.path().join("kms"), region.clone())
            .expect("the region's KMS"),
    );
    let analytics = tempfile::tempdir().expect("analytics dir");
    let bucket: Arc<dyn ObjectStore> =
        Arc::new(LocalObjectStore::new(analytics.path().to_owned()).expect("store"));
    let stopping = Arc::new(StopBeforeManifest {
        inner: bucket.clone(),
        failing: AtomicBool::new(true),
    });
    let target = ExportTarget {
        objects: stopping.clone(),
        prefix: "eu-central-1/".into(),
    };

    // A run stopped after its parts leaves no manifest...
    let mut replica = connect().await;
    export_once(&mut replica, &region, &kms, &target)
        .await
        .expect_err("the manifest cannot be written");
    let mut files = Vec::new();
    collect_files(analytics.path(), &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "parquet"))
    );
    assert!(!files.iter().any(|f| f.ends_with("_manifest.json")));

    // ...and the next completes that same run, once.
    stopping.failing.store(false, Ordering::SeqCst);
    let mut replica = connect().await;
    let first = export_once(&mut replica, &region, &kms, &target)
        .await
        .expect("export");
    assert_eq!(first.tenants, 2, "only the tenants that turned export on");
    assert_eq!(first.released, 2);
    assert!(first.resumed >= 1, "{first:?}");
    assert_eq!(
        first.rows_released + first.rows_suppressed,
        2 * PER_TENANT as u64
    );
    assert!(
        first.rows_released >= PER_TENANT as u64,
        "most rows are released: {first:?}"
    );
    let root = analytics.path().join("eu-central-1");
    let tenant_dirs: Vec<std::path::PathBuf> = std::fs::read_dir(&root)
        .expect("region prefix")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(tenant_dirs.len(), 2, "one directory per exporting tenant");
    for dir in &tenant_dirs {
        assert_eq!(
            runs(&dir.join("people")),
            [("run=00000001".to_owned(), true)]
        );
    }

    // Nothing identifying in any byte: emails, names, tenant ids and names, the quiet
    // tenant's data.
    let mut files = Vec::new();
    collect_files(analytics.path(), &mut files);
    for file in &files {
        let bytes = std::fs::read(file).expect("read output");
        for planted in [
            "PLANTEDA",
            "PLANTEDB",
            "PLANTEDQUIET",
            "shared@example.com",
            "Acme",
            "Globex",
            a.as_str(),
            b.as_str(),
            quiet.as_str(),
        ] {
            assert!(
                !contains(&bytes, planted.as_bytes()),
                "{} contains {planted}",
                file.display()
            );
        }
    }

    // Independently checked: k = 10 and l = 2 hold in every release; the two tenants'
    // pseudonyms share nothing, though both hold shared@example.com.
    let released: Vec<BTreeSet<String>> = tenant_dirs
        .iter()
        .map(|dir| check_release(&dir.join("people"), 10, 2))
        .collect();
    assert!(released[0].is_disjoint(&released[1]));

    // Unchanged: skipped. One more record in A: only A is released again, under the same
    // pseudonyms for the records it already had.
    let mut replica = connect().await;
    let again = export_once(&mut replica, &region, &kms, &target)
        .await
        .expect("export");
    assert_eq!((again.released, again.unchanged), (0, 2));
    let answer = served
        .create_person(
            &a,
            &a_admin,
            crate::tenant_api::person("PLANTEDA-late@example.com"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let mut replica = caught_up_replica(&db, &replica_config, expected + 1).await;
    let third = export_once(&mut replica, &region, &kms, &target)
        .await
        .expect("export");
    assert_eq!((third.released, third.unchanged), (1, 1));
    let changed: Vec<&std::path::PathBuf> = tenant_dirs
        .iter()
        .filter(|dir| runs(&dir.join("people")).len() == 2)
        .collect();
    assert_eq!(changed.len(), 1);
    let dir = changed[0].join("people");
    assert_eq!(
        runs(&dir),
        [
            ("run=00000001".to_owned(), true),
            ("run=00000002".to_owned(), true)
        ]
    );
    let before = tenant_dirs
        .iter()
        .position(|d| d == changed[0])
        .expect("index");
    let after = check_release(&dir.join("run=00000002"), 10, 2);
    let kept = released[before].intersection(&after).count();
    assert!(
        kept + 1 >= released[before].len(),
        "pseudonyms are stable across runs: {kept} of {} kept",
        released[before].len()
    );
}

/// Erases `subject` of `tenant` through `POST .../subjects/{subject}/erase`, as a tenant's
/// admin does; checks how many records went.
async fn erase(served: &Served, tenant: &str, admin: &str, subject: &str, records: u64) {
    let erased = served
        .call(
            Method::POST,
            &format!("/v1/tenants/{tenant}/subjects/{subject}/erase"),
            Some(admin),
            None,
            &[],
        )
        .await;
    assert_eq!(erased.status, StatusCode::OK, "{:?}", erased.body);
    assert_eq!(erased.body["records_erased"], records, "{:?}", erased.body);
}

/// Every file under `dir` with its bytes.
fn files_with_bytes(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = Vec::new();
    collect_files(dir, &mut files);
    files
        .into_iter()
        .map(|file| {
            let bytes = std::fs::read(&file).expect("read output");
            (file, bytes)
        })
        .collect()
}

#[tokio::test]
async fn after_a_subject_erasure_runs_holding_their_pseudonym_are_withdrawn_and_re_released() {
    const ERASED: &str = "erased-subject@example.com";
    let (database, db) = region_database("eu-central-1").await;
    let served = serve(db.clone()).await;
    let (tenant_id, admin) = exporting_tenant(&served, "Initech", "PLANTEDE").await;
    let tenant: model::TenantId = tenant_id.parse().expect("tenant id");
    // The subject has two records among the others.
    for age in [33, 41] {
        let mut person = crate::tenant_api::person(ERASED);
        person["age"] = json!(age);
        let answer = served.create_person(&tenant_id, &admin, person).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    }
    export_role_password(&db).await;
    let mut replica_config = database.replica.clone();
    replica_config.user(EXPORT_ROLE).password(PASSWORD);
    let before = (PER_TENANT + 2) as i64;

    let region = RegionId::parse("eu-central-1").expect("region");
    let kms: Arc<dyn Kms> = Arc::new(
        LocalKms::open_or_create(&served.node.dir.path().join("kms"), region.clone())
            .expect("the region's KMS"),
    );
    let analytics = tempfile::tempdir().expect("analytics dir");
    let target = ExportTarget {
        objects: Arc::new(LocalObjectStore::new(analytics.path().to_owned()).expect("store")),
        prefix: "eu-central-1/".into(),
    };

    // The subject's pseudonym, as the export computes it.
    let mut replica = caught_up_replica(&db, &replica_config, before).await;
    let snapshot = replica.snapshot(&tenant).await.expect("snapshot");
    let material = ExportKeys::new(kms.clone(), region.clone(), tenant)
        .pseudonym_key(&snapshot)
        .await
        .expect("pseudonym key");
    snapshot.finish().await.expect("finish");
    let pseudonyms = export::PseudonymKey::new(material.expose());
    let erased_pseudonym = pseudonyms.pseudonym(export::PseudonymValue::String(ERASED));
    let tenant_dir = pseudonyms.pseudonym(export::PseudonymValue::String(tenant.as_str()));
    let people = analytics
        .path()
        .join("eu-central-1")
        .join(&tenant_dir)
        .join("people");

    // The first run releases the subject's pseudonym.
    let first = export_once(&mut replica, &region, &kms, &target)
        .await
        .expect("export");
    assert_eq!((first.released, first.withdrawn), (1, 0));
    let run1 = people.join("run=00000001");
    assert!(
        check_release(&run1, 10, 2).contains(&erased_pseudonym),
        "the first release holds the subject's pseudonym"
    );
    let manifest = |run: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(run.join("_manifest.json")).expect("manifest"))
            .expect("manifest JSON")
    };
    let first_watermark = manifest(&run1)["source_watermark"].clone();

    // The erasure commits; the next run releases afresh and withdraws the first.
    erase(&served, &tenant_id, &admin, ERASED, 2).await;
    let mut replica = caught_up_replica(&db, &replica_config, before - 2).await;
    let second = export_once(&mut replica, &region, &kms, &target)
        .await
        .expect("export");
    assert_eq!((second.released, second.withdrawn), (1, 1), "{second:?}");
    let run2 = people.join("run=00000002");
    assert_ne!(
        manifest(&run2)["source_watermark"],
        first_watermark,
        "the run after the erasure has a new watermark"
    );
    assert!(
        files_with_bytes(&run1).is_empty(),
        "the withdrawn run's parts and manifest are gone"
    );
    let released = check_release(&run2, 10, 2);
    assert!(!released.contains(&erased_pseudonym));
    assert!(
        released.len() >= PER_TENANT / 2,
        "the other subjects are released: {}",
        released.len()
    );
    // Analysts see which run was withdrawn, why, and what replaces it; nothing of the
    // subject.
    let withdrawn_bytes = std::fs::read(people.join("_withdrawn.json")).expect("_withdrawn.json");
    let withdrawn: serde_json::Value =
        serde_json::from_slice(&withdrawn_bytes).expect("withdrawal JSON");
    assert_eq!(
        withdrawn["runs"].as_array().map(Vec::len),
        Some(1),
        "{withdrawn}"
    );
    assert_eq!(withdrawn["runs"][0]["run"], "00000001");
    assert_eq!(withdrawn["runs"][0]["reason"], "subject erasure");
    assert_eq!(withdrawn["runs"][0]["superseded_by"], "00000002");
    for secret in [ERASED, erased_pseudonym.as_str(), tenant_id.as_str()] {
        assert!(!contains(&withdrawn_bytes, secret.as_bytes()), "{secret}");
    }

    // A second pass changes nothing.
    let bucket = files_with_bytes(analytics.path());
    let mut replica = caught_up_replica(&db, &replica_config, before - 2).await;
    let third = export_once(&mut replica, &region, &kms, &target)
        .await
        .expect("export");
    assert_eq!(
        (third.released, third.unchanged, third.withdrawn),
        (0, 1, 0)
    );
    assert_eq!(files_with_bytes(analytics.path()), bucket);

    // The collection stops being released; a later erasure still withdraws what was.
    let mut schema = crate::tenant_api::people_schema();
    schema
        .as_object_mut()
        .expect("a schema object")
        .remove("analytics");
    let changed = served
        .call(
            Method::PUT,
            &format!("/v1/tenants/{tenant_id}/collections/people"),
            Some(&admin),
            Some(schema),
            &[],
        )
        .await;
    assert!(changed.status.is_success(), "{:?}", changed.body);
    let answer = served
        .create_person(
            &tenant_id,
            &admin,
            crate::tenant_api::person("second-subject@example.com"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    erase(&served, &tenant_id, &admin, "second-subject@example.com", 1).await;
    // The record count is as before: wait for the replica to hold the second erasure.
    replica_counts(&db, "select count(*) from subject_erasures", 2).await;
    let mut replica = caught_up_replica(&db, &replica_config, before - 2).await;
    let fourth = export_once(&mut replica, &region, &kms, &target)
        .await
        .expect("export");
    assert_eq!((fourth.released, fourth.withdrawn), (0, 1), "{fourth:?}");
    assert!(files_with_bytes(&run2).is_empty());
    let withdrawn: serde_json::Value = serde_json::from_slice(
        &std::fs::read(people.join("_withdrawn.json")).expect("_withdrawn.json"),
    )
    .expect("withdrawal JSON");
    assert_eq!(withdrawn["runs"][1]["run"], "00000002");
    assert_eq!(
        withdrawn["runs"][1]["superseded_by"],
        serde_json::Value::Null
    );
}
