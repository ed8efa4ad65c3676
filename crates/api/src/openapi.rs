//! The OpenAPI 3.1 document of the node's HTTP surface, served at `GET /v1/openapi.json`.
//! It is generated from the handlers' `#[utoipa::path]` annotations and the `wire` types;
//! headers that middleware adds to every response (request id, routing headers) are added
//! here, mirroring the layers of `app`, and so are the problems an operation answers
//! because of what it takes (`add_common_problems`): each annotation names only what its
//! own handler adds.

use std::sync::LazyLock;

use axum::Json;
use axum::http::header::IF_MATCH;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::response::Response as ResponseDoc;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, Ref, RefOr};
use utoipa::{Modify, OpenApi, ToResponse};

use crate::handlers::{
    api_keys, audit, collections, evidence, files, health, jobs, keys, records, subjects, tenants,
};

/// The security scheme every authenticated operation names (`security(("bearer" = []))`).
const BEARER: &str = "bearer";

/// Paths below this prefix pass through `routing_headers` (see `app`).
const TENANT_SCOPED: &str = "/v1/tenants/{tenant}";

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Residency",
        description = "The public HTTP API of a Residency regional node (API.md). Every \
            regional node serves every path for every tenant. Errors are \
            `application/problem+json` (RFC 9457) and never echo personal data.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        tenants::create_tenant,
        tenants::list_tenants,
        tenants::get_tenant,
        tenants::offboard_tenant,
        tenants::offboarding_certificate,
        api_keys::create_api_key,
        api_keys::delete_api_key,
        collections::put_collection,
        collections::get_collection,
        keys::rotate_keys,
        keys::key_status,
        keys::destroy_key_version,
        keys::key_policy,
        keys::set_key_policy,
        records::create_record,
        records::search_records,
        records::get_record,
        records::update_record,
        records::delete_record,
        files::put_file,
        files::get_file,
        files::delete_file,
        audit::audit_events,
        audit::audit_export,
        evidence::residency_evidence,
        subjects::export_subject,
        subjects::erase_subject,
        subjects::reapply_erasures,
        audit::audit_keys,
        jobs::start_rewrap,
        jobs::list_jobs,
        jobs::get_job,
        audit::rotate_audit_key,
        openapi_json,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(
        // The bodies of reusable responses: `ToResponse` does not register the schemas it
        // refers to.
        schemas(wire::Problem, wire::api::RecordView, wire::api::RecordPage),
        responses(
            problems::BadRequest,
            problems::Unauthorized,
            problems::Forbidden,
            problems::NotFound,
            problems::Conflict,
            problems::PreconditionFailed,
            problems::PayloadTooLarge,
            problems::RequestTimeout,
            problems::Misdirected,
            problems::Unprocessable,
            problems::IdempotencyKeyReused,
            problems::RateLimited,
            problems::Internal,
            problems::Unavailable,
            successes::RecordWritten,
            successes::RecordRead,
            successes::RecordsFound,
            successes::Deleted,
        ),
    ),
    modifiers(&Layers),
    tags(
        (name = "tenants", description = "Tenants (operator token)."),
        (name = "administration", description = "Tenant administration (admin key)."),
        (name = "records", description = "Records (writer; reader for reads)."),
        (name = "files", description = "Files attached to records (writer; reader for reads)."),
        (name = "audit", description = "Audit log and residency evidence (auditor key)."),
        (name = "jobs", description = "The region's durable jobs and the KMS rewrap (operator token)."),
        (name = "operations", description = "Health, readiness, metrics and this document."),
    ),
)]
pub(crate) struct ApiDoc;

/// Built once: the document is a function of the code only.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// `GET /v1/openapi.json`: this document (no auth).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses(
        (
            status = 200,
            description = "The OpenAPI 3.1 document of this API.",
            content_type = "application/json",
            body = Object
        ),
    ),
)]
pub(crate) async fn openapi_json() -> Response {
    Json(&*DOCUMENT).into_response()
}

/// The success answers several operations share, one reusable response each, with the
/// headers they carry (the routing headers and `X-Request-Id` are added by [`Layers`]).
/// Only their types are used: they describe responses, nothing builds them.
#[expect(
    dead_code,
    reason = "utoipa reads the type of the field; no value of these types is ever built"
)]
pub(crate) mod successes {
    use utoipa::ToResponse;
    use wire::api as body;

    /// The record as written (version 1 when created); `ETag` is its version, and the
    /// consistency token reads this write back from any node.
    #[derive(ToResponse)]
    #[response(headers(
        ("ETag" = String, description = "`\"<version>\"` of the record."),
        ("X-Consistency-Token" = String, description = "Read-your-writes token."),
    ))]
    pub(crate) struct RecordWritten(body::RecordView);

    /// The record; `ETag` is its version.
    #[derive(ToResponse)]
    #[response(headers(
        ("ETag" = String, description = "`\"<version>\"` of the record."),
        ("X-Served-By" = String, description = "`primary` or `replica`."),
    ))]
    pub(crate) struct RecordRead(body::RecordView);

    /// A page of matching records.
    #[derive(ToResponse)]
    #[response(headers(
        ("X-Served-By" = String, description = "`primary` or `replica`."),
    ))]
    pub(crate) struct RecordsFound(body::RecordPage);

    /// Deleted (a record with its files, or one file); the consistency token reads the
    /// deletion back from any node.
    #[derive(ToResponse)]
    #[response(headers(
        ("X-Consistency-Token" = String, description = "Read-your-writes token."),
    ))]
    pub(crate) struct Deleted;
}

