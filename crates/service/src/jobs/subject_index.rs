//! The `subject_index` job: after a schema change gave a collection with records a
//! `subject_field` (or another one, or none), sets the subject token of every record of
//! the tenant to what its collection's current schema says, `batch_size` records a batch.
//!
//! The walk goes in (collection, record id) order over all the tenant's records; the
//! checkpoint is the last record handled. A record's token is written only if the record
//! is still at the version the batch read (`store::subjects::set_tokens`): one updated
//! since was written under the current schema, with its token, by its writer. So a batch
//! that runs again writes the same tokens. A record that cannot be opened (a destroyed
//! key, a corrupt value) is counted as failed and keeps its token.

use std::collections::HashMap;

use model::{CollectionSchema, TenantId};
use serde_json::{Value, json};
use store::RegionDatabase;
use store::subjects::{self, CollectionRecord, RecordPosition, SubjectTokenUpdate};

use super::{BatchDone, BatchError, BatchInput, JobHandler, NextBatch};
use crate::collections::parse_stored_schema;
use crate::records::{TenantKeys, open_data};
use crate::subjects::{subject_entry, subject_key};
use crate::{Keyring, ServiceError};

/// The kind of the subject-index backfill job.
pub const SUBJECT_INDEX: &str = store::subjects::BACKFILL_KIND;

/// Runs `subject_index` jobs with the node's keyring.
#[derive(Debug, Clone)]
pub struct SubjectIndexJob {
    keyring: Keyring,
    database: RegionDatabase,
}

impl SubjectIndexJob {
    pub fn new(keyring: Keyring, database: RegionDatabase) -> Self {
        Self { keyring, database }
    }

    /// The token `record` should carry: `Ok(None)` for none, `Err` when it cannot be
    /// opened.
    async fn wanted_token(
        &self,
        tenant: &TenantId,
        schema: &CollectionSchema,
        key: &envelope::subject_index::SubjectIndexKey,
        record: &CollectionRecord,
    ) -> Result<Option<[u8; 32]>, ServiceError> {
        if schema.subject_field().is_none() {
            return Ok(None);
        }
        let mut keys = TenantKeys {
            keyring: &self.keyring,
            tenant: *tenant,
        };
        let data = open_data(
            &mut keys,
            &record.collection,
            &record.row.id,
            record.row.public.clone(),
            &record.row.sealed,
        )
        .await?;
        Ok(subject_entry(key, schema, &data)
            .ok()
            .flatten()
            .map(|entry| entry.token))
    }
}

fn parse_checkpoint(value: Option<&Value>) -> Option<Option<RecordPosition>> {
    let Some(value) = value else {
        return Some(None);
    };
    Some(Some(RecordPosition {
        collection: value.get("collection")?.as_str()?.to_owned(),
        record_id: value.get("record_id")?.as_str()?.to_owned(),
    }))
}

fn checkpoint(at: &RecordPosition) -> Value {
    json!({"collection": at.collection, "record_id": at.record_id})
}

#[async_trait::async_trait]
impl JobHandler for SubjectIndexJob {
    fn kind(&self) -> &'static str {
        SUBJECT_INDEX
    }

    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        let corrupt = |reason| BatchError {
            reason,
            cause: None,
        };
        let tenant = *input
            .tenant
            .ok_or(corrupt("a subject_index job names no tenant"))?;
        let after = parse_checkpoint(input.checkpoint).ok_or(corrupt("corrupt checkpoint"))?;
        let limit = i64::try_from(input.batch_size).unwrap_or(i64::MAX);
        let mut primary = self.database.primary().get().await.map_err(database)?;
        let page = {
            let tx = primary.read_tenant(&tenant).await.map_err(database)?;
            let page = subjects::tenant_records_page(tx.client(), &tenant, after.as_ref(), limit)
                .await
                .map_err(database)?;
            tx.finish().await.map_err(database)?;
            page
        };
        let Some(last) = page.last().map(CollectionRecord::position) else {
            return Ok(BatchDone {
                processed: 0,
                failed: 0,
                total: None,
                next: NextBatch::Finished,
            });
        };
        let key = subject_key(&self.keyring, &tenant).await.map_err(service)?;
        let mut schemas: HashMap<String, CollectionSchema> = HashMap::new();
        let mut updates = Vec::with_capacity(page.len());
        let mut failed = 0;
        for record in &page {
            if !schemas.contains_key(&record.collection) {
                let tx = primary.read_tenant(&tenant).await.map_err(database)?;
                let stored = store::collections::get(tx.client(), &tenant, &record.collection)
                    .await
                    .map_err(database)?;
                tx.finish().await.map_err(database)?;
                let stored = stored.ok_or(corrupt("a record's collection vanished"))?;
                let schema = parse_stored_schema(stored.schema).map_err(service)?;
                schemas.insert(record.collection.clone(), schema);
            }
            let schema = &schemas[&record.collection];
            match self.wanted_token(&tenant, schema, &key, record).await {
                Ok(token) => updates.push(SubjectTokenUpdate {
                    collection: record.collection.clone(),
                    record_id: record.row.id.clone(),
                    version: record.row.version,
                    token,
                }),
                Err(err @ ServiceError::Unavailable { .. }) => {
                    return Err(BatchError::new("dependency unavailable", err));
                }
                // This record can never be opened: counted, skipped; the others go on.
                Err(_) => failed += 1,
            }
        }
        subjects::set_tokens(&mut primary, &tenant, &updates)
            .await
            .map_err(database)?;
        let total = match input.checkpoint {
            None => {
                let tx = primary.read_tenant(&tenant).await.map_err(database)?;
                let count = store::records::count(tx.client(), &tenant)
                    .await
                    .map_err(database)?;
                tx.finish().await.map_err(database)?;
                Some(u64::try_from(count).unwrap_or_default())
            }
            Some(_) => None,
        };
        Ok(BatchDone {
            processed: u64::try_from(updates.len()).unwrap_or(u64::MAX),
            failed,
            total,
            next: NextBatch::Continue(checkpoint(&last)),
        })
    }
}

fn database(err: store::StoreError) -> BatchError {
    BatchError::new("database unavailable", err)
}

fn service(err: ServiceError) -> BatchError {
    match err {
        ServiceError::Internal(_) => BatchError::new("corrupt stored data", err),
        other => BatchError::new("dependency unavailable", other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_refuse_what_they_did_not_write() {
        let at = RecordPosition {
            collection: "patients".into(),
            record_id: "r-1".into(),
        };
        assert_eq!(parse_checkpoint(Some(&checkpoint(&at))), Some(Some(at)));
        assert_eq!(parse_checkpoint(None), Some(None));
        assert_eq!(parse_checkpoint(Some(&json!({"collection": 1}))), None);
    }
}
