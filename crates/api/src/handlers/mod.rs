//! The handlers of the node's HTTP surface, one module per resource of API.md, and what
//! they share: path parameters and the headers a write or a read adds (authorization
//! and read consistency are the request context's, `extract::Ctx`). Handlers are thin:
//! parse, call one service function, map the result; a `?` on a [`ServiceError`]
//! answers with its problem (see `extract`).
//!
//! The problems an operation answers because of what it takes (credentials, a tenant in
//! the path, a body, a consistency token or `If-Match`) are documented once, in
//! `openapi`; an annotation here lists only the problems of its own handler.

pub(crate) mod api_keys;
pub(crate) mod audit;
pub(crate) mod collections;
pub(crate) mod evidence;
pub(crate) mod files;
pub(crate) mod health;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod records;
pub(crate) mod subjects;
pub(crate) mod tenants;

use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use model::{CollectionName, FileName, RecordId, TenantId};
use serde::Deserialize;
use service::{ServiceError, Written};
use store::ServedBy;
use utoipa::IntoParams;

use crate::extract::ApiError;

/// The query string as `T` (a struct of optional strings that denies unknown fields),
/// refused like a JSON body that does not fit (naming the field, never its value).
pub(crate) fn query_params<T: serde::de::DeserializeOwned>(
    query: Option<String>,
) -> Result<T, ServiceError> {
    let pairs: serde_json::Map<String, serde_json::Value> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(key, value)| {
                (
                    key.into_owned(),
                    serde_json::Value::String(value.into_owned()),
                )
            })
            .collect();
    let json = serde_json::to_vec(&pairs).expect("a map of strings always serializes");
    crate::extract::parse_json(&json)
}

/// A `limit` query parameter: a positive integer (the use case checks its range).
pub(crate) fn page_limit(raw: Option<&str>) -> Result<Option<u32>, ServiceError> {
    raw.map(|raw| {
        raw.parse::<u32>()
            .map_err(|_| ServiceError::invalid("limit", "must be a positive integer"))
    })
    .transpose()
}

/// What a handler answers: a response, or a service error as its problem.
pub(crate) type ApiResult = Result<Response, ApiError>;

/// `/v1/tenants/{tenant}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TenantPath {
    /// The tenant id.
    pub tenant: String,
}

/// `/v1/tenants/{tenant}/collections/{collection}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct CollectionPath {
    /// The tenant id.
    pub tenant: String,
    /// The collection name.
    pub collection: String,
}

/// `/v1/tenants/{tenant}/collections/{collection}/records/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RecordPath {
    /// The tenant id.
    pub tenant: String,
    /// The collection name.
    pub collection: String,
    /// The record id.
    pub id: String,
}

/// `/v1/tenants/{tenant}/collections/{collection}/records/{id}/files/{name}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct FilePath {
    /// The tenant id.
    pub tenant: String,
    /// The collection name.
    pub collection: String,
    /// The record id.
    pub id: String,
    /// The file name.
    pub name: String,
}

impl RecordPath {
    /// The record the path names; a malformed id names none (404, as an unknown one).
    pub(crate) fn record(&self) -> Result<RecordId, ServiceError> {
        RecordId::parse(&self.id).ok_or(ServiceError::NotFound { what: "record" })
    }
}

impl FilePath {
    /// The record and the file name to write: a name against the rules is refused (422,
    /// naming `name`), a malformed record id names no record (404).
    pub(crate) fn file_to_write(&self) -> Result<(RecordId, FileName), ServiceError> {
        let name = FileName::parse(&self.name).map_err(ServiceError::invalid_id)?;
        let record = RecordId::parse(&self.id).ok_or(ServiceError::NotFound { what: "record" })?;
        Ok((record, name))
    }

    /// The file the path names; a malformed record id or name names none (404, as an
    /// unknown file).
    pub(crate) fn file(&self) -> Result<(RecordId, FileName), ServiceError> {
        let not_found = || ServiceError::NotFound { what: "file" };
        let record = RecordId::parse(&self.id).ok_or_else(not_found)?;
        let name = FileName::parse(&self.name).map_err(|_| not_found())?;
        Ok((record, name))
    }
}