/// The problem+json answers handlers share, one reusable response each (RFC 9457 bodies,
/// `wire::Problem`). Only their types are used: they describe responses, nothing builds
/// them.
#[expect(
    dead_code,
    reason = "utoipa reads the type of the field; no value of these types is ever built"
)]
pub(crate) mod problems {
    use utoipa::ToResponse;
    use wire::Problem;

    /// Malformed request: a body that is not JSON, or a bad cursor, consistency token or
    /// `If-Match`.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct BadRequest(Problem);

    /// Missing or invalid credentials.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct Unauthorized(Problem);

    /// Valid credentials whose role does not allow the operation (denials are audited).
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct Forbidden(Problem);

    /// The tenant or resource does not exist, or the caller may not learn that it does.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct NotFound(Problem);

    /// The request conflicts with what is stored: a concurrent write created the same
    /// resource, or a schema change that the collection's records could not follow (a
    /// field moving between public and an encrypted class, or becoming searchable, while
    /// records exist).
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct Conflict(Problem);

    /// The `Idempotency-Key` was used, within its 24 hours, for another request
    /// (`idempotency-key-reused`), or the request does not fit the contract (`invalid`,
    /// naming the field, never its value). Nothing was created.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct IdempotencyKeyReused(Problem);

    /// `If-Match` named another version than the current one.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct PreconditionFailed(Problem);

    /// The body exceeds the limit (1 MiB for JSON, the configured maximum for files).
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct PayloadTooLarge(Problem);

    /// The request body did not arrive in time once the caller was authorized: a JSON
    /// body within 10 s, each chunk of an upload within 30 s.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct RequestTimeout(Problem);

    /// The tenant's home region is another region: this node serves its own tenants
    /// only. `X-Residency-Region` names the home region.
    #[derive(ToResponse)]
    #[response(
        content_type = "application/problem+json",
        headers(("X-Residency-Region" = String, description = "The tenant's home region."))
    )]
    pub(crate) struct Misdirected(Problem);

    /// Input that does not fit the contract; `detail` names the field, never its value.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct Unprocessable(Problem);

    /// Over this key's rate limit.
    #[derive(ToResponse)]
    #[response(
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))
    )]
    pub(crate) struct RateLimited(Problem);

    /// An internal error; the request id identifies it in the node's logs.
    #[derive(ToResponse)]
    #[response(content_type = "application/problem+json")]
    pub(crate) struct Internal(Problem);

    /// A dependency (database primary, KMS, object store) is down or the audit queue is
    /// full; the request is never served elsewhere.
    #[derive(ToResponse)]
    #[response(
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))
    )]
    pub(crate) struct Unavailable(Problem);
}

/// Header parameters that several operations take. Handlers read the headers themselves
/// (after authorizing the call): only the types are used.
#[expect(
    dead_code,
    reason = "utoipa reads the fields' types and docs; no value of these types is ever built"
)]
pub(crate) mod header_params {
    use utoipa::IntoParams;

    #[derive(IntoParams)]
    #[into_params(parameter_in = Header)]
    pub(crate) struct ConsistencyToken {
        /// A token from a write: the read sees that write or a later one.
        #[param(rename = "X-Consistency-Token")]
        token: Option<String>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Header)]
    pub(crate) struct IdempotencyKey {
        /// 1 to 255 printable ASCII characters, unique per create (a UUID, say). For 24
        /// hours a retry with the same key and the same request answers as the first
        /// time (status, body, `ETag`; a consistency token past the first write) and
        /// creates nothing; the key with another request is 422
        /// `idempotency-key-reused`. A retry while the first is still being written
        /// waits for it. Only a hash of the key is stored.
        #[param(rename = "Idempotency-Key")]
        key: Option<String>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Header)]
    pub(crate) struct IfMatch {
        /// `"<version>"` or `*`: 412 unless the record is at that version.
        #[param(rename = "If-Match")]
        version: Option<String>,
    }
}

/// What the layers of `app` add: the bearer scheme, the problems an operation answers
/// because of what it takes, `X-Request-Id` on every response, and the routing headers on
/// every response to a tenant-scoped path (reusable responses are inlined there, so that
/// the headers can be added to them).
#[derive(Debug)]
struct Layers;

