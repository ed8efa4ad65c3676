//! The audit log on a real primary: events are appended in the data transaction (a
//! rollback or a killed session leaves neither), chains stay gapless and valid under
//! concurrent writers, heads are checkpointed (on demand and by the periodic task), an
//! export verifies offline, and read events are recorded synchronously or through the
//! bounded queue, which refuses rather than drops when it is full.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use audit::{Action, Actor, ActorKind, KeySet, NewEvent, Outcome, SigningKey};
use devstack::testing::connect;
use model::{RegionId, TenantId};
use service::{AuditError, AuditKeys, AuditLog, AuditSettings, EventTiming, ReadAudit, UnitOfWork};
use store::audit::EventFilter;
use store::testing::{migrated_database, region_database};
use store::{DatabaseSettings, PgEndpoint, RegionDatabase};
use telemetry::NodeMetrics;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const REGION: &str = "eu-central-1";

fn region() -> RegionId {
    RegionId::parse(REGION).expect("region")
}

fn event(tenant: TenantId, action: Action, resource: &str) -> NewEvent {
    NewEvent {
        time: SystemTime::now(),
        region: region(),
        tenant,
        actor: Actor {
            kind: ActorKind::ApiKey,
            id: "key_writer1".into(),
        },
        action,
        resource: resource.into(),
        outcome: Outcome::Success,
        request_id: "req-1".into(),
        via_region: region(),
    }
}

async fn log() -> (
    devstack::testing::TestDatabase,
    store::RegionDatabase,
    AuditLog,
) {
    let (database, region_db) = region_database(REGION).await;
    let log = AuditLog::new(
        region_db.clone(),
        SigningKey::generate(region()),
        Vec::new(),
    );
    (database, region_db, log)
}

async fn append_one(
    region_db: &store::RegionDatabase,
    log: &AuditLog,
    tenant: TenantId,
    resource: &str,
) -> u64 {
    let mut primary = region_db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    let event = log
        .append(&tx, event(tenant, Action::RecordCreate, resource))
        .await
        .expect("append");
    tx.commit().await.expect("commit");
    event.seq
}

fn assert_chain_valid(events: &[audit::Event], tenant: &TenantId) {
    let mut prev = audit::genesis(tenant);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "seqs are gapless from 1");
        assert!(
            audit::verify_link(&prev, event),
            "event {} links to its predecessor",
            event.seq
        );
        prev = event.hash;
    }
}

async fn all_events(log: &AuditLog, tenant: &TenantId) -> Vec<audit::Event> {
    log.events(
        tenant,
        &EventFilter {
            limit: 10_000,
            ..EventFilter::default()
        },
    )
    .await
    .expect("events")
}

#[tokio::test]
async fn events_chain_from_the_tenants_genesis_and_export_verifies_offline() {
    let (_db, region_db, log) = log().await;
    let tenant = TenantId::from_random_bytes(rand::random());
    for i in 0..5 {
        append_one(&region_db, &log, tenant, &format!("records/r{i}")).await;
    }
    let events = all_events(&log, &tenant).await;
    assert_eq!(events.len(), 5);
    assert_chain_valid(&events, &tenant);

    let mut bundle = Vec::new();
    assert_eq!(
        log.export(&tenant, None, None, &mut bundle)
            .await
            .expect("export"),
        5
    );
    let keys = KeySet::from_keys(log.public_keys()).expect("keys");
    let summary =
        audit::verify_bundle(std::io::Cursor::new(&bundle), &keys).expect("bundle verifies");
    assert_eq!(
        (summary.first_seq, summary.last_seq, summary.count),
        (Some(1), Some(5), 5)
    );

    // The same export with one resource edited in the database is caught offline.
    let db = connect(_db.primary.clone()).await;
    db.execute(
        "update audit_events set resource = 'records/forged' where tenant_id = $1 and seq = 3",
        &[&tenant.as_str()],
    )
    .await
    .expect("tamper");
    let mut tampered = Vec::new();
    log.export(&tenant, None, None, &mut tampered)
        .await
        .expect("export");
    let err = audit::verify_bundle(std::io::Cursor::new(&tampered), &keys)
        .expect_err("tampering detected");
    assert_eq!(err.seq, Some(3), "{err}");
}

#[tokio::test]
async fn a_rolled_back_or_killed_transaction_leaves_neither_change_nor_event() {
    let (database, region_db, log) = log().await;
    let tenant = TenantId::from_random_bytes(rand::random());
    let admin = connect(database.primary.clone()).await;
    admin
        .batch_execute(
            "create table probe_records (id text primary key);
             grant select, insert on probe_records to residency_app",
        )
        .await
        .expect("table");
    append_one(&region_db, &log, tenant, "records/first").await;

    // Rolled back: dropped without commit.
    {
        let mut primary = region_db.primary().get().await.expect("primary");
        let tx = primary.begin_tenant(&tenant).await.expect("begin");
        tx.client()
            .execute("insert into probe_records values ('r-rolled-back')", &[])
            .await
            .expect("insert");
        log.append(
            &tx,
            event(tenant, Action::RecordCreate, "records/r-rolled-back"),
        )
        .await
        .expect("append");
    }

    // Killed half-way: the session dies after the change and its event, before commit.
    let mut primary = region_db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    let pid: i32 = tx
        .client()
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    tx.client()
        .execute("insert into probe_records values ('r-killed')", &[])
        .await
        .expect("insert");
    log.append(&tx, event(tenant, Action::RecordCreate, "records/r-killed"))
        .await
        .expect("append");
    admin
        .execute("select pg_terminate_backend($1)", &[&pid])
        .await
        .expect("kill the session");
    assert!(
        tx.commit().await.is_err(),
        "the killed transaction cannot commit"
    );
    primary.discard();

    let rows: i64 = admin
        .query_one("select count(*) from probe_records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0, "no change survived");
    let events = all_events(&log, &tenant).await;
    assert_eq!(events.len(), 1, "no event survived: {events:?}");
    // The chain continues gaplessly from the last committed event.
    assert_eq!(
        append_one(&region_db, &log, tenant, "records/next").await,
        2
    );
    assert_chain_valid(&all_events(&log, &tenant).await, &tenant);
}

#[tokio::test]
async fn concurrent_writers_keep_every_chain_gapless_and_valid() {
    let (_db, region_db, log) = log().await;
    let shared = TenantId::from_random_bytes(rand::random());
    let solo: Vec<TenantId> = (0..8)
        .map(|_| TenantId::from_random_bytes(rand::random()))
        .collect();
    const PER_WRITER: usize = 15;
    let mut writers = Vec::new();
    for tenant in std::iter::repeat_n(shared, 8).chain(solo.iter().copied()) {
        let (region_db, log) = (region_db.clone(), log.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                append_one(&region_db, &log, tenant, &format!("records/{i}")).await;
            }
        }));
    }
    for writer in futures::future::join_all(writers).await {
        writer.expect("writer");
    }
    let events = all_events(&log, &shared).await;
    assert_eq!(events.len(), 8 * PER_WRITER);
    assert_chain_valid(&events, &shared);
    for tenant in &solo {
        let events = all_events(&log, tenant).await;
        assert_eq!(events.len(), PER_WRITER);
        assert_chain_valid(&events, tenant);
    }
}

