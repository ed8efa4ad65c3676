//! No orphaned objects across a crash: a node whose object store fails commits a file's
//! deletion and a subject's erasure (the objects stay, named in the outbox), and stops
//! before any of its deletions succeeds; a new node on the same database and bucket (S3 on
//! moto, with versioning) deletes every version of those objects and the outbox's rows.
//! And an offboarding whose tenant still has a deletion pending: the purge carries it out
//! before the tenant row goes, leaving neither the object nor the row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::testing::{TestDatabase, connect};
use envelope::kms::local::LocalKms;
use envelope::objects::ObjectStoreError;
use envelope::objects::faulty::FaultyObjectStore;
use envelope::objects::s3::S3ObjectStore;
use model::RegionId;
use node::{ApiSettings, RunningNode};
use reqwest::Method;
use service::ObjectSweepSettings;
use service::jobs::JobSettings;

use crate::erasure_ledger::{bucket, erase, moto_settings, person, put_file, versions_under};
use crate::jobs::{OPERATOR, call, tenant_with_record};
use crate::support::{node_config, single_region, start_on_loopback};

/// A node of `id` on `database` whose data bucket is `objects`, sweeping every 50 ms with
/// backoffs of at most 200 ms.
async fn start(
    id: &RegionId,
    database: &TestDatabase,
    dir: &std::path::Path,
    objects: Arc<dyn envelope::objects::ObjectStore>,
) -> RunningNode {
    start_sweeping_every(id, database, dir, objects, Duration::from_millis(50)).await
}

async fn start_sweeping_every(
    id: &RegionId,
    database: &TestDatabase,
    dir: &std::path::Path,
    objects: Arc<dyn envelope::objects::ObjectStore>,
    sweep_interval: Duration,
) -> RunningNode {
    let kms = Arc::new(LocalKms::open_or_create(&dir.join("kms"), id.clone()).expect("kms"));
    let jobs = JobSettings {
        poll_interval: Duration::from_millis(50),
        object_deletions: ObjectSweepSettings {
            poll_interval: sweep_interval,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(200),
            ..ObjectSweepSettings::default()
        },
        ..JobSettings::default()
    };
    let api = ApiSettings {
        jobs,
        ..ApiSettings::default()
    };
    let mut config = node_config(id, database, kms, dir, single_region(id, OPERATOR, api));
    config.backends.objects = objects;
    start_on_loopback(config).await
}

