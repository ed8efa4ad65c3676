//! The job runner on a real primary: two nodes' runners on one region database, one
//! killed mid-job and the other resuming after the lease expires with nothing done twice;
//! a batch that keeps failing; the KMS rewrap as a job on the local KMS and on the AWS
//! path (moto).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use devstack::testing::connect;
use envelope::kms::aws::AwsKms;
use envelope::kms::faulty::FaultyKms;
use envelope::kms::local::LocalKms;
use envelope::kms::{Kms, KmsError};
use envelope::seal::SealContext;
use model::{RegionId, TenantId};
use serde_json::json;
use service::jobs::{
    BatchDone, BatchError, BatchInput, JobHandler, JobRunner, JobSettings, NextBatch, REWRAP,
    RewrapJob,
};
use service::{Keyring, KeyringSettings};
use store::RegionDatabase;
use store::jobs::{self, Job, JobId, JobState};
use store::testing::region_database;
use telemetry::NodeMetrics;
use tokio::sync::oneshot;

const REGION: &str = "eu-central-1";

fn region() -> RegionId {
    RegionId::parse(REGION).expect("region")
}

/// Quick polls and a short lease, so that a takeover happens within about a second.
fn quick(batch_size: usize) -> JobSettings {
    JobSettings {
        poll_interval: Duration::from_millis(50),
        lease: Duration::from_millis(900),
        batch_size,
        concurrency: 1,
        max_batch_failures: 3,
        max_attempts: 10,
        retry_delay: Duration::from_millis(20),
        ..JobSettings::default()
    }
}

/// Waits (up to 30 s) until the job is done or failed.
async fn finished(db: &RegionDatabase, job: JobId) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let primary = db.primary().get().await.expect("primary");
        let seen = jobs::get(&primary, job)
            .await
            .expect("get job")
            .expect("job exists");
        if matches!(seen.state, JobState::Done | JobState::Failed) {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job did not finish: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A job over items `0..ITEMS` whose effect is counted per item, shared by the handlers of
/// every "node", so that an item done twice shows. The checkpoint is the next item.
#[derive(Debug)]
struct Counting {
    applied: Arc<Mutex<Vec<u32>>>,
    /// When set, the batch starting at this item never ends (its node is about to die),
    /// after telling the test it got there.
    hang_at: Option<(u64, Mutex<Option<oneshot::Sender<()>>>)>,
}

const ITEMS: u64 = 20;
const COUNTING: &str = "counting_test";

#[async_trait::async_trait]
impl JobHandler for Counting {
    fn kind(&self) -> &'static str {
        COUNTING
    }

    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        let start = input
            .checkpoint
            .and_then(|at| at["next"].as_u64())
            .unwrap_or(0);
        if let Some((at, reached)) = &self.hang_at
            && start >= *at
        {
            if let Some(reached) = reached.lock().expect("lock").take() {
                let _ = reached.send(());
            }
            std::future::pending::<()>().await;
        }
        let end = (start + input.batch_size as u64).min(ITEMS);
        for item in start..end {
            self.applied.lock().expect("lock")[usize::try_from(item).expect("small")] += 1;
        }
        Ok(BatchDone {
            processed: end - start,
            failed: 0,
            total: Some(ITEMS),
            next: if end == ITEMS {
                NextBatch::Finished
            } else {
                NextBatch::Continue(json!({ "next": end }))
            },
        })
    }
}