#[tokio::test]
async fn moved_heads_are_checkpointed_once_and_the_signatures_verify() {
    let (database, region_db, log) = log().await;
    let tenants: Vec<TenantId> = (0..3)
        .map(|_| TenantId::from_random_bytes(rand::random()))
        .collect();
    for tenant in &tenants {
        append_one(&region_db, &log, *tenant, "records/a").await;
    }
    assert_eq!(log.checkpoint(2).await.expect("checkpoint"), 3);
    assert_eq!(log.checkpoint(2).await.expect("nothing moved"), 0);
    append_one(&region_db, &log, tenants[0], "records/b").await;
    assert_eq!(log.checkpoint(10).await.expect("one moved"), 1);

    let keys = KeySet::from_keys(log.public_keys()).expect("keys");
    let db = connect(database.primary.clone()).await;
    for row in db
        .query(
            "select tenant_id, seq, hash, signed_at, key_id, signature from audit_checkpoints",
            &[],
        )
        .await
        .expect("checkpoints")
    {
        let hash: Vec<u8> = row.get(2);
        let signature: Vec<u8> = row.get(5);
        let checkpoint = audit::Checkpoint {
            tenant: TenantId::parse(row.get(0)).expect("tenant"),
            region: region(),
            seq: row.get::<_, i64>(1) as u64,
            hash: audit::Hash::from_bytes(hash.try_into().expect("32 bytes")),
            signed_at: row.get(3),
            key_id: row.get(4),
            signature: audit::Signature::from_slice(&signature).expect("signature"),
        };
        audit::verify_checkpoint(&keys, &checkpoint).expect("checkpoint verifies");
    }
}

/// A log on `region_db` with `settings` and metrics the test can read.
fn log_with(region_db: &RegionDatabase, settings: AuditSettings) -> (AuditLog, Arc<NodeMetrics>) {
    let metrics = Arc::new(NodeMetrics::new(REGION));
    let log = AuditLog::with_settings(
        region_db.clone(),
        AuditKeys::generate(region()),
        settings,
        metrics.clone(),
    );
    (log, metrics)
}

fn reads(reads: ReadAudit) -> AuditSettings {
    AuditSettings {
        reads,
        ..AuditSettings::default()
    }
}

fn read_event(tenant: TenantId, resource: &str) -> NewEvent {
    event(tenant, Action::RecordRead, resource)
}

/// A region database whose primary is a closed port (its replica is real).
async fn unreachable_primary() -> (devstack::testing::TestDatabase, RegionDatabase) {
    let database = migrated_database().await;
    let mut primary = database.primary.clone();
    primary.port(devstack::free_loopback_port().expect("free port"));
    let settings = DatabaseSettings::new(
        PgEndpoint::new("primary", primary),
        vec![PgEndpoint::new("replica-1", database.replica.clone())],
    );
    let region_db = RegionDatabase::new(region(), &settings).expect("pools");
    (database, region_db)
}

#[tokio::test]
async fn batched_reads_from_many_tasks_all_land_in_gapless_chains_in_order() {
    let (_db, region_db) = region_database(REGION).await;
    let (log, metrics) = log_with(
        &region_db,
        reads(ReadAudit::Batched {
            capacity: 10_000,
            max_batch: 64,
            flush_interval: Duration::from_millis(5),
        }),
    );
    let tenants: Vec<TenantId> = (0..4)
        .map(|_| TenantId::from_random_bytes(rand::random()))
        .collect();
    const TASKS: usize = 8;
    const PER_TASK: usize = 125;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (log, tenant) = (log.clone(), tenants[task % tenants.len()]);
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                log.record(read_event(tenant, &format!("records/{task}-{i}")))
                    .await
                    .expect("queued");
            }
        }));
    }
    for task in futures::future::join_all(tasks).await {
        task.expect("task");
    }
    tokio::time::timeout(Duration::from_secs(60), log.flush())
        .await
        .expect("flushed in time")
        .expect("flushed");
    assert_eq!(log.backlog(), 0);

    let mut total = 0;
    for tenant in &tenants {
        let events = all_events(&log, tenant).await;
        assert_eq!(events.len(), TASKS / tenants.len() * PER_TASK);
        assert_chain_valid(&events, tenant);
        // Each task's events are in its chain in the order it recorded them.
        let mut last_seen = std::collections::HashMap::new();
        for event in &events {
            assert_eq!(event.action, Action::RecordRead);
            let (task, i) = event
                .resource
                .strip_prefix("records/")
                .and_then(|rest| rest.split_once('-'))
                .expect("records/<task>-<i>");
            let i: usize = i.parse().expect("number");
            if let Some(previous) = last_seen.insert(task.to_owned(), i) {
                assert_eq!(i, previous + 1, "task {task}: order kept");
            }
        }
        total += events.len();
    }
    assert_eq!(total, TASKS * PER_TASK, "nothing dropped");
    let text = metrics.encode();
    for expected in [
        r#"residency_audit_events_written_total{region="eu-central-1",mode="batched"} 1000"#,
        r#"residency_audit_backlog{region="eu-central-1"} 0"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
}

