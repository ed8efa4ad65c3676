//! The erasure ledger outside the database: the restore drill (dump the region's database,
//! erase, restore the dump into a fresh database, start a node on it: the subject is
//! erased again from the ledger in the audit bucket), the operator's re-application on
//! demand, and an erasure on S3 (moto) with versioning: no version of the subject's
//! objects left, the ledger entry in the write-once audit bucket.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::testing::{TestDatabase, connect};
use envelope::aws::{AwsCredentials, AwsSettings, s3_client};
use envelope::kms::local::LocalKms;
use envelope::objects::s3::S3ObjectStore;
use model::RegionId;
use node::{ApiSettings, RunningNode};
use reqwest::Method;
use serde_json::{Value, json};
use service::jobs::JobSettings;

use crate::jobs::{OPERATOR, call, start, tenant_with_record};
use crate::support::{node_config, single_region, start_on_loopback};

const ADA: &str = "ada@example.com";
const GRACE: &str = "grace@example.com";

/// A record of `email` in the tenant's `people`; its id.
pub(crate) async fn person(api: &str, tenant: &str, admin: &str, email: &str) -> String {
    let (status, record) = call(
        Method::POST,
        &format!("{api}/v1/tenants/{tenant}/collections/people/records"),
        admin,
        Some(json!({"data": {"email": email}})),
    )
    .await;
    assert_eq!(status, 201, "{record}");
    record["id"].as_str().expect("id").to_owned()
}

pub(crate) async fn put_file(api: &str, tenant: &str, admin: &str, record: &str, name: &str) {
    let put = reqwest::Client::new()
        .put(format!(
            "{api}/v1/tenants/{tenant}/collections/people/records/{record}/files/{name}"
        ))
        .bearer_auth(admin)
        .body(vec![3u8; 2_000])
        .send()
        .await
        .expect("put file");
    assert_eq!(put.status().as_u16(), 201);
}

