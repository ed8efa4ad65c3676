//! Row-level security that holds for every role (migration 0015): the node's login role,
//! the application role it switches to, and the analytics export's role each reach
//! another tenant's rows through no session setting; audit events are append-only for
//! the application; offboarding's purge function refuses a live tenant.

use std::time::SystemTime;

use model::TenantId;
use serde_json::json;
use store::audit::AuditRow;
use store::export::EXPORT_ROLE;
use store::purge::PurgeTable;
use store::tenant_keys::NewKey;
use store::testing::region_database;
use store::{RegionDatabase, StoreError};
use tokio_postgres::error::SqlState;

use crate::rows::{TENANT_A, TENANT_B, insert_record, tenant, tenant_exporting};

/// A with export on, B with export off; each with collection `people`, one record, a data
/// key and one audit event.
async fn two_tenants(db: &RegionDatabase) -> (TenantId, TenantId) {
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    for (id, exports) in [(a, true), (b, false)] {
        tenant_exporting(db, id, exports).await;
        let mut primary = db.primary().get().await.expect("primary");
        let tx = primary.begin_tenant(&id).await.expect("begin");
        store::tenant_keys::insert_first_key(
            &tx,
            &NewKey {
                tenant: &id,
                purpose: model::KeyPurpose::Data,
                kms_key_id: "kms-1",
                wrapped: b"wrapped",
                kms_context: "{}",
            },
        )
        .await
        .expect("key");
        store::audit::lock_head(&tx, &id).await.expect("head");
        assert!(
            store::audit::append(&tx, &event(id, 1))
                .await
                .expect("append"),
            "the first event links to the empty chain"
        );
        tx.commit().await.expect("commit");
        insert_record(db, id, &format!("rec-{id}"), json!({}), &[]).await;
    }
    (a, b)
}

fn event(tenant: TenantId, seq: u64) -> AuditRow {
    AuditRow {
        tenant,
        seq,
        time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        region: "eu-central-1".into(),
        actor_kind: "system".into(),
        actor_id: "test".into(),
        action: "tenant.create".into(),
        resource: "tenant".into(),
        outcome: "success".into(),
        request_id: "req".into(),
        via_region: "eu-central-1".into(),
        prev_hash: [0; 32],
        hash: [seq as u8; 32],
    }
}

/// The tables holding one row of each tenant after [`two_tenants`].
const SEEDED: &[&str] = &[
    "tenants",
    "collections",
    "records",
    "tenant_keys",
    "audit_events",
    "audit_heads",
];

/// Inserts a copy of `tenant`'s first event as `seq` with the given links, in `client`'s
/// transaction (the insert itself is granted; what it breaks is refused at commit).
async fn copy_first_event(
    client: &tokio_postgres::Transaction<'_>,
    tenant: &TenantId,
    seq: i64,
    prev_hash: [u8; 32],
    hash: [u8; 32],
) {
    client
        .execute(
            "insert into audit_events (tenant_id, seq, time, region, actor_kind, actor_id,
                 action, resource, outcome, request_id, via_region, prev_hash, hash)
             select tenant_id, $2, time, region, actor_kind, actor_id, action, resource,
                    outcome, request_id, via_region, $3, $4
             from audit_events where tenant_id = $1 and seq = 1",
            &[&tenant.as_str(), &seq, &&prev_hash[..], &&hash[..]],
        )
        .await
        .expect("the insert itself is granted");
}

fn refused(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE)
}

/// Rows of `tenant` in `table` visible to `client`, or `None` when the read is refused.
async fn visible(client: &tokio_postgres::Client, table: &str, tenant: &TenantId) -> Option<i64> {
    match client
        .query_one(
            &format!("select count(*) from {table} where tenant_id = $1"),
            &[&tenant.as_str()],
        )
        .await
    {
        Ok(row) => Some(row.get(0)),
        Err(err) if refused(&err) => None,
        Err(err) => panic!("{table}: {err}"),
    }
}