#[tokio::test]
async fn a_full_queue_refuses_reads_and_a_failed_batch_is_retried_until_it_lands() {
    let (database, region_db) = region_database(REGION).await;
    let (log, metrics) = log_with(&region_db, reads(ReadAudit::batched(4)));
    let tenant = TenantId::from_random_bytes(rand::random());

    // Pause the writer: it waits on the chain heads, which this transaction holds.
    let admin = connect(database.primary.clone()).await;
    admin
        .batch_execute("begin; lock table audit_heads in access exclusive mode")
        .await
        .expect("lock the heads");
    for i in 0..4 {
        log.record(read_event(tenant, &format!("records/r{i}")))
            .await
            .expect("room in the queue");
    }
    assert!(matches!(
        log.record(read_event(tenant, "records/r4")).await,
        Err(AuditError::Backlogged { capacity: 4 })
    ));
    assert_eq!(log.backlog(), 4);

    // Kill the writer's session while it waits: its batch fails and is retried.
    let other = connect(database.primary.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let killed: i64 = other
            .query_one(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity
                 where datname = current_database() and wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("terminate the waiting writer")
            .get(0);
        if killed > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never waited on the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !metrics
        .encode()
        .contains(r#"residency_audit_write_failures_total{region="eu-central-1",mode="batched"} 1"#)
    {
        assert!(Instant::now() < deadline, "the failed batch is counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        log.record(read_event(tenant, "records/r4")).await,
        Err(AuditError::Backlogged { .. })
    ));
    assert_eq!(log.backlog(), 4, "a failed batch is kept, not dropped");

    admin.batch_execute("rollback").await.expect("unlock");
    tokio::time::timeout(Duration::from_secs(30), log.flush())
        .await
        .expect("the retried batch lands")
        .expect("flushed");
    assert_eq!(log.backlog(), 0);
    log.record(read_event(tenant, "records/r4"))
        .await
        .expect("room again");
    log.flush().await.expect("flushed");
    let events = all_events(&log, &tenant).await;
    assert_chain_valid(&events, &tenant);
    let resources: Vec<&str> = events.iter().map(|e| e.resource.as_str()).collect();
    assert_eq!(
        resources,
        [
            "records/r0",
            "records/r1",
            "records/r2",
            "records/r3",
            "records/r4"
        ]
    );
}

/// A TCP proxy in front of PostgreSQL that, while armed, swallows the answer to the next
/// COMMIT and cuts that connection: the server has committed, the client never hears it
/// (a connection lost at the worst moment).
struct LostCommitProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LostCommitProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CommandComplete for COMMIT: 'C', length 11, "COMMIT\0".
const COMMIT_COMPLETE: &[u8] = b"C\0\0\0\x0bCOMMIT\0";

async fn lost_commit_proxy(upstream: u16) -> LostCommitProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let armed = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn({
        let armed = Arc::clone(&armed);
        async move {
            while let Ok((client, _)) = listener.accept().await {
                let armed = Arc::clone(&armed);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upstream = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut buffer = vec![0u8; 64 * 1024];
                    let mut tail: Vec<u8> = Vec::new();
                    while let Ok(n @ 1..) = server_read.read(&mut buffer).await {
                        tail.extend_from_slice(&buffer[..n]);
                        let seen = tail
                            .windows(COMMIT_COMPLETE.len())
                            .any(|w| w == COMMIT_COMPLETE);
                        if seen && armed.swap(false, Ordering::SeqCst) {
                            break; // both halves close: the answer never arrives
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                        let keep = tail.len().saturating_sub(COMMIT_COMPLETE.len());
                        tail.drain(..keep);
                    }
                    upstream.abort();
                });
            }
        }
    });
    LostCommitProxy { port, armed, task }
}

#[tokio::test]
async fn a_batch_whose_commit_went_unanswered_is_not_written_twice() {
    let (database, _prepared) = region_database(REGION).await;
    let proxy = lost_commit_proxy(database.primary.get_ports()[0]).await;
    let base = &database.primary;
    let mut through_proxy = tokio_postgres::Config::new();
    through_proxy
        .host("127.0.0.1")
        .port(proxy.port)
        .user(base.get_user().expect("user"))
        .password(base.get_password().expect("password"))
        .dbname(base.get_dbname().expect("database"));
    let settings = DatabaseSettings::new(
        PgEndpoint::new("primary", through_proxy),
        vec![PgEndpoint::new("replica-1", database.replica.clone())],
    );
    let region_db = RegionDatabase::new(region(), &settings).expect("pools");
    let (log, _) = log_with(&region_db, reads(ReadAudit::batched(64)));
    let tenant = TenantId::from_random_bytes(rand::random());

    proxy.armed.store(true, Ordering::SeqCst);
    for i in 0..3 {
        log.record(read_event(tenant, &format!("records/r{i}")))
            .await
            .expect("room in the queue");
    }
    tokio::time::timeout(Duration::from_secs(30), log.flush())
        .await
        .expect("the batch is settled")
        .expect("flushed");
    assert!(
        !proxy.armed.load(Ordering::SeqCst),
        "the writer's COMMIT went unanswered"
    );
    let events = all_events(&log, &tenant).await;
    assert_chain_valid(&events, &tenant);
    let resources: Vec<&str> = events.iter().map(|e| e.resource.as_str()).collect();
    assert_eq!(
        resources,
        ["records/r0", "records/r1", "records/r2"],
        "each read once, although the writer never heard its commit succeed"
    );
}

#[tokio::test]
async fn with_the_primary_unreachable_the_queue_fills_and_shutdown_reports_what_was_lost() {
    let (_db, region_db) = unreachable_primary().await;
    let (log, _) = log_with(&region_db, reads(ReadAudit::batched(4)));
    let tenant = TenantId::from_random_bytes(rand::random());
    for i in 0..4 {
        log.record(read_event(tenant, &format!("records/r{i}")))
            .await
            .expect("queued while the primary is down");
    }
    assert!(matches!(
        log.record(read_event(tenant, "records/r4")).await,
        Err(AuditError::Backlogged { capacity: 4 })
    ));
    assert!(matches!(
        log.shutdown(Duration::from_millis(200)).await,
        Err(AuditError::FlushTimeout { backlog: 4, .. })
    ));
    assert!(matches!(
        log.record(read_event(tenant, "records/r5")).await,
        Err(AuditError::Closed)
    ));
    let flushed = tokio::time::timeout(Duration::from_secs(30), log.flush())
        .await
        .expect("the writer gives up once closed");
    assert!(
        matches!(flushed, Err(AuditError::Unwritten { events: 4 })),
        "{flushed:?}"
    );
}

#[tokio::test]
async fn denials_fill_a_budget_of_their_own_and_reads_are_still_recorded() {
    // Nothing is written while the primary is unreachable: what is recorded stays queued.
    let (_db, region_db) = unreachable_primary().await;
    let (log, _) = log_with(&region_db, reads(ReadAudit::batched(8)));
    let tenant = TenantId::from_random_bytes(rand::random());
    let denied = |i: usize| NewEvent {
        outcome: Outcome::Denied,
        ..event(tenant, Action::RecordCreate, &format!("records/d{i}"))
    };
    for i in 0..2 {
        log.record_denial(denied(i))
            .await
            .expect("room in the denials' budget (a quarter of 8)");
    }
    for i in 2..100 {
        assert!(matches!(
            log.record_denial(denied(i)).await,
            Err(AuditError::Backlogged { .. })
        ));
    }
    for i in 0..8 {
        log.record(read_event(tenant, &format!("records/r{i}")))
            .await
            .expect("reads keep their whole budget while denials flood");
    }
    assert!(matches!(
        log.record(read_event(tenant, "records/r8")).await,
        Err(AuditError::Backlogged { capacity: 8 })
    ));
    assert_eq!(log.backlog(), 10);
}

#[tokio::test]
async fn sync_reads_are_durable_on_return_and_fail_when_the_primary_is_unreachable() {
    let (_db, region_db) = region_database(REGION).await;
    let (log, metrics) = log_with(&region_db, reads(ReadAudit::Sync));
    let tenant = TenantId::from_random_bytes(rand::random());
    append_one(&region_db, &log, tenant, "records/created").await;
    log.record(read_event(tenant, "records/created"))
        .await
        .expect("written");
    assert_eq!((log.backlog(), log.capacity()), (0, 0));
    let events = all_events(&log, &tenant).await;
    assert_eq!(events.len(), 2, "durable before record returned");
    assert_eq!(events[1].action, Action::RecordRead);
    assert_chain_valid(&events, &tenant);
    assert!(
        metrics.encode().contains(
            r#"residency_audit_events_written_total{region="eu-central-1",mode="sync"} 1"#
        )
    );

    let (_db, down) = unreachable_primary().await;
    let (log, _) = log_with(&down, reads(ReadAudit::Sync));
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        log.record(read_event(tenant, "records/created")),
    )
    .await
    .expect("fails rather than hangs");
    assert!(matches!(result, Err(AuditError::Store(_))), "{result:?}");
}

