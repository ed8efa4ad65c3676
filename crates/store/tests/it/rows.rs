//! The tenant-data rows on a real primary: CRUD of tenants, API keys, collections,
//! records (with their blind-index tokens) and files; typed errors for duplicates,
//! dangling references and refused values.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::TenantId;
use serde_json::json;
use store::api_keys::ApiKeyRow;
use store::files::FileRow;
use store::records::{Change, IndexEntry};
use store::tenants::TenantRow;
use store::testing::region_database;
use store::{PrimaryTx, RegionDatabase, StoreError};

pub const TENANT_A: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
pub const TENANT_B: &str = "0b0b0b0b-0000-4000-8000-00000000000b";

pub fn tenant(id: &str) -> TenantId {
    TenantId::parse(id).expect("valid tenant id")
}

/// A time PostgreSQL stores exactly (microseconds).
pub fn micros(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds) + Duration::from_micros(123_456)
}

pub fn tenant_row(id: TenantId) -> TenantRow {
    TenantRow {
        id,
        name: format!("tenant {id}"),
        home_region: "eu-central-1".into(),
        allowed_regions: vec!["eu-central-1".into(), "eu-west-1".into()],
        transit: "proxy".into(),
        analytics_export: true,
        status: "active".into(),
        created_at: micros(0),
    }
}

/// Creates `tenant` with collection `people` in its own scoped transaction.
pub async fn tenant_with_collection(db: &RegionDatabase, tenant: TenantId) {
    tenant_exporting(db, tenant, true).await;
}

/// As [`tenant_with_collection`], with its analytics export on or off.
pub async fn tenant_exporting(db: &RegionDatabase, tenant: TenantId, exports: bool) {
    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    let mut row = tenant_row(tenant);
    row.analytics_export = exports;
    store::tenants::insert(&tx, &row)
        .await
        .expect("insert tenant");
    store::collections::upsert(&tx, &tenant, "people", &json!({"fields": {}}))
        .await
        .expect("create collection");
    tx.commit().await.expect("commit");
}

pub fn token(byte: u8) -> [u8; 32] {
    [byte; 32]
}

pub fn entry(field: &str, byte: u8) -> IndexEntry {
    IndexEntry {
        field: field.into(),
        token: token(byte),
    }
}

/// Inserts record `id` of `people` with one token per entry; returns its commit LSN.
pub async fn insert_record(
    db: &RegionDatabase,
    tenant: TenantId,
    id: &str,
    public: serde_json::Value,
    index: &[IndexEntry],
) -> model::Lsn {
    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    store::records::insert(&tx, &tenant, "people", id, &public, b"sealed", index)
        .await
        .expect("insert record");
    tx.commit_lsn().await.expect("commit")
}