#[tokio::test]
async fn the_application_reaches_another_tenant_through_no_session_setting() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = two_tenants(&db).await;
    let primary = db.primary().get().await.expect("primary");
    let client = primary.client();

    // In A's scope (session-wide here, so that a refused statement leaves the session
    // usable), asking for B by id: nothing, in every tenant table.
    client
        .execute(
            "select set_config('role', 'residency_app', false), set_config('residency.tenant', $1, false)",
            &[&a.as_str()],
        )
        .await
        .expect("scope");
    for table in SEEDED {
        assert_eq!(
            visible(client, table, &a).await,
            Some(1),
            "{table}: A's own"
        );
        assert_eq!(
            visible(client, table, &b).await,
            Some(0),
            "{table}: B's rows"
        );
    }
    // Dropping back to the login role keeps the tenant setting but loses every tenant
    // row: the node's own role holds no tenant-data grant, and the policies that let it
    // do system work name it alone (no tenant setting widens them).
    client
        .batch_execute("reset role")
        .await
        .expect("reset role");
    for table in [
        "collections",
        "records",
        "record_index",
        "files",
        "api_keys",
    ] {
        assert_eq!(visible(client, table, &b).await, None, "{table}: refused");
        assert_eq!(visible(client, table, &a).await, None, "{table}: refused");
    }
    // Another role of the deployment is out of reach.
    for other in [EXPORT_ROLE, devstack::SUPERUSER] {
        let err = client
            .batch_execute(&format!("set role {other}"))
            .await
            .expect_err("not a member");
        assert!(refused(&err), "set role {other}: {err}");
    }
    client
        .batch_execute("reset residency.tenant")
        .await
        .expect("reset");
    // The session carried settings of its own: not back into the pool.
    primary.discard();

    // The role cannot escalate: it is no superuser, bypasses nothing, owns nothing.
    let primary = db.primary().get().await.expect("primary");
    let row = primary
        .query_one(
            "select r.rolsuper, r.rolbypassrls, r.rolinherit,
                    (select count(*) from pg_class c where c.relowner = r.oid),
                    pg_has_role(r.oid, (select relowner from pg_class where relname = 'records'), 'member')
             from pg_roles r where r.rolname = current_user",
            &[],
        )
        .await
        .expect("role");
    assert!(!row.get::<_, bool>(0), "not a superuser");
    assert!(!row.get::<_, bool>(1), "no BYPASSRLS");
    assert!(!row.get::<_, bool>(2), "inherits nothing");
    assert_eq!(row.get::<_, i64>(3), 0, "owns nothing");
    assert!(!row.get::<_, bool>(4), "not a member of the owner");
}