/// The outbox's rows of `tenant`, by reason.
async fn outbox(database: &TestDatabase, tenant: &str) -> Vec<String> {
    connect(database.primary.clone())
        .await
        .query(
            "select reason from object_deletions where tenant_id = $1 order by reason",
            &[&tenant],
        )
        .await
        .expect("read the outbox")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn objects_whose_deletion_a_crash_interrupted_are_deleted_by_the_next_nodes_sweeper() {
    let dir = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let settings = moto_settings(&id);
    let data_bucket = bucket(&settings, "residency-outbox", false).await;
    let database = TestDatabase::create(None).await;
    let s3: Arc<dyn envelope::objects::ObjectStore> =
        Arc::new(S3ObjectStore::new(&settings, data_bucket.clone(), true));
    let faulty = Arc::new(FaultyObjectStore::new(s3.clone()));
    let node = start(&id, &database, dir.path(), faulty.clone()).await;
    let api = format!("http://{}", node.address);
    let (tenant, admin, ada) = tenant_with_record(&api, "Outbox", "ada@example.com").await;
    let grace = person(&api, &tenant, &admin, "grace@example.com").await;
    put_file(&api, &tenant, &admin, &ada, "scan.pdf").await;
    // Replaced: the fast path deletes the first object, every version, at once.
    put_file(&api, &tenant, &admin, &grace, "letter.pdf").await;
    put_file(&api, &tenant, &admin, &grace, "letter.pdf").await;
    let prefix = format!("tenants/{tenant}/");
    assert_eq!(versions_under(&settings, &data_bucket, &prefix).await, 2);
    assert!(
        outbox(&database, &tenant).await.is_empty(),
        "nothing pending"
    );

    // The object store fails from now on: the deletions commit, their objects stay.
    faulty.fail_next(
        u32::MAX,
        ObjectStoreError::Unavailable("injected".to_owned()),
    );
    let letter =
        format!("{api}/v1/tenants/{tenant}/collections/people/records/{grace}/files/letter.pdf");
    let (status, body) = call(Method::DELETE, &letter, &admin, None).await;
    assert_eq!(status, 204, "{body}");
    let erased = erase(&api, &tenant, &admin, "ada@example.com").await;
    assert_eq!(erased["files_erased"], 1);
    assert_eq!(
        outbox(&database, &tenant).await,
        ["file_deleted", "subject_erased"]
    );
    // Give the failing node's sweeper a few rounds: it backs off and keeps the rows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(versions_under(&settings, &data_bucket, &prefix).await, 2);
    let attempts: i32 = connect(database.primary.clone())
        .await
        .query_one(
            "select max(attempts) from object_deletions where tenant_id = $1
               and last_error = 'unavailable'",
            &[&tenant],
        )
        .await
        .expect("attempts")
        .get(0);
    assert!(
        attempts >= 1,
        "the sweeper tried and recorded why it failed"
    );
    node.stop().await.expect("stop");

    // A new node on the same database and bucket, its store healthy.
    let node = start(&id, &database, dir.path(), s3).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let versions = versions_under(&settings, &data_bucket, &prefix).await;
        let pending = outbox(&database, &tenant).await;
        if versions == 0 && pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{versions} versions and {pending:?} left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, metrics) = call(
        Method::GET,
        &format!("http://{}/metrics", node.address),
        OPERATOR,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().expect("metrics text").to_owned();
    assert!(
        metrics.contains(
            "residency_object_deletions_total{outcome=\"deleted\",region=\"eu-west-1\"} 2"
        ) || metrics.contains(
            "residency_object_deletions_total{region=\"eu-west-1\",outcome=\"deleted\"} 2"
        ),
        "{metrics}"
    );
    node.stop().await.expect("stop");
}

#[tokio::test]
async fn an_offboarding_purge_carries_out_the_tenants_pending_deletions_before_the_tenant_goes() {
    let dir = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let database = TestDatabase::create(None).await;
    let local: Arc<dyn envelope::objects::ObjectStore> = Arc::new(
        envelope::objects::local::LocalObjectStore::new(dir.path().join("objects"))
            .expect("object store"),
    );
    let faulty = Arc::new(FaultyObjectStore::new(local.clone()));
    // The sweeper's first round runs at start, the next in an hour: only the purge can
    // carry out the deletion below.
    let hour = Duration::from_secs(3600);
    let node = start_sweeping_every(&id, &database, dir.path(), faulty.clone(), hour).await;
    let api = format!("http://{}", node.address);
    let (tenant, admin, ada) = tenant_with_record(&api, "Leaving", "ada@example.com").await;
    put_file(&api, &tenant, &admin, &ada, "scan.pdf").await;
    let prefix = format!("tenants/{tenant}/");
    faulty.fail_next(
        u32::MAX,
        ObjectStoreError::Unavailable("injected".to_owned()),
    );
    let scan = format!("{api}/v1/tenants/{tenant}/collections/people/records/{ada}/files/scan.pdf");
    let (status, body) = call(Method::DELETE, &scan, &admin, None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(outbox(&database, &tenant).await, ["file_deleted"]);
    faulty.fail_next(0, ObjectStoreError::Unavailable("injected".to_owned()));
    assert_eq!(local.list(&prefix).await.expect("list").len(), 1);

    let base = format!("{api}/v1/tenants/{tenant}");
    let (status, answer) = call(Method::DELETE, &base, OPERATOR, None).await;
    assert_eq!(status, 202, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let certificate = loop {
        let (status, body) =
            call(Method::GET, &format!("{base}/offboarding"), OPERATOR, None).await;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 202, "{body}");
        assert!(Instant::now() < deadline, "the purge did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The orphan counted as the tenant's object, its file row already gone.
    assert_eq!(certificate["purged"]["objects"], 1, "{certificate}");
    assert_eq!(certificate["purged"]["files"], 0, "{certificate}");
    assert!(outbox(&database, &tenant).await.is_empty());
    assert!(local.list(&prefix).await.expect("list").is_empty());
    node.stop().await.expect("stop");
}