#[tokio::test]
async fn events_of_another_region_or_with_nul_characters_are_refused_up_front() {
    let (_db, region_db) = region_database(REGION).await;
    let (log, _) = log_with(&region_db, AuditSettings::default());
    let tenant = TenantId::from_random_bytes(rand::random());
    let mut foreign = read_event(tenant, "records/r1");
    foreign.region = RegionId::parse("us-east-1").expect("region");
    assert!(matches!(
        log.record(foreign).await,
        Err(AuditError::WrongRegion { .. })
    ));
    assert!(matches!(
        log.record(read_event(tenant, "records/r\0")).await,
        Err(AuditError::Invalid { field: "resource" })
    ));
    assert_eq!(log.backlog(), 0);
}

async fn checkpoint_count(db: &tokio_postgres::Client, tenant: &TenantId, seq: i64) -> i64 {
    db.query_one(
        "select count(*) from audit_checkpoints where tenant_id = $1 and seq = $2",
        &[&tenant.as_str(), &seq],
    )
    .await
    .expect("count checkpoints")
    .get(0)
}

async fn wait_for_checkpoint(db: &tokio_postgres::Client, tenant: &TenantId, seq: i64) -> Duration {
    let started = Instant::now();
    while checkpoint_count(db, tenant, seq).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "seq {seq} of {tenant} was never checkpointed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn the_checkpoint_task_signs_moved_heads_every_interval_until_stopped() {
    let (database, region_db) = region_database(REGION).await;
    let interval = Duration::from_millis(250);
    let (log, metrics) = log_with(
        &region_db,
        AuditSettings {
            checkpoint_interval: interval,
            ..AuditSettings::default()
        },
    );
    let db = connect(database.primary.clone()).await;
    let tenants = [
        TenantId::from_random_bytes(rand::random()),
        TenantId::from_random_bytes(rand::random()),
    ];
    for tenant in tenants {
        append_one(&region_db, &log, tenant, "records/a").await;
    }
    let task = log.spawn_checkpoints();
    for tenant in &tenants {
        let waited = wait_for_checkpoint(&db, tenant, 1).await;
        assert!(
            waited < interval * 4,
            "signed within a couple of intervals ({waited:?})"
        );
    }
    append_one(&region_db, &log, tenants[0], "records/b").await;
    let waited = wait_for_checkpoint(&db, &tenants[0], 2).await;
    assert!(
        waited < interval * 4,
        "a moved head is signed again ({waited:?})"
    );
    assert_eq!(
        checkpoint_count(&db, &tenants[1], 1).await,
        1,
        "an unmoved head is not"
    );

    task.stop().await;
    assert!(
        metrics
            .encode()
            .contains(r#"residency_audit_checkpoints_total{region="eu-central-1"} 3"#)
    );
    append_one(&region_db, &log, tenants[1], "records/b").await;
    tokio::time::sleep(interval * 3).await;
    assert_eq!(checkpoint_count(&db, &tenants[1], 2).await, 0, "stopped");

    let keys = KeySet::from_keys(log.public_keys()).expect("keys");
    for row in db
        .query(
            "select tenant_id, seq, hash, signed_at, key_id, signature from audit_checkpoints",
            &[],
        )
        .await
        .expect("checkpoints")
    {
        let hash: Vec<u8> = row.get(2);
        let signature: Vec<u8> = row.get(5);
        let checkpoint = audit::Checkpoint {
            tenant: TenantId::parse(row.get(0)).expect("tenant"),
            region: region(),
            seq: row.get::<_, i64>(1) as u64,
            hash: audit::Hash::from_bytes(hash.try_into().expect("32 bytes")),
            signed_at: row.get(3),
            key_id: row.get(4),
            signature: audit::Signature::from_slice(&signature).expect("signature"),
        };
        audit::verify_checkpoint(&keys, &checkpoint).expect("checkpoint verifies");
    }
}

/// A tenant with a `people` collection, as the service creates them.
async fn tenant_with_collection(region_db: &RegionDatabase) -> TenantId {
    let tenant = TenantId::from_random_bytes(rand::random());
    let mut primary = region_db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    store::tenants::insert(
        &tx,
        &store::tenants::TenantRow {
            id: tenant,
            name: "two nodes".into(),
            home_region: REGION.into(),
            allowed_regions: vec![REGION.into()],
            transit: "proxy".into(),
            analytics_export: false,
            status: "active".into(),
            created_at: SystemTime::now(),
        },
    )
    .await
    .expect("tenant");
    store::collections::upsert(&tx, &tenant, "people", &serde_json::json!({"fields": {}}))
        .await
        .expect("collection");
    tx.commit().await.expect("commit");
    tenant
}

/// Two logs on one database, standing for two nodes of the region, and a tenant with a
/// collection for them to write records of.
async fn two_nodes() -> (
    devstack::testing::TestDatabase,
    RegionDatabase,
    [AuditLog; 2],
    TenantId,
) {
    let (database, region_db, first) = log().await;
    let second = AuditLog::new(
        region_db.clone(),
        SigningKey::generate(region()),
        Vec::new(),
    );
    let tenant = tenant_with_collection(&region_db).await;
    (database, region_db, [first, second], tenant)
}

#[tokio::test]
async fn records_written_with_their_event_in_one_statement_keep_the_chain_whole_across_nodes() {
    // Two logs on one database stand for two nodes of the region: each links events
    // after the head it last wrote, which the other keeps moving, so both the one-statement
    // path and its fallback (row alone, then the event after the locked head) run.
    let (database, region_db, [first, second], tenant) = two_nodes().await;
    const PER_WRITER: usize = 12;
    let mut writers = Vec::new();
    for writer in 0..6 {
        let log = [&first, &second][writer % 2].clone();
        let region_db = region_db.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let id = format!("w{writer}-r{i}");
                let mut primary = region_db.primary().get().await.expect("primary");
                let tx = primary.begin_tenant(&tenant).await.expect("begin");
                let record = store::records::NewRecord {
                    tenant: &tenant,
                    collection: "people",
                    id: &id,
                    public: &serde_json::json!({"plan": "pro"}),
                    sealed: b"sealed",
                    index: &[],
                };
                let resource = format!("collections/people/records/{id}");
                let (row, event) = UnitOfWork::new(&log)
                    .insert_record(&tx, record, event(tenant, Action::RecordCreate, &resource))
                    .await
                    .expect("insert the record with its event");
                assert_eq!(row.version, 1);
                assert_eq!(event.resource, resource);
                // Every third transaction rolls back: its row and event vanish together,
                // and the head this log cached for the tenant is then stale.
                if i % 3 == 2 {
                    drop(tx);
                } else {
                    tx.commit().await.expect("commit");
                }
            }
        }));
    }
    for writer in futures::future::join_all(writers).await {
        writer.expect("writer");
    }
    let events = all_events(&first, &tenant).await;
    assert_chain_valid(&events, &tenant);
    let committed = 6 * (PER_WRITER - PER_WRITER / 3);
    assert_eq!(events.len(), committed, "one event per committed record");
    let db = connect(database.primary.clone()).await;
    let records: i64 = db
        .query_one(
            "select count(*) from records where tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await
        .expect("count records")
        .get(0);
    assert_eq!(records as usize, committed);
    let mut resources: Vec<&str> = events.iter().map(|e| e.resource.as_str()).collect();
    resources.sort_unstable();
    resources.dedup();
    assert_eq!(resources.len(), committed, "no record has two events");
}