#[tokio::test]
async fn a_job_of_a_killed_node_is_resumed_by_another_after_its_lease_expires_nothing_done_twice() {
    let (_database, db) = region_database(REGION).await;
    let applied = Arc::new(Mutex::new(vec![0u32; ITEMS as usize]));
    let (reached, hung) = oneshot::channel();
    let dying = JobRunner::new(
        db.clone(),
        vec![Arc::new(Counting {
            applied: applied.clone(),
            hang_at: Some((9, Mutex::new(Some(reached)))),
        })],
        quick(3),
        Arc::new(NodeMetrics::new(REGION)),
    );
    let dying_holder = dying.holder().to_owned();
    let job = {
        let primary = db.primary().get().await.expect("primary");
        jobs::enqueue(&primary, COUNTING, None)
            .await
            .expect("enqueue")
    };
    let dying = dying.spawn();
    tokio::time::timeout(Duration::from_secs(30), hung)
        .await
        .expect("the first node reaches its fourth batch")
        .expect("signal");

    // The second node runs alongside: while the first heartbeats (its batch hangs for
    // longer than the lease), the job stays the first's.
    let survivor_metrics = Arc::new(NodeMetrics::new(REGION));
    let survivor = JobRunner::new(
        db.clone(),
        vec![Arc::new(Counting {
            applied: applied.clone(),
            hang_at: None,
        })],
        quick(3),
        survivor_metrics.clone(),
    );
    let survivor_holder = survivor.holder().to_owned();
    let survivor = survivor.spawn();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    {
        let primary = db.primary().get().await.expect("primary");
        let seen = jobs::get(&primary, job.id)
            .await
            .expect("get")
            .expect("job");
        assert_eq!(seen.lease_holder.as_deref(), Some(dying_holder.as_str()));
        assert_eq!(seen.progress.done, 9, "three batches checkpointed");
    }

    dying.abort();
    let done = finished(&db, job.id).await;
    survivor.stop().await;
    assert_eq!(done.state, JobState::Done);
    assert_eq!(done.progress.done, ITEMS);
    assert_eq!(done.progress.total, ITEMS);
    assert_eq!(
        done.attempts, 2,
        "leased by the first node, then the second"
    );
    assert_eq!(
        *applied.lock().expect("lock"),
        vec![1; ITEMS as usize],
        "every item done exactly once"
    );
    assert_ne!(dying_holder, survivor_holder);
    let metrics = survivor_metrics.encode();
    assert!(
        metrics.contains(
            r#"residency_job_items_total{region="eu-central-1",kind="counting_test"} 11"#
        ),
        "{metrics}"
    );
}

/// A batch that never succeeds.
#[derive(Debug)]
struct AlwaysFailing;

#[async_trait::async_trait]
impl JobHandler for AlwaysFailing {
    fn kind(&self) -> &'static str {
        "failing_test"
    }

    async fn run_batch(&self, _input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        Err(BatchError::new(
            "object store unavailable",
            "connection refused to 10.0.0.1 with a detail nobody should see",
        ))
    }
}

#[tokio::test]
async fn a_batch_that_keeps_failing_ends_the_job_failed_with_a_fixed_error() {
    let (_database, db) = region_database(REGION).await;
    let metrics = Arc::new(NodeMetrics::new(REGION));
    let job = {
        let primary = db.primary().get().await.expect("primary");
        jobs::enqueue(&primary, "failing_test", None)
            .await
            .expect("enqueue")
    };
    let runner = JobRunner::new(
        db.clone(),
        vec![Arc::new(AlwaysFailing)],
        quick(10),
        metrics.clone(),
    )
    .spawn();
    let failed = finished(&db, job.id).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("object store unavailable")
    );
    assert_eq!(failed.failures, 3, "max_batch_failures batches were tried");
    assert_eq!(failed.attempts, 1);
    assert!(failed.finished_at.is_some());
    // The next poll counts it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    runner.stop().await;
    let text = metrics.encode();
    assert!(
        text.contains(
            r#"residency_jobs{region="eu-central-1",kind="failing_test",state="failed"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"residency_jobs{region="eu-central-1",kind="failing_test",state="running"} 0"#
        ),
        "{text}"
    );
}

/// A batch that panics: its node's runner loses the job without a word, as if it died.
#[derive(Debug)]
struct Panicking;

#[async_trait::async_trait]
impl JobHandler for Panicking {
    fn kind(&self) -> &'static str {
        "panicking_test"
    }

    async fn run_batch(&self, _input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        panic!("a bug in a job handler");
    }
}

#[tokio::test]
async fn a_job_that_keeps_killing_its_runs_ends_failed_after_max_attempts() {
    let (_database, db) = region_database(REGION).await;
    let job = {
        let primary = db.primary().get().await.expect("primary");
        jobs::enqueue(&primary, "panicking_test", None)
            .await
            .expect("enqueue")
    };
    let settings = JobSettings {
        lease: Duration::from_millis(300),
        max_attempts: 2,
        ..quick(10)
    };
    let runner = JobRunner::new(
        db.clone(),
        vec![Arc::new(Panicking)],
        settings,
        Arc::new(NodeMetrics::new(REGION)),
    )
    .spawn();
    let failed = finished(&db, job.id).await;
    runner.stop().await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.last_error.as_deref(), Some("too many attempts"));
    assert_eq!(
        failed.attempts, 3,
        "two runs, and the lease that found it over the bound"
    );
}