/// What an audit event names in place of a path parameter that is not a valid id: never
/// the text the caller sent.
pub(crate) const INVALID_ID: &str = "(invalid)";

/// `raw` when `valid`, else [`INVALID_ID`].
pub(crate) fn validated(raw: &str, valid: bool) -> &str {
    if valid { raw } else { INVALID_ID }
}

fn collection_id(raw: &str) -> &str {
    validated(raw, CollectionName::parse(raw).is_ok())
}

fn record_id(raw: &str) -> &str {
    validated(raw, RecordId::parse(raw).is_some())
}

/// What a tenant-scoped call acts on: the tenant, as the path names it, and the resource
/// its audit event names, built from validated ids only (see [`INVALID_ID`]).
#[derive(Debug)]
pub(crate) struct Target<'a> {
    pub tenant: &'a str,
    pub resource: String,
}

impl TenantPath {
    /// `resource` of the tenant.
    pub(crate) fn on(&self, resource: &str) -> Target<'_> {
        Target {
            tenant: &self.tenant,
            resource: resource.to_owned(),
        }
    }
}

impl CollectionPath {
    /// The collection.
    pub(crate) fn target(&self) -> Target<'_> {
        Target {
            tenant: &self.tenant,
            resource: format!("collections/{}", collection_id(&self.collection)),
        }
    }

    /// The collection's records.
    pub(crate) fn records(&self) -> Target<'_> {
        Target {
            tenant: &self.tenant,
            resource: format!("collections/{}/records", collection_id(&self.collection)),
        }
    }
}

impl RecordPath {
    /// The record.
    pub(crate) fn target(&self) -> Target<'_> {
        Target {
            tenant: &self.tenant,
            resource: format!(
                "collections/{}/records/{}",
                collection_id(&self.collection),
                record_id(&self.id)
            ),
        }
    }
}

impl FilePath {
    /// The record's files (an audit event does not name the file).
    pub(crate) fn target(&self) -> Target<'_> {
        Target {
            tenant: &self.tenant,
            resource: format!(
                "collections/{}/records/{}/files",
                collection_id(&self.collection),
                record_id(&self.id)
            ),
        }
    }
}

/// A tenant id from a path: one that does not parse names no tenant.
pub(crate) fn tenant_id(raw: &str) -> Result<TenantId, ServiceError> {
    TenantId::parse(raw).map_err(|_| ServiceError::NotFound { what: "tenant" })
}

/// Adds the `X-Consistency-Token` of a write.
pub(crate) fn with_written(mut response: Response, written: &Written) -> Response {
    if let Ok(value) = HeaderValue::from_str(&written.token.encode()) {
        response
            .headers_mut()
            .insert(wire::headers::CONSISTENCY_TOKEN, value);
    }
    response
}

/// The request's `Idempotency-Key`, if it sent one (read once the caller is authorized:
/// validating it costs a hash).
pub(crate) fn idempotency_key(
    headers: &HeaderMap,
) -> Result<Option<service::idempotency::IdempotencyKey>, ServiceError> {
    headers
        .get(wire::headers::IDEMPOTENCY_KEY)
        .map(|value| service::idempotency::IdempotencyKey::parse(value.as_bytes()))
        .transpose()
}

/// Adds `X-Served-By` of a read.
pub(crate) fn with_served_by(mut response: Response, served_by: ServedBy) -> Response {
    response.headers_mut().insert(
        wire::headers::SERVED_BY,
        HeaderValue::from_static(served_by.as_str()),
    );
    response
}

/// Adds the `ETag` of a record at `version`.
pub(crate) fn with_etag(mut response: Response, version: i64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// A point in time as the API shows it (RFC 3339).
pub(crate) fn time_text(time: SystemTime) -> String {
    ::audit::time::format(time)
}
