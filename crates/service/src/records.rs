//! Records: validated against their collection's schema, every non-public field sealed
//! with the tenant's data key (AAD binds tenant, region, collection, record, field and key
//! version), searchable fields indexed by blind token, public fields stored as given.
//! Writes append their audit event in the same transaction; reads record theirs through
//! the audit queue before answering.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use audit::{Action, Outcome};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envelope::blind_index::{FieldIndexKey, IndexValue};
use envelope::seal::{self, SealContext};
use envelope::{DataKey, KeyVersion};
use model::{CollectionSchema, FieldClass, FieldType, RecordId};
use serde_json::{Map, Value};
use store::object_deletions::DeletionReason;
use store::records::{Change, IndexEntry, RecordRow};
use store::{ReadConsistency, ServedBy};

use crate::ServiceError;
use crate::idempotency::{self, IdempotencyKey, KeyedCreate};
use crate::keys::KeyError;
use crate::object_deletions::enqueue;
use crate::tenancy::{Caller, Collection, RegionService, Written, random_bytes};
use crate::unit_of_work::EventTiming;

/// A record as its tenant sees it (plaintext, inside this process only).
#[derive(Clone)]
pub struct Record {
    pub id: String,
    pub version: i64,
    pub data: Map<String, Value>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl std::fmt::Debug for Record {
    /// Never prints field values: they are personal data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("version", &self.version)
            .field("fields", &self.data.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A read's result and which server answered it (`X-Served-By`).
#[derive(Debug)]
pub struct Served<T> {
    pub value: T,
    pub served_by: ServedBy,
}

/// One page of a listing or search.
#[derive(Debug)]
pub struct RecordPage {
    pub records: Vec<Record>,
    pub next_cursor: Option<String>,
}

/// Exact-match search on one field (`?field=value`).
#[derive(Debug, Clone)]
pub struct Filter {
    pub field: String,
    pub value: String,
}

/// Paging parameters as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct Paging {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// What a record becomes in the database: public fields, sealed fields, index entries.
struct Stored {
    public: Value,
    sealed: Vec<u8>,
    index: Vec<IndexEntry>,
}

impl RegionService {
    pub async fn create_record(
        &self,
        caller: &Caller,
        collection: &str,
        data: Map<String, Value>,
    ) -> Result<(Record, Written), ServiceError> {
        let id = RecordId::from_random_bytes(random_bytes()).to_string();
        let (row, written) = self
            .with_current_schema(caller, collection, || {
                self.write_new_record(caller, collection, &id, &data, None)
            })
            .await?;
        Ok((
            Record {
                id,
                version: row.version,
                data,
                created_at: row.created_at,
                updated_at: row.updated_at,
            },
            written,
        ))
    }

    /// As [`RegionService::create_record`], once per `key` (docs/operations.md,
    /// "Idempotent creates"): the record and the key's answer commit together; a retry
    /// with the key and the same collection and data gets the first create's record (id,
    /// version, creation time; the data is the retry's own, proven identical by the hash)
    /// and a token past its commit, with nothing created; the key with another request is
    /// 422. A retry while the first create is still in its transaction waits for it
    /// (bounded by the session's lock timeout, then 503).
    pub async fn create_record_once(
        &self,
        caller: &Caller,
        collection: &str,
        data: Map<String, Value>,
        key: &IdempotencyKey,
    ) -> Result<(Record, Written), ServiceError> {
        let body = serde_json::to_vec(&data)
            .map_err(|err| ServiceError::internal_while("hash the record", err))?;
        let keyed = KeyedCreate {
            key,
            operation: idempotency::RECORD_CREATE,
            request_hash: idempotency::sha256(&[
                idempotency::RECORD_CREATE.as_bytes(),
                collection.as_bytes(),
                &body,
            ]),
        };
        let id = RecordId::from_random_bytes(random_bytes()).to_string();
        let (id, version, created_at, written) = self
            .once(
                caller,
                &keyed,
                async || {
                    let (row, written) = self
                        .with_current_schema(caller, collection, || {
                            self.write_new_record(caller, collection, &id, &data, Some(&keyed))
                        })
                        .await?;
                    Ok((id.clone(), row.version, row.created_at, written))
                },
                |answer| {
                    let id = idempotency::answer_field(&answer, "id")?
                        .as_str()
                        .ok_or_else(|| ServiceError::internal("a recorded record id"))?
                        .to_owned();
                    let version = idempotency::answer_field(&answer, "version")?
                        .as_i64()
                        .ok_or_else(|| ServiceError::internal("a recorded record version"))?;
                    let created_at = idempotency::recorded_time(&answer)?;
                    Ok((id, version, created_at, self.token(answer.lsn)))
                },
            )
            .await?;
        Ok((
            Record {
                id,
                version,
                data,
                created_at,
                updated_at: created_at,
            },
            written,
        ))
    }

    async fn write_new_record(
        &self,
        caller: &Caller,
        collection: &str,
        id: &str,
        data: &Map<String, Value>,
        keyed: Option<&KeyedCreate<'_>>,
    ) -> Result<(store::records::RecordRow, Written), ServiceError> {
        let collection = self.collection(caller, collection).await?;
        validate(&collection.schema, data)?;
        let stored = self.store_form(caller, &collection, id, data).await?;

        let resource = record_resource(&collection, id);
        let event = self.caller_event(caller, Action::RecordCreate, &resource, Outcome::Success);
        if let Some(keyed) = keyed {
            // The row, the key's answer and the event in one transaction: a create is
            // never committed without its answer, nor an answer without its create.
            let (row, lsn) = self
                .write(
                    &caller.tenant,
                    EventTiming::AfterChange,
                    [event],
                    async |tx| {
                        let row = store::records::insert(
                            tx,
                            &caller.tenant,
                            collection.name.as_str(),
                            id,
                            &stored.public,
                            &stored.sealed,
                            &stored.index,
                        )
                        .await?;
                        let answer = serde_json::json!({
                            "id": id,
                            "version": row.version,
                            "created_at_us": idempotency::micros(row.created_at),
                        });
                        keyed.record(tx, &caller.tenant, 201, &answer).await?;
                        Ok(row)
                    },
                )
                .await?;
            return Ok((row, self.token(lsn)));
        }
        // The row, its index tokens and its event in one statement, committed in the
        // same round trip.
        let (row, lsn) = self
            .create_with_event(
                store::records::NewRecord {
                    tenant: &caller.tenant,
                    collection: collection.name.as_str(),
                    id,
                    public: &stored.public,
                    sealed: &stored.sealed,
                    index: &stored.index,
                },
                event,
            )
            .await?;
        Ok((row, self.token(lsn)))
    }

    /// Runs `write`, and once more after dropping this node's copy of the collection's
    /// schema when the database refused what it sealed by that copy: the schema was
    /// changed on another node since (`StoreError::SchemaMoved`, migration 0007).
    async fn with_current_schema<T, Write, Written>(
        &self,
        caller: &Caller,
        collection: &str,
        write: Write,
    ) -> Result<T, ServiceError>
    where
        Write: Fn() -> Written,
        Written: Future<Output = Result<T, ServiceError>>,
    {
        match write().await {
            Err(ServiceError::SchemaConflict { .. }) => {
                if let Ok(name) = model::CollectionName::parse(collection) {
                    self.inner
                        .collections
                        .invalidate(&(caller.tenant, name.as_str().to_owned()))
                        .await;
                }
                write().await
            }
            written => written,
        }
    }

    pub async fn get_record(
        &self,
        caller: &Caller,
        collection: &str,
        id: &RecordId,
        consistency: ReadConsistency,
    ) -> Result<Served<Record>, ServiceError> {
        let id = id.as_str();
        let collection = self.collection(caller, collection).await?;
        let not_found = ServiceError::NotFound { what: "record" };
        let (tenant, name) = (&caller.tenant, collection.name.as_str());
        let (row, served_by) = self
            .inner
            .database
            .read(consistency, |mut reader| async move {
                let row = store::records::get_scoped(&mut reader, tenant, name, id).await;
                (reader, row)
            })
            .await?;
        let row = row.ok_or(not_found)?;
        let record = self.open_row(caller, &collection, row).await?;
        self.record_read(
            caller,
            Action::RecordRead,
            &record_resource(&collection, id),
        )
        .await?;
        Ok(Served {
            value: record,
            served_by,
        })
    }

    /// Replaces a record's data; with `if_match`, only if it is at that version.
    pub async fn update_record(
        &self,
        caller: &Caller,
        collection: &str,
        id: &RecordId,
        data: Map<String, Value>,
        if_match: Option<i64>,
    ) -> Result<(Record, Written), ServiceError> {
        let id = id.as_str();
        let (row, written) = self
            .with_current_schema(caller, collection, || {
                self.write_record_update(caller, collection, id, &data, if_match)
            })
            .await?;
        Ok((
            Record {
                id: id.to_owned(),
                version: row.version,
                data,
                created_at: row.created_at,
                updated_at: row.updated_at,
            },
            written,
        ))
    }

    async fn write_record_update(
        &self,
        caller: &Caller,
        collection: &str,
        id: &str,
        data: &Map<String, Value>,
        if_match: Option<i64>,
    ) -> Result<(store::records::RecordRow, Written), ServiceError> {
        let collection = self.collection(caller, collection).await?;
        validate(&collection.schema, data)?;
        let stored = self.store_form(caller, &collection, id, data).await?;

        let resource = record_resource(&collection, id);
        // The row and its event are sent together: one round trip instead of two. When
        // the update changes nothing (absent, stale version) the transaction rolls back
        // with the event.
        let event = self.caller_event(caller, Action::RecordUpdate, &resource, Outcome::Success);
        let (row, lsn) = self
            .write(
                &caller.tenant,
                EventTiming::BesideChange,
                [event],
                async |tx| {
                    changed(
                        store::records::update(
                            tx,
                            &caller.tenant,
                            collection.name.as_str(),
                            id,
                            if_match,
                            &stored.public,
                            &stored.sealed,
                            &stored.index,
                        )
                        .await?,
                    )
                },
            )
            .await?;
        Ok((row, self.token(lsn)))
    }

    /// Deletes a record, its index entries and its files.
    pub async fn delete_record(
        &self,
        caller: &Caller,
        collection: &str,
        id: &RecordId,
        if_match: Option<i64>,
    ) -> Result<Written, ServiceError> {
        let id = id.as_str();
        let collection = self.collection(caller, collection).await?;
        let resource = record_resource(&collection, id);
        let event = self.caller_event(caller, Action::RecordDelete, &resource, Outcome::Success);
        let (queued, lsn) = self
            .write(
                &caller.tenant,
                EventTiming::AfterChange,
                [event],
                async |tx| {
                    // Lock the record first, so that no file is added between listing and
                    // deleting.
                    if store::records::lock(tx, &caller.tenant, collection.name.as_str(), id)
                        .await?
                        .is_none()
                    {
                        return Err(ServiceError::NotFound { what: "record" });
                    }
                    let files = store::files::list_for_record(
                        tx.client(),
                        &caller.tenant,
                        collection.name.as_str(),
                        id,
                    )
                    .await?;
                    let deleted = store::records::delete(
                        tx,
                        &caller.tenant,
                        collection.name.as_str(),
                        id,
                        if_match,
                    )
                    .await?;
                    changed(deleted)?;
                    let keys: Vec<String> = files.into_iter().map(|file| file.object_key).collect();
                    enqueue(tx, &caller.tenant, &keys, DeletionReason::RecordDeleted).await
                },
            )
            .await?;
        self.delete_objects_now(&caller.tenant, &queued).await;
        Ok(self.token(lsn))
    }

    /// A page of the collection's records, all of them or those whose `filter` field
    /// equals the value exactly (a searchable sealed field through its blind index, a
    /// public field by value).
    pub async fn search_records(
        &self,
        caller: &Caller,
        collection: &str,
        filter: Option<Filter>,
        paging: Paging,
        consistency: ReadConsistency,
    ) -> Result<Served<RecordPage>, ServiceError> {
        let collection = self.collection(caller, collection).await?;
        let limit = self.page_limit(paging.limit)?;
        let after = paging.cursor.as_deref().map(decode_cursor).transpose()?;
        let query = match &filter {
            None => Query::All,
            Some(filter) => self.query_for(caller, &collection, filter).await?,
        };
        // One row more than the page tells whether another page follows.
        let fetch = i64::from(limit) + 1;
        let name = collection.name.as_str();
        let after = after.as_deref();
        let (tenant, query) = (&caller.tenant, &query);
        let (mut rows, served_by) = self
            .inner
            .database
            .read(consistency, |mut reader| async move {
                let page = Page { name, after, fetch };
                let rows = query_page(&mut reader, tenant, query, page).await;
                (reader, rows)
            })
            .await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|row| encode_cursor(&row.id))
        } else {
            None
        };
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            records.push(self.open_row(caller, &collection, row).await?);
        }
        // The event names the collection and the field searched, never the value.
        let resource = match &filter {
            Some(filter) => format!("collections/{name}/records?{}", filter.field),
            None => format!("collections/{name}/records"),
        };
        self.record_read(caller, Action::RecordSearch, &resource)
            .await?;
        Ok(Served {
            value: RecordPage {
                records,
                next_cursor,
            },
            served_by,
        })
    }

