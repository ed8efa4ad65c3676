//! The `reencrypt` job (one tenant): after a rotation, re-seals every stored sealed value
//! of the tenant's records and re-encrypts every file object under the active data key,
//! `batch_size` items a batch, while live traffic goes on.
//!
//! The walk goes records first, in (collection, record id) order, then files, in
//! (collection, record id, name) order; the checkpoint is the phase and the last item
//! handled. A value already under the active version is skipped (a record written during
//! the job, or re-sealed by a batch that ran before its node died), so a batch that runs
//! again changes nothing twice. A re-sealed record goes back only while it is at the
//! version it was read at (a concurrent update wins, and the record is read again and
//! re-sealed from what it holds now); a re-encrypted object's row is updated only while
//! it still names that object. Once the walk ends, the completion is audited (`key.rotate`
//! by the system, naming the job) and the job is done: no value or object of the tenant is
//! sealed under an older version, and the older versions are `retired` (they no longer
//! seal anything since the rotation).

use audit::Action;
use envelope::objects::ObjectStoreError;
use envelope::seal::SealContext;
use envelope::sealed_objects::SealedObjectError;
use futures::future::try_join_all;
use model::{KeyVersion, TenantId};
use serde_json::{Value, json};
use store::object_deletions::DeletionReason;
use store::reencryption::{self, FileObject, FilePosition, RecordPosition, SealedRecord};

use super::{BatchDone, BatchError, BatchInput, JobHandler, NextBatch};
use crate::key_rotation::rotation_resource;
use crate::records::SealedFields;
use crate::tenancy::RegionService;
use crate::unit_of_work::EventTiming;
use crate::{KeyError, ObjectKeyError};

/// The kind of the re-encryption job.
pub const REENCRYPT: &str = "reencrypt";

/// Rounds of re-reading a record that changed between its read and its write back, before
/// the batch gives up (and runs again later).
const RESEAL_ROUNDS: usize = 3;

/// Runs `reencrypt` jobs with the node's service (keyring, object store, audit).
#[derive(Debug, Clone)]
pub struct ReencryptJob {
    service: RegionService,
}

impl ReencryptJob {
    pub fn new(service: RegionService) -> Self {
        Self { service }
    }
}

/// Where a re-encryption stands between batches.
#[derive(Debug, Clone, PartialEq)]
enum Checkpoint {
    Records(Option<RecordPosition>),
    Files(Option<FilePosition>),
}

impl Checkpoint {
    fn parse(value: Option<&Value>) -> Option<Self> {
        let Some(value) = value else {
            return Some(Self::Records(None));
        };
        let text = |after: &Value, key: &str| after.get(key)?.as_str().map(str::to_owned);
        let after = value.get("after")?;
        match value.get("phase")?.as_str()? {
            "records" if after.is_null() => Some(Self::Records(None)),
            "records" => Some(Self::Records(Some(RecordPosition {
                collection: text(after, "collection")?,
                record_id: text(after, "record_id")?,
            }))),
            "files" if after.is_null() => Some(Self::Files(None)),
            "files" => Some(Self::Files(Some(FilePosition {
                collection: text(after, "collection")?,
                record_id: text(after, "record_id")?,
                name: text(after, "name")?,
            }))),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Self::Records(after) => json!({
                "phase": "records",
                "after": after.as_ref().map(|at| json!({
                    "collection": at.collection, "record_id": at.record_id,
                })),
            }),
            Self::Files(after) => json!({
                "phase": "files",
                "after": after.as_ref().map(|at| json!({
                    "collection": at.collection, "record_id": at.record_id, "name": at.name,
                })),
            }),
        }
    }
}

/// Why one item could not be re-sealed.
enum ItemError {
    /// It can never be (corrupt, or under a version that is gone): counted, skipped.
    Unusable,
    /// A dependency failed: the batch runs again later.
    Batch(BatchError),
}