pub(crate) async fn erase(api: &str, tenant: &str, admin: &str, subject: &str) -> Value {
    let subject: String = url_encode(subject);
    let (status, erased) = call(
        Method::POST,
        &format!("{api}/v1/tenants/{tenant}/subjects/{subject}/erase"),
        admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{erased}");
    erased
}

fn url_encode(subject: &str) -> String {
    subject.replace('@', "%40")
}

/// Runs a PostgreSQL client program of the devstack's binaries against `database`.
async fn pg_tool(program: &str, database: &tokio_postgres::Config, args: &[&str]) -> String {
    let binaries = devstack::PgBinaries::locate().expect("PostgreSQL binaries");
    let host = match &database.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let mut command = tokio::process::Command::new(binaries.bin(program));
    command
        .arg("--host")
        .arg(host)
        .arg("--port")
        .arg(database.get_ports()[0].to_string())
        .arg("--username")
        .arg(database.get_user().unwrap_or("postgres"))
        .arg("--dbname")
        .arg(database.get_dbname().expect("dbname"))
        .args(args);
    if let Some(password) = database.get_password() {
        command.env("PGPASSWORD", String::from_utf8_lossy(password).to_string());
    }
    let output = command.output().await.expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fresh database holding the dump at `dump` (a plain `pg_dump`), and its replica.
async fn restore(dump: &Path) -> TestDatabase {
    let restored = TestDatabase::create(None).await;
    let path = dump.to_str().expect("utf-8 path");
    pg_tool(
        "psql",
        &restored.primary,
        &["--quiet", "-v", "ON_ERROR_STOP=1", "--file", path],
    )
    .await;
    // The nodes read from the replica too: wait until it has replayed the restore.
    let primary = connect(restored.primary.clone()).await;
    let replica = connect(restored.replica.clone()).await;
    let lsn: String = primary
        .query_one("select pg_current_wal_lsn()::text", &[])
        .await
        .expect("primary position")
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replayed: bool = replica
            .query_one(
                "select pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .expect("replica position")
            .get(0);
        if replayed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never replayed the restore"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    restored
}

/// Waits (replicas replay within the lag bound) until the record answers `expected`.
async fn await_record_status(api: &str, tenant: &str, admin: &str, record: &str, expected: u16) {
    let url = format!("{api}/v1/tenants/{tenant}/collections/people/records/{record}");
    await_status(&url, admin, expected).await;
}

/// Waits (reads without a consistency token may go to a replica, which replays within
/// the lag bound) until a GET of `url` answers `expected`.
async fn await_status(url: &str, token: &str, expected: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = call(Method::GET, url, token, None).await;
        if status == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "record answers {status}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ledger's rows of a database: (entry id, records erased, reapplied).
async fn ledger_rows(database: &TestDatabase) -> Vec<(String, i64, bool)> {
    connect(database.primary.clone())
        .await
        .query(
            "select entry_id, records_erased, reapplied from subject_erasures order by erased_at",
            &[],
        )
        .await
        .expect("read the ledger's table")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

async fn reapply(api: &str) -> Value {
    let (status, report) = call(
        Method::POST,
        &format!("{api}/v1/subjects/erasures/reapply"),
        OPERATOR,
        None,
    )
    .await;
    assert_eq!(status, 200, "{report}");
    report
}

#[tokio::test]
async fn a_restored_database_forgets_nobody_the_ledger_erased() {
    let dir = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let original = TestDatabase::create(None).await;
    let kms = Arc::new(LocalKms::open_or_create(&dir.path().join("kms"), id.clone()).expect("kms"));
    let node = start(&id, &original, kms.clone(), dir.path()).await;
    let api = format!("http://{}", node.address);
    let (tenant, admin, ada) = tenant_with_record(&api, "Clinic", ADA).await;
    let ada_again = person(&api, &tenant, &admin, ADA).await;
    let grace = person(&api, &tenant, &admin, GRACE).await;
    put_file(&api, &tenant, &admin, &ada, "scan.pdf").await;

    // The backup: taken before the erasure.
    let dump = dir.path().join("backup.sql");
    let text = pg_tool("pg_dump", &original.primary, &[]).await;
    std::fs::write(&dump, &text).expect("write the dump");

    // A node on a restored copy runs beside the original: it starts with an empty ledger.
    let copy = restore(&dump).await;
    let beside = start(&id, &copy, kms.clone(), dir.path()).await;
    let beside_api = format!("http://{}", beside.address);
    let (status, read) = call(
        Method::GET,
        &format!("{beside_api}/v1/tenants/{tenant}/collections/people/records/{ada}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 200, "{read}");

    let erased = erase(&api, &tenant, &admin, ADA).await;
    assert_eq!(erased["records_erased"], 2);
    assert_eq!(erased["files_erased"], 1);
    await_record_status(&api, &tenant, &admin, &ada, 404).await;
    let entry_id = ledger_rows(&original).await[0].0.clone();

    // On demand: the operator re-applies the ledger to the copy's database.
    await_record_status(&beside_api, &tenant, &admin, &ada, 200).await;
    let report = reapply(&beside_api).await;
    assert_eq!(
        report,
        json!({"entries": 1, "reapplied": 1, "records_erased": 2, "skipped": 0})
    );
    for record in [&ada, &ada_again] {
        await_record_status(&beside_api, &tenant, &admin, record, 404).await;
    }
    await_record_status(&beside_api, &tenant, &admin, &grace, 200).await;
    assert_eq!(ledger_rows(&copy).await, [(entry_id.clone(), 2, true)]);
    // Applied once: again, nothing to do.
    assert_eq!(reapply(&beside_api).await["reapplied"], 0);
    beside.stop().await.expect("stop");

    // The restore drill: the backup restored into a fresh database, a node started on it.
    let restored = restore(&dump).await;
    let count_ada = "select count(*) from record_index where field = 'subject:' \
                     and token = (select subject_token from subject_erasures limit 1)";
    assert!(
        ledger_rows(&restored).await.is_empty(),
        "the backup predates the erasure"
    );
    let node_after = start(&id, &restored, kms, dir.path()).await;
    let after_api = format!("http://{}", node_after.address);
    // Erased before the node served its first request.
    for record in [&ada, &ada_again] {
        await_record_status(&after_api, &tenant, &admin, record, 404).await;
    }
    await_record_status(&after_api, &tenant, &admin, &grace, 200).await;
    let file =
        format!("{after_api}/v1/tenants/{tenant}/collections/people/records/{ada}/files/scan.pdf");
    await_status(&file, &admin, 404).await;
    assert_eq!(ledger_rows(&restored).await, [(entry_id.clone(), 2, true)]);
    let client = connect(restored.primary.clone()).await;
    let left: i64 = client
        .query_one(count_ada, &[])
        .await
        .expect("count tokens")
        .get(0);
    assert_eq!(left, 0, "no token of the subject left in the index");
    let files: i64 = client
        .query_one("select count(*) from files", &[])
        .await
        .expect("count files")
        .get(0);
    assert_eq!(files, 0);
    // The re-applied erasure is audited by the system, naming the entry, not the subject.
    let event = client
        .query_one(
            "select actor_kind, actor_id, request_id, resource from audit_events
             where action = 'subject.erase'",
            &[],
        )
        .await
        .expect("the re-applied erasure's event");
    let (kind, actor, request, resource): (String, String, String, String) =
        (event.get(0), event.get(1), event.get(2), event.get(3));
    assert_eq!(kind, "system");
    assert_eq!(actor, service::erasure::LEDGER_ACTOR);
    assert_eq!(request, format!("ledger-{entry_id}"));
    assert!(resource.starts_with("subjects/") && !resource.contains('@'));
    // The chain still verifies.
    let auditor = {
        let (status, key) = call(
            Method::POST,
            &format!("{after_api}/v1/tenants/{tenant}/api-keys"),
            &admin,
            Some(json!({"name": "audit", "role": "auditor"})),
        )
        .await;
        assert_eq!(status, 201, "{key}");
        key["key"].as_str().expect("key").to_owned()
    };
    let (status, bundle) = call(
        Method::GET,
        &format!("{after_api}/v1/tenants/{tenant}/audit/export"),
        &auditor,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let bundle = bundle
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| bundle.to_string());
    let keys = reqwest::get(format!("{after_api}/v1/audit/keys"))
        .await
        .expect("keys")
        .text()
        .await
        .expect("keys text");
    let key_set = audit::KeySet::from_json(&keys).expect("key set");
    audit::verify_bundle(bundle.as_bytes(), &key_set).expect("the chain verifies");
    node_after.stop().await.expect("stop");
    node.stop().await.expect("stop");
}

/// Moto settings with the fixed test credentials.
pub(crate) fn moto_settings(id: &RegionId) -> AwsSettings {
    AwsSettings {
        region: id.clone(),
        endpoint_url: Some(devstack::testing::shared_moto().endpoint_url()),
        credentials: AwsCredentials::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    }
}

/// A new bucket in moto: the data bucket with versioning, or the audit bucket with Object
/// Lock (a default retention, as Terraform configures it).
pub(crate) async fn bucket(settings: &AwsSettings, name: &str, object_lock: bool) -> String {
    use aws_sdk_s3::types::{
        BucketLocationConstraint, BucketVersioningStatus, CreateBucketConfiguration,
        DefaultRetention, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockRetentionMode,
        ObjectLockRule, VersioningConfiguration,
    };
    let client = s3_client(settings, true);
    let bucket = format!("{name}-{}", hex::encode(rand::random::<[u8; 5]>()));
    client
        .create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(object_lock)
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(settings.region.as_str()))
                .build(),
        )
        .send()
        .await
        .expect("create bucket");
    client
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("enable versioning");
    if object_lock {
        client
            .put_object_lock_configuration()
            .bucket(&bucket)
            .object_lock_configuration(
                ObjectLockConfiguration::builder()
                    .object_lock_enabled(ObjectLockEnabled::Enabled)
                    .rule(
                        ObjectLockRule::builder()
                            .default_retention(
                                DefaultRetention::builder()
                                    .mode(ObjectLockRetentionMode::Governance)
                                    .days(1)
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("set the default retention");
    }
    bucket
}

/// Object versions and delete markers under `prefix`.
pub(crate) async fn versions_under(settings: &AwsSettings, bucket: &str, prefix: &str) -> usize {
    let listed = s3_client(settings, true)
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list versions");
    listed.versions().len() + listed.delete_markers().len()
}

#[tokio::test]
async fn on_s3_with_versioning_no_version_of_an_erased_subjects_objects_is_left() {
    let dir = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let settings = moto_settings(&id);
    let data_bucket = bucket(&settings, "residency-data", false).await;
    let audit_bucket = bucket(&settings, "residency-audit", true).await;
    let database = TestDatabase::create(None).await;
    let kms = Arc::new(LocalKms::open_or_create(&dir.path().join("kms"), id.clone()).expect("kms"));
    let mut config = node_config(
        &id,
        &database,
        kms,
        dir.path(),
        single_region(
            &id,
            OPERATOR,
            ApiSettings {
                jobs: JobSettings {
                    poll_interval: Duration::from_millis(50),
                    ..JobSettings::default()
                },
                ..ApiSettings::default()
            },
        ),
    );
    config.backends.objects = Arc::new(S3ObjectStore::new(&settings, data_bucket.clone(), true));
    config.backends.audit_objects =
        Arc::new(S3ObjectStore::new(&settings, audit_bucket.clone(), true));
    let node: RunningNode = start_on_loopback(config).await;
    let api = format!("http://{}", node.address);
    let (tenant, admin, ada) = tenant_with_record(&api, "Versioned", ADA).await;
    let grace = person(&api, &tenant, &admin, GRACE).await;
    // Ada's file written twice (the replaced object's versions must go too), and another.
    put_file(&api, &tenant, &admin, &ada, "scan.pdf").await;
    put_file(&api, &tenant, &admin, &ada, "scan.pdf").await;
    put_file(&api, &tenant, &admin, &ada, "letter.pdf").await;
    put_file(&api, &tenant, &admin, &grace, "scan.pdf").await;
    let prefix = format!("tenants/{tenant}/");
    // The replaced object left no version behind; every object gets a second version (as
    // a retried upload would), so that erasing must remove more than the current one.
    assert_eq!(versions_under(&settings, &data_bucket, &prefix).await, 3);
    let client = s3_client(&settings, true);
    let listed = client
        .list_objects_v2()
        .bucket(&data_bucket)
        .prefix(&prefix)
        .send()
        .await
        .expect("list objects");
    for object in listed.contents() {
        let key = object.key().expect("key");
        let bytes = client
            .get_object()
            .bucket(&data_bucket)
            .key(key)
            .send()
            .await
            .expect("get")
            .body
            .collect()
            .await
            .expect("read")
            .into_bytes();
        client
            .put_object()
            .bucket(&data_bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .expect("put a second version");
    }
    assert_eq!(versions_under(&settings, &data_bucket, &prefix).await, 6);

    let erased = erase(&api, &tenant, &admin, ADA).await;
    assert_eq!(erased["records_erased"], 1);
    assert_eq!(erased["files_erased"], 2);
    // Only Grace's object is left, in its two versions.
    assert_eq!(versions_under(&settings, &data_bucket, &prefix).await, 2);
    let grace_file =
        format!("{api}/v1/tenants/{tenant}/collections/people/records/{grace}/files/scan.pdf");
    await_status(&grace_file, &admin, 200).await;

    // The ledger entry rests in the audit bucket, under a retention, naming the token.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = client
            .list_objects_v2()
            .bucket(&audit_bucket)
            .prefix(format!("erasures/{tenant}/"))
            .send()
            .await
            .expect("list the ledger");
        if listed.contents().len() == 1 {
            break listed;
        }
        assert!(Instant::now() < deadline, "no ledger entry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let key = listed.contents()[0].key().expect("key").to_owned();
    let head = client
        .head_object()
        .bucket(&audit_bucket)
        .key(&key)
        .send()
        .await
        .expect("head the entry");
    assert!(
        head.object_lock_retain_until_date().is_some(),
        "the bucket's default retention applies to the entry"
    );
    let body = client
        .get_object()
        .bucket(&audit_bucket)
        .key(&key)
        .send()
        .await
        .expect("get the entry")
        .body
        .collect()
        .await
        .expect("read the entry")
        .into_bytes();
    let entry: service::erasure::LedgerEntry =
        serde_json::from_slice(&body).expect("a ledger entry");
    assert_eq!(entry.tenant, tenant);
    assert_eq!((entry.records_erased, entry.files_erased), (1, 2));
    assert!(!String::from_utf8_lossy(&body).contains("ada"));
    node.stop().await.expect("stop");
}
