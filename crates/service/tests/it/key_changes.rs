//! Key changes reach every node of a region through the database's notifications: a
//! shred or a rotation on one node empties another node's cache of the tenant's keys
//! within a second (not its cache TTL), the listener comes back after its connection is
//! killed and what changed meanwhile is not served, and an audit signing key rotated on
//! one node signs on every node while what the old key signed keeps verifying.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use audit::{Action, Actor, ActorKind, KeySet, NewEvent, Outcome};
use devstack::testing::{TestDatabase, connect};
use envelope::KeyVersion;
use envelope::kms::Kms;
use envelope::kms::local::LocalKms;
use envelope::seal::{self, SealContext};
use model::{RegionId, TenantId};
use service::{AuditKeys, AuditLog, KeyChanges, KeyError, Keyring, KeyringSettings};
use service::{RegionAuditKeys, SigningKeys};
use store::notifications::LISTENER_APPLICATION_NAME;
use store::testing::region_database;
use store::{ListenerSettings, RegionDatabase};
use telemetry::NodeMetrics;

const REGION: &str = "eu-west-1";

/// Long enough that only a notification can explain a change seen within a second.
fn long_lived() -> KeyringSettings {
    KeyringSettings {
        max_age: Duration::from_secs(600),
        active_version_ttl: Duration::from_secs(600),
        ..KeyringSettings::default()
    }
}

fn region() -> RegionId {
    RegionId::parse(REGION).expect("region")
}

struct Region {
    database: TestDatabase,
    region_db: RegionDatabase,
    kms: Arc<dyn Kms>,
    _kms_dir: tempfile::TempDir,
}

async fn region_fixture() -> Region {
    let (database, region_db) = region_database(REGION).await;
    let kms_dir = tempfile::tempdir().expect("kms dir");
    let kms: Arc<dyn Kms> =
        Arc::new(LocalKms::open_or_create(kms_dir.path(), region()).expect("local kms"));
    Region {
        database,
        region_db,
        kms,
        _kms_dir: kms_dir,
    }
}

impl Region {
    /// A node's keyring: its own cache on the region's database and KMS.
    fn keyring(&self) -> Keyring {
        Keyring::new(
            self.region_db.clone(),
            self.kms.clone(),
            Arc::new(NodeMetrics::new(REGION)),
            long_lived(),
        )
    }

    async fn tenant(&self, keyring: &Keyring) -> TenantId {
        let tenant = TenantId::from_random_bytes(rand::random());
        let mut primary = self.region_db.primary().get().await.expect("primary");
        let tx = primary.begin_tenant(&tenant).await.expect("begin");
        keyring.provision(&tx, &tenant).await.expect("provision");
        tx.commit().await.expect("commit");
        tenant
    }

    /// Kills the sessions of every key-change listener of this database.
    async fn kill_listeners(&self) {
        let db = connect(self.database.primary.clone()).await;
        let killed: i64 = db
            .query_one(
                "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity
                 where application_name = $1 and datname = current_database()) killed",
                &[&LISTENER_APPLICATION_NAME],
            )
            .await
            .expect("terminate")
            .get(0);
        assert!(killed >= 1, "a listener was connected");
        let gone = Instant::now();
        loop {
            let left: i64 = db
                .query_one(
                    "select count(*) from pg_stat_activity
                     where application_name = $1 and datname = current_database()",
                    &[&LISTENER_APPLICATION_NAME],
                )
                .await
                .expect("count")
                .get(0);
            if left == 0 {
                return;
            }
            assert!(gone.elapsed() < Duration::from_secs(5), "the sessions end");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn listening(changes: &KeyChanges, sessions: u64) {
    let mut watch = changes.sessions();
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|count| *count >= sessions),
    )
    .await
    .expect("the listener listens in time")
    .expect("the listener runs");
}

fn ctx() -> SealContext<'static> {
    SealContext {
        collection: "patients",
        record: "r1",
        field: "email",
    }
}

/// Polls `check` until it holds, for at most a second; returns how long it took.
async fn within_a_second<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what} within a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn sealed_version(keyring: &Keyring, tenant: &TenantId) -> KeyVersion {
    let sealed = keyring.seal(tenant, &ctx(), b"x").await.expect("seal");
    seal::sealed_version(&sealed).expect("version")
}

