//! Files through a failing object store or KMS: the service fails closed. An upload whose
//! object write or key unwrap fails answers an error and leaves neither a file row nor an
//! object; a download whose read fails answers an error, and one whose stream breaks
//! part-way ends in an error, never in a clean end of truncated data.

use std::collections::BTreeMap;
use std::sync::Arc;

use audit::{Actor, ActorKind};
use bytes::Bytes;
use envelope::kms::KmsError;
use envelope::kms::faulty::FaultyKms;
use envelope::kms::local::LocalKms;
use envelope::objects::faulty::FaultyObjectStore;
use envelope::objects::local::LocalObjectStore;
use envelope::objects::{ByteStream, ObjectStore, ObjectStoreError};
use futures::StreamExt;
use model::{CollectionSchema, FieldClass, FieldSpec, FieldType, RegionId, Role};
use serde_json::Map;
use service::access::OperatorToken;
use service::{
    AuditKeys, AuditLog, AuditSettings, Caller, Keyring, KeyringSettings, RegionService,
    RequestContext, ServiceError, ServiceParts, ServiceSettings,
};
use store::ReadConsistency;
use store::testing::region_database;
use telemetry::NodeMetrics;

const REGION: &str = "eu-central-1";
const OPERATOR: &str = "rso.test-operator-token-of-the-object-store-tests";

pub(crate) struct Fixture {
    pub(crate) service: RegionService,
    pub(crate) objects: Arc<FaultyObjectStore>,
    kms: Arc<FaultyKms>,
    pub(crate) caller: Caller,
    record: String,
    /// The region's database and the node's metrics, for the outbox's sweeper.
    pub(crate) db: store::RegionDatabase,
    pub(crate) metrics: Arc<NodeMetrics>,
    _database: devstack::testing::TestDatabase,
    _dir: tempfile::TempDir,
}

/// A node whose object store and KMS are local ones behind failure injection, with a
/// tenant, a collection and a record to attach files to. Unwrapped keys are not cached,
/// so every use of a key reaches the KMS.
pub(crate) async fn fixture() -> Fixture {
    let (database, region_db) = region_database(REGION).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let region = RegionId::parse(REGION).expect("region");
    let kms = Arc::new(FaultyKms::new(Arc::new(
        LocalKms::open_or_create(&dir.path().join("kms"), region.clone()).expect("local kms"),
    )));
    let local: Arc<dyn ObjectStore> =
        Arc::new(LocalObjectStore::new(dir.path().join("objects")).expect("local objects"));
    let objects = Arc::new(FaultyObjectStore::new(local));
    let metrics = Arc::new(NodeMetrics::new(REGION));
    let node_metrics = metrics.clone();
    let region_db_for_tests = region_db.clone();
    let service = RegionService::new(ServiceParts {
        database: region_db.clone(),
        keyring: Keyring::new(
            region_db.clone(),
            kms.clone(),
            metrics.clone(),
            KeyringSettings {
                capacity: 0,
                ..KeyringSettings::default()
            },
        ),
        objects: objects.clone(),
        audit_objects: Arc::new(
            LocalObjectStore::new(dir.path().join("audit-bucket")).expect("local audit bucket"),
        ),
        audit: AuditLog::with_settings(
            region_db,
            AuditKeys::generate(region.clone()),
            AuditSettings::default(),
            metrics,
        ),
        regions: vec![region.clone()],
        operator: OperatorToken::new(OPERATOR),
        settings: ServiceSettings::default(),
        registry: None,
        rate_limit: service::rate_limit::RateLimit::default(),
    });
    let context = RequestContext {
        request_id: "req-failing-backends".to_owned(),
        via_region: region,
        client: None,
    };
    let operator = service
        .authorize_operator(Some(OPERATOR))
        .await
        .expect("operator token");
    let fields = model::NewTenantFields {
        name: "Failing Backends",
        home_region: REGION,
        allowed_regions: None,
        transit: None,
        analytics_export: false,
    };
    let new = model::NewTenant::parse(fields, |region| service.knows_region(region))
        .expect("a valid new tenant");
    let created = service
        .create_tenant(&operator, new, &context)
        .await
        .expect("create tenant");
    let caller = Caller {
        tenant: created.tenant.id,
        actor: Actor {
            kind: ActorKind::ApiKey,
            id: created.admin_key.key_id.clone(),
        },
        role: Some(Role::Admin),
        context,
    };
    let fields = BTreeMap::from([(
        "subject".to_owned(),
        FieldSpec::unindexed(FieldType::String, FieldClass::Public),
    )]);
    let schema = CollectionSchema::new(fields, Vec::new(), None, None).expect("schema");
    service
        .put_collection(&caller, "letters", schema)
        .await
        .expect("create collection");
    let (record, _) = service
        .create_record(&caller, "letters", Map::new())
        .await
        .expect("create record");
    Fixture {
        service,
        objects,
        kms,
        caller,
        record: record.id.clone(),
        db: region_db_for_tests,
        metrics: node_metrics,
        _database: database,
        _dir: dir,
    }
}

