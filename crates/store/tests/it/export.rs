//! The analytics export's database access: it refuses a primary, sees only tenants that
//! turned export on and one tenant's rows at a time, and its role can neither write nor
//! read outside its grants.

use serde_json::json;
use store::PgTls;
use store::export::{EXPORT_ROLE, ExportConnectError, ExportReplica};
use store::testing::region_database;

use crate::rows::{TENANT_A, TENANT_B, insert_record, tenant, tenant_exporting};

#[tokio::test]
async fn the_export_reads_replicas_only_and_its_role_stays_inside_its_grants() {
    let (database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    // A exports; B does not.
    for (id, exports) in [(a, true), (b, false)] {
        tenant_exporting(&db, id, exports).await;
    }
    insert_record(&db, a, "rec-a1", json!({"plan": "pro"}), &[]).await;
    let lsn = insert_record(&db, b, "rec-b1", json!({}), &[]).await;

    // The migration creates the role without a password: the deployment sets one.
    let owner = db.as_owner().primary().get().await.expect("primary");
    owner
        .batch_execute(&format!(
            "alter role {EXPORT_ROLE} password 'export-test-password'"
        ))
        .await
        .expect("give the export role a password");
    drop(owner);
    let as_export = |mut config: tokio_postgres::Config| {
        config.user(EXPORT_ROLE).password("export-test-password");
        config
    };
    let err = ExportReplica::connect(
        &as_export(database.primary.clone()),
        &PgTls::Disabled,
        "the primary",
    )
    .await
    .expect_err("a primary is refused");
    assert!(matches!(err, ExportConnectError::Primary(_)), "{err}");
    assert!(err.to_string().contains("replicas only"), "{err}");

    // Once the replica has replayed everything above (the role's password included).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut replica = loop {
        let connected = ExportReplica::connect(
            &as_export(database.replica.clone()),
            &PgTls::Disabled,
            "replica",
        )
        .await;
        let replayed = {
            let client = db.replicas()[0].get().await.expect("replica");
            let raw: String = client
                .query_one("select pg_last_wal_replay_lsn()::text", &[])
                .await
                .expect("replay")
                .get(0);
            model::Lsn::parse(&raw).expect("lsn") >= lsn
        };
        match connected {
            Ok(replica) if replayed => break replica,
            Err(err) if std::time::Instant::now() > deadline => {
                panic!("the replica is accepted: {err}")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    assert_eq!(replica.exporting_tenants().await.expect("tenants"), [a]);
    let snapshot = replica.snapshot(&a).await.expect("snapshot");
    let collections = snapshot.collections().await.expect("collections");
    assert_eq!(collections.len(), 1);
    let records = snapshot
        .records("people", None, 100)
        .await
        .expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].id, "rec-a1");
    let watermark = snapshot
        .watermark(&collections[0])
        .await
        .expect("watermark");
    assert!(watermark.starts_with("v1.n1."), "{watermark}");
    // Under A's scope, B's rows are invisible even without a WHERE.
    let all: i64 = snapshot
        .client()
        .query_one("select count(*) from records", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(all, 1);
    snapshot.finish().await.expect("finish");

    // The role itself, on the primary: no writes anywhere, no reads outside its grants.
    let (client, connection) = as_export(database.primary.clone())
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect as the export role");
    tokio::spawn(connection);
    for statement in [
        "insert into records (tenant_id, collection, record_id, public, sealed)
         values ('0a0a0a0a-0000-4000-8000-00000000000a', 'people', 'x', '{}', '\\x00')",
        "update tenants set analytics_export = true",
        "delete from records",
        "select count(*) from api_keys",
        "select count(*) from audit_events",
        "select count(*) from record_index",
        "select count(*) from files",
        "select count(*) from tenant_directory",
        "set role residency_app",
    ] {
        let err = client
            .batch_execute(statement)
            .await
            .expect_err("outside the export role's grants");
        let code = err.code().cloned();
        assert_eq!(
            code,
            Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {err}"
        );
    }
}
