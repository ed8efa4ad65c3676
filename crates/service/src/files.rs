//! Files attached to records: streamed into the region's object store sealed segment by
//! segment (bounded memory for any size), then recorded in the database with their
//! `file.put` event in one transaction. File names may be personal data ("jane-doe.pdf"):
//! the database keeps only a keyed token of the name, and object keys are random ids.

use audit::{Action, Outcome};
use envelope::blind_index::IndexValue;
use envelope::objects::{ByteStream, ObjectKey};
use envelope::sealed_objects::{self, PlaintextStream, SealedObjectError};
use store::files::FileRow;
use store::object_deletions::{self, DeletionReason, QueuedDeletion};
use store::{ReadConsistency, StoreError};

use crate::ServiceError;
use crate::idempotency::{self, IdempotencyKey, KeyedCreate};
use model::{FileName, RecordId};

use crate::object_deletions::{UPLOAD_GRACE, delete_every_version, enqueue};
use crate::records::Served;
use crate::tenancy::{Caller, Collection, RegionService, Written, random_bytes};
use crate::unit_of_work::EventTiming;

/// What a stored file is, as the client sees it.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// A file being downloaded: its plaintext streams from the store as the client reads.
pub struct FileDownload {
    pub content_type: String,
    pub size: u64,
    pub body: PlaintextStream,
}

impl std::fmt::Debug for FileDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileDownload")
            .field("content_type", &self.content_type)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// How a put ended: committed (with the object it replaced, to delete), or answered from
/// the answer recorded for its idempotency key.
enum FilePut {
    Committed {
        replaced: Vec<QueuedDeletion>,
        written: Written,
    },
    Replayed {
        stored: StoredFile,
        written: Written,
    },
}

/// The stored file a recorded answer describes.
fn replayed_file(answer: &store::idempotency::StoredAnswer) -> Result<StoredFile, ServiceError> {
    let size = idempotency::answer_field(answer, "size")?
        .as_u64()
        .ok_or_else(|| ServiceError::internal("a recorded file size"))?;
    let digest = idempotency::answer_field(answer, "sha256")?
        .as_str()
        .and_then(|text| hex::decode(text).ok())
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| ServiceError::internal("a recorded file digest"))?;
    Ok(StoredFile {
        size,
        sha256: digest,
    })
}

/// The blind-index "field" file names are tokenized under; schema field names cannot
/// contain `:`, so it never collides with one.
const FILE_NAME_FIELD: &str = "file:name";