/// The sealed fields' tokens stored for record `id`.
async fn index_rows(db: &RegionDatabase, id: &str) -> Vec<(String, Vec<u8>)> {
    // As the owner, outside any scope: what is really stored.
    let primary = db.as_owner().primary().get().await.expect("primary");
    primary
        .query(
            "select field, token from record_index
             where record_id = $1 and field not like 'public:%' order by field, token",
            &[&id],
        )
        .await
        .expect("read index")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// The public fields with a search token for record `id`.
async fn public_tokens(db: &RegionDatabase, id: &str) -> Vec<String> {
    let primary = db.as_owner().primary().get().await.expect("primary");
    primary
        .query(
            "select field from record_index
             where record_id = $1 and field like 'public:%' order by field",
            &[&id],
        )
        .await
        .expect("read index")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn in_tx<T>(
    db: &RegionDatabase,
    tenant: TenantId,
    work: impl AsyncFnOnce(&PrimaryTx<'_>) -> T,
) -> T {
    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    let value = work(&tx).await;
    tx.commit().await.expect("commit");
    value
}

#[tokio::test]
async fn tenants_are_inserted_read_and_offboarded() {
    let (_database, db) = region_database("eu-central-1").await;
    let a = tenant(TENANT_A);
    let row = tenant_row(a);
    in_tx(&db, a, async |tx| {
        store::tenants::insert(tx, &row).await.expect("insert");
    })
    .await;

    let primary = db.as_owner().primary().get().await.expect("primary");
    let stored = store::tenants::get(primary.client(), &a)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored, row);
    assert_eq!(
        store::tenants::get(primary.client(), &tenant(TENANT_B))
            .await
            .expect("get"),
        None
    );

    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let err = store::tenants::insert(&tx, &row)
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    drop(tx);

    in_tx(&db, a, async |tx| {
        assert!(
            store::tenants::set_status(tx, &a, "offboarded")
                .await
                .expect("offboard")
        );
    })
    .await;
    let primary = db.as_owner().primary().get().await.expect("primary");
    let stored = store::tenants::get(primary.client(), &a)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.status, "offboarded");

    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let err = store::tenants::set_status(&tx, &a, "paused")
        .await
        .expect_err("not a status");
    assert!(matches!(err, StoreError::Check { .. }), "{err:?}");
}

#[tokio::test]
async fn the_listing_pages_active_tenants_by_id_and_leaves_offboarded_ones_out() {
    let (_database, db) = region_database("eu-central-1").await;
    let c = tenant("0c0c0c0c-0000-4000-8000-00000000000c");
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    for id in [c, a, b] {
        in_tx(&db, id, async |tx| {
            store::tenants::insert(tx, &tenant_row(id))
                .await
                .expect("insert");
        })
        .await;
    }
    in_tx(&db, b, async |tx| {
        store::tenants::set_status(tx, &b, "offboarded")
            .await
            .expect("offboard");
    })
    .await;

    let primary = db.as_owner().primary().get().await.expect("primary");
    let ids = |rows: Vec<TenantRow>| rows.into_iter().map(|row| row.id).collect::<Vec<_>>();
    let all = store::tenants::list_active(primary.client(), None, 10)
        .await
        .expect("list");
    assert_eq!(all.first(), Some(&tenant_row(a)), "rows come back whole");
    assert_eq!(ids(all), [a, c], "by id, without the offboarded tenant");
    let first = store::tenants::list_active(primary.client(), None, 1)
        .await
        .expect("first page");
    assert_eq!(ids(first), [a]);
    let after_a = store::tenants::list_active(primary.client(), Some(&a), 10)
        .await
        .expect("next page");
    assert_eq!(ids(after_a), [c]);

    // Inside a tenant's scope row-level security still shows that tenant alone: the
    // listing is a system read, outside any scope.
    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&c).await.expect("begin");
    let scoped = store::tenants::list_active(tx.client(), None, 10)
        .await
        .expect("scoped list");
    assert_eq!(ids(scoped), [c]);
}

#[tokio::test]
async fn api_keys_are_inserted_read_and_revoked_once() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    tenant_with_collection(&db, a).await;
    tenant_with_collection(&db, b).await;
    let key = ApiKeyRow {
        key_id: "key_abc123".into(),
        tenant: a,
        name: "ci".into(),
        role: "writer".into(),
        secret_hash: [7; 32],
        created_at: micros(1),
        revoked_at: None,
    };
    in_tx(&db, a, async |tx| {
        store::api_keys::insert(tx, &key).await.expect("insert");
    })
    .await;
    assert!(
        !format!("{key:?}").contains("secret_hash"),
        "debug hides the hash"
    );

    let primary = db.as_owner().primary().get().await.expect("primary");
    let stored = store::api_keys::get(primary.client(), &a, "key_abc123")
        .await
        .expect("get");
    assert_eq!(stored.as_ref(), Some(&key));
    assert_eq!(
        store::api_keys::get(primary.client(), &b, "key_abc123")
            .await
            .expect("get"),
        None,
        "a key id is looked up within its tenant"
    );

    // Key ids are unique across tenants.
    let mut primary_b = db.primary().get().await.expect("primary");
    let tx = primary_b.begin_tenant(&b).await.expect("begin");
    let err = store::api_keys::insert(
        &tx,
        &ApiKeyRow {
            tenant: b,
            ..key.clone()
        },
    )
    .await
    .expect_err("duplicate key id");
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    drop(tx);

    // A key of a tenant that does not exist, or with an unknown role.
    let ghost = TenantId::parse("0c0c0c0c-0000-4000-8000-00000000000c").expect("tenant id");
    let tx = primary_b.begin_tenant(&ghost).await.expect("begin");
    let err = store::api_keys::insert(
        &tx,
        &ApiKeyRow {
            tenant: ghost,
            key_id: "key_ghost".into(),
            ..key.clone()
        },
    )
    .await
    .expect_err("no such tenant");
    assert!(matches!(err, StoreError::ForeignKey { .. }), "{err:?}");
    drop(tx);
    let tx = primary_b.begin_tenant(&a).await.expect("begin");
    let err = store::api_keys::insert(
        &tx,
        &ApiKeyRow {
            key_id: "key_root".into(),
            role: "root".into(),
            ..key.clone()
        },
    )
    .await
    .expect_err("no such role");
    assert!(matches!(err, StoreError::Check { .. }), "{err:?}");
    drop(tx);

    let (first, second) = in_tx(&db, a, async |tx| {
        (
            store::api_keys::revoke(tx, &a, "key_abc123")
                .await
                .expect("revoke"),
            store::api_keys::revoke(tx, &a, "key_abc123")
                .await
                .expect("revoke again"),
        )
    })
    .await;
    assert!(first, "the key was active");
    assert!(!second, "already revoked");
    let revoked = store::api_keys::get(primary.client(), &a, "key_abc123")
        .await
        .expect("get")
        .expect("still there");
    assert!(revoked.revoked_at.is_some());
}

