//! The keyring: provisioning, cache bounds and single flight, rotation and
//! re-encryption, KMS rewrap, crypto-shredding, reads without a primary.

use std::sync::Arc;
use std::time::Duration;

use devstack::testing::{TestDatabase, connect};
use envelope::blind_index::{FieldIndexKey, IndexValue};
use envelope::kms::faulty::FaultyKms;
use envelope::kms::local::LocalKms;
use envelope::kms::{Kms, KmsError};
use envelope::seal::SealContext;
use envelope::{KeyState, KeyVersion};
use model::{RegionId, TenantId};
use service::keys::MAX_FIELD_KEYS;
use service::{KeyError, Keyring, KeyringSettings};
use store::testing::{region_database, settings};
use store::{PgEndpoint, RegionDatabase};
use telemetry::NodeMetrics;

const REGION: &str = "eu-central-1";

struct Fixture {
    database: TestDatabase,
    region_db: RegionDatabase,
    local: Arc<LocalKms>,
    kms: Arc<FaultyKms>,
    keyring: Keyring,
    metrics: Arc<NodeMetrics>,
    _kms_dir: tempfile::TempDir,
}

fn region() -> RegionId {
    RegionId::parse(REGION).expect("region")
}

async fn fixture(settings: KeyringSettings) -> Fixture {
    let (database, region_db) = region_database(REGION).await;
    let kms_dir = tempfile::tempdir().expect("kms dir");
    let local = Arc::new(LocalKms::open_or_create(kms_dir.path(), region()).expect("local kms"));
    let kms = Arc::new(FaultyKms::new(local.clone()));
    let metrics = Arc::new(NodeMetrics::new(REGION));
    let keyring = Keyring::new(region_db.clone(), kms.clone(), metrics.clone(), settings);
    Fixture {
        database,
        region_db,
        local,
        kms,
        keyring,
        metrics,
        _kms_dir: kms_dir,
    }
}

impl Fixture {
    /// Another node of the same region: same database and KMS, its own cache.
    fn second_node(&self) -> Keyring {
        Keyring::new(
            self.region_db.clone(),
            self.kms.clone(),
            Arc::new(NodeMetrics::new(REGION)),
            KeyringSettings::default(),
        )
    }

    async fn tenant(&self) -> TenantId {
        let tenant = TenantId::from_random_bytes(rand::random());
        let mut primary = self.region_db.primary().get().await.expect("primary");
        let tx = primary.begin_tenant(&tenant).await.expect("begin");
        self.keyring
            .provision(&tx, &tenant)
            .await
            .expect("provision");
        tx.commit().await.expect("commit");
        tenant
    }
}

fn ctx<'a>(record: &'a str, field: &'a str) -> SealContext<'a> {
    SealContext {
        collection: "patients",
        record,
        field,
    }
}

#[tokio::test]
async fn provisioned_keys_seal_and_open_and_are_stored_only_wrapped() {
    let f = fixture(KeyringSettings::default()).await;
    let tenant = f.tenant().await;
    let sealed = f
        .keyring
        .seal(&tenant, &ctx("r1", "email"), b"alice@example.com")
        .await
        .expect("seal");
    assert!(
        !sealed.windows(5).any(|w| w == b"alice"),
        "ciphertext holds no plaintext"
    );
    let opened = f
        .keyring
        .open(&tenant, &ctx("r1", "email"), &sealed)
        .await
        .expect("open");
    assert_eq!(opened, b"alice@example.com");

    let versions = f.keyring.versions(&tenant).await.expect("versions");
    assert_eq!(versions.len(), 2, "a data key and an index key");
    for key in &versions {
        assert_eq!(key.state, KeyState::Active);
        let wrapped = key.wrapped.as_ref().expect("wrapped");
        assert_eq!(key.kms_key_id.as_deref(), Some(f.local.key_id().as_str()));
        assert!(
            wrapped.len() > 32,
            "the KMS ciphertext is stored, not the 32-byte key"
        );
    }
    assert!(
        versions[0].kms_context.contains(tenant.as_str())
            && versions[0].kms_context.contains(REGION)
    );

    // Another node unwraps the same key from the stored ciphertext.
    let other = f.second_node();
    assert_eq!(
        other
            .open(&tenant, &ctx("r1", "email"), &sealed)
            .await
            .expect("open elsewhere"),
        b"alice@example.com"
    );
}