fn key_error(err: KeyError) -> ItemError {
    match err {
        KeyError::Open(_) | KeyError::UnknownVersion { .. } => ItemError::Unusable,
        KeyError::Kms(_) => ItemError::Batch(BatchError::new("kms unavailable", err)),
        other => ItemError::Batch(BatchError::new("database unavailable", other)),
    }
}

fn database(err: store::StoreError) -> BatchError {
    BatchError::new("database unavailable", err)
}

fn item_database(err: store::StoreError) -> ItemError {
    ItemError::Batch(database(err))
}

fn done(processed: u64, failed: u64, total: Option<u64>, next: NextBatch) -> BatchDone {
    BatchDone {
        processed,
        failed,
        total,
        next,
    }
}

#[async_trait::async_trait]
impl JobHandler for ReencryptJob {
    fn kind(&self) -> &'static str {
        REENCRYPT
    }

    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        let tenant = input.tenant.ok_or(BatchError {
            reason: "job without a tenant",
            cause: None,
        })?;
        let at = Checkpoint::parse(input.checkpoint).ok_or(BatchError {
            reason: "corrupt checkpoint",
            cause: None,
        })?;
        let keyring = &self.service.inner.keyring;
        let version = match keyring.active_data_key(tenant).await {
            Ok(key) => key.version(),
            // Offboarded meanwhile: nothing can be opened, nothing is left to re-seal.
            Err(KeyError::Shredded { .. } | KeyError::NotProvisioned { .. }) => {
                return Ok(done(0, 0, None, NextBatch::Finished));
            }
            Err(err @ KeyError::Kms(_)) => return Err(BatchError::new("kms unavailable", err)),
            Err(err) => return Err(BatchError::new("database unavailable", err)),
        };
        let limit = i64::try_from(input.batch_size).unwrap_or(i64::MAX);
        let total = match input.checkpoint {
            None => {
                let mut primary = self.primary().await?;
                let tx = primary.read_tenant(tenant).await.map_err(database)?;
                let items = reencryption::items(tx.client(), tenant)
                    .await
                    .map_err(database)?;
                tx.finish().await.map_err(database)?;
                Some(items)
            }
            Some(_) => None,
        };
        match at {
            Checkpoint::Records(after) => {
                let page = {
                    let mut primary = self.primary().await?;
                    let tx = primary.read_tenant(tenant).await.map_err(database)?;
                    let page =
                        reencryption::records_after(tx.client(), tenant, after.as_ref(), limit)
                            .await
                            .map_err(database)?;
                    tx.finish().await.map_err(database)?;
                    page
                };
                let Some(last) = page.last().map(|row| row.position.clone()) else {
                    let next = Checkpoint::Files(None).to_json();
                    return Ok(done(0, 0, total, NextBatch::Continue(next)));
                };
                let (processed, failed) = self.reseal_records(tenant, page).await?;
                let next = Checkpoint::Records(Some(last)).to_json();
                Ok(done(processed, failed, total, NextBatch::Continue(next)))
            }
            Checkpoint::Files(after) => {
                let page = {
                    let mut primary = self.primary().await?;
                    let tx = primary.read_tenant(tenant).await.map_err(database)?;
                    let page =
                        reencryption::files_after(tx.client(), tenant, after.as_ref(), limit)
                            .await
                            .map_err(database)?;
                    tx.finish().await.map_err(database)?;
                    page
                };
                let Some(last) = page.last().map(|file| file.position.clone()) else {
                    self.audit_completion(tenant, input.job, version).await?;
                    return Ok(done(0, 0, total, NextBatch::Finished));
                };
                let (mut processed, mut failed) = (0, 0);
                for file in &page {
                    match self.reencrypt_file(tenant, file, version).await {
                        Ok(()) => processed += 1,
                        Err(ItemError::Unusable) => failed += 1,
                        Err(ItemError::Batch(err)) => return Err(err),
                    }
                }
                let next = Checkpoint::Files(Some(last)).to_json();
                Ok(done(processed, failed, total, NextBatch::Continue(next)))
            }
        }
    }
}

