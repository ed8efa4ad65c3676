//! Collections of a tenant (admin): putting a schema (refused while stored records could
//! not follow it) and the cached lookup every record and file use case starts with.

use std::sync::Arc;

use audit::{Action, Outcome};
use model::{CollectionName, CollectionSchema, TenantId};

use crate::ServiceError;
use crate::tenancy::{Caller, Collection, RegionService};
use crate::unit_of_work::EventTiming;

impl RegionService {
    /// Creates or replaces a collection's schema; returns it and whether it was created.
    pub async fn put_collection(
        &self,
        caller: &Caller,
        name: &str,
        schema: CollectionSchema,
    ) -> Result<(Collection, bool), ServiceError> {
        let name = CollectionName::parse(name)
            .map_err(|err| ServiceError::invalid("collection", err.reason))?;
        let schema_json = serde_json::to_value(wire::api::SchemaDoc::from_model(&schema))
            .map_err(|err| ServiceError::internal_while("encode schema", err))?;
        // Schema changes are configuration changes of the tenant: audited as an admin
        // action on the collection.
        let resource = format!("collections/{}", name.as_str());
        let event = self.caller_event(caller, Action::CollectionPut, &resource, Outcome::Success);
        let ((row, created), _) = self
            .write(
                &caller.tenant,
                EventTiming::AfterChange,
                [event],
                async |tx| {
                    let reindex = self
                        .check_records_follow(tx, &caller.tenant, &name, &schema)
                        .await?;
                    let (row, created) =
                        store::collections::upsert(tx, &caller.tenant, name.as_str(), &schema_json)
                            .await?;
                    if reindex {
                        // In this transaction: the change never commits without its job.
                        // Records written from then on carry their token already; the
                        // job sets the older ones'.
                        store::subjects::queue_backfill(tx, &caller.tenant).await?;
                    }
                    Ok((row, created))
                },
            )
            .await?;
        self.inner
            .collections
            .invalidate(&(caller.tenant, name.as_str().to_owned()))
            .await;
        Ok((
            Collection {
                name,
                schema: Arc::new(schema),
                version: row.version,
            },
            created,
        ))
    }

    /// Refuses a new schema that the collection's stored records could not follow (see
    /// [`CollectionSchema::storage_change`]), and an encrypted field that records still
    /// hold unencrypted from an earlier schema. Either would leave personal data in
    /// plaintext at rest, or records that search cannot find. A record written in a
    /// transaction that overlaps this one is not seen (see docs/ARCHITECTURE.md).
    /// Returns whether the collection's records need their subject tokens set again (the
    /// subject field changed and there are records).
    async fn check_records_follow(
        &self,
        tx: &store::PrimaryTx<'_>,
        tenant: &TenantId,
        name: &CollectionName,
        next: &CollectionSchema,
    ) -> Result<bool, ServiceError> {
        let Some(stored) = store::collections::get_locked(tx, tenant, name.as_str()).await? else {
            return Ok(false);
        };
        let stored = parse_stored_schema(stored.schema)?;
        let conflict = |err: model::FieldError| ServiceError::SchemaConflict {
            field: err.field,
            reason: err.reason,
        };
        if let Some(change) = stored.storage_change(next)
            && store::records::any_in_collection(tx, tenant, name.as_str()).await?
        {
            return Err(conflict(change));
        }
        for (field, spec) in next.fields() {
            let was_encrypted = stored.field(field).map(|f| f.class.is_encrypted());
            if spec.class.is_encrypted()
                && was_encrypted != Some(true)
                && store::records::any_with_unencrypted_field(tx, tenant, name.as_str(), field)
                    .await?
            {
                return Err(conflict(model::FieldError {
                    field: field.clone(),
                    reason: format!(
                        "cannot be {}: records of the collection still hold it unencrypted from an earlier schema; rewrite them without it first",
                        spec.class.as_str()
                    ),
                }));
            }
        }
        Ok(stored.subject_field() != next.subject_field()
            && store::records::any_in_collection(tx, tenant, name.as_str()).await?)
    }

    /// A collection of the caller's tenant, from the cache or the database.
    pub async fn collection(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Collection, ServiceError> {
        let not_found = || ServiceError::NotFound { what: "collection" };
        let name = CollectionName::parse(name).map_err(|_| not_found())?;
        let cache_key = (caller.tenant, name.as_str().to_owned());
        if let Some(hit) = self.inner.collections.get(&cache_key).await {
            return hit.ok_or_else(not_found);
        }
        let tenant = caller.tenant;
        let collection_name = name.as_str().to_owned();
        let row = self
            .read_primary_first(&tenant, |client| {
                let collection_name = collection_name.clone();
                Box::pin(
                    async move { store::collections::get(client, &tenant, &collection_name).await },
                )
            })
            .await?;
        let collection = match row {
            Some(row) => {
                let schema = parse_stored_schema(row.schema)?;
                Some(Collection {
                    name,
                    schema: Arc::new(schema),
                    version: row.version,
                })
            }
            None => None,
        };
        self.inner
            .collections
            .insert(cache_key, collection.clone())
            .await;
        collection.ok_or_else(not_found)
    }
}

/// A schema as the database keeps it; one that no longer parses is an internal error.
pub(crate) fn parse_stored_schema(
    json: serde_json::Value,
) -> Result<CollectionSchema, ServiceError> {
    serde_json::from_value::<wire::api::SchemaDoc>(json)
        .map_err(|err| err.to_string())
        .and_then(|doc| doc.into_model().map_err(|err| err.to_string()))
        .map_err(|err| ServiceError::internal_while("read the stored schema", err))
}