pub(crate) fn body(bytes: &'static [u8]) -> ByteStream {
    Box::pin(futures::stream::once(async move {
        Ok(Bytes::from_static(bytes))
    }))
}

pub(crate) fn file_name(name: &str) -> model::FileName {
    model::FileName::parse(name).expect("a valid file name")
}

impl Fixture {
    pub(crate) fn record_id(&self) -> model::RecordId {
        model::RecordId::parse(&self.record).expect("the created record's id")
    }

    pub(crate) async fn put(&self, name: &str, bytes: &'static [u8]) -> Result<(), ServiceError> {
        self.service
            .put_file(
                &self.caller,
                "letters",
                &self.record_id(),
                &file_name(name),
                Some("text/plain"),
                body(bytes),
                None,
            )
            .await
            .map(|_| ())
    }

    pub(crate) async fn get(
        &self,
        name: &str,
    ) -> Result<service::files::FileDownload, ServiceError> {
        self.service
            .get_file(
                &self.caller,
                "letters",
                &self.record_id(),
                &file_name(name),
                ReadConsistency::Latest,
            )
            .await
            .map(|served| served.value)
    }

    /// Neither a file row of `name` nor any object of the tenant is left.
    async fn assert_no_file(&self, name: &str) {
        let row = self.get(name).await;
        assert!(
            matches!(row, Err(ServiceError::NotFound { what: "file" })),
            "no file row: {:?}",
            row.map(|download| download.size)
        );
        assert_eq!(self.stored_objects().await, 0, "no object");
    }

    /// How many objects of the tenant the store holds.
    pub(crate) async fn stored_objects(&self) -> usize {
        self.objects
            .list(&format!("tenants/{}/", self.caller.tenant))
            .await
            .expect("list objects")
            .len()
    }
}

fn assert_object_store_unavailable(err: &ServiceError) {
    assert!(
        matches!(
            err,
            ServiceError::Unavailable {
                what: "object store",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_upload_whose_object_write_fails_answers_an_error_and_leaves_no_file() {
    let f = fixture().await;
    f.objects
        .fail_next(1, ObjectStoreError::Unavailable("injected".to_owned()));
    let err = f
        .put("letter.txt", b"Dear Ada, the store is down.")
        .await
        .expect_err("the object write failed");
    assert_object_store_unavailable(&err);
    assert_eq!(f.objects.put_calls(), 1);
    f.assert_no_file("letter.txt").await;

    // The store back, the same upload succeeds.
    f.put("letter.txt", b"Dear Ada, the store is back.")
        .await
        .expect("upload");
    assert_eq!(f.stored_objects().await, 1);
}

#[tokio::test]
async fn a_download_whose_object_read_fails_answers_an_error() {
    let f = fixture().await;
    f.put("letter.txt", b"Dear Ada, read me later.")
        .await
        .expect("upload");
    f.objects
        .fail_next(1, ObjectStoreError::Unavailable("injected".to_owned()));
    let err = f
        .get("letter.txt")
        .await
        .expect_err("the object read failed");
    assert_object_store_unavailable(&err);
    assert_eq!(f.objects.get_calls(), 1);
}

#[tokio::test]
async fn a_download_whose_stream_breaks_part_way_ends_in_an_error_with_no_plaintext() {
    let f = fixture().await;
    let letter: &'static [u8] = b"Dear Ada, this letter is cut short by the store.";
    f.put("letter.txt", letter).await.expect("upload");
    // The sealed object's header and part of its only segment arrive, then the store
    // fails: the segment cannot be authenticated, so none of it may be released.
    f.objects
        .break_next_read(40, ObjectStoreError::Unavailable("injected".to_owned()));
    let download = f.get("letter.txt").await.expect("the read starts");
    let items: Vec<_> = download.body.collect().await;
    let released: Vec<u8> = items
        .iter()
        .filter_map(|item| item.as_ref().ok())
        .flat_map(|chunk| chunk.to_vec())
        .collect();
    assert!(
        items.last().is_some_and(Result::is_err),
        "the body ends in an error, not a clean end"
    );
    assert!(released.is_empty(), "released {} bytes", released.len());

    // A whole read still gives the whole letter.
    let whole: Vec<u8> = f
        .get("letter.txt")
        .await
        .expect("read")
        .body
        .map(|chunk| chunk.expect("chunk").to_vec())
        .concat()
        .await;
    assert_eq!(whole, letter);
}

#[tokio::test]
async fn an_upload_whose_key_unwrap_fails_answers_an_error_and_leaves_no_file() {
    let f = fixture().await;
    let calls = f.kms.calls();
    f.kms
        .fail_next(1, KmsError::Unavailable("injected".to_owned()));
    let err = f
        .put("letter.txt", b"Dear Ada, the keys are out of reach.")
        .await
        .expect_err("the key unwrap failed");
    assert!(
        matches!(err, ServiceError::Unavailable { what: "kms", .. }),
        "{err:?}"
    );
    assert!(f.kms.calls() > calls, "the upload asked the KMS");
    assert_eq!(f.objects.put_calls(), 0, "nothing reached the object store");
    f.assert_no_file("letter.txt").await;
}