#[tokio::test]
async fn collections_are_created_then_versioned_only_when_the_schema_changes() {
    let (_database, db) = region_database("eu-central-1").await;
    let a = tenant(TENANT_A);
    in_tx(&db, a, async |tx| {
        store::tenants::insert(tx, &tenant_row(a))
            .await
            .expect("tenant");
    })
    .await;
    let schema = json!({"fields": {"email": {"type": "string", "class": "identifier"}}});
    let (created, was_created) = in_tx(&db, a, async |tx| {
        store::collections::upsert(tx, &a, "people", &schema)
            .await
            .expect("create")
    })
    .await;
    assert!(was_created);
    assert_eq!((created.name.as_str(), created.version), ("people", 1));
    assert_eq!(created.schema, schema);

    let (same, was_created) = in_tx(&db, a, async |tx| {
        store::collections::upsert(tx, &a, "people", &schema)
            .await
            .expect("put again")
    })
    .await;
    assert!(!was_created);
    assert_eq!(same, created, "the same schema changes nothing");

    let changed = json!({"fields": {}, "required": []});
    let (updated, was_created) = in_tx(&db, a, async |tx| {
        store::collections::upsert(tx, &a, "people", &changed)
            .await
            .expect("change")
    })
    .await;
    assert!(!was_created);
    assert_eq!(updated.version, 2);
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);

    let primary = db.as_owner().primary().get().await.expect("primary");
    let read = store::collections::get(primary.client(), &a, "people")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read, updated);
    assert_eq!(
        store::collections::get(primary.client(), &tenant(TENANT_B), "people")
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn records_are_created_read_updated_and_deleted_with_their_tokens() {
    let (_database, db) = region_database("eu-central-1").await;
    let a = tenant(TENANT_A);
    tenant_with_collection(&db, a).await;
    let id = "rec-1";

    let inserted = in_tx(&db, a, async |tx| {
        store::records::insert(
            tx,
            &a,
            "people",
            id,
            &json!({"plan": "free"}),
            b"sealed-1",
            // A token listed twice is stored once.
            &[entry("email", 1), entry("email", 1), entry("name", 2)],
        )
        .await
        .expect("insert")
    })
    .await;
    assert_eq!(inserted.version, 1);
    assert_eq!(inserted.sealed, b"sealed-1");
    assert_eq!(
        index_rows(&db, id).await,
        vec![
            ("email".into(), token(1).to_vec()),
            ("name".into(), token(2).to_vec())
        ]
    );
    assert_eq!(public_tokens(&db, id).await, ["public:plan"]);

    let primary = db.as_owner().primary().get().await.expect("primary");
    let read = store::records::get(primary.client(), &a, "people", id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read, inserted);
    assert!(!format!("{read:?}").contains("sealed-1"));

    // Duplicate id, unknown collection.
    let mut other = db.primary().get().await.expect("primary");
    let tx = other.begin_tenant(&a).await.expect("begin");
    let err = store::records::insert(&tx, &a, "people", id, &json!({}), b"x", &[])
        .await
        .expect_err("duplicate");
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    drop(tx);
    let tx = other.begin_tenant(&a).await.expect("begin");
    let err = store::records::insert(&tx, &a, "nope", "rec-x", &json!({}), b"x", &[])
        .await
        .expect_err("no such collection");
    assert!(matches!(err, StoreError::ForeignKey { .. }), "{err:?}");
    drop(tx);
    // Public fields are an object; token fields named like public ones are reserved.
    let tx = other.begin_tenant(&a).await.expect("begin");
    let err = store::records::insert(&tx, &a, "people", "rec-x", &json!(["x"]), b"x", &[])
        .await
        .expect_err("not an object");
    assert!(matches!(err, StoreError::Check { .. }), "{err:?}");
    drop(tx);
    let tx = other.begin_tenant(&a).await.expect("begin");
    let err = store::records::insert(
        &tx,
        &a,
        "people",
        "rec-x",
        &json!({}),
        b"x",
        &[entry("public:plan", 1)],
    )
    .await
    .expect_err("reserved field");
    assert!(matches!(err, StoreError::Check { .. }), "{err:?}");
    drop(tx);

    // A stale version is refused and changes nothing.
    let change = in_tx(&db, a, async |tx| {
        store::records::update(
            tx,
            &a,
            "people",
            id,
            Some(7),
            &json!({"plan": "pro"}),
            b"sealed-2",
            &[entry("email", 3)],
        )
        .await
        .expect("update")
    })
    .await;
    assert_eq!(change, Change::VersionMismatch { current: 1 });
    assert_eq!(index_rows(&db, id).await.len(), 2, "tokens untouched");

    // The right version: new fields, new version, tokens replaced (one kept).
    let change = in_tx(&db, a, async |tx| {
        store::records::update(
            tx,
            &a,
            "people",
            id,
            Some(1),
            &json!({"plan": "pro"}),
            b"sealed-2",
            &[entry("email", 3), entry("name", 2)],
        )
        .await
        .expect("update")
    })
    .await;
    let Change::Done(updated) = change else {
        panic!("update should apply: {change:?}");
    };
    assert_eq!(updated.version, 2);
    assert_eq!(updated.created_at, inserted.created_at);
    assert_eq!(updated.public, json!({"plan": "pro"}));
    assert_eq!(
        index_rows(&db, id).await,
        vec![
            ("email".into(), token(3).to_vec()),
            ("name".into(), token(2).to_vec())
        ]
    );
    let by_old =
        store::records::find_by_token(primary.client(), &a, "people", "email", &token(1), None, 10)
            .await
            .expect("search");
    assert!(by_old.is_empty(), "the old token no longer finds it");
    let by_new =
        store::records::find_by_token(primary.client(), &a, "people", "email", &token(3), None, 10)
            .await
            .expect("search");
    assert_eq!(by_new, vec![updated.clone()]);
    let free = store::records::find_by_public(
        primary.client(),
        &a,
        "people",
        "plan",
        &json!("free"),
        None,
        10,
    )
    .await
    .expect("search");
    assert!(free.is_empty(), "the old public value no longer finds it");
    let pro = store::records::find_by_public(
        primary.client(),
        &a,
        "people",
        "plan",
        &json!("pro"),
        None,
        10,
    )
    .await
    .expect("search");
    assert_eq!(pro, vec![updated.clone()]);
    assert_eq!(public_tokens(&db, id).await, ["public:plan"]);

    // Unconditional update.
    let change = in_tx(&db, a, async |tx| {
        store::records::update(tx, &a, "people", id, None, &json!({}), b"s3", &[])
            .await
            .expect("update")
    })
    .await;
    assert!(
        matches!(&change, Change::Done(row) if row.version == 3),
        "{change:?}"
    );
    assert!(index_rows(&db, id).await.is_empty(), "no tokens left");
    assert!(
        public_tokens(&db, id).await.is_empty(),
        "no public fields left"
    );

    let missing = in_tx(&db, a, async |tx| {
        store::records::update(tx, &a, "people", "rec-none", None, &json!({}), b"s", &[])
            .await
            .expect("update")
    })
    .await;
    assert_eq!(missing, Change::NotFound);

    // Delete: a stale version is refused; then the row, its tokens and files go.
    in_tx(&db, a, async |tx| {
        store::records::update(
            tx,
            &a,
            "people",
            id,
            None,
            &json!({}),
            b"s4",
            &[entry("email", 9)],
        )
        .await
        .expect("update");
        store::files::upsert(tx, &a, &file(id, "scan.pdf", "obj-1"))
            .await
            .expect("file");
    })
    .await;
    let change = in_tx(&db, a, async |tx| {
        store::records::delete(tx, &a, "people", id, Some(3))
            .await
            .expect("delete")
    })
    .await;
    assert_eq!(change, Change::VersionMismatch { current: 4 });
    let (locked, change) = in_tx(&db, a, async |tx| {
        let locked = store::records::lock(tx, &a, "people", id)
            .await
            .expect("lock");
        let change = store::records::delete(tx, &a, "people", id, Some(4))
            .await
            .expect("delete");
        (locked, change)
    })
    .await;
    assert_eq!(locked, Some(4));
    assert!(
        matches!(&change, Change::Done(row) if row.version == 4 && row.sealed == b"s4"),
        "{change:?}"
    );
    assert!(index_rows(&db, id).await.is_empty(), "tokens deleted");
    assert!(
        public_tokens(&db, id).await.is_empty(),
        "public tokens deleted"
    );
    assert_eq!(
        store::files::count(primary.client(), &a)
            .await
            .expect("count"),
        0,
        "file rows deleted"
    );
    assert_eq!(
        store::records::get(primary.client(), &a, "people", id)
            .await
            .expect("get"),
        None
    );
    let again = in_tx(&db, a, async |tx| {
        store::records::delete(tx, &a, "people", id, None)
            .await
            .expect("delete")
    })
    .await;
    assert_eq!(again, Change::NotFound);
}

/// The database keeps every field that the collection's committed schema does not class
/// as public out of a record's unencrypted part, on insert and on update (migration 0007),
/// naming the field.
#[tokio::test]
async fn a_records_unencrypted_part_holds_only_public_fields_of_the_current_schema() {
    let (_database, db) = region_database("eu-central-1").await;
    let a = tenant(TENANT_A);
    tenant_with_collection(&db, a).await;
    let schema = json!({"fields": {
        "plan": {"type": "string", "class": "public"},
        "email": {"type": "string", "class": "identifier"},
    }});
    in_tx(&db, a, async |tx| {
        store::collections::upsert(tx, &a, "people", &schema).await
    })
    .await
    .expect("schema");
    // Public fields, and fields the schema does not name, go in as they are.
    insert_record(&db, a, "rec-1", json!({"plan": "pro", "legacy": 1}), &[]).await;
    let refused = |err: StoreError| match err {
        StoreError::SchemaMoved { field } => field,
        other => panic!("expected SchemaMoved, got {other:?}"),
    };
    let err = in_tx(&db, a, async |tx| {
        store::records::insert(tx, &a, "people", "rec-2", &json!({"email": "x"}), b"", &[]).await
    })
    .await
    .expect_err("an identifier in plaintext");
    assert_eq!(refused(err), "email");
    let err = in_tx(&db, a, async |tx| {
        store::records::update(
            tx,
            &a,
            "people",
            "rec-1",
            None,
            &json!({"plan": "pro", "email": "x"}),
            b"",
            &[],
        )
        .await
    })
    .await
    .expect_err("an identifier in plaintext");
    assert_eq!(refused(err), "email");
}

#[tokio::test]
async fn records_are_listed_and_found_in_pages() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    tenant_with_collection(&db, a).await;
    tenant_with_collection(&db, b).await;
    for (n, plan) in [
        (1, "free"),
        (2, "pro"),
        (3, "free"),
        (4, "free"),
        (5, "pro"),
    ] {
        insert_record(
            &db,
            a,
            &format!("rec-{n}"),
            json!({"plan": plan, "tags": ["x", "y"], "n": n}),
            &[entry("email", if n % 2 == 0 { 20 } else { 21 })],
        )
        .await;
    }
    // rec-3 gains a nested public value (and keeps its other fields' tokens).
    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let change = store::records::update(
        &tx,
        &a,
        "people",
        "rec-3",
        None,
        &json!({"plan": "free", "tags": ["x", "y"], "n": 3,
                "address": {"city": "Berlin", "zip": "10115"}}),
        b"sealed",
        &[entry("email", 21)],
    )
    .await
    .expect("update");
    assert!(matches!(change, Change::Done(_)), "{change:?}");
    tx.commit().await.expect("commit");
    drop(primary);
    // Another tenant with the same values is invisible to tenant A's searches.
    insert_record(
        &db,
        b,
        "rec-1",
        json!({"plan": "free"}),
        &[entry("email", 21)],
    )
    .await;

    let primary = db.as_owner().primary().get().await.expect("primary");
    let client = primary.client();
    let ids = |rows: Vec<store::records::RecordRow>| -> Vec<String> {
        rows.into_iter().map(|row| row.id).collect()
    };
    let page = store::records::list(client, &a, "people", None, 2)
        .await
        .expect("list");
    assert_eq!(ids(page), ["rec-1", "rec-2"]);
    let page = store::records::list(client, &a, "people", Some("rec-2"), 10)
        .await
        .expect("list");
    assert_eq!(ids(page), ["rec-3", "rec-4", "rec-5"]);

    let free =
        store::records::find_by_public(client, &a, "people", "plan", &json!("free"), None, 2)
            .await
            .expect("find");
    assert_eq!(ids(free), ["rec-1", "rec-3"]);
    let free = store::records::find_by_public(
        client,
        &a,
        "people",
        "plan",
        &json!("free"),
        Some("rec-3"),
        10,
    )
    .await
    .expect("find");
    assert_eq!(ids(free), ["rec-4"]);
    let numbers = store::records::find_by_public(client, &a, "people", "n", &json!(2), None, 10)
        .await
        .expect("find");
    assert_eq!(ids(numbers), ["rec-2"]);
    let as_text = store::records::find_by_public(client, &a, "people", "n", &json!("2"), None, 10)
        .await
        .expect("find");
    assert!(as_text.is_empty(), "JSON equality: 2 is not \"2\"");
    let part =
        store::records::find_by_public(client, &a, "people", "tags", &json!(["x"]), None, 10)
            .await
            .expect("find");
    assert!(part.is_empty(), "equality, not containment");
    let whole =
        store::records::find_by_public(client, &a, "people", "tags", &json!(["x", "y"]), None, 2)
            .await
            .expect("find");
    assert_eq!(ids(whole), ["rec-1", "rec-2"]);
    let nested = store::records::find_by_public(
        client,
        &a,
        "people",
        "address",
        &json!({"zip": "10115", "city": "Berlin"}),
        None,
        10,
    )
    .await
    .expect("find");
    assert_eq!(
        ids(nested),
        ["rec-3"],
        "objects match whatever their key order"
    );
    let other_tenant =
        store::records::find_by_public(client, &b, "people", "plan", &json!("free"), None, 10)
            .await
            .expect("find");
    assert_eq!(ids(other_tenant), ["rec-1"]);

    let tokens =
        store::records::find_by_token(client, &a, "people", "email", &token(21), Some("rec-1"), 10)
            .await
            .expect("find");
    assert_eq!(ids(tokens), ["rec-3", "rec-5"]);

    assert_eq!(store::records::count(client, &a).await.expect("count"), 5);
    assert_eq!(store::records::count(client, &b).await.expect("count"), 1);
}