    pub(crate) fn page_limit(&self, limit: Option<u32>) -> Result<u32, ServiceError> {
        let settings = &self.inner.settings;
        match limit {
            None => Ok(settings.default_page),
            Some(limit) if (1..=settings.max_page).contains(&limit) => Ok(limit),
            Some(_) => Err(ServiceError::invalid(
                "limit",
                format!("must be 1 to {}", settings.max_page),
            )),
        }
    }

    async fn query_for(
        &self,
        caller: &Caller,
        collection: &Collection,
        filter: &Filter,
    ) -> Result<Query, ServiceError> {
        let spec = collection.schema.field(&filter.field).ok_or_else(|| {
            ServiceError::invalid(filter.field.clone(), "is not in the collection's schema")
        })?;
        let value = query_value(spec.field_type, &filter.value).ok_or_else(|| {
            ServiceError::invalid(filter.field.clone(), type_reason(spec.field_type))
        })?;
        if spec.class == FieldClass::Public {
            return Ok(Query::Public {
                field: filter.field.clone(),
                value,
            });
        }
        if !spec.searchable {
            return Err(ServiceError::invalid(
                filter.field.clone(),
                "is not searchable: mark it `searchable` in the schema",
            ));
        }
        let index_keys = self.inner.keyring.index_keys(&caller.tenant).await?;
        let token = field_token(
            &index_keys.field(collection.name.as_str(), &filter.field),
            &filter.field,
            spec.field_type,
            &value,
        )?;
        Ok(Query::Token {
            field: filter.field.clone(),
            token,
        })
    }

