//! Key-change notifications: delivered when the changing transaction commits, never for a
//! rolled-back one or a rewrap that changed nothing, and heard again after the listener's
//! session is killed (with a `Resync` first).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use devstack::testing::connect;
use model::{KeyPurpose, TenantId};
use store::notifications::LISTENER_APPLICATION_NAME;
use store::tenant_keys::{self, NewKey};
use store::testing::region_database;
use store::{ListenerSettings, Notice, RegionDatabase};

fn tenant(byte: u8) -> TenantId {
    TenantId::from_random_bytes([byte; 16])
}

async fn provision(db: &RegionDatabase, tenant: &TenantId) {
    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(tenant).await.expect("begin");
    tenant_keys::insert_first_key(&tx, &new_key(tenant, "kms-1"))
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
}

fn new_key<'a>(tenant: &'a TenantId, kms_key_id: &'a str) -> NewKey<'a> {
    NewKey {
        tenant,
        purpose: KeyPurpose::Data,
        kms_key_id,
        wrapped: b"wrapped",
        kms_context: "{}",
    }
}

/// Waits until `heard` holds `expected` (and nothing else), for at most a second.
async fn heard_exactly(heard: &Mutex<Vec<Notice>>, expected: &[Notice]) {
    let started = std::time::Instant::now();
    loop {
        {
            let mut heard = heard.lock().expect("lock");
            if heard.as_slice() == expected {
                heard.clear();
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "heard {heard:?}, expected {expected:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn key_changes_are_heard_when_they_commit_and_after_the_listener_is_killed() {
    let (database, db) = region_database("eu-central-1").await;
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let listener = db.listen(
        ListenerSettings::default(),
        Arc::new(move |notice| sink.lock().expect("lock").push(notice)),
    );
    let mut sessions = listener.sessions();
    sessions
        .wait_for(|count| *count == 1)
        .await
        .expect("listening");
    heard_exactly(&heard, &[Notice::Resync]).await;
    let (a, b) = (tenant(1), tenant(2));
    provision(&db, &a).await;
    provision(&db, &b).await;

    // A rotation that rolls back is never heard; one that commits is.
    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    tenant_keys::rotate(&tx, &new_key(&a, "kms-1"))
        .await
        .expect("rotate");
    drop(tx);
    let tx = primary.begin_tenant(&b).await.expect("begin");
    tenant_keys::rotate(&tx, &new_key(&b, "kms-1"))
        .await
        .expect("rotate");
    tx.commit().await.expect("commit");
    heard_exactly(&heard, &[Notice::TenantKeys(b)]).await;

    // A rewrap is heard only when it changed the row.
    let stored = tenant_keys::list(primary.client(), &a).await.expect("list");
    let tx = primary.begin().await.expect("begin");
    assert!(
        !tenant_keys::rewrap(&tx, &stored[0], "kms-other", "kms-2", b"w2")
            .await
            .expect("rewrap")
    );
    assert!(
        tenant_keys::rewrap(&tx, &stored[0], "kms-1", "kms-2", b"w2")
            .await
            .expect("rewrap")
    );
    tx.commit().await.expect("commit");
    heard_exactly(&heard, &[Notice::TenantKeys(a)]).await;

    // Killed: the listener comes back, says so, and hears shreds again.
    let admin = connect(database.primary.clone()).await;
    admin
        .execute(
            "select pg_terminate_backend(pid) from pg_stat_activity
             where application_name = $1 and datname = current_database()",
            &[&LISTENER_APPLICATION_NAME],
        )
        .await
        .expect("terminate");
    tokio::time::timeout(
        Duration::from_secs(10),
        sessions.wait_for(|count| *count == 2),
    )
    .await
    .expect("back in time")
    .expect("listening");
    heard_exactly(&heard, &[Notice::Resync]).await;
    let tx = primary.begin_tenant(&a).await.expect("begin");
    assert_eq!(tenant_keys::destroy_all(&tx, &a).await.expect("shred"), 1);
    tx.commit().await.expect("commit");
    heard_exactly(&heard, &[Notice::TenantKeys(a)]).await;
    listener.stop().await;
}