#[tokio::test]
async fn the_hot_path_hits_the_cache_and_concurrent_misses_make_one_kms_call() {
    let f = fixture(KeyringSettings::default()).await;
    let tenant = f.tenant().await;
    f.kms.set_latency(Duration::from_millis(100));
    let before = f.kms.decrypt_calls();
    let lookups = (0..16).map(|_| {
        let keyring = f.keyring.clone();
        tokio::spawn(async move {
            keyring
                .active_data_key(&tenant)
                .await
                .expect("key")
                .version()
        })
    });
    for version in futures::future::join_all(lookups).await {
        assert_eq!(version.expect("task"), KeyVersion::FIRST);
    }
    assert_eq!(
        f.kms.decrypt_calls() - before,
        1,
        "single flight: one unwrap for 16 concurrent misses"
    );
    f.kms.set_latency(Duration::ZERO);
    for i in 0..1000 {
        f.keyring
            .seal(&tenant, &ctx(&i.to_string(), "email"), b"x")
            .await
            .expect("seal");
    }
    assert_eq!(
        f.kms.decrypt_calls() - before,
        1,
        "a warm cache never calls the KMS"
    );
    let text = f.metrics.encode();
    assert!(
        text.contains(r#"residency_dek_cache_lookups_total{region="eu-central-1",result="hit"}"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"residency_kms_calls_total{region="eu-central-1",operation="decrypt",outcome="ok"} 1"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn cache_bounds_on_uses_age_and_entries_are_respected() {
    let f = fixture(KeyringSettings {
        max_uses: 3,
        ..KeyringSettings::default()
    })
    .await;
    let tenant = f.tenant().await;
    let before = f.kms.decrypt_calls();
    for _ in 0..6 {
        f.keyring.active_data_key(&tenant).await.expect("key");
    }
    assert_eq!(
        f.kms.decrypt_calls() - before,
        2,
        "each unwrapped copy serves at most 3 uses"
    );

    let f = fixture(KeyringSettings {
        max_age: Duration::from_millis(300),
        ..KeyringSettings::default()
    })
    .await;
    let tenant = f.tenant().await;
    let before = f.kms.decrypt_calls();
    f.keyring.active_data_key(&tenant).await.expect("key");
    tokio::time::sleep(Duration::from_millis(600)).await;
    f.keyring.active_data_key(&tenant).await.expect("key");
    assert_eq!(
        f.kms.decrypt_calls() - before,
        2,
        "an expired copy is unwrapped anew"
    );

    let f = fixture(KeyringSettings {
        capacity: 3,
        ..KeyringSettings::default()
    })
    .await;
    for _ in 0..8 {
        let tenant = f.tenant().await;
        f.keyring.active_data_key(&tenant).await.expect("key");
    }
    assert!(
        f.keyring.cached_keys().await <= 3,
        "at most 3 unwrapped keys in memory"
    );
}

#[tokio::test]
async fn kms_failures_surface_typed_and_are_not_cached() {
    let f = fixture(KeyringSettings::default()).await;
    let tenant = f.tenant().await;
    f.kms
        .fail_next(1, KmsError::Unavailable("throttled".into()));
    let err = f
        .keyring
        .active_data_key(&tenant)
        .await
        .expect_err("kms down");
    assert_eq!(
        err,
        KeyError::Kms(KmsError::Unavailable("throttled".into()))
    );
    f.keyring
        .active_data_key(&tenant)
        .await
        .expect("the next call unwraps");
}

#[tokio::test]
async fn rotation_keeps_old_data_readable_and_reencrypt_moves_it_forward() {
    let f = fixture(KeyringSettings::default()).await;
    let tenant = f.tenant().await;
    let old = f
        .keyring
        .seal(&tenant, &ctx("r1", "name"), b"Alice Example")
        .await
        .expect("seal v1");
    let version = f.keyring.rotate(&tenant).await.expect("rotate");
    assert_eq!(version.get(), 2);
    assert_eq!(
        f.keyring
            .active_data_key(&tenant)
            .await
            .expect("active")
            .version(),
        version
    );
    assert_eq!(
        f.keyring
            .open(&tenant, &ctx("r1", "name"), &old)
            .await
            .expect("v1 opens"),
        b"Alice Example"
    );

    let moved = f
        .keyring
        .reencrypt(&tenant, &ctx("r1", "name"), &old)
        .await
        .expect("reencrypt")
        .expect("moved");
    assert_eq!(
        envelope::seal::sealed_version(&moved).expect("version"),
        version
    );
    assert_eq!(
        f.keyring
            .open(&tenant, &ctx("r1", "name"), &moved)
            .await
            .expect("v2 opens"),
        b"Alice Example"
    );
    assert_eq!(
        f.keyring
            .reencrypt(&tenant, &ctx("r1", "name"), &moved)
            .await
            .expect("noop"),
        None
    );

    let states: Vec<(u32, KeyState)> = f
        .keyring
        .versions(&tenant)
        .await
        .expect("versions")
        .iter()
        .filter(|k| k.purpose == envelope::KeyPurpose::Data)
        .map(|k| (k.version.get(), k.state))
        .collect();
    assert_eq!(states, [(1, KeyState::Retired), (2, KeyState::Active)]);
}

#[tokio::test]
async fn kms_key_rotation_rewraps_every_key_without_touching_data() {
    let f = fixture(KeyringSettings::default()).await;
    let tenants = [f.tenant().await, f.tenant().await, f.tenant().await];
    let sealed = f
        .keyring
        .seal(&tenants[1], &ctx("r9", "email"), b"bob@example.com")
        .await
        .expect("seal");
    let old_master = f.local.key_id();
    let new_master = f.local.rotate_master_key().expect("rotate master key");
    assert_ne!(old_master, new_master);

    let report = f.keyring.rewrap_all(2).await.expect("rewrap");
    assert_eq!(report.rewrapped, 6, "3 tenants × (data + index)");
    assert_eq!(report.kms_key_id.as_deref(), Some(new_master.as_str()));
    let db = connect(f.database.primary.clone()).await;
    let under_old: i64 = db
        .query_one(
            "select count(*) from tenant_keys where kms_key_id = $1",
            &[&old_master],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(under_old, 0);
    // A node with a cold cache unwraps through the new master key.
    let fresh = f.second_node();
    assert_eq!(
        fresh
            .open(&tenants[1], &ctx("r9", "email"), &sealed)
            .await
            .expect("open"),
        b"bob@example.com"
    );
    assert_eq!(
        f.keyring.rewrap_all(2).await.expect("again").rewrapped,
        0,
        "nothing left to rewrap"
    );
}

#[tokio::test]
async fn a_shredded_tenant_is_unreadable_forever_even_with_a_warm_cache() {
    let f = fixture(KeyringSettings::default()).await;
    let tenant = f.tenant().await;
    let survivor = f.tenant().await;
    let sealed = f
        .keyring
        .seal(&tenant, &ctx("r1", "email"), b"carol@example.com")
        .await
        .expect("seal");
    let kept = f
        .keyring
        .seal(&survivor, &ctx("r1", "email"), b"dave@example.com")
        .await
        .expect("seal");
    f.keyring
        .open(&tenant, &ctx("r1", "email"), &sealed)
        .await
        .expect("warm the cache");

    assert_eq!(f.keyring.shred(&tenant).await.expect("shred"), 2);
    let shredded = KeyError::Shredded { tenant };
    assert_eq!(
        f.keyring
            .open(&tenant, &ctx("r1", "email"), &sealed)
            .await
            .expect_err("gone"),
        shredded
    );
    assert_eq!(
        f.keyring.active_data_key(&tenant).await.expect_err("gone"),
        shredded
    );
    assert_eq!(
        f.second_node()
            .open(&tenant, &ctx("r1", "email"), &sealed)
            .await
            .expect_err("gone"),
        shredded
    );
    assert_eq!(
        f.keyring.rotate(&tenant).await.expect_err("no new keys"),
        KeyError::NotProvisioned { tenant }
    );

    let db = connect(f.database.primary.clone()).await;
    let left: i64 = db
        .query_one(
            "select count(*) from tenant_keys where tenant_id = $1 and wrapped_key is not null",
            &[&tenant.as_str()],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        left, 0,
        "no wrapped key remains: the KMS cannot help either"
    );
    assert_eq!(
        f.keyring
            .open(&survivor, &ctx("r1", "email"), &kept)
            .await
            .expect("others unaffected"),
        b"dave@example.com"
    );
}

#[tokio::test]
async fn derived_field_keys_are_cached_with_their_index_key_and_go_with_it() {
    let f = fixture(KeyringSettings {
        max_uses: 4,
        ..KeyringSettings::default()
    })
    .await;
    let tenant = f.tenant().await;
    let value = IndexValue::String("ada@example.org");
    let keys = f.keyring.index_keys(&tenant).await.expect("index keys");
    let token = keys.field("people", "email").token(&value).expect("token");
    let index_key = f.keyring.index_key(&tenant).await.expect("index key");
    assert_eq!(
        FieldIndexKey::derive(&index_key, "people", "email")
            .token(&value)
            .expect("token"),
        token,
        "a cached key is the derived key"
    );
    let again = f.keyring.index_keys(&tenant).await.expect("index keys");
    assert!(
        Arc::ptr_eq(
            &keys.field("people", "email"),
            &again.field("people", "email")
        ),
        "derived once per cached index key"
    );
    assert_eq!(again.cached_fields(), 1);

    // Bounded: beyond the bound keys are derived per use, and still right.
    for n in 0..MAX_FIELD_KEYS + 10 {
        again.field("people", &format!("field{n}"));
    }
    assert_eq!(again.cached_fields(), MAX_FIELD_KEYS);
    let beyond = format!("field{}", MAX_FIELD_KEYS + 5);
    assert_eq!(
        again.field("people", &beyond).token(&value).expect("token"),
        FieldIndexKey::derive(&index_key, "people", &beyond)
            .token(&value)
            .expect("token")
    );

    // The fourth use of the index key drops its entry (max_uses): the field keys go
    // with it, and the next use starts a fresh entry.
    f.keyring.index_keys(&tenant).await.expect("fourth use");
    let fresh = f.keyring.index_keys(&tenant).await.expect("fresh entry");
    assert_eq!(
        fresh.cached_fields(),
        0,
        "field keys never outlive their key"
    );
    fresh.field("people", "email");

    // Shredding: no field key can be had any more, and none stays cached.
    f.keyring.shred(&tenant).await.expect("shred");
    assert_eq!(
        f.keyring.index_keys(&tenant).await.expect_err("gone"),
        KeyError::Shredded { tenant }
    );
    assert_eq!(f.keyring.cached_keys().await, 0);
}

#[tokio::test]
async fn keys_load_from_a_replica_while_the_primary_is_down() {
    let f = fixture(KeyringSettings::default()).await;
    let tenant = f.tenant().await;
    let sealed = f
        .keyring
        .seal(&tenant, &ctx("r1", "email"), b"erin@example.com")
        .await
        .expect("seal");
    // Wait until the replica has the keys, then build a node whose primary is unreachable.
    let replica = connect(f.database.replica.clone()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while replica
        .query_one(
            "select count(*) from tenant_keys where tenant_id = $1",
            &[&tenant.as_str()],
        )
        .await
        .expect("count")
        .get::<_, i64>(0)
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "keys never replicated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut dead = f.database.primary.clone();
    dead.port(devstack::free_loopback_port().expect("port"));
    let mut without_primary = settings(&f.database);
    without_primary.primary = PgEndpoint::new("primary", dead);
    without_primary.pool_timeout = Duration::from_secs(1);
    let db = RegionDatabase::new(region(), &without_primary).expect("pools");
    let keyring = Keyring::new(
        db,
        f.kms.clone(),
        Arc::new(NodeMetrics::new(REGION)),
        KeyringSettings::default(),
    );
    assert_eq!(
        keyring
            .open(&tenant, &ctx("r1", "email"), &sealed)
            .await
            .expect("read from replica"),
        b"erin@example.com"
    );
    let err = keyring
        .rotate(&tenant)
        .await
        .expect_err("writes fail closed");
    assert!(matches!(err, KeyError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_tenant_or_record_does_not_open() {
    let f = fixture(KeyringSettings::default()).await;
    let (a, b) = (f.tenant().await, f.tenant().await);
    let sealed = f
        .keyring
        .seal(&a, &ctx("r1", "email"), b"frank@example.com")
        .await
        .expect("seal");
    let err = f
        .keyring
        .open(&b, &ctx("r1", "email"), &sealed)
        .await
        .expect_err("other tenant");
    assert_eq!(
        err,
        KeyError::Open(envelope::seal::OpenError::Authentication)
    );
    let err = f
        .keyring
        .open(&a, &ctx("r2", "email"), &sealed)
        .await
        .expect_err("other record");
    assert_eq!(
        err,
        KeyError::Open(envelope::seal::OpenError::Authentication)
    );
}

#[tokio::test]
async fn reencrypt_object_moves_a_file_to_the_active_key_version() {
    use envelope::objects::local::LocalObjectStore;
    use envelope::objects::{ObjectKey, ObjectStore};
    use envelope::sealed_objects::{get_sealed, put_sealed, sealed_object_version};
    use futures::StreamExt as _;

    let f = fixture(KeyringSettings::default()).await;
    let tenant = f.tenant().await;
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalObjectStore::new(dir.path().to_path_buf()).expect("store");
    let object = ObjectKey::parse("tenants/t/records/r1/files/report.pdf").expect("key");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let body = futures::stream::iter(vec![Ok(bytes::Bytes::from(content.clone()))]);
    let key = f.keyring.active_data_key(&tenant).await.expect("key");
    put_sealed(&store, &key, &object, Box::pin(body), None)
        .await
        .expect("put");

    assert!(
        !f.keyring
            .reencrypt_object(&tenant, &store, &object)
            .await
            .expect("noop"),
        "already current"
    );
    let version = f.keyring.rotate(&tenant).await.expect("rotate");
    assert!(
        f.keyring
            .reencrypt_object(&tenant, &store, &object)
            .await
            .expect("reencrypt")
    );
    assert_eq!(
        sealed_object_version(&store, &object)
            .await
            .expect("version"),
        version
    );

    let keyring = f.keyring.clone();
    let mut stream = get_sealed(&store, &object, move |v| async move {
        keyring
            .data_key(&tenant, v)
            .await
            .map_err(|e| envelope::sealed_objects::SealedObjectError::Key(e.to_string()))
    })
    .await
    .expect("open");
    let mut read = Vec::new();
    while let Some(chunk) = stream.next().await {
        read.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(read, content);
    assert!(store.check().await.is_ok());
}
