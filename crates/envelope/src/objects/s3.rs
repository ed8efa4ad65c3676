//! The region's S3 data bucket through aws-sdk-s3: single `PutObject` for small bodies,
//! multipart upload (one part in memory at a time) for large ones, streamed reads.
//!
//! A failed put aborts its multipart upload, so nothing partial is ever visible and no
//! parts are left to pay for. A put future dropped half-way aborts in the background.

use std::fmt;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{ByteStream, ObjectKey, ObjectStore, ObjectStoreError, ObjectStoreKind};
use crate::aws::{AwsSettings, SdkFailure, describe, s3_client};

/// S3's smallest part, except for the last one.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// Default part size: also the threshold above which a put becomes a multipart upload.
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// S3 numbers parts from 1 to 10 000.
const MAX_PARTS: i32 = 10_000;

/// One bucket in S3 (or an S3-compatible emulator).
#[derive(Clone)]
pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    part_size: usize,
}

impl fmt::Debug for S3ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ObjectStore")
            .field("bucket", &self.bucket)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl S3ObjectStore {
    /// The store for `bucket`; `force_path_style` for emulators that do not serve
    /// virtual-hosted buckets (moto).
    pub fn new(settings: &AwsSettings, bucket: String, force_path_style: bool) -> S3ObjectStore {
        S3ObjectStore {
            client: s3_client(settings, force_path_style),
            bucket,
            part_size: DEFAULT_PART_SIZE,
        }
    }

    /// Sets the part size (and so the multipart threshold and the memory a put holds);
    /// values below [`MIN_PART_SIZE`] are raised to it, as S3 would refuse smaller parts.
    pub fn with_part_size(mut self, part_size: usize) -> S3ObjectStore {
        self.part_size = part_size.max(MIN_PART_SIZE);
        self
    }

    pub fn part_size(&self) -> usize {
        self.part_size
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put_single(&self, key: &ObjectKey, body: Bytes) -> Result<(), ObjectStoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(S3Body::from(body))
            .send()
            .await
            .map_err(|err| s3_error(describe(&err)))?;
        Ok(())
    }

    async fn start_multipart(&self, key: &ObjectKey) -> Result<Upload, ObjectStoreError> {
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|err| s3_error(describe(&err)))?;
        let upload_id = output.upload_id.ok_or_else(|| {
            ObjectStoreError::Other("S3 started a multipart upload without an id".into())
        })?;
        Ok(Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.as_str().to_owned(),
            upload_id,
            parts: Vec::new(),
            armed: true,
        })
    }

    /// Uploads the parts of a body whose first `buffer` exceeded one part, then completes.
    async fn put_multipart(
        &self,
        upload: &mut Upload,
        mut buffer: BytesMut,
        body: &mut ByteStream,
        written: &mut u64,
    ) -> Result<(), ObjectStoreError> {
        loop {
            while buffer.len() >= self.part_size {
                let part = buffer.split_to(self.part_size).freeze();
                upload.upload_part(part).await?;
            }
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    *written += chunk.len() as u64;
                    buffer.extend_from_slice(&chunk);
                }
                None => break,
            }
        }
        if !buffer.is_empty() || upload.parts.is_empty() {
            upload.upload_part(buffer.freeze()).await?;
        }
        upload.complete().await
    }
}

/// Reads `body` into `buffer` until it holds at least `limit` bytes or the body ends;
/// returns whether the body ended.
async fn fill(
    body: &mut ByteStream,
    buffer: &mut BytesMut,
    limit: usize,
    written: &mut u64,
) -> Result<bool, ObjectStoreError> {
    while buffer.len() < limit {
        match body.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                *written += chunk.len() as u64;
                buffer.extend_from_slice(&chunk);
            }
            None => return Ok(true),
        }
    }
    Ok(false)
}

/// A multipart upload in progress. Dropped without [`Upload::complete`] or
/// [`Upload::abort`] (the put future was cancelled), it aborts in the background.
struct Upload {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    armed: bool,
}

impl Upload {
    async fn upload_part(&mut self, part: Bytes) -> Result<(), ObjectStoreError> {
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        if number > MAX_PARTS {
            return Err(ObjectStoreError::Other(format!(
                "object {} needs more than {MAX_PARTS} parts: raise the part size",
                self.key
            )));
        }
        let output = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(S3Body::from(part))
            .send()
            .await
            .map_err(|err| s3_error(describe(&err)))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag)
                .set_checksum_crc32(output.checksum_crc32)
                .build(),
        );
        Ok(())
    }

    async fn complete(&mut self) -> Result<(), ObjectStoreError> {
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(std::mem::take(&mut self.parts)))
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(err) if is_misnamed_completion(&err) => {}
            Err(err) => return Err(s3_error(describe(&err))),
        }
        self.armed = false;
        Ok(())
    }

    async fn abort(mut self) {
        self.armed = false;
        abort_upload(
            self.client.clone(),
            self.bucket.clone(),
            self.key.clone(),
            self.upload_id.clone(),
        )
        .await;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Cancelled mid-upload: the parts are invisible but billed until aborted.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(abort_upload(
                    self.client.clone(),
                    self.bucket.clone(),
                    self.key.clone(),
                    self.upload_id.clone(),
                ));
            }
            Err(_) => tracing::warn!(
                bucket = %self.bucket,
                key = %self.key,
                upload_id = %self.upload_id,
                "multipart upload abandoned without a runtime to abort it; a bucket lifecycle rule must clean it up"
            ),
        }
    }
}