    /// Seals, indexes and splits `data` into what the database stores.
    async fn store_form(
        &self,
        caller: &Caller,
        collection: &Collection,
        id: &str,
        data: &Map<String, Value>,
    ) -> Result<Stored, ServiceError> {
        let schema = &collection.schema;
        let name = collection.name.as_str();
        let needs_key = data.keys().any(|field| {
            schema
                .field(field)
                .is_some_and(|spec| spec.class.is_encrypted())
        });
        let needs_index = data
            .keys()
            .any(|field| schema.field(field).is_some_and(|spec| spec.searchable));
        let data_key = match needs_key {
            true => Some(self.inner.keyring.active_data_key(&caller.tenant).await?),
            false => None,
        };
        let index_keys = match needs_index {
            true => Some(self.inner.keyring.index_keys(&caller.tenant).await?),
            false => None,
        };
        let mut public = Map::new();
        let mut sealed = SealedFields::default();
        let mut index = Vec::new();
        for (field, value) in data {
            let spec = schema.field(field).ok_or_else(|| {
                ServiceError::invalid(field.clone(), "is not in the collection's schema")
            })?;
            if !spec.class.is_encrypted() {
                public.insert(field.clone(), value.clone());
                continue;
            }
            let key = data_key
                .as_ref()
                .expect("loaded above: the record has a sealed field");
            let plaintext = serde_json::to_vec(value)
                .map_err(|err| ServiceError::internal_while("encode field", err))?;
            let context = SealContext {
                collection: name,
                record: id,
                field,
            };
            sealed.push(field, seal::seal(key, &context, &plaintext));
            if spec.searchable {
                let index_keys = index_keys
                    .as_ref()
                    .expect("loaded above: the record has a searchable field");
                let key = index_keys.field(name, field);
                index.push(IndexEntry {
                    field: field.clone(),
                    token: field_token(&key, field, spec.field_type, value)?,
                });
            }
        }
        if let Some(key) = &data_key {
            self.count_seals(&caller.tenant, key.version(), sealed.len());
        }
        // The subject index (subjects.rs): one more token, written with the others.
        if let Some(entry) = self
            .record_subject_entry(&caller.tenant, schema, data)
            .await?
        {
            index.push(entry);
        }
        Ok(Stored {
            public: Value::Object(public),
            sealed: sealed.encode(),
            index,
        })
    }