fn file(record: &str, name: &str, object_key: &str) -> FileRow {
    FileRow {
        collection: "people".into(),
        record_id: record.into(),
        name: name.into(),
        object_key: object_key.into(),
        size: 1234,
        sha256: vec![5; 32],
        content_type: "application/pdf".into(),
        key_version: 1,
        created_at: micros(2),
    }
}

#[tokio::test]
async fn files_are_stored_replaced_listed_and_deleted() {
    let (_database, db) = region_database("eu-central-1").await;
    let a = tenant(TENANT_A);
    tenant_with_collection(&db, a).await;
    insert_record(&db, a, "rec-1", json!({}), &[]).await;

    let first = file("rec-1", "scan.pdf", "objects/1");
    let replaced = in_tx(&db, a, async |tx| {
        store::files::upsert(tx, &a, &first).await.expect("put")
    })
    .await;
    assert_eq!(replaced, None);
    let second = FileRow {
        object_key: "objects/2".into(),
        size: 99,
        ..first.clone()
    };
    let replaced = in_tx(&db, a, async |tx| {
        store::files::upsert(tx, &a, &second).await.expect("put")
    })
    .await;
    assert_eq!(replaced.as_deref(), Some("objects/1"));
    let other = file("rec-1", "photo.jpg", "objects/3");
    in_tx(&db, a, async |tx| {
        store::files::upsert(tx, &a, &other).await.expect("put")
    })
    .await;

    let primary = db.as_owner().primary().get().await.expect("primary");
    let client = primary.client();
    let stored = store::files::get(client, &a, "people", "rec-1", "scan.pdf")
        .await
        .expect("get");
    assert_eq!(stored.as_ref(), Some(&second));
    let listed = store::files::list_for_record(client, &a, "people", "rec-1")
        .await
        .expect("list");
    assert_eq!(listed, vec![other.clone(), second.clone()]);
    assert_eq!(store::files::count(client, &a).await.expect("count"), 2);

    let deleted = in_tx(&db, a, async |tx| {
        store::files::delete(tx, &a, "people", "rec-1", "scan.pdf")
            .await
            .expect("delete")
    })
    .await;
    assert_eq!(deleted, Some(second));
    let again = in_tx(&db, a, async |tx| {
        store::files::delete(tx, &a, "people", "rec-1", "scan.pdf")
            .await
            .expect("delete")
    })
    .await;
    assert_eq!(again, None);

    let mut primary = db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&a).await.expect("begin");
    let err = store::files::upsert(&tx, &a, &file("rec-none", "x", "objects/4"))
        .await
        .expect_err("no such record");
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