impl Modify for Layers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The operator token (tenants) or a tenant API key (roles `admin`, \
                         `writer`, `reader`, `auditor`).",
                    ))
                    .build(),
            ),
        );
        for response in components.responses.values_mut() {
            if let RefOr::T(response) = response {
                add_request_id(response);
            }
        }
        let shared = components.responses.clone();
        for (path, item) in &mut doc.paths.paths {
            let tenant_scoped = path.starts_with(TENANT_SCOPED);
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                add_common_problems(operation, tenant_scoped);
                add_layer_headers(operation, tenant_scoped, &shared);
                optional_headers_are_not_null(operation);
            }
        }
    }
}

/// Adds the problems an operation can answer because of what it takes, whatever it does:
/// - authenticated (the bearer scheme): 401, 403 (its credentials), 429 (its caller's
///   bucket, or the bucket shared by tokens that do not verify, `rate_limit`), 500 and
///   503 (a dependency);
/// - below `/v1/tenants/{tenant}`: 404 (no such tenant, or not the caller's to learn of);
/// - a request body: 400 (unreadable or not JSON), 408 (too slow), 413 (too large),
///   422 (does not fit);
/// - `X-Consistency-Token`, `If-Match` or `Idempotency-Key`: 400 (malformed); `If-Match`:
///   412 (another version).
///
/// An annotation lists only the problems of its own handler beyond these.
fn add_common_problems(operation: &mut Operation, tenant_scoped: bool) {
    let bearer = SecurityRequirement::new(BEARER, Vec::<String>::new());
    let authenticated = operation.security.iter().flatten().any(|r| *r == bearer);
    let takes_header = |name: &str| {
        operation.parameters.iter().flatten().any(|parameter| {
            parameter.parameter_in == ParameterIn::Header
                && parameter.name.eq_ignore_ascii_case(name)
        })
    };
    let if_match = takes_header(IF_MATCH.as_str());
    let malformed_header = if_match
        || takes_header(wire::headers::CONSISTENCY_TOKEN)
        || takes_header(wire::headers::IDEMPOTENCY_KEY);
    let mut common = Vec::new();
    if authenticated {
        common.extend([
            ("401", problem::<problems::Unauthorized>()),
            ("403", problem::<problems::Forbidden>()),
            ("429", problem::<problems::RateLimited>()),
            ("500", problem::<problems::Internal>()),
            ("503", problem::<problems::Unavailable>()),
        ]);
    }
    if tenant_scoped {
        common.push(("404", problem::<problems::NotFound>()));
    }
    if operation.request_body.is_some() {
        common.extend([
            ("400", problem::<problems::BadRequest>()),
            ("408", problem::<problems::RequestTimeout>()),
            ("413", problem::<problems::PayloadTooLarge>()),
            ("422", problem::<problems::Unprocessable>()),
        ]);
    }
    if malformed_header {
        common.push(("400", problem::<problems::BadRequest>()));
    }
    if if_match {
        common.push(("412", problem::<problems::PreconditionFailed>()));
    }
    for (status, response) in common {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert(response);
    }
}

/// A reference to the reusable response `R` (registered in `ApiDoc`'s components).
fn problem<'r, R: ToResponse<'r>>() -> RefOr<ResponseDoc> {
    RefOr::Ref(Ref::from_response_name(R::response().0))
}

fn add_layer_headers(
    operation: &mut Operation,
    tenant_scoped: bool,
    shared: &std::collections::BTreeMap<String, RefOr<ResponseDoc>>,
) {
    for response in operation.responses.responses.values_mut() {
        if tenant_scoped && let RefOr::Ref(reference) = response {
            let name = reference
                .ref_location
                .strip_prefix("#/components/responses/");
            if let Some(RefOr::T(component)) = name.and_then(|name| shared.get(name)) {
                *response = RefOr::T(component.clone());
            }
        }
        let RefOr::T(response) = response else {
            continue;
        };
        add_request_id(response);
        if tenant_scoped {
            add_header(
                response,
                "X-Residency-Region",
                "The tenant's home region, which served the request.",
            );
            add_header(
                response,
                "X-Residency-Via",
                "The region whose endpoint received the request (equal when local).",
            );
        }
    }
}

/// utoipa documents an optional header parameter (`Option<String>`) as nullable; a header
/// is absent or a string, never null.
fn optional_headers_are_not_null(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        if parameter.parameter_in != ParameterIn::Header {
            continue;
        }
        if let Some(RefOr::T(Schema::Object(object))) = &mut parameter.schema
            && let SchemaType::Array(types) = &object.schema_type
        {
            let types: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            object.schema_type = match types.as_slice() {
                [single] => SchemaType::Type(single.clone()),
                _ => SchemaType::Array(types),
            };
        }
    }
}

fn add_request_id(response: &mut ResponseDoc) {
    add_header(
        response,
        "X-Request-Id",
        "The request id: echoed if the client sent one, generated otherwise.",
    );
}

fn add_header(response: &mut ResponseDoc, name: &str, description: &str) {
    response.headers.entry(name.to_owned()).or_insert_with(|| {
        HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(description))
            .build()
    });
}