#[tokio::test]
async fn the_export_sees_only_exported_tenants_whatever_it_sets() {
    let (database, db) = region_database("eu-central-1").await;
    let (a, b) = two_tenants(&db).await;
    let owner = db.as_owner().primary().get().await.expect("owner");
    owner
        .batch_execute(&format!(
            "alter role {EXPORT_ROLE} password 'export-role-test-password'"
        ))
        .await
        .expect("give the export role a password");
    drop(owner);
    let mut config = database.primary.clone();
    config
        .user(EXPORT_ROLE)
        .password("export-role-test-password");
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect as the export role");
    tokio::spawn(connection);

    // Scoped to the exported tenant: its rows.
    client
        .execute(
            "select set_config('residency.tenant', $1, false)",
            &[&a.as_str()],
        )
        .await
        .expect("set");
    for table in ["tenants", "collections", "records", "tenant_keys"] {
        assert_eq!(visible(&client, table, &a).await, Some(1), "{table}: A");
    }
    // Naming the tenant without export: nothing, neither its rows nor its wrapped keys.
    client
        .execute(
            "select set_config('residency.tenant', $1, false)",
            &[&b.as_str()],
        )
        .await
        .expect("set");
    for table in [
        "tenants",
        "collections",
        "records",
        "tenant_keys",
        "subject_erasures",
    ] {
        assert_eq!(visible(&client, table, &b).await, Some(0), "{table}: B");
    }
    let unfiltered: i64 = client
        .query_one("select count(*) from records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(unfiltered, 0, "no WHERE, B's setting: nothing");
    // Without any setting, nothing but the listing of exported tenants.
    client
        .batch_execute("reset residency.tenant")
        .await
        .expect("reset");
    assert_eq!(visible(&client, "records", &a).await, Some(0));
    let listed: Vec<String> = client
        .query("select tenant_id from tenants", &[])
        .await
        .expect("list")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(listed, [a.to_string()]);
    // Neither the application's role nor a write is within reach.
    for statement in [
        "set role residency_app",
        "set role residency_node",
        "update tenants set analytics_export = true",
        "select residency_purge('x', 'records', 1)",
    ] {
        let err = client.batch_execute(statement).await.expect_err(statement);
        assert!(refused(&err), "{statement}: {err}");
    }
}

#[tokio::test]
async fn audit_events_are_append_only_for_the_application() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, _b) = two_tenants(&db).await;
    let mut primary = db.primary().get().await.expect("primary");

    // As the application, in the tenant's own scope: no delete, no update of an event,
    // no delete of the head, no move of the head but forward, to an event.
    for statement in [
        "delete from audit_events",
        "update audit_events set outcome = 'failure'",
        "delete from audit_heads",
        "update audit_heads set seq = 0, hash = null",
        "update audit_heads set hash = '\\x0000000000000000000000000000000000000000000000000000000000000000'",
        "update audit_heads set seq = seq - 1",
        "insert into audit_heads (tenant_id, seq, hash) values ('x', 7, '\\x00')",
    ] {
        let tx = primary.begin_tenant(&a).await.expect("begin");
        let err = tx
            .client()
            .batch_execute(statement)
            .await
            .expect_err(statement);
        assert!(refused(&err), "{statement}: {err}");
        drop(tx);
    }
    // A head moved to no event, an event beyond the head, or one that does not link to
    // its predecessor: refused at commit.
    let tx = primary.begin_tenant(&a).await.expect("begin");
    tx.client()
        .batch_execute(
            "update audit_heads set seq = seq + 1,
                    hash = '\\x0909090909090909090909090909090909090909090909090909090909090909'",
        )
        .await
        .expect("the move itself passes the row check");
    let err = tx.commit().await.expect_err("a head that names no event");
    assert!(matches!(err, StoreError::Forbidden), "{err:?}");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    copy_first_event(tx.client(), &a, 9, [1; 32], [9; 32]).await;
    let err = tx.commit().await.expect_err("an event beyond the head");
    assert!(matches!(err, StoreError::Forbidden), "{err:?}");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    copy_first_event(tx.client(), &a, 2, [7; 32], [2; 32]).await;
    tx.client()
        .execute(
            "update audit_heads set seq = 2, hash = $2 where tenant_id = $1",
            &[&a.as_str(), &&[2u8; 32][..]],
        )
        .await
        .expect("the head moves forward to the event");
    let err = tx.commit().await.expect_err("an event that does not link");
    assert!(matches!(err, StoreError::Forbidden), "{err:?}");

    // The node's own role (the batched writer) is held the same way.
    for statement in [
        "delete from audit_events",
        "update audit_events set outcome = 'failure'",
        "update audit_heads set seq = 0, hash = null",
    ] {
        let err = primary
            .client()
            .batch_execute(statement)
            .await
            .expect_err(statement);
        assert!(refused(&err), "{statement}: {err}");
    }

    // The append still works, and the chain is what it was plus one.
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let mut second = event(a, 2);
    second.prev_hash = [1; 32];
    assert!(store::audit::append(&tx, &second).await.expect("append"));
    tx.commit().await.expect("commit");
    let owner = db.as_owner().primary().get().await.expect("owner");
    let seqs: Vec<i64> = owner
        .query(
            "select seq from audit_events where tenant_id = $1 order by seq",
            &[&a.as_str()],
        )
        .await
        .expect("events")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn the_purge_function_refuses_a_live_tenant_and_records_what_it_deleted() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = two_tenants(&db).await;
    let mut primary = db.primary().get().await.expect("primary");

    let err = store::purge::delete_batch(&primary, PurgeTable::Records, &a, 100)
        .await
        .expect_err("A is live");
    assert!(
        matches!(&err, StoreError::Check { constraint } if constraint == "residency_purge_refuses_a_live_tenant"),
        "{err:?}"
    );
    let err = store::purge::delete_tenant(&mut primary, &a)
        .await
        .expect_err("A is live");
    assert!(matches!(err, StoreError::Check { .. }), "{err:?}");
    // The application's role may not call it at all, not even in the tenant's scope.
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let err = tx
        .client()
        .batch_execute("select residency_purge('x', 'records', 1)")
        .await
        .expect_err("not granted to residency_app");
    assert!(refused(&err), "{err}");
    drop(tx);

    // Offboarded, B's rows go, step by step, and each step is on record.
    let tx = primary.begin_tenant(&b).await.expect("begin");
    assert!(
        store::tenants::mark_offboarded(&tx, &b)
            .await
            .expect("mark")
    );
    store::tenant_keys::destroy_all(&tx, &b)
        .await
        .expect("shred");
    tx.commit().await.expect("commit");
    for table in PurgeTable::ALL {
        store::purge::delete_batch(&primary, table, &b, 100)
            .await
            .expect("purge step");
    }
    assert!(
        store::purge::delete_tenant(&mut primary, &b)
            .await
            .expect("tenant")
    );
    let owner = db.as_owner().primary().get().await.expect("owner");
    for table in ["tenants", "collections", "records", "tenant_keys"] {
        let left: i64 = owner
            .query_one(
                &format!("select count(*) from {table} where tenant_id = $1"),
                &[&b.as_str()],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(left, 0, "{table}: B purged");
    }
    let audit: i64 = owner
        .query_one(
            "select count(*) from audit_events where tenant_id = $1",
            &[&b.as_str()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(audit, 1, "the chain stays as evidence");
    let steps: Vec<(String, i64, String)> = owner
        .query(
            "select step, deleted, purged_by from tenant_purges where tenant_id = $1
             order by purged_at, step",
            &[&b.as_str()],
        )
        .await
        .expect("log")
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert!(
        steps.contains(&("records".into(), 1, store::NODE_ROLE.into())),
        "{steps:?}"
    );
    assert!(
        steps.contains(&("tenant".into(), 1, store::NODE_ROLE.into())),
        "{steps:?}"
    );
    // A's rows are all there.
    assert_eq!(
        owner
            .query_one(
                "select count(*) from records where tenant_id = $1",
                &[&a.as_str()]
            )
            .await
            .expect("count")
            .get::<_, i64>(0),
        1
    );
}

#[tokio::test]
async fn a_node_without_the_owner_verifies_a_migrated_database_and_cannot_migrate() {
    let (database, _db) = region_database("eu-central-1").await;
    // Migrated and stamped by the owner: the node's own role only verifies.
    let mut settings = store::testing::settings(&database);
    settings.owner = None;
    let node = RegionDatabase::new(
        model::RegionId::parse("eu-central-1").expect("region"),
        &settings,
    )
    .expect("pools");
    let report = node
        .prepare(store::embedded_migrations())
        .await
        .expect("verified");
    assert!(report.applied.is_empty(), "{report:?}");
    // Another region's node is refused as before.
    let foreign = RegionDatabase::new(
        model::RegionId::parse("eu-west-1").expect("region"),
        &settings,
    )
    .expect("pools");
    let err = foreign
        .prepare(store::embedded_migrations())
        .await
        .expect_err("stamped for eu-central-1");
    assert!(matches!(err, StoreError::WrongRegion { .. }), "{err:?}");

    // A database with a migration left to apply: the node's role may not apply it.
    let fresh = devstack::testing::TestDatabase::create(None).await;
    let mut settings = store::testing::settings(&fresh);
    settings.owner = None;
    let node = RegionDatabase::new(
        model::RegionId::parse("eu-central-1").expect("region"),
        &settings,
    )
    .expect("pools");
    node.prepare(store::embedded_migrations())
        .await
        .expect_err("only the owner migrates");
}