#[tokio::test]
async fn concurrent_updates_leave_exactly_the_last_writers_tokens() {
    let (_database, db) = region_database("eu-central-1").await;
    let a = tenant(TENANT_A);
    tenant_with_collection(&db, a).await;
    insert_record(&db, a, "rec-1", json!({"writer": 0}), &[entry("email", 0)]).await;

    let writers = (1..=8u8).map(|writer| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut primary = db.primary().get().await.expect("primary");
            let tx = primary.begin_tenant(&a).await.expect("begin");
            let change = store::records::update(
                &tx,
                &a,
                "people",
                "rec-1",
                None,
                &json!({"writer": writer, (format!("only_{writer}")): true}),
                b"sealed",
                &[entry("email", writer), entry(&format!("f{writer}"), writer)],
            )
            .await
            .expect("update");
            assert!(matches!(change, Change::Done(_)), "{change:?}");
            tx.commit().await.expect("commit");
        })
    });
    for writer in futures::future::join_all(writers).await {
        writer.expect("writer task");
    }

    let primary = db.as_owner().primary().get().await.expect("primary");
    let row = store::records::get(primary.client(), &a, "people", "rec-1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(row.version, 9, "every update applied once");
    let last = u8::try_from(row.public["writer"].as_u64().expect("writer")).expect("small");
    assert_eq!(
        index_rows(&db, "rec-1").await,
        vec![
            ("email".into(), token(last).to_vec()),
            (format!("f{last}"), token(last).to_vec())
        ],
        "only the last writer's tokens"
    );
    assert_eq!(
        public_tokens(&db, "rec-1").await,
        [format!("public:only_{last}"), "public:writer".to_owned()]
    );
}