    /// Opens a stored row back into a record.
    async fn open_row(
        &self,
        caller: &Caller,
        collection: &Collection,
        row: RecordRow,
    ) -> Result<Record, ServiceError> {
        let mut keys = TenantKeys {
            keyring: &self.inner.keyring,
            tenant: caller.tenant,
        };
        let data = open_data(
            &mut keys,
            collection.name.as_str(),
            &row.id,
            row.public,
            &row.sealed,
        )
        .await?;
        Ok(Record {
            id: row.id,
            version: row.version,
            data,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

enum Query {
    All,
    Token { field: String, token: [u8; 32] },
    Public { field: String, value: Value },
}

/// Which page of which collection a search reads.
#[derive(Clone, Copy)]
struct Page<'a> {
    name: &'a str,
    after: Option<&'a str>,
    /// Rows to fetch: one more than the page, to tell whether another follows.
    fetch: i64,
}

/// One page of `query`'s rows, in one tenant-scoped read-only transaction.
async fn query_page(
    reader: &mut store::Reader,
    tenant: &model::TenantId,
    query: &Query,
    page: Page<'_>,
) -> Result<Vec<RecordRow>, store::StoreError> {
    let Page { name, after, fetch } = page;
    let tx = reader.begin_tenant(tenant).await?;
    let rows = match query {
        Query::All => store::records::list(tx.client(), tenant, name, after, fetch).await?,
        Query::Token { field, token } => {
            store::records::find_by_token(tx.client(), tenant, name, field, token, after, fetch)
                .await?
        }
        Query::Public { field, value } => {
            store::records::find_by_public(tx.client(), tenant, name, field, value, after, fetch)
                .await?
        }
    };
    tx.finish().await?;
    Ok(rows)
}

/// A conditional change's outcome as the client hears it: the row, or why there is none.
fn changed(change: Change) -> Result<RecordRow, ServiceError> {
    match change {
        Change::Done(row) => Ok(row),
        Change::NotFound => Err(ServiceError::NotFound { what: "record" }),
        Change::VersionMismatch { current } => Err(ServiceError::VersionMismatch { current }),
    }
}

fn validate(schema: &CollectionSchema, data: &Map<String, Value>) -> Result<(), ServiceError> {
    schema
        .validate_record(data)
        .map_err(|err| ServiceError::invalid(format!("data.{}", err.field), err.reason))
}

fn record_resource(collection: &Collection, id: &str) -> String {
    format!("collections/{}/records/{id}", collection.name.as_str())
}

fn field_token(
    key: &FieldIndexKey,
    field: &str,
    field_type: FieldType,
    value: &Value,
) -> Result<[u8; 32], ServiceError> {
    let invalid = || ServiceError::invalid(field.to_owned(), type_reason(field_type));
    let index_value = match (field_type, value) {
        (FieldType::String, Value::String(text)) => IndexValue::String(text),
        (FieldType::Integer, value) => IndexValue::Integer(value.as_i64().ok_or_else(invalid)?),
        (FieldType::Number, value) => IndexValue::Number(value.as_f64().ok_or_else(invalid)?),
        (FieldType::Boolean, Value::Bool(flag)) => IndexValue::Boolean(*flag),
        (FieldType::Timestamp, Value::String(text)) => {
            let (unix_seconds, nanos) = model::parse_timestamp(text).ok_or_else(invalid)?;
            IndexValue::Timestamp {
                unix_seconds,
                nanos,
            }
        }
        _ => return Err(invalid()),
    };
    let token = key.token(&index_value).map_err(|_| invalid())?;
    Ok(*token.as_bytes())
}

/// A query-string value as the JSON value of the field's type.
fn query_value(field_type: FieldType, raw: &str) -> Option<Value> {
    match field_type {
        FieldType::String => Some(Value::String(raw.to_owned())),
        FieldType::Integer => raw.parse::<i64>().ok().map(Value::from),
        FieldType::Number => raw
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        FieldType::Boolean => match raw {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        FieldType::Timestamp => model::parse_timestamp(raw).map(|_| Value::String(raw.to_owned())),
    }
}

fn type_reason(field_type: FieldType) -> String {
    format!("must be a {} value", field_type.as_str())
}

/// Where the data keys that open a record's sealed fields come from: the keyring for the
/// API, a replica snapshot for the analytics export.
pub(crate) trait DataKeys {
    async fn data_key(&mut self, version: KeyVersion) -> Result<Arc<DataKey>, ServiceError>;
}

/// A tenant's keys through the region's keyring.
pub(crate) struct TenantKeys<'a> {
    pub(crate) keyring: &'a crate::Keyring,
    pub(crate) tenant: model::TenantId,
}

impl DataKeys for TenantKeys<'_> {
    async fn data_key(&mut self, version: KeyVersion) -> Result<Arc<DataKey>, ServiceError> {
        Ok(self.keyring.data_key(&self.tenant, version).await?)
    }
}

/// A stored record's fields, public and sealed, as one JSON object: the one decoder of the
/// `sealed` column (each field opened under the key version it names, with associated data
/// binding collection, record and field).
pub(crate) async fn open_data(
    keys: &mut impl DataKeys,
    collection: &str,
    id: &str,
    public: Value,
    sealed: &[u8],
) -> Result<Map<String, Value>, ServiceError> {
    let corrupt = |what: &str| ServiceError::internal(format!("record {id}: {what}"));
    let mut data = match public {
        Value::Object(map) => map,
        _ => return Err(corrupt("public fields are not an object")),
    };
    for (field, sealed) in SealedFields::decode(sealed).ok_or_else(|| corrupt("sealed fields"))? {
        let version = seal::sealed_version(sealed).map_err(KeyError::from)?;
        let key = keys.data_key(version).await?;
        let context = SealContext {
            collection,
            record: id,
            field: &field,
        };
        let plaintext = seal::open(&key, &context, sealed).map_err(KeyError::from)?;
        let value = serde_json::from_slice(&plaintext).map_err(|_| corrupt("sealed value"))?;
        data.insert(field, value);
    }
    Ok(data)
}

/// Sealed fields in one column: per field, a one-byte name length, the name, a four-byte
/// big-endian length and the sealed value. Names are schema field names (at most 63 bytes).
#[derive(Default)]
pub(crate) struct SealedFields {
    bytes: Vec<u8>,
    /// Fields pushed.
    count: u64,
}

impl SealedFields {
    pub(crate) fn push(&mut self, field: &str, sealed: Vec<u8>) {
        let name_len = u8::try_from(field.len()).expect("schema field names are at most 63 bytes");
        let sealed_len = u32::try_from(sealed.len()).expect("a sealed field is under 4 GiB");
        self.bytes.push(name_len);
        self.bytes.extend_from_slice(field.as_bytes());
        self.bytes.extend_from_slice(&sealed_len.to_be_bytes());
        self.bytes.extend_from_slice(&sealed);
        self.count += 1;
    }

    /// How many fields were pushed.
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    pub(crate) fn encode(self) -> Vec<u8> {
        self.bytes
    }

    pub(crate) fn decode(mut bytes: &[u8]) -> Option<BTreeMap<String, &[u8]>> {
        let mut fields = BTreeMap::new();
        while let Some((&name_len, rest)) = bytes.split_first() {
            let (name, rest) = rest.split_at_checked(usize::from(name_len))?;
            let (len, rest) = rest.split_at_checked(4)?;
            let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
            let (sealed, rest) = rest.split_at_checked(len)?;
            fields.insert(std::str::from_utf8(name).ok()?.to_owned(), sealed);
            bytes = rest;
        }
        Some(fields)
    }
}

fn encode_cursor(last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("r1:{last_id}"))
}

fn decode_cursor(cursor: &str) -> Result<String, ServiceError> {
    let bad = || ServiceError::BadRequest("malformed cursor".to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let id = text.strip_prefix("r1:").ok_or_else(bad)?;
    if RecordId::parse(id).is_none() {
        return Err(bad());
    }
    Ok(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_fields_round_trip_and_refuse_truncation() {
        let mut fields = SealedFields::default();
        fields.push("email", vec![1, 2, 3]);
        fields.push("age", vec![]);
        let bytes = fields.encode();
        let decoded = SealedFields::decode(&bytes).expect("round trip");
        assert_eq!(decoded["email"], &[1, 2, 3][..]);
        assert!(decoded["age"].is_empty());
        for cut in 1..bytes.len() {
            if let Some(partial) = SealedFields::decode(&bytes[..cut]) {
                assert!(
                    partial.len() < 2,
                    "a truncated encoding decoded fully at {cut}"
                );
            }
        }
    }

    #[test]
    fn cursors_are_opaque_and_checked() {
        let id = RecordId::from_random_bytes([7; 16]).to_string();
        assert_eq!(decode_cursor(&encode_cursor(&id)).expect("own cursor"), id);
        assert!(decode_cursor("not-a-cursor").is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("r1:x")).is_err());
    }

    #[test]
    fn query_values_follow_field_types() {
        assert_eq!(query_value(FieldType::Integer, "42"), Some(Value::from(42)));
        assert_eq!(query_value(FieldType::Integer, "4.2"), None);
        assert_eq!(query_value(FieldType::Boolean, "yes"), None);
        assert_eq!(query_value(FieldType::Number, "NaN"), None);
        assert!(query_value(FieldType::Timestamp, "2026-01-02T03:04:05Z").is_some());
        assert_eq!(query_value(FieldType::Timestamp, "yesterday"), None);
    }
}
