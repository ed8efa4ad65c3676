//! Tenant-scoped transactions: row-level security confines them to their tenant even
//! without a WHERE clause, their settings end with them, and `commit_lsn` returns a
//! position a replica can be checked against.

use model::Lsn;
use serde_json::json;
use store::testing::region_database;
use store::{Reader, StoreError};

use crate::rows::{TENANT_A, TENANT_B, entry, insert_record, tenant, tenant_with_collection};

#[tokio::test]
async fn row_level_security_confines_a_scoped_transaction_to_its_tenant() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    tenant_with_collection(&db, a).await;
    tenant_with_collection(&db, b).await;
    insert_record(&db, a, "rec-a1", json!({}), &[entry("email", 1)]).await;
    insert_record(&db, a, "rec-a2", json!({}), &[]).await;
    let lsn = insert_record(&db, b, "rec-b1", json!({}), &[entry("email", 1)]).await;

    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let client = tx.client();
    for (table, expected) in [
        ("records", 2),
        ("record_index", 1),
        ("tenants", 1),
        ("collections", 1),
    ] {
        let count: i64 = client
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(count, expected, "{table}: only tenant A's rows");
    }
    let role: String = client
        .query_one("select current_user::text", &[])
        .await
        .expect("role")
        .get(0);
    assert_eq!(role, store::APP_ROLE);
    // Writing another tenant's row is refused, even with a matching WHERE-less insert.
    let err: StoreError = client
        .execute(
            "insert into records (tenant_id, collection, record_id, public, sealed)
             values ($1, 'people', 'sneaky', '{}', '\\x00')",
            &[&b.as_str()],
        )
        .await
        .expect_err("another tenant's row")
        .into();
    assert!(matches!(err, StoreError::Forbidden), "{err:?}");
    drop(tx);

    // Nor can it change or delete them: they are invisible.
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let touched = tx
        .client()
        .execute("delete from records where tenant_id = $1", &[&b.as_str()])
        .await
        .expect("delete");
    assert_eq!(touched, 0);
    tx.commit().await.expect("commit");

    // The scope ends with the transaction: the pooled connection is itself again.
    let row = primary
        .query_one(
            "select current_user::text = session_user::text,
                    coalesce(current_setting('residency.tenant', true), '')",
            &[],
        )
        .await
        .expect("settings");
    assert!(row.get::<_, bool>(0), "the role was reset");
    assert_eq!(row.get::<_, String>(1), "", "the tenant setting was reset");
    // Outside a scope the node's login role reads no tenant data at all: it owns nothing
    // and holds no grant on records (migration 0015).
    let refused = primary
        .query_one("select count(*) from records", &[])
        .await
        .expect_err("the node's own role may not read records");
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{refused:?}"
    );
    drop(primary);
    let owner = db.as_owner().primary().get().await.expect("owner");
    let stored: i64 = owner
        .query_one("select count(*) from records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(stored, 3, "the owner sees every tenant's rows");
    drop(owner);

    // Reads are scoped the same way, on a replica too.
    let mut reader = Reader::Replica(db.replicas()[0].get().await.expect("replica"));
    wait_for_replica(&db, lsn).await;
    let tx = reader.begin_tenant(&b).await.expect("begin read");
    let count = store::records::count(tx.client(), &b).await.expect("count");
    assert_eq!(count, 1);
    let all: i64 = tx
        .client()
        .query_one("select count(*) from records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(all, 1, "the replica applies the policy too");
    let err: StoreError = tx
        .client()
        .execute("delete from records", &[])
        .await
        .expect_err("read-only")
        .into();
    assert!(matches!(err, StoreError::ReadOnly), "{err:?}");
}

/// Waits (bounded) until the replica has replayed `lsn`.
async fn wait_for_replica(db: &store::RegionDatabase, lsn: Lsn) {
    let replica = db.replicas()[0].get().await.expect("replica");
    for _ in 0..1000 {
        let raw: String = replica
            .query_one("select pg_last_wal_replay_lsn()::text", &[])
            .await
            .expect("replay lsn")
            .get(0);
        if Lsn::parse(&raw).expect("lsn") >= lsn {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the replica did not replay {lsn} within 10 s");
}

#[tokio::test]
async fn commit_lsn_is_past_the_commit_and_leaves_the_connection_clean() {
    let (_database, db) = region_database("eu-central-1").await;
    let a = tenant(TENANT_A);
    tenant_with_collection(&db, a).await;

    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    store::records::insert(&tx, &a, "people", "rec-1", &json!({}), b"s", &[])
        .await
        .expect("insert");
    let before: String = tx
        .client()
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    let before = Lsn::parse(&before).expect("lsn");
    let committed = tx.commit_lsn().await.expect("commit");
    assert!(committed > before, "{committed} > {before}");

    // Committed: another connection sees it.
    let other = db.as_owner().primary().get().await.expect("primary");
    let count: i64 = other
        .query_one("select count(*) from records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1);
    drop(other);

    // And the connection is outside any transaction: each statement gets its own.
    let first = xid(primary.client()).await;
    let second = xid(primary.client()).await;
    assert_ne!(first, second, "no transaction left open");

    // A failed commit is an error, not a position.
    let tx = primary.begin_tenant(&a).await.expect("begin");
    tx.client()
        .batch_execute(
            "create temporary table t (x int primary key deferrable initially deferred);
             insert into t values (1), (1)",
        )
        .await
        .expect("deferred violation");
    let err = tx.commit_lsn().await.expect_err("the commit fails");
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
}

#[tokio::test]
async fn a_one_round_trip_scoped_write_commits_or_leaves_nothing_and_the_connection_clean() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    tenant_with_collection(&db, a).await;
    tenant_with_collection(&db, b).await;
    insert_record(&db, b, "rec-b1", json!({}), &[]).await;
    let mut primary = db.primary().get().await.expect("primary");

    // Confined to its tenant: an unqualified update touches only the tenant's rows.
    let (rows, lsn) = primary
        .write_scoped(
            &a,
            "insert into records (tenant_id, collection, record_id, public, sealed)
             values ($1, 'people', 'rec-a1', '{}', '') returning current_user::text",
            &[&a.as_str()],
        )
        .await
        .expect("write");
    assert_eq!(rows[0].get::<_, String>(0), store::APP_ROLE);
    let (rows, _) = primary
        .write_scoped(
            &a,
            "update records set version = version + 1 returning record_id",
            &[],
        )
        .await
        .expect("update");
    assert_eq!(rows.len(), 1, "only tenant a's record");

    // Committed, at or before the returned position.
    let other = db.as_owner().primary().get().await.expect("primary");
    let replayed: bool = other
        .query_one(
            "select pg_current_wal_insert_lsn() >= $1::text::pg_lsn",
            &[&lsn.to_string()],
        )
        .await
        .expect("lsn")
        .get(0);
    assert!(replayed);

    // A failing statement rolls back what it did, and leaves no transaction open and
    // no scope behind.
    let err = primary
        .write_scoped(
            &a,
            "insert into records (tenant_id, collection, record_id, public, sealed)
             values ($1, 'people', 'rec-a2', '{}', ''), ($1, 'people', 'rec-a1', '{}', '')",
            &[&a.as_str()],
        )
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    let count: i64 = other
        .query_one(
            "select count(*) from records where tenant_id = $1",
            &[&a.as_str()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 1, "rec-a2 went with the failed statement");
    let first = xid(primary.client()).await;
    let second = xid(primary.client()).await;
    assert_ne!(first, second, "no transaction left open");
    let user: String = primary
        .client()
        .query_one("select current_user::text", &[])
        .await
        .expect("user")
        .get(0);
    assert_ne!(
        user,
        store::APP_ROLE,
        "the scope ended with the transaction"
    );
}

async fn xid(client: &tokio_postgres::Client) -> String {
    client
        .query_one("select pg_current_xact_id()::text", &[])
        .await
        .expect("xid")
        .get(0)
}

#[tokio::test]
async fn keys_and_audit_work_inside_a_scoped_transaction_and_stay_in_it() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    tenant_with_collection(&db, a).await;

    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let key = store::tenant_keys::NewKey {
        tenant: &a,
        purpose: model::KeyPurpose::Data,
        kms_key_id: "kms-1",
        wrapped: b"wrapped",
        kms_context: "{}",
    };
    store::tenant_keys::insert_first_key(&tx, &key)
        .await
        .expect("first key");
    store::tenant_keys::rotate(&tx, &key).await.expect("rotate");
    assert_eq!(
        store::audit::lock_head(&tx, &a).await.expect("lock head"),
        None
    );
    let event = store::audit::AuditRow {
        tenant: a,
        seq: 1,
        time: std::time::SystemTime::now(),
        region: "eu-central-1".into(),
        actor_kind: "api_key".into(),
        actor_id: "key_1".into(),
        action: "record.create".into(),
        resource: "collections/people/records/rec-1".into(),
        outcome: "success".into(),
        request_id: "req-1".into(),
        via_region: "eu-central-1".into(),
        prev_hash: [0; 32],
        hash: [1; 32],
    };
    assert!(store::audit::append(&tx, &event).await.expect("append"));
    tx.commit().await.expect("commit");

    let mut reader = Reader::Primary(db.primary().get().await.expect("primary"));
    let tx = reader.begin_tenant(&a).await.expect("begin");
    assert_eq!(
        store::audit::head(tx.client(), &a).await.expect("head"),
        Some((1, [1; 32]))
    );
    assert_eq!(
        store::tenant_keys::list(tx.client(), &a)
            .await
            .expect("keys")
            .len(),
        2
    );
    tx.finish().await.expect("finish");

    // Another tenant's scope sees none of it, even when asking by A's id.
    let tx = reader.begin_tenant(&b).await.expect("begin");
    assert_eq!(
        store::audit::head(tx.client(), &a).await.expect("head"),
        None
    );
    let events = store::audit::events(
        tx.client(),
        &a,
        &store::audit::EventFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .expect("events");
    assert!(events.is_empty());
    assert!(
        store::tenant_keys::list(tx.client(), &a)
            .await
            .expect("keys")
            .is_empty()
    );
}

#[tokio::test]
async fn a_one_round_trip_scoped_read_sees_only_its_tenant_and_leaves_the_connection_clean() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    tenant_with_collection(&db, a).await;
    tenant_with_collection(&db, b).await;
    insert_record(&db, a, "rec-a1", json!({}), &[]).await;
    let lsn = insert_record(&db, b, "rec-b1", json!({}), &[]).await;
    wait_for_replica(&db, lsn).await;

    let mut reader = Reader::Replica(db.replicas()[0].get().await.expect("replica"));
    // Twice: the first call prepares the statements, the second runs them from the cache.
    for _ in 0..2 {
        let found = store::records::get_scoped(&mut reader, &a, "people", "rec-a1")
            .await
            .expect("read");
        assert_eq!(found.map(|row| row.id).as_deref(), Some("rec-a1"));
        // Another tenant's id, asked for under A's scope, is invisible.
        let hidden = store::records::get_scoped(&mut reader, &a, "people", "rec-b1")
            .await
            .expect("read");
        assert!(hidden.is_none());
        // Without any WHERE on the tenant, the policy still confines the statement: so
        // the scope ran before it, inside the same transaction.
        let rows = reader
            .query_scoped(&b, "select record_id, current_user::text from records", &[])
            .await
            .expect("read");
        let seen: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(seen, [("rec-b1".to_owned(), store::APP_ROLE.to_owned())]);
    }

    // A failing statement fails the call; the transaction still ends with it.
    let err = reader
        .query_scoped(&a, "select 1 / (count(*) - count(*)) from records", &[])
        .await
        .expect_err("division by zero");
    assert!(!matches!(err, StoreError::Forbidden), "{err:?}");
    let row = reader
        .client()
        .query_one(
            "select current_user::text = session_user::text,
                    coalesce(current_setting('residency.tenant', true), '')",
            &[],
        )
        .await
        .expect("the connection is usable and out of any transaction");
    assert!(row.get::<_, bool>(0), "the role was reset");
    assert_eq!(row.get::<_, String>(1), "", "the tenant setting was reset");
    // Seen from another connection, the reader's session is idle, not in a transaction.
    let pid: i32 = reader
        .client()
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    let other = db.replicas()[0]
        .get()
        .await
        .expect("another replica connection");
    let state: String = other
        .query_one("select state from pg_stat_activity where pid = $1", &[&pid])
        .await
        .expect("state")
        .get(0);
    assert_eq!(
        state, "idle",
        "no transaction is left open on the connection"
    );
}