impl ReencryptJob {
    async fn primary(&self) -> Result<store::Primary, BatchError> {
        self.service
            .inner
            .database
            .primary()
            .get()
            .await
            .map_err(database)
    }

    /// Re-seals a page of records; returns (processed, failed). A record updated between
    /// its read and the write back is read again and re-sealed from what it holds now.
    async fn reseal_records(
        &self,
        tenant: &TenantId,
        mut pending: Vec<SealedRecord>,
    ) -> Result<(u64, u64), BatchError> {
        let (mut processed, mut failed) = (0, 0);
        for _ in 0..RESEAL_ROUNDS {
            let mut writes = Vec::new();
            for row in pending.drain(..) {
                match self.reseal(tenant, &row).await {
                    Ok(None) => processed += 1,
                    Ok(Some(sealed)) => writes.push((row, sealed)),
                    Err(ItemError::Unusable) => {
                        tracing::warn!(tenant = %tenant, job_kind = REENCRYPT, "a record's sealed part cannot be opened; skipped");
                        failed += 1;
                    }
                    Err(ItemError::Batch(err)) => return Err(err),
                }
            }
            if writes.is_empty() {
                return Ok((processed, failed));
            }
            let mut primary = self.primary().await?;
            let tx = primary.begin_tenant(tenant).await.map_err(database)?;
            // Pipelined: one round trip for the page's conditional writes.
            let written = try_join_all(writes.iter().map(|(row, sealed)| {
                reencryption::replace_sealed(&tx, tenant, &row.position, row.version, sealed)
            }))
            .await
            .map_err(database)?;
            tx.commit().await.map_err(database)?;
            for ((row, _), written) in writes.into_iter().zip(written) {
                if written {
                    processed += 1;
                    continue;
                }
                let tx = primary.read_tenant(tenant).await.map_err(database)?;
                let now = reencryption::record(tx.client(), tenant, &row.position)
                    .await
                    .map_err(database)?;
                tx.finish().await.map_err(database)?;
                match now {
                    Some(now) => pending.push(now),
                    // Deleted meanwhile: nothing of it is left to re-seal.
                    None => processed += 1,
                }
            }
            if pending.is_empty() {
                return Ok((processed, failed));
            }
        }
        Err(BatchError {
            reason: "records kept changing",
            cause: None,
        })
    }

    /// The record's sealed part with every field under the active version, or `None` when
    /// every field already is.
    async fn reseal(
        &self,
        tenant: &TenantId,
        row: &SealedRecord,
    ) -> Result<Option<Vec<u8>>, ItemError> {
        let keyring = &self.service.inner.keyring;
        let fields = SealedFields::decode(&row.sealed).ok_or(ItemError::Unusable)?;
        let mut resealed = SealedFields::default();
        let mut changed = false;
        for (field, sealed) in fields {
            let context = SealContext {
                collection: &row.position.collection,
                record: &row.position.record_id,
                field: &field,
            };
            match keyring
                .reencrypt(tenant, &context, sealed)
                .await
                .map_err(key_error)?
            {
                Some(value) => {
                    if let Ok(version) = envelope::seal::sealed_version(&value) {
                        self.service.count_seals(tenant, version, 1);
                    }
                    changed = true;
                    resealed.push(&field, value);
                }
                None => resealed.push(&field, sealed.to_vec()),
            }
        }
        Ok(changed.then(|| resealed.encode()))
    }

