//! Encrypted objects end to end, one contract run against the local directory and S3 (on
//! moto): a 20 MiB object round-trips, the stored bytes hold no plaintext, the plaintext's
//! SHA-256 is recorded, and truncated, reordered or moved objects fail to open.

use std::sync::Arc;

use bytes::Bytes;
use envelope::objects::local::LocalObjectStore;
use envelope::objects::s3::S3ObjectStore;
use envelope::objects::{ByteStream, ObjectKey, ObjectStore};
use envelope::sealed_objects::{SealedObjectError, get_sealed, put_sealed};
use envelope::stream::{DEFAULT_SEGMENT_SIZE, HEADER_LEN, StreamError, TAG_LEN};
use envelope::{DataKey, KeyMaterial, KeyPurpose, KeyVersion};
use futures::StreamExt as _;

use crate::support::{HOME, create_bucket, moto_settings, region, tenant};

const MARKER: &[u8] = b"PLAINTEXT-MARKER-4f1d";
const SIZE: usize = 20 * 1024 * 1024;

/// 20 MiB of varied bytes with the marker every 64 KiB.
fn plaintext() -> Vec<u8> {
    let mut data: Vec<u8> = (0..SIZE)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect();
    for start in (0..SIZE - MARKER.len()).step_by(64 * 1024) {
        data[start..start + MARKER.len()].copy_from_slice(MARKER);
    }
    data
}

fn stream_of(data: Vec<u8>, chunk: usize) -> ByteStream {
    let chunks: Vec<_> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

fn data_key(tenant: model::TenantId) -> Arc<DataKey> {
    Arc::new(DataKey::new(
        tenant,
        region(HOME),
        KeyPurpose::Data,
        KeyVersion::FIRST,
        KeyMaterial::random(),
    ))
}

async fn raw(store: &dyn ObjectStore, key: &ObjectKey) -> Vec<u8> {
    let mut stream = store.get(key).await.expect("get raw");
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.expect("raw chunk"));
    }
    out
}

async fn open_all(
    store: &dyn ObjectStore,
    object: &ObjectKey,
    key: &Arc<DataKey>,
) -> Result<Vec<u8>, SealedObjectError> {
    let key = key.clone();
    let mut stream = get_sealed(store, object, move |_| async move { Ok(key) }).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn sealed_object_contract(store: &dyn ObjectStore) {
    let key = data_key(tenant());
    let object =
        ObjectKey::parse(&crate::support::unique("tenants/t/records/r/files/scan")).expect("key");
    let data = plaintext();
    let receipt = put_sealed(
        store,
        &key,
        &object,
        stream_of(data.clone(), 1 << 20),
        Some(64 << 20),
    )
    .await
    .expect("put sealed");
    assert_eq!(receipt.size, SIZE as u64);
    assert_eq!(
        receipt.sha256,
        <[u8; 32]>::try_from(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data).as_ref())
            .expect("32 bytes")
    );

    let stored = raw(store, &object).await;
    assert_eq!(stored.len() as u64, receipt.stored_size);
    assert!(
        !stored.windows(MARKER.len()).any(|w| w == MARKER),
        "stored bytes must hold no plaintext"
    );
    assert_eq!(
        open_all(store, &object, &key).await.expect("open"),
        data,
        "20 MiB round trip"
    );

    // Truncated at a segment boundary: the final segment is missing.
    let segment = DEFAULT_SEGMENT_SIZE + TAG_LEN;
    // Each tampered copy replaces the object in place: the name is bound to the bytes.
    store
        .put(
            &object,
            stream_of(stored[..HEADER_LEN + 3 * segment].to_vec(), 1 << 20),
        )
        .await
        .expect("put truncated");
    let err = open_all(store, &object, &key)
        .await
        .expect_err("truncated object");
    assert!(
        matches!(err, SealedObjectError::Stream(StreamError::Truncated)),
        "{err:?}"
    );

    // Two segments swapped.
    let mut reordered = stored.clone();
    let (first, second) = (HEADER_LEN, HEADER_LEN + segment);
    let copy = reordered[first..first + segment].to_vec();
    reordered.copy_within(second..second + segment, first);
    reordered[second..second + segment].copy_from_slice(&copy);
    store
        .put(&object, stream_of(reordered, 1 << 20))
        .await
        .expect("put reordered");
    let err = open_all(store, &object, &key)
        .await
        .expect_err("reordered object");
    assert!(
        matches!(
            err,
            SealedObjectError::Stream(StreamError::Authentication { .. })
        ),
        "{err:?}"
    );

    // The same bytes under another object name (another record's file) do not open.
    let moved = ObjectKey::parse(&format!("{object}-moved")).expect("key");
    store
        .put(&moved, stream_of(stored, 1 << 20))
        .await
        .expect("put moved");
    let err = open_all(store, &moved, &key)
        .await
        .expect_err("moved object");
    assert!(
        matches!(
            err,
            SealedObjectError::Stream(StreamError::Authentication { segment: 0 })
        ),
        "{err:?}"
    );

    // Another tenant's key cannot open it.
    let err = open_all(store, &moved, &data_key(tenant()))
        .await
        .expect_err("other tenant");
    assert!(
        matches!(
            err,
            SealedObjectError::Stream(StreamError::Authentication { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn sealed_objects_on_the_local_store_meet_the_contract() {
    let dir = tempfile::tempdir().expect("dir");
    let store = LocalObjectStore::new(dir.path().join("objects")).expect("local store");
    sealed_object_contract(&store).await;
}

#[tokio::test]
async fn sealed_objects_on_s3_meet_the_contract() {
    let settings = moto_settings(HOME);
    let bucket = create_bucket(HOME).await;
    let store = S3ObjectStore::new(&settings, bucket, true);
    sealed_object_contract(&store).await;
}
