//! Data subjects (issue 29): the subject index a record's write path keeps (one token per
//! record of a collection with a `subject_field`, `store::subjects`), the backfill a
//! schema change starts when records must gain, change or lose their tokens
//! (`jobs::subject_index`), and the lookup of one subject's records across a tenant's
//! collections.
//!
//! A subject's value is personal data: it is turned into its token as soon as it arrives
//! and never reaches a log, a metric, an audit event or an error message.

use envelope::subject_index::{SubjectError, SubjectIndexKey};
use model::{CollectionSchema, TenantId};
use serde_json::{Map, Value};
use store::StoreError;
use store::jobs;
use store::records::IndexEntry;
use store::subjects::SUBJECT_TOKEN_FIELD;

use crate::jobs::SUBJECT_INDEX;
use crate::tenancy::RegionService;
use crate::{Keyring, ServiceError};

/// The subject-index key of `tenant`, from its (never rotated) index key.
pub(crate) async fn subject_key(
    keyring: &Keyring,
    tenant: &TenantId,
) -> Result<SubjectIndexKey, ServiceError> {
    let index_keys = keyring.index_keys(tenant).await?;
    Ok(SubjectIndexKey::derive(index_keys.key()))
}

/// The subject value of a record's data under `schema`: its `subject_field`, when the
/// collection has one and the record holds a string there.
pub(crate) fn subject_value<'a>(
    schema: &CollectionSchema,
    data: &'a Map<String, Value>,
) -> Option<&'a str> {
    data.get(schema.subject_field()?)?.as_str()
}

/// The token a record with `data` carries in the subject index, if any. A blank subject
/// value gives none (it names nobody); one too long to be a subject is refused (422,
/// naming the field, never the value).
pub(crate) fn subject_entry(
    key: &SubjectIndexKey,
    schema: &CollectionSchema,
    data: &Map<String, Value>,
) -> Result<Option<IndexEntry>, ServiceError> {
    let Some(value) = subject_value(schema, data) else {
        return Ok(None);
    };
    match key.token(value) {
        Ok(token) => Ok(Some(IndexEntry {
            field: SUBJECT_TOKEN_FIELD.to_owned(),
            token: *token.as_bytes(),
        })),
        Err(SubjectError::Empty) => Ok(None),
        Err(err @ SubjectError::TooLong) => Err(ServiceError::invalid(
            schema.subject_field().unwrap_or_default().to_owned(),
            format!("is the collection's subject field and {err}"),
        )),
    }
}

impl RegionService {
    /// The subject-index entry of a record about to be written (see [`subject_entry`]);
    /// loads the tenant's index key only when the collection has a subject field.
    pub(crate) async fn record_subject_entry(
        &self,
        tenant: &TenantId,
        schema: &CollectionSchema,
        data: &Map<String, Value>,
    ) -> Result<Option<IndexEntry>, ServiceError> {
        if subject_value(schema, data).is_none() {
            return Ok(None);
        }
        let key = subject_key(&self.inner.keyring, tenant).await?;
        subject_entry(&key, schema, data)
    }

    /// Queues the tenant's subject-index backfill, unless one is queued or running: after
    /// a schema change that gave a collection with records a subject field, another one,
    /// or none. A backfill queued earlier that has not started yet covers this change too
    /// (it reads the schemas when it runs); one that is running may have passed this
    /// collection, so a second one is queued behind it.
    pub(crate) async fn queue_subject_backfill(
        &self,
        tenant: &TenantId,
    ) -> Result<(), ServiceError> {
        let primary = self.inner.database.primary().get().await?;
        if let Some(active) = jobs::active(&primary, SUBJECT_INDEX, Some(tenant)).await?
            && active.state == jobs::JobState::Queued
        {
            return Ok(());
        }
        match jobs::enqueue(&primary, SUBJECT_INDEX, Some(tenant)).await {
            Ok(_) | Err(StoreError::Conflict) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}