#[tokio::test]
async fn a_rotation_or_shred_on_one_node_empties_the_others_cache_within_a_second() {
    let stack = region_fixture().await;
    let first = stack.keyring();
    let second = stack.keyring();
    let unaware = stack.keyring();
    let changes = KeyChanges::spawn(
        &stack.region_db,
        second.clone(),
        None,
        ListenerSettings::default(),
    );
    listening(&changes, 1).await;
    let tenant = stack.tenant(&first).await;
    let other = stack.tenant(&first).await;
    let sealed = first
        .seal(&tenant, &ctx(), b"erin@example.com")
        .await
        .expect("seal");
    let kept = first
        .seal(&other, &ctx(), b"frank@example.com")
        .await
        .expect("seal");
    for node in [&second, &unaware] {
        assert_eq!(sealed_version(node, &tenant).await.get(), 1);
        node.open(&tenant, &ctx(), &sealed).await.expect("warm");
        node.open(&other, &ctx(), &kept).await.expect("warm");
    }

    assert_eq!(first.rotate(&tenant).await.expect("rotate").get(), 2);
    within_a_second("the second node seals with version 2", || async {
        sealed_version(&second, &tenant).await.get() == 2
    })
    .await;
    // Without the notifications the cached version would seal for its 10 minutes.
    assert_eq!(sealed_version(&unaware, &tenant).await.get(), 1);

    first.shred(&tenant).await.expect("shred");
    within_a_second(
        "the second node cannot open the shredded tenant",
        || async {
            second.open(&tenant, &ctx(), &sealed).await == Err(KeyError::Shredded { tenant })
        },
    )
    .await;
    assert!(
        unaware.open(&tenant, &ctx(), &sealed).await.is_ok(),
        "a node that does not listen keeps its copy: this is what the notifications fix"
    );
    assert_eq!(
        second.open(&other, &ctx(), &kept).await.expect("others"),
        b"frank@example.com"
    );
    changes.stop().await;
}

#[tokio::test]
async fn the_listener_comes_back_after_its_session_is_killed_and_serves_nothing_missed() {
    let stack = region_fixture().await;
    let first = stack.keyring();
    let second = stack.keyring();
    // A slow first retry: the test shreds while the second node does not listen.
    let settings = ListenerSettings {
        first_retry: Duration::from_millis(500),
        ..ListenerSettings::default()
    };
    let changes = KeyChanges::spawn(&stack.region_db, second.clone(), None, settings);
    listening(&changes, 1).await;
    let missed = stack.tenant(&first).await;
    let later = stack.tenant(&first).await;
    let sealed_missed = first.seal(&missed, &ctx(), b"m").await.expect("seal");
    let sealed_later = first.seal(&later, &ctx(), b"l").await.expect("seal");
    second
        .open(&missed, &ctx(), &sealed_missed)
        .await
        .expect("warm");
    second
        .open(&later, &ctx(), &sealed_later)
        .await
        .expect("warm");

    stack.kill_listeners().await;
    first
        .shred(&missed)
        .await
        .expect("shred while nobody listens");
    listening(&changes, 2).await;
    assert_eq!(
        second.open(&missed, &ctx(), &sealed_missed).await,
        Err(KeyError::Shredded { tenant: missed }),
        "the reconnection dropped what may have changed unheard"
    );

    first.shred(&later).await.expect("shred");
    within_a_second("the reconnected listener still invalidates", || async {
        second.open(&later, &ctx(), &sealed_later).await
            == Err(KeyError::Shredded { tenant: later })
    })
    .await;
    changes.stop().await;
}

fn event(tenant: TenantId) -> NewEvent {
    NewEvent {
        time: SystemTime::now(),
        region: region(),
        tenant,
        actor: Actor {
            kind: ActorKind::Operator,
            id: "ops".into(),
        },
        action: Action::RecordCreate,
        resource: "records/r1".into(),
        outcome: Outcome::Success,
        request_id: "req-1".into(),
        via_region: region(),
    }
}