#[tokio::test]
async fn records_created_in_one_round_trip_keep_the_chain_whole_across_nodes() {
    // As above, through `create_record` (the row, its tokens and its event committed in
    // one round trip): two logs moving one tenant's head make both the one-round-trip
    // path and its fallback run, and a failed create leaves neither row nor event.
    let (database, region_db, [first, second], tenant) = two_nodes().await;
    const PER_WRITER: usize = 12;
    let mut writers = Vec::new();
    for writer in 0..6 {
        let log = [&first, &second][writer % 2].clone();
        let region_db = region_db.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let id = format!("w{writer}-r{i}");
                let mut primary = region_db.primary().get().await.expect("primary");
                let index = [store::records::IndexEntry {
                    field: "email".into(),
                    token: [u8::try_from(writer).expect("small"); 32],
                }];
                let record = store::records::NewRecord {
                    tenant: &tenant,
                    collection: "people",
                    id: &id,
                    public: &serde_json::json!({"plan": "pro"}),
                    sealed: b"sealed",
                    index: &index,
                };
                let resource = format!("collections/people/records/{id}");
                let (row, linked, lsn) = UnitOfWork::new(&log)
                    .create_record(
                        &mut primary,
                        record,
                        event(tenant, Action::RecordCreate, &resource),
                    )
                    .await
                    .expect("create the record with its event");
                assert_eq!(row.version, 1);
                assert_eq!(linked.resource, resource);
                assert!(lsn > model::Lsn(0));
                // The same id again fails as a conflict, and writes no event.
                if i % 4 == 3 {
                    let again = UnitOfWork::new(&log)
                        .create_record(
                            &mut primary,
                            record,
                            event(tenant, Action::RecordCreate, &resource),
                        )
                        .await;
                    assert!(
                        matches!(again, Err(service::ServiceError::Conflict(_))),
                        "{again:?}"
                    );
                }
            }
        }));
    }
    for writer in futures::future::join_all(writers).await {
        writer.expect("writer");
    }
    let events = all_events(&first, &tenant).await;
    assert_chain_valid(&events, &tenant);
    let created = 6 * PER_WRITER;
    assert_eq!(events.len(), created, "one event per created record");
    let db = connect(database.primary.clone()).await;
    let count = |sql: &'static str| {
        let db = &db;
        async move {
            db.query_one(sql, &[&tenant.as_str()])
                .await
                .expect("count")
                .get::<_, i64>(0) as usize
        }
    };
    assert_eq!(
        count("select count(*) from records where tenant_id = $1").await,
        created
    );
    assert_eq!(
        count("select count(*) from record_index where tenant_id = $1 and field = 'email'").await,
        created,
        "every record has its token"
    );
    let mut resources: Vec<&str> = events.iter().map(|e| e.resource.as_str()).collect();
    resources.sort_unstable();
    resources.dedup();
    assert_eq!(resources.len(), created, "no record has two events");
}