async fn abort_upload(client: aws_sdk_s3::Client, bucket: String, key: String, upload_id: String) {
    let result = client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await;
    if let Err(err) = result {
        let failure = describe(&err);
        tracing::warn!(
            bucket = %bucket,
            key = %key,
            upload_id = %upload_id,
            "failed to abort multipart upload: {}",
            failure.message
        );
    }
}

/// Whether a failed CompleteMultipartUpload in fact succeeded: moto 5.2.1 names the root
/// element of its answer `CompleteMultipartUploadResponse` instead of
/// `CompleteMultipartUploadResult` (getmoto/moto#10055, fixed in later releases), which the
/// SDK refuses to parse. Only that exact shape counts: a 200 carrying `<Error>` (which real
/// S3 sends when a completion fails late) is still a failure.
fn is_misnamed_completion<E>(err: &SdkError<E, HttpResponse>) -> bool {
    let SdkError::ServiceError(context) = err else {
        return false;
    };
    let raw = context.raw();
    let Some(body) = raw.body().bytes() else {
        return false;
    };
    let text = String::from_utf8_lossy(body);
    raw.status().as_u16() == 200
        && text.contains("<CompleteMultipartUploadResponse")
        && text.contains("<ETag>")
        && !text.contains("<Error>")
}

fn s3_error(failure: SdkFailure) -> ObjectStoreError {
    if failure.transient {
        ObjectStoreError::Unavailable(failure.message)
    } else {
        ObjectStoreError::Other(failure.message)
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    fn kind(&self) -> ObjectStoreKind {
        ObjectStoreKind::S3
    }

    fn location(&self) -> String {
        format!("s3://{}", self.bucket)
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteStream) -> Result<u64, ObjectStoreError> {
        let mut written = 0u64;
        let mut buffer = BytesMut::new();
        if fill(&mut body, &mut buffer, self.part_size, &mut written).await? {
            self.put_single(key, buffer.freeze()).await?;
            return Ok(written);
        }
        let mut upload = self.start_multipart(key).await?;
        match self
            .put_multipart(&mut upload, buffer, &mut body, &mut written)
            .await
        {
            Ok(()) => Ok(written),
            Err(err) => {
                upload.abort().await;
                Err(err)
            }
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, ObjectStoreError> {
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|err| match err.as_service_error() {
                Some(service) if service.is_no_such_key() => {
                    ObjectStoreError::NotFound(key.clone())
                }
                _ => s3_error(describe(&err)),
            })?;
        let stream = futures::stream::unfold(output.body, |mut body| async move {
            let item = body.next().await?;
            let item = item
                .map_err(|err| ObjectStoreError::Unavailable(format!("read object body: {err}")));
            Some((item, body))
        });
        Ok(Box::pin(stream))
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|err| s3_error(describe(&err)))?;
        Ok(())
    }

    async fn purge(&self, prefix: &str, limit: usize) -> Result<u64, ObjectStoreError> {
        // The first page of versions (and delete markers) under the prefix: what is
        // deleted is gone from the listing, so each call starts again from the top.
        let page = self
            .client
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(prefix)
            .max_keys(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|err| s3_error(describe(&err)))?;
        let versions = page
            .versions()
            .iter()
            .map(|version| (version.key(), version.version_id()))
            .chain(
                page.delete_markers()
                    .iter()
                    .map(|marker| (marker.key(), marker.version_id())),
            );
        let mut deleted = 0;
        for (key, version) in versions.take(limit) {
            let Some(key) = key else { continue };
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .set_version_id(version.map(str::to_owned))
                .send()
                .await
                .map_err(|err| s3_error(describe(&err)))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectStoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| s3_error(describe(&err)))?;
            for object in page.contents() {
                let Some(raw) = object.key() else { continue };
                let key = ObjectKey::parse(raw).map_err(|err| {
                    ObjectStoreError::Other(format!(
                        "bucket {} holds key {raw}: {err}",
                        self.bucket
                    ))
                })?;
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(keys)
    }

    async fn check(&self) -> Result<(), ObjectStoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|err| match err.as_service_error() {
                Some(service) if service.is_not_found() => {
                    ObjectStoreError::Other(format!("bucket {} does not exist", self.bucket))
                }
                _ => s3_error(describe(&err)),
            })?;
        Ok(())
    }
}