async fn append(region_db: &RegionDatabase, log: &AuditLog, tenant: TenantId) {
    let mut primary = region_db.primary().get().await.expect("primary");
    let tx = primary.begin_tenant(&tenant).await.expect("begin");
    log.append(&tx, event(tenant)).await.expect("append");
    tx.commit().await.expect("commit");
}

async fn bundle(log: &AuditLog, tenant: &TenantId) -> Vec<u8> {
    let mut out = Vec::new();
    log.export(tenant, None, None, &mut out)
        .await
        .expect("export");
    out
}

/// A node's audit log started as `node::start` does: the configured key text imported
/// (or known), the region's keys loaded from the database.
async fn started_log(stack: &Region, text: &str) -> (AuditLog, RegionAuditKeys) {
    let configured = AuditKeys::parse(&region(), text).expect("key text");
    let keys = RegionAuditKeys::new(stack.region_db.clone(), stack.kms.clone());
    let loaded = keys
        .bootstrap(&SigningKeys::from_key_text(&configured))
        .await
        .expect("bootstrap");
    let log = AuditLog::new(
        stack.region_db.clone(),
        audit::SigningKey::generate(region()),
        Vec::new(),
    );
    log.install_keys(loaded);
    (log, keys)
}

#[tokio::test]
async fn an_audit_key_rotated_on_one_node_signs_on_every_node_and_old_signatures_verify() {
    let stack = region_fixture().await;
    let text = AuditKeys::generate(region()).to_text();
    let (first, region_keys) = started_log(&stack, text.expose()).await;
    let (second, second_keys) = started_log(&stack, text.expose()).await;
    let original = first.signing_key().key_id().to_owned();
    assert_eq!(
        second.signing_key().key_id(),
        original,
        "one key for the region"
    );
    let changes = KeyChanges::spawn(
        &stack.region_db,
        stack.keyring(),
        Some((second.clone(), second_keys)),
        ListenerSettings::default(),
    );
    listening(&changes, 1).await;

    let tenant = TenantId::from_random_bytes(rand::random());
    append(&stack.region_db, &first, tenant).await;
    let before = bundle(&first, &tenant).await;
    assert_eq!(second.checkpoint(10).await.expect("checkpoint"), 1);

    let rotated = region_keys.rotate().await.expect("rotate");
    let new_key = rotated.current().key_id().to_owned();
    assert_ne!(new_key, original);
    first.install_keys(rotated);
    within_a_second("the second node signs with the new key", || async {
        second.signing_key().key_id() == new_key
    })
    .await;

    append(&stack.region_db, &second, tenant).await;
    assert_eq!(second.checkpoint(10).await.expect("checkpoint"), 1);
    let after = bundle(&second, &tenant).await;
    let db = connect(stack.database.primary.clone()).await;
    let checkpoints: Vec<audit::Checkpoint> = db
        .query(
            "select seq, hash, signed_at, key_id, signature from audit_checkpoints
             where tenant_id = $1 order by seq",
            &[&tenant.as_str()],
        )
        .await
        .expect("checkpoints")
        .iter()
        .map(|row| audit::Checkpoint {
            tenant,
            region: region(),
            seq: u64::try_from(row.get::<_, i64>(0)).expect("seq"),
            hash: audit::Hash::from_bytes(row.get::<_, Vec<u8>>(1).try_into().expect("32 bytes")),
            signed_at: row.get(2),
            key_id: row.get(3),
            signature: audit::Signature::from_slice(&row.get::<_, Vec<u8>>(4)).expect("signature"),
        })
        .collect();
    let signers: Vec<&str> = checkpoints.iter().map(|c| c.key_id.as_str()).collect();
    assert_eq!(signers, [original.as_str(), new_key.as_str()]);

    // What a verifier fetches from GET /v1/audit/keys verifies both bundles.
    let published = second.signing_keys();
    let listed: Vec<_> = published
        .published()
        .iter()
        .map(|k| k.public.clone())
        .collect();
    assert_eq!(
        listed.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(),
        [new_key.as_str(), original.as_str()],
        "the current key first, the retired one still published"
    );
    let current = &published.published()[0];
    let retired = &published.published()[1];
    assert!(current.valid_from.is_some() && current.valid_until.is_none());
    assert!(
        retired.valid_from.is_none() && retired.valid_until.is_some(),
        "imported from the key text: signed since before the region recorded it, until the rotation"
    );
    assert!(retired.valid_until <= current.valid_from);
    let keys = KeySet::from_keys(listed).expect("published keys");
    for checkpoint in &checkpoints {
        audit::verify_checkpoint(&keys, checkpoint).expect("checkpoint verifies");
    }
    let old = audit::verify_bundle(std::io::Cursor::new(&before), &keys).expect("old bundle");
    let new = audit::verify_bundle(std::io::Cursor::new(&after), &keys).expect("new bundle");
    assert_eq!(
        (old.key_id.as_str(), new.key_id.as_str()),
        (original.as_str(), new_key.as_str())
    );
    // The old public key alone (`--public-key`) still verifies what it signed.
    let old_only = KeySet::from_public_key(&retired.public.public_key).expect("key");
    audit::verify_bundle(std::io::Cursor::new(&before), &old_only).expect("old key alone");

    // A node started later with the same (old) key text signs with the region's key.
    let (restarted, _) = started_log(&stack, text.expose()).await;
    assert_eq!(restarted.signing_key().key_id(), new_key);

    // The retired key's seed is gone; the current one rests sealed, in clear nowhere.
    let retired_seeds: i64 = db
        .query_one(
            "select count(*) from audit_signing_keys where state = 'retired' and sealed_seed is not null",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(retired_seeds, 0);
    let seeds: Vec<Vec<u8>> = db
        .query(
            "select sealed_seed from audit_signing_keys where sealed_seed is not null",
            &[],
        )
        .await
        .expect("seeds")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let secret = first.signing_key().to_bytes();
    let configured = AuditKeys::parse(&region(), text.expose()).expect("text");
    for stored in &seeds {
        for seed in [secret, configured.current().to_bytes()] {
            assert!(!stored.windows(32).any(|w| w == seed), "a seed in clear");
        }
    }
    changes.stop().await;
}

#[tokio::test]
async fn a_key_text_with_an_unknown_signing_key_rotates_the_region_to_it() {
    let stack = region_fixture().await;
    let old = AuditKeys::generate(region());
    let (first, _) = started_log(&stack, old.to_text().expose()).await;
    // The operator rotated in the text (the old key becomes a `retired` line).
    let rotated_text = old.rotate().to_text();
    let (second, keys) = started_log(&stack, rotated_text.expose()).await;
    let new_key = second.signing_key().key_id().to_owned();
    assert_ne!(first.signing_key().key_id(), new_key);
    let reloaded = keys.load().await.expect("load");
    assert_eq!(reloaded.current().key_id(), new_key);
    assert_eq!(reloaded.published().len(), 2, "nothing published twice");
    // A tampered sealed seed does not open.
    let db = connect(stack.database.primary.clone()).await;
    db.execute(
        "update audit_signing_keys set sealed_seed = set_byte(sealed_seed, 20, get_byte(sealed_seed, 20) # 1) where state = 'current'",
        &[],
    )
    .await
    .expect("tamper");
    let err = keys.load().await.expect_err("tampered");
    assert!(
        matches!(err, service::AuditKeyError::Corrupt { .. }),
        "{err}"
    );
}

/// The region's KMS key on the AWS path (moto), with an alias as the catalogue names it;
/// each call of the returned function is a node's own client of it.
async fn moto_kms() -> impl Fn() -> Arc<dyn Kms> {
    use envelope::aws::{AwsCredentials, AwsSettings, kms_client};
    let settings = AwsSettings {
        region: region(),
        endpoint_url: Some(devstack::testing::shared_moto().endpoint_url()),
        credentials: AwsCredentials::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    };
    let client = kms_client(&settings);
    let created = client
        .create_key()
        .description("audit signing keys test")
        .send()
        .await
        .expect("create KMS key");
    let key_id = created
        .key_metadata()
        .expect("key metadata")
        .key_id()
        .to_owned();
    let alias = format!(
        "alias/residency-audit-{}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(key_id)
        .send()
        .await
        .expect("create alias");
    move || Arc::new(envelope::kms::aws::AwsKms::new(&settings, alias.clone())) as Arc<dyn Kms>
}

#[tokio::test]
async fn audit_keys_are_sealed_under_the_aws_kms_and_open_on_every_node() {
    let (_database, region_db) = region_database(REGION).await;
    let kms = moto_kms().await;
    let configured = AuditKeys::generate(region());
    let first = RegionAuditKeys::new(region_db.clone(), kms());
    let loaded = first
        .bootstrap(&SigningKeys::from_key_text(&configured))
        .await
        .expect("bootstrap on moto");
    assert_eq!(loaded.current().key_id(), configured.current().key_id());
    let rotated = first.rotate().await.expect("rotate on moto");
    // Another node, its own client: the sealed seed opens to the same key.
    let second = RegionAuditKeys::new(region_db, kms());
    let seen = second.load().await.expect("load on moto");
    assert_eq!(seen.current().key_id(), rotated.current().key_id());
    assert_eq!(
        seen.current().to_bytes(),
        rotated.current().to_bytes(),
        "the same seed"
    );
}

#[tokio::test]
async fn after_a_kms_key_change_the_sealed_seeds_are_rewrapped_and_still_open() {
    let (database, region_db) = region_database(REGION).await;
    let kms_dir = tempfile::tempdir().expect("kms dir");
    let local = Arc::new(LocalKms::open_or_create(kms_dir.path(), region()).expect("local kms"));
    let keys = RegionAuditKeys::new(region_db, local.clone());
    let configured = AuditKeys::generate(region());
    keys.bootstrap(&SigningKeys::from_key_text(&configured))
        .await
        .expect("bootstrap");
    let current = keys.rotate().await.expect("rotate");
    let old_kms_key = local.key_id();
    assert_eq!(keys.rewrap().await.expect("nothing to move"), 0);

    let new_kms_key = local.rotate_master_key().expect("new master key");
    assert_ne!(new_kms_key, old_kms_key);
    assert_eq!(
        keys.rewrap().await.expect("rewrap"),
        1,
        "the current key's seed (a retired key's is erased)"
    );
    assert_eq!(keys.rewrap().await.expect("again"), 0, "idempotent");
    let db = connect(database.primary.clone()).await;
    let wrapped_under: Vec<Option<String>> = db
        .query(
            "select kms_key_id from audit_signing_keys where state = 'current'",
            &[],
        )
        .await
        .expect("rows")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        wrapped_under
            .iter()
            .all(|id| id.as_deref() == Some(new_kms_key.as_str())),
        "{wrapped_under:?}"
    );
    let loaded = keys.load().await.expect("opens after the rewrap");
    assert_eq!(loaded.current().to_bytes(), current.current().to_bytes());
}

#[tokio::test]
async fn a_rotation_the_kms_refuses_changes_nothing_and_is_retryable() {
    use envelope::kms::KmsError;
    use envelope::kms::faulty::FaultyKms;
    let stack = region_fixture().await;
    let kms = Arc::new(FaultyKms::new(stack.kms.clone()));
    let keys = RegionAuditKeys::new(stack.region_db.clone(), kms.clone());
    let configured = AuditKeys::generate(region());
    keys.bootstrap(&SigningKeys::from_key_text(&configured))
        .await
        .expect("bootstrap");

    kms.fail_next(1, KmsError::Unavailable("throttled".into()));
    let err = keys.rotate().await.expect_err("the KMS is down");
    assert!(
        matches!(
            service::ServiceError::from(err),
            service::ServiceError::Unavailable { what: "kms", .. }
        ),
        "a 503 the operator may retry"
    );
    let unchanged = keys.load().await.expect("load");
    assert_eq!(unchanged.current().key_id(), configured.current().key_id());
    assert_eq!(unchanged.published().len(), 1, "nothing was added");

    let rotated = keys.rotate().await.expect("the retry works");
    assert_ne!(rotated.current().key_id(), configured.current().key_id());
}