#[tokio::test]
async fn a_unit_of_work_commits_its_change_with_its_events_or_neither() {
    let (database, region_db, [log, _], tenant) = two_nodes().await;
    let db = connect(database.primary.clone()).await;
    let records = async |id: &str| records_named(&db, &tenant, id).await;
    let insert = async |tx: &store::PrimaryTx<'_>, id: &str| {
        store::records::insert(
            tx,
            &tenant,
            "people",
            id,
            &serde_json::json!({}),
            b"sealed",
            &[],
        )
        .await
    };
    let mut primary = region_db.primary().get().await.expect("primary");

    // A change and its two events commit together, the events in the order given.
    let committed = UnitOfWork::new(&log)
        .run(
            &mut primary,
            &tenant,
            EventTiming::AfterChange,
            [
                event(tenant, Action::RecordCreate, "records/kept"),
                event(tenant, Action::RecordUpdate, "records/kept"),
            ],
            async |tx| Ok(insert(tx, "kept").await?.version),
        )
        .await
        .expect("the unit of work commits");
    assert_eq!(committed.value, 1);
    assert_eq!(
        committed
            .events
            .iter()
            .map(|e| e.action)
            .collect::<Vec<_>>(),
        [Action::RecordCreate, Action::RecordUpdate]
    );
    assert!(committed.lsn > model::Lsn(0));
    assert_eq!(records("kept").await, 1);

    // A change that fails after writing leaves neither its rows nor an event.
    let failed = UnitOfWork::new(&log)
        .run(
            &mut primary,
            &tenant,
            EventTiming::AfterChange,
            [event(tenant, Action::RecordCreate, "records/refused")],
            async |tx| -> Result<(), service::ServiceError> {
                insert(tx, "refused").await?;
                Err(service::ServiceError::Conflict("record"))
            },
        )
        .await;
    assert!(
        matches!(failed, Err(service::ServiceError::Conflict(_))),
        "{failed:?}"
    );
    assert_eq!(records("refused").await, 0);

    // An event that cannot be appended (another region's) takes the change back with it.
    let mut foreign = event(tenant, Action::RecordCreate, "records/unaudited");
    foreign.region = RegionId::parse("us-east-1").expect("region");
    let unaudited = UnitOfWork::new(&log)
        .run(
            &mut primary,
            &tenant,
            EventTiming::AfterChange,
            [foreign],
            async |tx| Ok(insert(tx, "unaudited").await?),
        )
        .await;
    assert!(unaudited.is_err(), "{unaudited:?}");
    assert_eq!(records("unaudited").await, 0);

    // Sent beside a one-statement change that finds nothing to do, the event rolls back
    // with it.
    let missing = UnitOfWork::new(&log)
        .run(
            &mut primary,
            &tenant,
            EventTiming::BesideChange,
            [event(tenant, Action::RecordDelete, "records/missing")],
            async |tx| match store::records::delete(tx, &tenant, "people", "missing", None).await? {
                store::records::Change::Done(_) => Ok(()),
                _ => Err(service::ServiceError::NotFound { what: "record" }),
            },
        )
        .await;
    assert!(
        matches!(missing, Err(service::ServiceError::NotFound { .. })),
        "{missing:?}"
    );

    let events = all_events(&log, &tenant).await;
    assert_chain_valid(&events, &tenant);
    assert_eq!(
        events
            .iter()
            .map(|e| e.resource.as_str())
            .collect::<Vec<_>>(),
        ["records/kept", "records/kept"],
        "only the committed unit of work left events"
    );
}

#[tokio::test]
async fn a_unit_of_work_the_database_aborts_for_a_conflict_runs_again_and_gives_up_with_a_retryable_answer()
 {
    let (database, region_db, _) = log().await;
    let tenant = tenant_with_collection(&region_db).await;
    let metrics = Arc::new(NodeMetrics::new(REGION));
    let log = AuditLog::with_settings(
        region_db.clone(),
        AuditKeys::generate(region()),
        AuditSettings::default(),
        metrics.clone(),
    );
    let db = connect(database.primary.clone()).await;
    let records = async |id: &str| records_named(&db, &tenant, id).await;
    // What PostgreSQL answers to the victim of a deadlock (40P01) or of a serialization
    // conflict (40001), raised by the server inside the transaction, after a row is in.
    let change = async |tx: &store::PrimaryTx<'_>, id: &str, abort: Option<&str>| {
        store::records::insert(tx, &tenant, "people", id, &serde_json::json!({}), b"s", &[])
            .await?;
        if let Some(code) = abort {
            tx.client()
                .batch_execute(&format!(
                    "do $$ begin raise exception 'aborted' using errcode = '{code}'; end $$"
                ))
                .await
                .map_err(store::StoreError::from)?;
        }
        Ok::<_, service::ServiceError>(())
    };
    let mut primary = region_db.primary().get().await.expect("primary");

    // Aborted on its first two attempts, committed on the third: once, with one event.
    let attempts = std::sync::atomic::AtomicU32::new(0);
    UnitOfWork::new(&log)
        .run(
            &mut primary,
            &tenant,
            EventTiming::AfterChange,
            [event(tenant, Action::RecordCreate, "records/retried")],
            async |tx| {
                let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                let code = ["40P01", "40001"].get(attempt as usize - 1).copied();
                change(tx, "retried", code).await
            },
        )
        .await
        .expect("the third attempt commits");
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        service::unit_of_work::ATTEMPTS
    );
    assert_eq!(records("retried").await, 1);

    // Aborted every time: a retryable answer, nothing applied.
    let gave_up = UnitOfWork::new(&log)
        .run(
            &mut primary,
            &tenant,
            EventTiming::BesideChange,
            [event(tenant, Action::RecordCreate, "records/abandoned")],
            async |tx| change(tx, "abandoned", Some("40P01")).await,
        )
        .await;
    assert!(
        matches!(
            gave_up,
            Err(service::ServiceError::TransactionConflict { retry_after }) if retry_after >= Duration::from_secs(1)
        ),
        "{gave_up:?}"
    );
    assert_eq!(records("abandoned").await, 0);

    let events = all_events(&log, &tenant).await;
    assert_chain_valid(&events, &tenant);
    assert_eq!(
        events
            .iter()
            .map(|e| e.resource.as_str())
            .collect::<Vec<_>>(),
        ["records/retried"],
        "one event for the unit of work that committed, none for the one that gave up"
    );
    // Two runs again for each: four.
    let expected = r#"residency_transactions_retried_total{region="eu-central-1"} 4"#;
    let text = metrics.encode();
    assert!(text.contains(expected), "missing {expected} in\n{text}");
}

