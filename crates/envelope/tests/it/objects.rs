//! The object-store contract, run against a local directory and S3 on moto, plus what
//! only one backend has: no temporary files left (local), multipart uploads completed or
//! aborted (S3).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;

use envelope::aws::s3_client;
use envelope::objects::local::LocalObjectStore;
use envelope::objects::s3::{DEFAULT_PART_SIZE, MIN_PART_SIZE, S3ObjectStore};
use envelope::objects::{ByteStream, ObjectKey, ObjectStore, ObjectStoreError, ObjectStoreKind};

use crate::support::{HOME, create_bucket, moto_settings, unique};

const MIB: usize = 1024 * 1024;

/// Deterministic, non-repeating-looking bytes, so that misplaced parts are noticed.
fn pattern(len: usize, seed: u8) -> Bytes {
    let mut state: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

/// `data` in chunks of `chunk` bytes.
fn body(data: Bytes, chunk: usize) -> ByteStream {
    let chunks: Vec<Result<Bytes, ObjectStoreError>> = (0..data.len())
        .step_by(chunk)
        .map(|start| Ok(data.slice(start..(start + chunk).min(data.len()))))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// `len` bytes, then an error from the caller's side.
fn failing_body(len: usize, chunk: usize) -> ByteStream {
    let failure =
        futures::stream::once(async { Err(ObjectStoreError::Body("the client went away".into())) });
    Box::pin(body(pattern(len, 9), chunk).chain(failure))
}

async fn read_all(store: &dyn ObjectStore, key: &ObjectKey) -> Result<Vec<u8>, ObjectStoreError> {
    let mut stream = store.get(key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn key(raw: &str) -> ObjectKey {
    ObjectKey::parse(raw).expect("valid test key")
}

async fn assert_missing(store: &dyn ObjectStore, key: &ObjectKey) {
    match read_all(store, key).await {
        Err(ObjectStoreError::NotFound(missing)) => assert_eq!(&missing, key),
        other => panic!(
            "expected NotFound for {key}, got {:?}",
            other.map(|b| b.len())
        ),
    }
}

/// What every object store must do.
async fn object_store_contract(store: &dyn ObjectStore) {
    store.check().await.expect("check passes");
    assert!(!store.location().is_empty());
    let prefix = unique("tenants/t");

    // Small, empty and large (multipart on S3) bodies round-trip.
    let small = key(&format!("{prefix}/records/r1/small.bin"));
    let data = pattern(1000, 1);
    assert_eq!(
        store
            .put(&small, body(data.clone(), 100))
            .await
            .expect("put small"),
        1000
    );
    assert_eq!(read_all(store, &small).await.expect("get small"), data);

    let empty = key(&format!("{prefix}/empty.bin"));
    assert_eq!(
        store
            .put(&empty, body(Bytes::new(), 1))
            .await
            .expect("put empty"),
        0
    );
    assert_eq!(
        read_all(store, &empty).await.expect("get empty"),
        Vec::<u8>::new()
    );

    let large = key(&format!("{prefix}/records/r1/large.bin"));
    let data = pattern(20 * MIB, 2);
    assert_eq!(
        store
            .put(&large, body(data.clone(), MIB))
            .await
            .expect("put large"),
        20 * MIB as u64
    );
    let read = read_all(store, &large).await.expect("get large");
    assert!(
        read == data,
        "the 20 MiB object came back different ({} bytes)",
        read.len()
    );

    // Missing objects, idempotent deletes.
    assert_missing(store, &key(&format!("{prefix}/never-written"))).await;
    store.delete(&small).await.expect("delete");
    assert_missing(store, &small).await;
    store.delete(&small).await.expect("delete again");
    store
        .delete(&key(&format!("{prefix}/never-written")))
        .await
        .expect("delete absent");

    // A failing body stores nothing, whether it fails in the first part or later.
    for (len, what) in [
        (1000, "early"),
        (DEFAULT_PART_SIZE + 2 * MIB, "after a part"),
    ] {
        let failed = key(&format!("{prefix}/failed-{what}.bin").replace(' ', "-"));
        let err = store
            .put(&failed, failing_body(len, MIB))
            .await
            .expect_err("put must fail");
        assert!(matches!(err, ObjectStoreError::Body(_)), "{what}: {err}");
        assert_missing(store, &failed).await;
    }

    // A failed overwrite keeps the old object; a successful one replaces it.
    let replaced = key(&format!("{prefix}/replaced.bin"));
    store
        .put(
            &replaced,
            body(Bytes::from_static(b"first version, longer"), 5),
        )
        .await
        .expect("put v1");
    store
        .put(&replaced, failing_body(100, 10))
        .await
        .expect_err("failed overwrite");
    assert_eq!(
        read_all(store, &replaced).await.expect("v1 intact"),
        b"first version, longer"
    );
    store
        .put(&replaced, body(Bytes::from_static(b"second"), 5))
        .await
        .expect("put v2");
    assert_eq!(read_all(store, &replaced).await.expect("get v2"), b"second");

    // Listing: every key under a plain string prefix, sorted; deleted and failed objects
    // are not there, and nothing outside the prefix is.
    let listed = |prefix: String| async move {
        store
            .list(&prefix)
            .await
            .expect("list")
            .iter()
            .map(|key| key.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(format!("{prefix}/")).await,
        [
            format!("{prefix}/empty.bin"),
            format!("{prefix}/records/r1/large.bin"),
            format!("{prefix}/replaced.bin"),
        ]
    );
    assert_eq!(
        listed(format!("{prefix}/rec")).await,
        [format!("{prefix}/records/r1/large.bin")]
    );
    assert_eq!(listed(format!("{prefix}/records/r1/l")).await.len(), 1);
    assert!(listed(format!("{prefix}/nothing-here/")).await.is_empty());
}

#[tokio::test]
async fn local_object_store_meets_the_contract() {
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalObjectStore::new(dir.path().join("objects")).expect("local store");
    assert_eq!(store.kind(), ObjectStoreKind::Local);
    assert!(
        store.location().starts_with("file:///"),
        "{}",
        store.location()
    );
    object_store_contract(&store).await;

    // Nothing is left in the temporary directory by successful or failed puts.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("objects/.tmp"))
        .expect("tmp dir")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn local_object_store_refuses_its_temporary_directory_and_reports_a_missing_root() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("objects");
    let store = LocalObjectStore::new(root.clone()).expect("local store");
    let err = store
        .put(&key(".tmp/x"), body(Bytes::from_static(b"x"), 1))
        .await
        .expect_err("reserved");
    assert!(matches!(err, ObjectStoreError::Other(_)), "{err}");

    // `a` is a directory once `a/b` exists: reading `a` finds no object.
    store
        .put(&key("a/b"), body(Bytes::from_static(b"b"), 1))
        .await
        .expect("put a/b");
    assert_missing(&store, &key("a")).await;
    assert_missing(&store, &key("a/b/c")).await;

    std::fs::remove_dir_all(&root).expect("remove root");
    assert!(matches!(
        store.check().await,
        Err(ObjectStoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_dropped_local_put_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalObjectStore::new(dir.path().to_path_buf()).expect("local store");
    let pending = futures::stream::once(async { Ok(Bytes::from_static(b"partial")) })
        .chain(futures::stream::pending());
    let stuck = key("stuck.bin");
    let put = store.put(&stuck, Box::pin(pending));
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(100), put).await;
    assert!(timed_out.is_err(), "the put never finishes");
    assert_eq!(
        std::fs::read_dir(dir.path().join(".tmp"))
            .expect("tmp dir")
            .count(),
        0
    );
    assert_missing(&store, &stuck).await;
}

#[tokio::test]
async fn s3_object_store_on_moto_meets_the_contract() {
    let bucket = create_bucket(HOME).await;
    let settings = moto_settings(HOME);
    let store = S3ObjectStore::new(&settings, bucket.clone(), true);
    assert_eq!(store.kind(), ObjectStoreKind::S3);
    assert_eq!(store.location(), format!("s3://{bucket}"));
    assert_eq!(store.part_size(), DEFAULT_PART_SIZE);
    object_store_contract(&store).await;

    // Failed multipart puts were aborted: no upload is left to pay for.
    assert_eq!(open_uploads(&settings, &bucket).await, 0);
}

async fn open_uploads(settings: &envelope::aws::AwsSettings, bucket: &str) -> usize {
    let client = s3_client(settings, true);
    let uploads = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .expect("list uploads");
    uploads.uploads().len()
}

#[tokio::test]
async fn listing_open_uploads_would_see_a_leftover() {
    // The control for the "no upload left" checks: an upload left open is listed.
    let bucket = create_bucket(HOME).await;
    let settings = moto_settings(HOME);
    let client = s3_client(&settings, true);
    let created = client
        .create_multipart_upload()
        .bucket(&bucket)
        .key("left-open")
        .send()
        .await
        .expect("create");
    assert_eq!(open_uploads(&settings, &bucket).await, 1);
    client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key("left-open")
        .upload_id(created.upload_id().expect("upload id"))
        .send()
        .await
        .expect("abort");
    assert_eq!(open_uploads(&settings, &bucket).await, 0);
}

#[tokio::test]
async fn a_dropped_s3_put_aborts_its_upload_in_the_background() {
    let bucket = create_bucket(HOME).await;
    let settings = moto_settings(HOME);
    let store = S3ObjectStore::new(&settings, bucket.clone(), true);
    // More than one part arrives, then the body stalls forever.
    let stalled = body(pattern(DEFAULT_PART_SIZE + MIB, 4), MIB).chain(futures::stream::pending());
    let object = key("stalled.bin");
    let mut put = store.put(&object, Box::pin(stalled));
    // Drive the put until its multipart upload is open, then abandon it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        tokio::select! {
            result = &mut put => panic!("a stalled put cannot finish: {result:?}"),
            () = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        if open_uploads(&settings, &bucket).await > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
    }
    drop(put);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while open_uploads(&settings, &bucket).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned upload was never aborted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_missing(&store, &object).await;
}

#[tokio::test]
async fn s3_puts_above_one_part_are_multipart_and_below_are_single() {
    let bucket = create_bucket(HOME).await;
    let settings = moto_settings(HOME);
    let store = S3ObjectStore::new(&settings, bucket.clone(), true).with_part_size(1);
    assert_eq!(
        store.part_size(),
        MIN_PART_SIZE,
        "parts are never below S3's minimum"
    );
    let client = s3_client(&settings, true);

    let cases = [
        ("single.bin", MIN_PART_SIZE - 1, None),
        ("multi.bin", 2 * MIN_PART_SIZE + 3, Some(3)),
    ];
    for (name, len, parts) in cases {
        let object = key(name);
        let data = pattern(len, 3);
        store
            .put(&object, body(data.clone(), 300_000))
            .await
            .expect("put");
        assert!(
            read_all(&store, &object).await.expect("get") == data,
            "{name} round trip"
        );
        let head = client
            .head_object()
            .bucket(&bucket)
            .key(name)
            .send()
            .await
            .expect("head");
        let etag = head.e_tag().expect("etag").trim_matches('"').to_owned();
        // Multipart ETags end in `-<number of parts>`.
        let suffix = etag
            .rsplit_once('-')
            .map(|(_, n)| n.parse::<u32>().expect("part count"));
        assert_eq!(suffix, parts, "{name}: etag {etag}");
    }
}

#[tokio::test]
async fn s3_check_reports_a_missing_bucket() {
    let store = S3ObjectStore::new(&moto_settings(HOME), unique("residency-absent"), true);
    assert!(matches!(
        store.check().await,
        Err(ObjectStoreError::Other(_))
    ));
    let shared: Arc<dyn ObjectStore> = Arc::new(store);
    assert!(format!("{shared:?}").contains("S3ObjectStore"));
}

/// Object versions under `prefix` (delete markers included).
async fn versions_under(
    settings: &envelope::aws::AwsSettings,
    bucket: &str,
    prefix: &str,
) -> usize {
    let listed = s3_client(settings, true)
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .expect("list versions");
    listed.versions().len() + listed.delete_markers().len()
}

#[tokio::test]
async fn s3_purge_removes_every_version_and_delete_marker_under_the_prefix_only() {
    let bucket = create_bucket(HOME).await;
    let settings = moto_settings(HOME);
    s3_client(&settings, true)
        .put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("enable versioning");
    let store = S3ObjectStore::new(&settings, bucket.clone(), true);
    let (gone, kept) = ("tenants/t-gone/", "tenants/t-kept/");
    for n in 0..3u8 {
        let object = key(&format!("{gone}files/f{n}"));
        // Two versions of each, and a delete marker on the last.
        store
            .put(&object, body(pattern(10, n), 4))
            .await
            .expect("put");
        store
            .put(&object, body(pattern(12, n), 4))
            .await
            .expect("put again");
    }
    store
        .delete(&key(&format!("{gone}files/f2")))
        .await
        .expect("delete");
    store
        .put(&key(&format!("{kept}files/f0")), body(pattern(5, 9), 4))
        .await
        .expect("put");
    assert_eq!(versions_under(&settings, &bucket, gone).await, 7);

    // Batches of 2 until nothing is left.
    let mut deleted = 0;
    loop {
        let batch = store.purge(gone, 2).await.expect("purge");
        assert!(batch <= 2, "a batch deletes at most its limit");
        if batch == 0 {
            break;
        }
        deleted += batch;
    }
    assert_eq!(deleted, 7);
    assert_eq!(versions_under(&settings, &bucket, gone).await, 0);
    assert_eq!(versions_under(&settings, &bucket, kept).await, 1);
}
