//! Idempotency keys' rows: a claim records a key once, finds it taken while it lives,
//! takes it over once it expired, stops at the tenant's bound, stays inside its tenant,
//! and goes with the tenant's purge.

use std::time::Duration;

use devstack::testing::connect;
use model::TenantId;
use serde_json::json;
use store::idempotency::{self, Claim, NewAnswer};
use store::testing::region_database;

use crate::rows::{TENANT_A, TENANT_B, tenant, tenant_row};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Claims key `[key; 32]` for `tenant` with request hash `[request; 32]` and an answer
/// naming `id`, in a transaction of its own.
async fn claim(
    primary: &mut store::Primary,
    tenant: TenantId,
    key: u8,
    request: u8,
    id: &str,
    max_live: i64,
) -> Claim {
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    let claimed = idempotency::claim(
        &tx,
        NewAnswer {
            tenant: &tenant,
            key_hash: &[key; 32],
            operation: "record.create",
            request_hash: &[request; 32],
            status: 201,
            response: &json!({ "id": id }),
        },
        DAY,
        max_live,
    )
    .await
    .expect("claim");
    tx.commit().await.expect("commit");
    claimed
}

#[tokio::test]
async fn a_key_is_claimed_once_while_it_lives_within_its_tenant_and_purged_with_it() {
    let (database, db) = region_database("eu-central-1").await;
    let sql = connect(database.primary.clone()).await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    let mut primary = db.primary().get().await.expect("primary");
    for id in [a, b] {
        let tx = primary.begin_tenant(&id).await.expect("begin");
        store::tenants::insert(&tx, &tenant_row(id))
            .await
            .expect("insert");
        tx.commit().await.expect("commit");
    }
    assert_eq!(claim(&mut primary, a, 1, 7, "r1", 2).await, Claim::Recorded);
    assert_eq!(claim(&mut primary, a, 1, 8, "r2", 2).await, Claim::Taken);
    // Another tenant's equal key is its own.
    assert_eq!(claim(&mut primary, b, 1, 8, "r3", 2).await, Claim::Recorded);
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let found = idempotency::find(tx.client(), &a, &[1; 32], DAY)
        .await
        .expect("find")
        .expect("the first answer");
    assert_eq!(
        (found.request_hash, found.response),
        ([7; 32], json!({ "id": "r1" }))
    );
    // Row-level security: tenant a's scope does not see tenant b's row, even by name.
    let leaked = tx
        .client()
        .query(
            "select 1 from idempotency_keys where tenant_id = $1",
            &[&b.as_str()],
        )
        .await
        .expect("query");
    assert!(leaked.is_empty());
    tx.commit().await.expect("commit");

    // At the bound, nothing is recorded; an expired row is neither found nor counted,
    // and its key can be claimed anew.
    assert_eq!(claim(&mut primary, a, 2, 7, "r4", 2).await, Claim::Recorded);
    assert_eq!(claim(&mut primary, a, 3, 7, "r5", 2).await, Claim::Full);
    sql.execute(
        "update idempotency_keys set created_at = now() - interval '1 day 1 second'
         where tenant_id = $1 and key_hash = $2",
        &[&a.as_str(), &[1u8; 32].as_slice()],
    )
    .await
    .expect("age the first key");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    assert!(
        idempotency::find(tx.client(), &a, &[1; 32], DAY)
            .await
            .expect("find")
            .is_none()
    );
    tx.commit().await.expect("commit");
    assert_eq!(claim(&mut primary, a, 1, 9, "r6", 2).await, Claim::Recorded);

    // The purge deletes the tenant's rows with its tenant row, and only its.
    let tx = primary.begin_tenant(&a).await.expect("begin");
    store::tenants::mark_offboarded(&tx, &a)
        .await
        .expect("mark");
    tx.commit().await.expect("commit");
    assert!(
        store::purge::delete_tenant(&mut primary, &a)
            .await
            .expect("purge")
    );
    let left: Vec<String> = sql
        .query("select tenant_id from idempotency_keys", &[])
        .await
        .expect("rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(left, vec![b.as_str().to_owned()]);
}