/// How many records of `tenant` are named `id`.
async fn records_named(db: &tokio_postgres::Client, tenant: &TenantId, id: &str) -> i64 {
    db.query_one(
        "select count(*) from records where tenant_id = $1 and record_id = $2",
        &[&tenant.as_str(), &id],
    )
    .await
    .expect("count records")
    .get(0)
}

/// Closes `tenant`'s chain with `tenant.delete`, as offboarding does.
async fn close_chain(region_db: &RegionDatabase, log: &AuditLog, tenant: TenantId) -> u64 {
    let mut primary = region_db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    let delete = event(tenant, Action::TenantDelete, &format!("tenants/{tenant}"));
    let last = log.append_and_close(&tx, delete).await.expect("closed");
    tx.commit().await.expect("commit");
    last.seq
}

#[tokio::test]
async fn a_closed_chain_ends_with_its_last_event_and_late_reads_are_counted_not_appended() {
    let (_db, region_db) = region_database(REGION).await;
    // A second node whose queued reads wait (an hour's flush interval) until it flushes:
    // reads it served before it heard of the offboarding.
    let (late, late_metrics) = log_with(
        &region_db,
        reads(ReadAudit::Batched {
            capacity: 100,
            max_batch: 100,
            flush_interval: Duration::from_secs(3600),
        }),
    );
    let (writer, _) = log_with(&region_db, reads(ReadAudit::Sync));
    let (leaving, staying) = (
        TenantId::from_random_bytes(rand::random()),
        TenantId::from_random_bytes(rand::random()),
    );
    append_one(&region_db, &writer, leaving, "records/a").await;
    append_one(&region_db, &late, staying, "records/b").await;
    // The late node links after heads it knows: its guess of the closed chain's head is
    // refused too, not only the locked path.
    append_one(&region_db, &late, leaving, "records/c").await;
    for i in 0..3 {
        late.record(read_event(leaving, &format!("records/late-{i}")))
            .await
            .expect("queued");
    }
    late.record(read_event(staying, "records/b"))
        .await
        .expect("queued");

    let last = close_chain(&region_db, &writer, leaving).await;
    tokio::time::timeout(Duration::from_secs(30), late.flush())
        .await
        .expect("flushed in time")
        .expect("the batch commits without the closed chain's events");

    let events = all_events(&writer, &leaving).await;
    assert_chain_valid(&events, &leaving);
    assert_eq!(
        events.last().map(|e| (e.seq, e.action)),
        Some((last, Action::TenantDelete))
    );
    assert!(
        events
            .iter()
            .all(|e| !e.resource.starts_with("records/late"))
    );
    let other = all_events(&writer, &staying).await;
    assert_eq!(
        other.len(),
        2,
        "the other tenant's read of the same batch is written"
    );
    let text = late_metrics.encode();
    for expected in [
        r#"residency_audit_events_after_close_total{region="eu-central-1",mode="batched"} 3"#,
        r#"residency_audit_events_written_total{region="eu-central-1",mode="batched"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }

    // In a data transaction the append fails, typed; a synchronous read fails the same way.
    let mut primary = region_db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&leaving).await.expect("begin");
    let refused = late
        .append(&tx, event(leaving, Action::RecordCreate, "records/d"))
        .await;
    assert!(
        matches!(
            refused,
            Err(AuditError::Store(store::StoreError::AuditChainClosed))
        ),
        "{refused:?}"
    );
    drop(tx);
    let refused = writer.record(read_event(leaving, "records/a")).await;
    assert!(
        matches!(
            refused,
            Err(AuditError::Store(store::StoreError::AuditChainClosed))
        ),
        "{refused:?}"
    );
    assert_eq!(all_events(&writer, &leaving).await.len(), events.len());
}

/// The anchor object of `tenant` at `seq` in `bucket`, read back; `None` when absent.
async fn read_anchor(
    bucket: &dyn envelope::objects::ObjectStore,
    tenant: &TenantId,
    seq: u64,
) -> Option<audit::Checkpoint> {
    use futures::TryStreamExt as _;
    let key = envelope::objects::ObjectKey::parse(&audit::anchor_name(tenant, seq)).expect("key");
    let body = match bucket.get(&key).await {
        Ok(body) => body,
        Err(envelope::objects::ObjectStoreError::NotFound(_)) => return None,
        Err(err) => panic!("read anchor: {err}"),
    };
    let chunks: Vec<bytes::Bytes> = body.try_collect().await.expect("anchor body");
    Some(audit::parse_anchor(&chunks.concat()).expect("an anchor"))
}

fn local_bucket() -> (tempfile::TempDir, Arc<dyn envelope::objects::ObjectStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bucket = envelope::objects::local::LocalObjectStore::new(dir.path().to_path_buf())
        .expect("local bucket");
    (dir, Arc::new(bucket))
}