    /// Re-encrypts one file's object under `version` unless its row says it already is,
    /// then records the version while the row still names the object. An object whose
    /// file was deleted meanwhile is removed again (the write may have recreated it).
    async fn reencrypt_file(
        &self,
        tenant: &TenantId,
        file: &FileObject,
        version: KeyVersion,
    ) -> Result<(), ItemError> {
        let version_column = i32::try_from(version.get()).expect("key versions stay below 2^31");
        if file.key_version == version_column {
            return Ok(());
        }
        let inner = &self.service.inner;
        let object = envelope::objects::ObjectKey::parse(&file.object_key)
            .map_err(|_| ItemError::Unusable)?;
        match inner
            .keyring
            .reencrypt_object(tenant, inner.objects.as_ref(), &object)
            .await
        {
            Ok(true) => self.service.count_seals(tenant, version, 1),
            Ok(false) => {}
            Err(ObjectKeyError::Key(err)) => return Err(key_error(err)),
            Err(ObjectKeyError::Object(SealedObjectError::Store(ObjectStoreError::NotFound(
                _,
            )))) => {
                // Deleted with its file meanwhile.
                return Ok(());
            }
            // Tampered with or truncated: it can never be opened.
            Err(ObjectKeyError::Object(SealedObjectError::Stream(_))) => {
                return Err(ItemError::Unusable);
            }
            Err(ObjectKeyError::Object(err)) => {
                return Err(ItemError::Batch(BatchError::new(
                    "object store unavailable",
                    err,
                )));
            }
        }
        let mut primary = self.primary().await.map_err(ItemError::Batch)?;
        let tx = primary.begin_tenant(tenant).await.map_err(item_database)?;
        let recorded = reencryption::set_file_key_version(&tx, tenant, file, version_column)
            .await
            .map_err(item_database)?;
        tx.commit().await.map_err(item_database)?;
        let in_use = if recorded {
            true
        } else {
            let tx = primary.read_tenant(tenant).await.map_err(item_database)?;
            let in_use = reencryption::object_in_use(tx.client(), tenant, &file.object_key)
                .await
                .map_err(item_database)?;
            tx.finish().await.map_err(item_database)?;
            in_use
        };
        if !in_use {
            drop(primary);
            // Its file's deletion may have been carried out already: name it again.
            let queued = self
                .service
                .enqueue_alone(
                    tenant,
                    std::slice::from_ref(&file.object_key),
                    DeletionReason::ReencryptionOrphan,
                    std::time::Duration::ZERO,
                )
                .await
                .map_err(|err| ItemError::Batch(BatchError::new("database unavailable", err)))?;
            self.service.delete_objects_now(tenant, &queued).await;
        }
        Ok(())
    }

    /// `key.rotate` by the system, naming the job: the re-encryption is complete.
    async fn audit_completion(
        &self,
        tenant: &TenantId,
        job: store::jobs::JobId,
        version: KeyVersion,
    ) -> Result<(), BatchError> {
        let service = &self.service;
        let event = service.system_event(
            tenant,
            "reencryption",
            Action::KeyRotate,
            &format!("{}&reencryption=done", rotation_resource(version, job)),
            format!("job-{job}"),
        );
        service
            .write(tenant, EventTiming::AfterChange, [event], async |_| Ok(()))
            .await
            .map_err(|err| BatchError::new("audit unavailable", err))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_refuse_what_they_did_not_write() {
        for at in [
            Checkpoint::Records(None),
            Checkpoint::Records(Some(RecordPosition {
                collection: "people".into(),
                record_id: "r1".into(),
            })),
            Checkpoint::Files(None),
            Checkpoint::Files(Some(FilePosition {
                collection: "people".into(),
                record_id: "r1".into(),
                name: "n".into(),
            })),
        ] {
            assert_eq!(Checkpoint::parse(Some(&at.to_json())), Some(at));
        }
        assert_eq!(Checkpoint::parse(None), Some(Checkpoint::Records(None)));
        for corrupt in [
            json!({}),
            json!({"phase": "records"}),
            json!({"phase": "objects", "after": null}),
            json!({"phase": "files", "after": {"collection": "c", "record_id": "r"}}),
        ] {
            assert_eq!(Checkpoint::parse(Some(&corrupt)), None, "{corrupt}");
        }
    }
}