#[tokio::test]
async fn a_purge_deletes_only_an_offboarded_tenant_and_only_once() {
    let (_database, db) = region_database("eu-central-1").await;
    let (a, b) = (tenant(TENANT_A), tenant(TENANT_B));
    for id in [a, b] {
        in_tx(&db, id, async |tx| {
            store::tenants::insert(tx, &tenant_row(id))
                .await
                .expect("insert");
        })
        .await;
    }
    // An active tenant is never purged.
    let mut primary = db.primary().get().await.expect("primary");
    let err = store::purge::delete_tenant(&mut primary, &a)
        .await
        .expect_err("active");
    assert!(matches!(err, StoreError::Check { .. }), "{err:?}");

    // Marked once, however often asked; then deleted once; the other tenant stays.
    in_tx(&db, a, async |tx| {
        assert!(store::tenants::mark_offboarded(tx, &a).await.expect("mark"));
        assert!(
            !store::tenants::mark_offboarded(tx, &a)
                .await
                .expect("again")
        );
    })
    .await;
    assert!(
        store::purge::delete_tenant(&mut primary, &a)
            .await
            .expect("purge")
    );
    assert!(
        !store::purge::delete_tenant(&mut primary, &a)
            .await
            .expect("again")
    );
    assert_eq!(
        store::tenants::get(primary.client(), &a)
            .await
            .expect("get"),
        None
    );
    assert!(
        store::tenants::get(primary.client(), &b)
            .await
            .expect("get")
            .is_some()
    );
}