#[tokio::test]
async fn signed_checkpoints_are_anchored_in_the_audit_bucket_once_each() {
    let (_database, region_db) = region_database(REGION).await;
    let (log, metrics) = log_with(&region_db, AuditSettings::default());
    let (_dir, bucket) = local_bucket();
    let tenants = [
        TenantId::from_random_bytes(rand::random()),
        TenantId::from_random_bytes(rand::random()),
    ];
    for tenant in tenants {
        append_one(&region_db, &log, tenant, "records/a").await;
    }
    append_one(&region_db, &log, tenants[0], "records/b").await;
    log.checkpoint(1000).await.expect("checkpoint");
    let round = log.anchor(bucket.as_ref(), 1000).await.expect("anchor");
    assert_eq!(round.anchored, 2);
    assert!(round.conflicts.is_empty());
    assert_eq!(round.waiting_since, None, "nothing left waiting");

    let keys = KeySet::from_keys(log.public_keys()).expect("keys");
    let db = region_db.primary().get().await.expect("primary");
    for (tenant, seq) in [(tenants[0], 2), (tenants[1], 1)] {
        let anchor = read_anchor(bucket.as_ref(), &tenant, seq)
            .await
            .unwrap_or_else(|| panic!("{tenant} anchored at {seq}"));
        audit::verify_checkpoint(&keys, &anchor).expect("signed by the region");
        assert_eq!(anchor.region, region());
        let head = store::audit::head(db.client(), &tenant)
            .await
            .expect("head");
        assert_eq!(Some((anchor.seq, *anchor.hash.as_bytes())), head);
    }

    // A round anchors what changed since: nothing, then the one moved head.
    let round = log.anchor(bucket.as_ref(), 1000).await.expect("anchor");
    assert_eq!(round.anchored, 0);
    append_one(&region_db, &log, tenants[1], "records/b").await;
    log.checkpoint(1000).await.expect("checkpoint");
    let round = log.anchor(bucket.as_ref(), 1).await.expect("anchor");
    assert_eq!(round.anchored, 1);
    assert!(read_anchor(bucket.as_ref(), &tenants[1], 2).await.is_some());
    let text = metrics.encode();
    for expected in [
        r#"residency_audit_anchors_total{region="eu-central-1"} 3"#,
        r#"residency_audit_anchor_failures_total{region="eu-central-1"} 0"#,
        r#"residency_audit_anchor_lag_seconds{region="eu-central-1"} 0.0"#,
    ] {
        assert!(
            text.lines().any(|line| line == expected),
            "missing {expected} in\n{text}"
        );
    }
}

#[tokio::test]
async fn a_failing_audit_bucket_is_counted_and_retried_at_the_next_round() {
    let (_database, region_db) = region_database(REGION).await;
    let (log, metrics) = log_with(&region_db, AuditSettings::default());
    let (_dir, inner) = local_bucket();
    let bucket = envelope::objects::faulty::FaultyObjectStore::new(inner.clone());
    let tenant = TenantId::from_random_bytes(rand::random());
    append_one(&region_db, &log, tenant, "records/a").await;
    log.checkpoint(1000).await.expect("checkpoint");
    bucket.fail_next(
        1,
        envelope::objects::ObjectStoreError::Unavailable("bucket down".into()),
    );
    let err = log.anchor(&bucket, 1000).await.expect_err("bucket down");
    assert!(matches!(err, AuditError::Bucket(_)), "{err}");
    assert!(read_anchor(inner.as_ref(), &tenant, 1).await.is_none());
    let text = metrics.encode();
    assert!(
        text.contains(r#"residency_audit_anchor_failures_total{region="eu-central-1"} 1"#),
        "{text}"
    );
    let lag: f64 = text
        .lines()
        .find_map(|line| {
            line.strip_prefix(r#"residency_audit_anchor_lag_seconds{region="eu-central-1"} "#)
        })
        .and_then(|value| value.parse().ok())
        .expect("the lag gauge");
    assert!(lag > 0.0, "the waiting checkpoint has an age: {lag}");

    // Writes are not held up by the bucket.
    append_one(&region_db, &log, tenant, "records/b").await;
    let round = log.anchor(&bucket, 1000).await.expect("bucket back");
    assert_eq!(round.anchored, 1);
    assert!(read_anchor(inner.as_ref(), &tenant, 1).await.is_some());
}

#[tokio::test]
async fn an_anchor_is_never_replaced_by_a_rewritten_chains_checkpoint() {
    let (database, region_db) = region_database(REGION).await;
    let (log, metrics) = log_with(&region_db, AuditSettings::default());
    let (_dir, bucket) = local_bucket();
    let tenant = TenantId::from_random_bytes(rand::random());
    append_one(&region_db, &log, tenant, "records/a").await;
    append_one(&region_db, &log, tenant, "records/b").await;
    log.checkpoint(1000).await.expect("checkpoint");
    log.anchor(bucket.as_ref(), 1000).await.expect("anchor");
    let anchored = read_anchor(bucket.as_ref(), &tenant, 2)
        .await
        .expect("anchored");

    // With full access to the database: event 2 and its checkpoint deleted, the head
    // reset to 1, and another event 2 appended by a node that knows no better.
    let superuser = connect(database.primary.clone()).await;
    superuser
        .batch_execute(&format!(
            "delete from audit_events where tenant_id = '{tenant}' and seq = 2;
             delete from audit_checkpoints where tenant_id = '{tenant}' and seq = 2;
             update audit_heads set seq = 1, hash = (select hash from audit_events
                 where tenant_id = '{tenant}' and seq = 1) where tenant_id = '{tenant}';"
        ))
        .await
        .expect("rewrite the chain");
    // (The node's cached guess of the head is stale; the append falls back to the row.)
    append_one(&region_db, &log, tenant, "records/forged").await;
    log.checkpoint(1000).await.expect("checkpoint");
    let round = log
        .anchor(bucket.as_ref(), 1000)
        .await
        .expect("anchor round");
    assert_eq!(round.anchored, 0);
    assert_eq!(round.conflicts, vec![(tenant, 2)]);
    assert_eq!(
        read_anchor(bucket.as_ref(), &tenant, 2).await,
        Some(anchored),
        "the anchor stays as written"
    );
    assert!(round.waiting_since.is_some(), "the conflict keeps waiting");
    assert!(
        metrics
            .encode()
            .contains(r#"residency_audit_anchor_failures_total{region="eu-central-1"} 1"#)
    );
}

#[tokio::test]
async fn the_checkpoint_task_anchors_what_it_signs() {
    let (_database, region_db) = region_database(REGION).await;
    let interval = Duration::from_millis(100);
    let (log, _metrics) = log_with(
        &region_db,
        AuditSettings {
            checkpoint_interval: interval,
            ..AuditSettings::default()
        },
    );
    let (_dir, bucket) = local_bucket();
    let tenant = TenantId::from_random_bytes(rand::random());
    append_one(&region_db, &log, tenant, "records/a").await;
    let task = log.spawn_anchored_checkpoints(bucket.clone());
    let started = Instant::now();
    while read_anchor(bucket.as_ref(), &tenant, 1).await.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never anchored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.stop().await;
}
