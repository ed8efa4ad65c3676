//! Data subjects (issue 29): the subject index a record's write path keeps (one token per
//! record of a collection with a `subject_field`, `store::subjects`), the backfill a
//! schema change starts when records must gain, change or lose their tokens
//! (`jobs::subject_index`), and the lookup of one subject's records across a tenant's
//! collections.
//!
//! A subject's value is personal data: it is turned into its token as soon as it arrives
//! and never reaches a log, a metric, an audit event or an error message.

use std::time::SystemTime;

use audit::Action;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use envelope::subject_index::{SubjectError, SubjectIndexKey};
use model::{CollectionSchema, RecordId, TenantId};
use serde_json::{Map, Value};
use store::files::FileRow;
use store::records::IndexEntry;
use store::subjects::{self, CollectionRecord, EventRef, RecordPosition, SUBJECT_TOKEN_FIELD};

use crate::records::{TenantKeys, open_data};
use crate::tenancy::{Caller, RegionService};
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
}

/// How many of a subject's records one export page holds at most (the page's memory
/// bound: opened records, their files and event references).
pub const MAX_EXPORT_PAGE: u32 = 100;

impl RegionService {
    /// One signed page of everything stored about `subject` in the caller's tenant (see
    /// `wire::api::SubjectExport`). Audited as `subject.export` on `subjects/{token}`
    /// (the first 16 hex digits of the subject's token, never the value).
    pub async fn export_subject(
        &self,
        caller: &Caller,
        subject: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<wire::api::SubjectExport, ServiceError> {
        let limit = match limit {
            None => MAX_EXPORT_PAGE,
            Some(limit) if (1..=MAX_EXPORT_PAGE).contains(&limit) => limit,
            Some(_) => {
                return Err(ServiceError::invalid(
                    "limit",
                    format!("must be 1 to {MAX_EXPORT_PAGE}"),
                ));
            }
        };
        let after = cursor.map(decode_cursor).transpose()?;
        let key = subject_key(&self.inner.keyring, &caller.tenant).await?;
        // The error names the problem, never the value.
        let token = key
            .token(subject)
            .map_err(|err| ServiceError::BadRequest(format!("subject: {err}")))?;
        let token_bytes = *token.as_bytes();
        let tenant = caller.tenant;
        let fetch = i64::from(limit) + 1;
        let (mut rows, files, events) = self
            .read_primary_first(&tenant, |client| {
                let after = after.clone();
                Box::pin(async move {
                    let mut rows =
                        subjects::find_page(client, &tenant, &token_bytes, after.as_ref(), fetch)
                            .await?;
                    rows.truncate(usize::try_from(fetch).unwrap_or(usize::MAX));
                    let page = &rows[..rows.len().min(limit as usize)];
                    let page_records: Vec<(&str, &str)> = page
                        .iter()
                        .map(|record| (record.collection.as_str(), record.row.id.as_str()))
                        .collect();
                    let files =
                        store::files::list_for_records(client, &tenant, &page_records).await?;
                    let resources: Vec<String> = page.iter().map(resource_of).collect();
                    let events = subjects::events_about(client, &tenant, &resources).await?;
                    Ok((rows, files, events))
                })
            })
            .await?;
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(|last| encode_cursor(&last.position()))
        } else {
            None
        };
        let mut records = Vec::with_capacity(rows.len());
        for record in rows {
            records.push(self.export_record(caller, record, &files, &events).await?);
        }
        let signing_key = self.inner.audit.signing_key();
        let mut export = wire::api::SubjectExport {
            subject: subject.to_owned(),
            subject_token: token.to_hex(),
            tenant: tenant.to_string(),
            region: self.inner.region.to_string(),
            records,
            cursor: cursor.map(str::to_owned),
            next_cursor,
            generated_at: audit::time::format(SystemTime::now()),
            key_id: signing_key.key_id().to_owned(),
            signature: String::new(),
        };
        let payload = export
            .signed_payload()
            .map_err(|err| ServiceError::internal_while("encode the subject export", err))?;
        export.signature = signing_key.sign(&payload).to_base64();
        self.record_read(caller, Action::SubjectExport, &subject_resource(&token))
            .await?;
        Ok(export)
    }

    /// A record of the export, opened, with its files and events.
    async fn export_record(
        &self,
        caller: &Caller,
        record: CollectionRecord,
        files: &[FileRow],
        events: &[EventRef],
    ) -> Result<wire::api::SubjectRecord, ServiceError> {
        let resource = resource_of(&record);
        let CollectionRecord { collection, row } = record;
        let mut keys = TenantKeys {
            keyring: &self.inner.keyring,
            tenant: caller.tenant,
        };
        let data = open_data(&mut keys, &collection, &row.id, row.public, &row.sealed).await?;
        let files_path = format!(
            "/v1/tenants/{}/collections/{collection}/records/{}/files",
            caller.tenant, row.id
        );
        Ok(wire::api::SubjectRecord {
            files: files
                .iter()
                .filter(|file| file.collection == collection && file.record_id == row.id)
                .map(|file| wire::api::SubjectFile {
                    name_token: file.name.clone(),
                    size: u64::try_from(file.size).unwrap_or_default(),
                    sha256: hex::encode(&file.sha256),
                    content_type: file.content_type.clone(),
                    created_at: audit::time::format(file.created_at),
                    files_path: files_path.clone(),
                })
                .collect(),
            audit_events: events
                .iter()
                .filter(|event| event.record_resource == resource)
                .map(|event| wire::api::SubjectAuditEvent {
                    seq: event.seq,
                    time: audit::time::format(event.time),
                    action: event.action.clone(),
                })
                .collect(),
            collection,
            id: row.id,
            version: row.version,
            data,
            created_at: audit::time::format(row.created_at),
            updated_at: audit::time::format(row.updated_at),
        })
    }
}

/// The audit resource of an export: the subject's token, shortened, never its value.
fn subject_resource(token: &envelope::blind_index::BlindToken) -> String {
    format!("subjects/{}", &token.to_hex()[..16])
}

fn resource_of(record: &CollectionRecord) -> String {
    format!(
        "collections/{}/records/{}",
        record.collection, record.row.id
    )
}

fn encode_cursor(at: &RecordPosition) -> String {
    URL_SAFE_NO_PAD.encode(format!("s1:{}/{}", at.collection, at.record_id))
}

fn decode_cursor(cursor: &str) -> Result<RecordPosition, ServiceError> {
    let bad = || ServiceError::BadRequest("malformed cursor".to_owned());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (collection, record_id) = text
        .strip_prefix("s1:")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(bad)?;
    if model::CollectionName::parse(collection).is_err() || RecordId::parse(record_id).is_none() {
        return Err(bad());
    }
    Ok(RecordPosition {
        collection: collection.to_owned(),
        record_id: record_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_cursors_round_trip_and_refuse_what_they_did_not_write() {
        let at = RecordPosition {
            collection: "patients".into(),
            record_id: RecordId::from_random_bytes([3; 16]).to_string(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&at)).expect("cursor"), at);
        for bad in [
            "",
            "not base64!",
            &URL_SAFE_NO_PAD.encode("r1:x"),
            &URL_SAFE_NO_PAD.encode("s1:Bad/x"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