#[tokio::test]
async fn a_stopped_runner_gives_its_job_up_at_once() {
    let (_database, db) = region_database(REGION).await;
    let (reached, hung) = oneshot::channel();
    let job = {
        let primary = db.primary().get().await.expect("primary");
        jobs::enqueue(&primary, COUNTING, None)
            .await
            .expect("enqueue")
    };
    let mut settings = quick(5);
    settings.lease = Duration::from_secs(600);
    let runner = JobRunner::new(
        db.clone(),
        vec![Arc::new(Counting {
            applied: Arc::new(Mutex::new(vec![0; ITEMS as usize])),
            hang_at: Some((5, Mutex::new(Some(reached)))),
        })],
        settings,
        Arc::new(NodeMetrics::new(REGION)),
    )
    .spawn();
    hung.await.expect("second batch");
    runner.stop().await;
    let primary = db.primary().get().await.expect("primary");
    let taken = jobs::lease_next(&primary, &[COUNTING], "next-node", Duration::from_secs(60))
        .await
        .expect("lease")
        .expect("given up long before its 10 minute lease would expire");
    assert_eq!(taken.id, job.id);
    assert_eq!(taken.checkpoint, Some(json!({ "next": 5 })));
}

fn ctx(record: &str) -> SealContext<'_> {
    SealContext {
        collection: "patients",
        record,
        field: "email",
    }
}

/// Provisions `count` tenants and seals one value for each.
async fn tenants_with_data(
    db: &RegionDatabase,
    keyring: &Keyring,
    count: usize,
) -> Vec<(TenantId, Vec<u8>)> {
    let mut sealed = Vec::new();
    for n in 0..count {
        let tenant = TenantId::from_random_bytes(rand::random());
        let mut primary = db.primary().get().await.expect("primary");
        let tx = primary.begin_tenant(&tenant).await.expect("begin");
        keyring.provision(&tx, &tenant).await.expect("provision");
        tx.commit().await.expect("commit");
        let value = keyring
            .seal(
                &tenant,
                &ctx("r1"),
                format!("person-{n}@example.com").as_bytes(),
            )
            .await
            .expect("seal");
        sealed.push((tenant, value));
    }
    sealed
}