impl RegionService {
    /// Stores `body` as file `name` of a record, replacing any file of that name. With an
    /// `idempotency_key`, once per key (docs/operations.md, "Idempotent creates"): the
    /// file's row and the key's answer commit together. The body is streamed and sealed
    /// first (its digest is part of the request's hash); a retry with the key and the same
    /// record, name, content type and bytes gets the first answer (size, digest, a token
    /// past the first write) and its own upload is deleted; the key with another request
    /// is 422.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_file(
        &self,
        caller: &Caller,
        collection: &str,
        record: &RecordId,
        name: &FileName,
        content_type: Option<&str>,
        body: ByteStream,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> Result<(StoredFile, Written), ServiceError> {
        let (record, name) = (record.as_str(), name.as_str());
        let collection = self.collection(caller, collection).await?;
        let name_token = self.file_name_token(caller, &collection, name).await?;
        if !self.record_exists(caller, &collection, record).await? {
            return Err(ServiceError::NotFound { what: "record" });
        }
        let object = ObjectKey::parse(&format!(
            "tenants/{}/files/{}",
            caller.tenant,
            RecordId::from_random_bytes(random_bytes())
        ))
        .map_err(ServiceError::internal)?;
        let key = self.inner.keyring.active_data_key(&caller.tenant).await?;
        // The data key seals the object's own key once; the segments are sealed under that.
        self.count_seals(&caller.tenant, key.version(), 1);
        let limit = self.inner.settings.max_file_size;
        let receipt = sealed_objects::put_sealed(
            self.inner.objects.as_ref(),
            &key,
            &object,
            body,
            Some(limit),
        )
        .await
        .map_err(|err| match err {
            SealedObjectError::TooLarge { limit } => ServiceError::TooLarge { limit },
            SealedObjectError::Body(_) => {
                ServiceError::BadRequest("the upload ended before its body did".to_owned())
            }
            SealedObjectError::Store(_) => ServiceError::Unavailable {
                what: "object store",
                retry_after: std::time::Duration::from_secs(1),
            },
            other => ServiceError::internal_while("store the file", other),
        })?;

        // Named for deletion before its row exists: should the row never commit (an
        // error, a node dying now), a sweeper collects the object after the grace period.
        // The transaction that writes the row removes this row with it.
        let upload = match self
            .enqueue_alone(
                &caller.tenant,
                &[object.as_str().to_owned()],
                DeletionReason::UploadAbandoned,
                UPLOAD_GRACE,
            )
            .await
        {
            Ok(upload) => upload,
            Err(err) => {
                // No row names the object: the only reference is this request.
                if let Err(kind) =
                    delete_every_version(self.inner.objects.as_ref(), object.as_str()).await
                {
                    tracing::warn!(
                        tenant = %caller.tenant,
                        reason = kind.as_str(),
                        "an upload's object could not be deleted after its outbox row failed"
                    );
                }
                return Err(err);
            }
        };
        let stored = StoredFile {
            size: receipt.size,
            sha256: receipt.sha256,
        };
        let commit = async |keyed: Option<&KeyedCreate<'_>>| {
            let (replaced, written) = self
                .commit_file(
                    caller,
                    &collection,
                    record,
                    &name_token,
                    &object,
                    content_type,
                    &receipt,
                    (&upload, keyed),
                )
                .await?;
            Ok(FilePut::Committed { replaced, written })
        };
        let committed = match idempotency_key {
            None => commit(None).await,
            Some(key) => {
                let keyed = KeyedCreate {
                    key,
                    operation: idempotency::FILE_PUT,
                    request_hash: idempotency::sha256(&[
                        idempotency::FILE_PUT.as_bytes(),
                        collection.name.as_str().as_bytes(),
                        record.as_bytes(),
                        name.as_bytes(),
                        content_type.unwrap_or_default().as_bytes(),
                        &receipt.sha256,
                    ]),
                };
                self.once(
                    caller,
                    &keyed,
                    async || commit(Some(&keyed)).await,
                    |answer| {
                        Ok(FilePut::Replayed {
                            stored: replayed_file(&answer)?,
                            written: self.token(answer.lsn),
                        })
                    },
                )
                .await
            }
        };
        match committed {
            Ok(FilePut::Committed { replaced, written }) => {
                self.delete_objects_now(&caller.tenant, &replaced).await;
                Ok((stored, written))
            }
            Ok(FilePut::Replayed { stored, written }) => {
                // The first put's object holds the bytes; this upload is referenced by
                // nothing.
                self.abandon_upload(&caller.tenant, &upload).await;
                Ok((stored, written))
            }
            Err(err) => {
                // Nothing references the new object: it must not linger.
                self.abandon_upload(&caller.tenant, &upload).await;
                Err(err)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_file(
        &self,
        caller: &Caller,
        collection: &Collection,
        record: &str,
        name_token: &str,
        object: &ObjectKey,
        content_type: Option<&str>,
        receipt: &sealed_objects::PutReceipt,
        // The upload's outbox row (removed with the write) and the idempotency key's
        // answer to record with it.
        (upload, keyed): (&[QueuedDeletion], Option<&KeyedCreate<'_>>),
    ) -> Result<(Vec<QueuedDeletion>, Written), ServiceError> {
        let row = FileRow {
            collection: collection.name.as_str().to_owned(),
            record_id: record.to_owned(),
            name: name_token.to_owned(),
            object_key: object.as_str().to_owned(),
            size: i64::try_from(receipt.size).map_err(|_| ServiceError::TooLarge {
                limit: self.inner.settings.max_file_size,
            })?,
            sha256: receipt.sha256.to_vec(),
            content_type: content_type
                .filter(|value| value.len() <= 255)
                .unwrap_or("application/octet-stream")
                .to_owned(),
            key_version: i32::try_from(receipt.key_version.get())
                .map_err(|err| ServiceError::internal_while("store the key version", err))?,
            created_at: std::time::SystemTime::now(),
        };
        let resource = file_resource(collection, record, name_token);
        let event = self.caller_event(caller, Action::FilePut, &resource, Outcome::Success);
        let (replaced, lsn) = self
            .write(
                &caller.tenant,
                EventTiming::AfterChange,
                [event],
                async |tx| {
                    let replaced = match store::files::upsert(tx, &caller.tenant, &row).await {
                        Ok(replaced) => replaced,
                        // The record was deleted while the body streamed.
                        Err(StoreError::NotFound) => {
                            return Err(ServiceError::NotFound { what: "record" });
                        }
                        Err(other) => return Err(other.into()),
                    };
                    if let Some(keyed) = keyed {
                        // The row and the key's answer commit together, or neither.
                        let answer = serde_json::json!({
                            "size": receipt.size,
                            "sha256": hex::encode(receipt.sha256),
                        });
                        keyed.record(tx, &caller.tenant, 201, &answer).await?;
                    }
                    // The row references the upload now: it is no longer to be deleted.
                    let ids: Vec<_> = upload.iter().map(|deletion| deletion.id).collect();
                    object_deletions::forget(tx, &caller.tenant, &ids).await?;
                    let replaced: Vec<String> = replaced.into_iter().collect();
                    enqueue(tx, &caller.tenant, &replaced, DeletionReason::FileReplaced).await
                },
            )
            .await?;
        Ok((replaced, self.token(lsn)))
    }

    pub async fn get_file(
        &self,
        caller: &Caller,
        collection: &str,
        record: &RecordId,
        name: &FileName,
        consistency: ReadConsistency,
    ) -> Result<Served<FileDownload>, ServiceError> {
        let (record, name) = (record.as_str(), name.as_str());
        let collection = self.collection(caller, collection).await?;
        let not_found = || ServiceError::NotFound { what: "file" };
        let name_token = self.file_name_token(caller, &collection, name).await?;
        let (tenant, collection_name, file_token) =
            (&caller.tenant, collection.name.as_str(), &name_token);
        let (row, served_by) = self
            .inner
            .database
            .read(consistency, |mut reader| async move {
                let row = async {
                    let tx = reader.begin_tenant(tenant).await?;
                    let row =
                        store::files::get(tx.client(), tenant, collection_name, record, file_token)
                            .await?;
                    tx.finish().await?;
                    Ok(row)
                }
                .await;
                (reader, row)
            })
            .await?;
        let row = row.ok_or_else(not_found)?;
        let object = ObjectKey::parse(&row.object_key)
            .map_err(|err| ServiceError::internal_while("read the stored object key", err))?;
        let keyring = self.inner.keyring.clone();
        let tenant = caller.tenant;
        let body =
            sealed_objects::get_sealed(self.inner.objects.as_ref(), &object, move |version| {
                let keyring = keyring.clone();
                async move {
                    keyring
                        .data_key(&tenant, version)
                        .await
                        .map_err(|err| SealedObjectError::Key(err.to_string()))
                }
            })
            .await
            .map_err(|err| match err {
                SealedObjectError::Store(envelope::objects::ObjectStoreError::NotFound(_)) => {
                    ServiceError::internal(format!("object of file row missing: {object}"))
                }
                SealedObjectError::Store(_) => ServiceError::Unavailable {
                    what: "object store",
                    retry_after: std::time::Duration::from_secs(1),
                },
                other => ServiceError::internal_while("read the file", other),
            })?;
        self.record_read(
            caller,
            Action::FileGet,
            &file_resource(&collection, record, &name_token),
        )
        .await?;
        Ok(Served {
            value: FileDownload {
                content_type: row.content_type,
                size: u64::try_from(row.size).unwrap_or_default(),
                body,
            },
            served_by,
        })
    }

    pub async fn delete_file(
        &self,
        caller: &Caller,
        collection: &str,
        record: &RecordId,
        name: &FileName,
    ) -> Result<Written, ServiceError> {
        let (record, name) = (record.as_str(), name.as_str());
        let collection = self.collection(caller, collection).await?;
        let not_found = || ServiceError::NotFound { what: "file" };
        let name_token = self.file_name_token(caller, &collection, name).await?;
        let resource = file_resource(&collection, record, &name_token);
        let event = self.caller_event(caller, Action::FileDelete, &resource, Outcome::Success);
        let (queued, lsn) = self
            .write(
                &caller.tenant,
                EventTiming::AfterChange,
                [event],
                async |tx| {
                    let row = store::files::delete(
                        tx,
                        &caller.tenant,
                        collection.name.as_str(),
                        record,
                        &name_token,
                    )
                    .await?
                    .ok_or_else(not_found)?;
                    enqueue(
                        tx,
                        &caller.tenant,
                        &[row.object_key],
                        DeletionReason::FileDeleted,
                    )
                    .await
                },
            )
            .await?;
        self.delete_objects_now(&caller.tenant, &queued).await;
        Ok(self.token(lsn))
    }

    async fn record_exists(
        &self,
        caller: &Caller,
        collection: &Collection,
        record: &str,
    ) -> Result<bool, ServiceError> {
        let tenant = caller.tenant;
        let name = collection.name.as_str().to_owned();
        let record = record.to_owned();
        self.read_primary_first(&tenant, |client| {
            let name = name.clone();
            let record = record.clone();
            Box::pin(async move {
                Ok(store::records::get(client, &tenant, &name, &record)
                    .await?
                    .is_some())
            })
        })
        .await
    }

    /// The stored form of a file name: a keyed token, so names never rest in the database.
    async fn file_name_token(
        &self,
        caller: &Caller,
        collection: &Collection,
        name: &str,
    ) -> Result<String, ServiceError> {
        let index_keys = self.inner.keyring.index_keys(&caller.tenant).await?;
        let key = index_keys.field(collection.name.as_str(), FILE_NAME_FIELD);
        let token = key
            .token(&IndexValue::String(name))
            .map_err(|err| ServiceError::internal_while("tokenize the file name", err))?;
        Ok(token.to_hex())
    }
}

fn file_resource(collection: &Collection, record: &str, name_token: &str) -> String {
    // The audit event names the file by the first bytes of its token, never by its name.
    format!(
        "collections/{}/records/{record}/files/{}",
        collection.name.as_str(),
        &name_token[..16.min(name_token.len())]
    )
}
