//! The audit log on a real primary: events are appended in the data transaction (a
//! rollback or a killed session leaves neither), chains stay gapless and valid under
//! concurrent writers, heads are checkpointed, and an export verifies offline.

use std::time::SystemTime;

use audit::{Action, Actor, ActorKind, KeySet, NewEvent, Outcome, SigningKey};
use devstack::testing::connect;
use model::{RegionId, TenantId};
use service::AuditLog;
use store::audit::EventFilter;
use store::testing::region_database;

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
    let tx = primary.begin().await.expect("begin");
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
        .batch_execute("create table probe_records (id text primary key)")
        .await
        .expect("table");
    append_one(&region_db, &log, tenant, "records/first").await;

    // Rolled back: dropped without commit.
    {
        let mut primary = region_db.primary().get().await.expect("primary");
        let tx = primary.begin().await.expect("begin");
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
    let tx = primary.begin().await.expect("begin");
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
