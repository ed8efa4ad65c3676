//! The outbox of object deletions on a real primary: rows are written and seen only in
//! their tenant's scope, another tenant's scope cannot write one, and a tenant row cannot
//! be deleted while a deletion of its objects is pending.

use std::time::Duration;

use store::StoreError;
use store::object_deletions::{self, DeletionReason};
use store::testing::region_database;

use crate::rows::{TENANT_A, TENANT_B, tenant, tenant_with_collection};

#[tokio::test]
async fn deletions_are_scoped_to_their_tenant_and_hold_the_tenant_row_until_done() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    tenant_with_collection(&db, a).await;
    tenant_with_collection(&db, b).await;
    let mut primary = db.primary().get().await.expect("primary");
    let keys = [
        format!("tenants/{a}/files/one"),
        format!("tenants/{a}/files/two"),
    ];
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let queued =
        object_deletions::enqueue(&tx, &a, &keys, DeletionReason::FileDeleted, Duration::ZERO)
            .await
            .expect("enqueue");
    tx.commit().await.expect("commit");
    assert_eq!(
        queued
            .iter()
            .map(|q| q.object_key.clone())
            .collect::<Vec<_>>(),
        keys
    );

    // Tenant B's scope sees none of them, and cannot name an object for tenant A.
    let tx = primary.begin_tenant(&b).await.expect("begin");
    let seen = object_deletions::pending_for_tenant(tx.client(), &a)
        .await
        .expect("read");
    assert!(seen.is_empty(), "{seen:?}");
    let refused = object_deletions::enqueue(
        &tx,
        &a,
        &keys[..1],
        DeletionReason::FileDeleted,
        Duration::ZERO,
    )
    .await;
    assert!(refused.is_err(), "another tenant's scope wrote a row");
    drop(tx);

    // The tenant row stays while a deletion of its objects is pending (even for the
    // owner, which the purge function runs as).
    let owner = db.as_owner().primary().get().await.expect("owner");
    let deleted = owner
        .client()
        .execute("delete from tenants where tenant_id = $1", &[&a.as_str()])
        .await
        .map_err(StoreError::from);
    assert!(
        matches!(deleted, Err(StoreError::ForeignKey { .. })),
        "{deleted:?}"
    );
    let ids: Vec<_> = queued.iter().map(|q| q.id).collect();
    assert_eq!(
        object_deletions::done(&primary, &ids).await.expect("done"),
        2
    );
    owner
        .client()
        .execute("delete from tenants where tenant_id = $1", &[&a.as_str()])
        .await
        .expect("no deletion pending: the tenant row goes");
}