/// Runs the region's rewrap as a job on `kms` and checks that every stored key ends under
/// `new_key` and every value still opens on a node with a cold cache.
async fn rewrap_as_a_job(
    db: &RegionDatabase,
    database: &devstack::testing::TestDatabase,
    kms: Arc<dyn Kms>,
    sealed: &[(TenantId, Vec<u8>)],
    new_key: &str,
) -> Job {
    let metrics = Arc::new(NodeMetrics::new(REGION));
    let keyring = Keyring::new(
        db.clone(),
        kms.clone(),
        metrics.clone(),
        KeyringSettings::default(),
    );
    let job = {
        let primary = db.primary().get().await.expect("primary");
        jobs::enqueue(&primary, REWRAP, None)
            .await
            .expect("enqueue")
    };
    let runner = JobRunner::new(
        db.clone(),
        vec![Arc::new(RewrapJob::new(keyring, db.clone()))],
        quick(3),
        metrics,
    )
    .spawn();
    let done = finished(db, job.id).await;
    runner.stop().await;
    assert_eq!(done.state, JobState::Done, "{done:?}");

    let client = connect(database.primary.clone()).await;
    let elsewhere: i64 = client
        .query_one(
            "select count(*) from tenant_keys where state <> 'destroyed' and kms_key_id <> $1",
            &[&new_key],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(elsewhere, 0, "every live key is under the new KMS key");
    let cold = Keyring::new(
        db.clone(),
        kms,
        Arc::new(NodeMetrics::new(REGION)),
        KeyringSettings::default(),
    );
    for (n, (tenant, value)) in sealed.iter().enumerate() {
        assert_eq!(
            cold.open(tenant, &ctx("r1"), value).await.expect("open"),
            format!("person-{n}@example.com").as_bytes()
        );
    }
    done
}

#[tokio::test]
async fn the_rewrap_job_moves_every_key_to_the_new_local_master_key_once() {
    let (database, db) = region_database(REGION).await;
    let kms_dir = tempfile::tempdir().expect("kms dir");
    let local = Arc::new(LocalKms::open_or_create(kms_dir.path(), region()).expect("local kms"));
    let faulty = Arc::new(FaultyKms::new(local.clone()));
    let keyring = Keyring::new(
        db.clone(),
        faulty.clone(),
        Arc::new(NodeMetrics::new(REGION)),
        KeyringSettings::default(),
    );
    let sealed = tenants_with_data(&db, &keyring, 4).await;
    let new_master = local.rotate_master_key().expect("rotate master key");
    // The first two attempts at the first batch meet a KMS outage; the third goes through.
    faulty.fail_next(2, KmsError::Unavailable("throttled".into()));
    let before = faulty.re_encrypt_calls();

    let done = rewrap_as_a_job(&db, &database, faulty.clone(), &sealed, &new_master).await;
    assert_eq!(done.progress.done, 8, "4 tenants × (data + index)");
    assert_eq!(done.progress.total, 8);
    assert_eq!(done.progress.failed, 0);
    assert_eq!(done.last_error.as_deref(), Some("kms unavailable"));
    assert_eq!(
        faulty.re_encrypt_calls() - before,
        8 + 2,
        "each key rewrapped once, plus the two refused calls"
    );

    // Run again: the first batch (3 keys) learns that they are under the current key and
    // writes nothing; nothing else is under another key, so nothing else is sent.
    let wrapped = |database: &devstack::testing::TestDatabase| {
        let config = database.primary.clone();
        async move {
            connect(config)
                .await
                .query(
                    "select wrapped_key from tenant_keys order by tenant_id, purpose, version",
                    &[],
                )
                .await
                .expect("wrapped keys")
                .iter()
                .map(|row| row.get::<_, Vec<u8>>(0))
                .collect::<Vec<_>>()
        }
    };
    let stored = wrapped(&database).await;
    let before = faulty.re_encrypt_calls();
    let again = rewrap_as_a_job(&db, &database, faulty.clone(), &sealed, &new_master).await;
    assert_eq!(again.progress.done, 3);
    assert_eq!(again.progress.total, 3);
    assert_eq!(faulty.re_encrypt_calls() - before, 3);
    assert_eq!(wrapped(&database).await, stored, "nothing rewritten");
}

#[tokio::test]
async fn the_rewrap_job_follows_an_aws_kms_alias_to_its_new_key_on_moto() {
    let (database, db) = region_database(REGION).await;
    let moto = devstack::testing::shared_moto();
    let settings = envelope::aws::AwsSettings {
        region: region(),
        endpoint_url: Some(moto.endpoint_url()),
        credentials: envelope::aws::AwsCredentials::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    };
    let client = envelope::aws::kms_client(&settings);
    let create_key = || async {
        let created = client
            .create_key()
            .description("rewrap job test key")
            .send()
            .await
            .expect("create KMS key");
        let metadata = created.key_metadata().expect("key metadata");
        (
            metadata.key_id().to_owned(),
            metadata.arn().expect("ARN").to_owned(),
        )
    };
    let (old_id, old_arn) = create_key().await;
    let alias = format!(
        "alias/rewrap-job-{}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(&old_id)
        .send()
        .await
        .expect("create alias");
    let kms: Arc<dyn Kms> = Arc::new(AwsKms::new(&settings, alias.clone()));
    let keyring = Keyring::new(
        db.clone(),
        kms.clone(),
        Arc::new(NodeMetrics::new(REGION)),
        KeyringSettings::default(),
    );
    let sealed = tenants_with_data(&db, &keyring, 3).await;
    let client_db = connect(database.primary.clone()).await;
    let under_old: i64 = client_db
        .query_one(
            "select count(*) from tenant_keys where kms_key_id = $1",
            &[&old_arn],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(under_old, 6, "provisioned under the alias's first key");

    // The operator points the alias at a new key, then runs the rewrap.
    let (new_id, new_arn) = create_key().await;
    client
        .update_alias()
        .alias_name(&alias)
        .target_key_id(&new_id)
        .send()
        .await
        .expect("move alias");
    let done = rewrap_as_a_job(&db, &database, kms, &sealed, &new_arn).await;
    assert_eq!(done.progress.done, 6);
    assert_eq!(done.progress.total, 6);
    assert_eq!(done.last_error, None);
}
