//! Request and response bodies of the tenant, administration, record, file, audit and
//! residency-evidence endpoints (API.md), with API.md's JSON field names. Requests refuse
//! unknown fields, so a misspelt option is an error rather than silently ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

// ---------------------------------------------------------------------------------------
// Tenants (operator token)

/// `POST /v1/tenants`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    /// A region of the catalogue, e.g. `eu-central-1`.
    pub home_region: String,
    /// Regions the tenant may be relocated to; must include `home_region`. Default:
    /// `[home_region]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_regions: Option<Vec<String>>,
    /// `proxy` (default) or `redirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transit: Option<String>,
    /// Whether the anonymized analytics export runs for this tenant. Default: `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics_export: Option<bool>,
}

/// `201` answer to `POST /v1/tenants`. `admin_key` is shown once; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantCreated {
    pub id: String,
    pub name: String,
    pub home_region: String,
    pub allowed_regions: Vec<String>,
    pub transit: String,
    pub analytics_export: bool,
    pub admin_key: String,
}

/// `GET /v1/tenants/{tenant}`: the tenant, without keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub home_region: String,
    pub allowed_regions: Vec<String>,
    pub transit: String,
    pub analytics_export: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// `202` answer to `DELETE /v1/tenants/{tenant}` (offboarding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OffboardStatus {
    pub status: String,
}

/// What a signed offboarding certificate covers: this, then the certificate's JSON with an
/// empty `signature` (fields in their documented order).
pub const OFFBOARDING_CERTIFICATE_CONTEXT: &[u8] = b"residency-offboarding-certificate-v1\n";

/// `200` answer to `GET /v1/tenants/{tenant}/offboarding` once the purge is done: the
/// region's signed statement that the tenant's keys were destroyed and its data purged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OffboardingCertificate {
    pub tenant: String,
    /// The home region that offboarded the tenant and signs this.
    pub region: String,
    /// RFC 3339: when `DELETE /v1/tenants/{tenant}` was accepted.
    pub requested_at: String,
    /// RFC 3339: when the purge finished.
    pub completed_at: String,
    /// The purge job (`GET /v1/jobs/{job}`).
    pub job: String,
    /// Every data and index key version, destroyed (wrapped keys erased) at the request.
    pub key_versions_destroyed: Vec<DestroyedKeyVersion>,
    pub purged: PurgedCounts,
    /// The last event of the tenant's audit chain (its `tenant.delete`), which stays.
    pub audit_head: AuditHeadView,
    /// The signing key, as listed by `GET /v1/audit/keys`.
    pub key_id: String,
    /// Ed25519, standard base64.
    pub signature: String,
}

/// What a region signs for a signed document: a context naming the kind of document, then
/// the document's JSON as it is sent, with an empty `signature`.
fn signing_input(context: &[u8], unsigned: &impl Serialize) -> Result<Vec<u8>, serde_json::Error> {
    let mut payload = context.to_vec();
    serde_json::to_writer(&mut payload, unsigned)?;
    Ok(payload)
}

impl OffboardingCertificate {
    /// The bytes the signature covers.
    pub fn signed_payload(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = String::new();
        signing_input(OFFBOARDING_CERTIFICATE_CONTEXT, &unsigned)
            .expect("a certificate is plain strings and numbers")
    }
}

/// One destroyed key version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestroyedKeyVersion {
    /// `data` or `index`.
    pub purpose: String,
    pub version: u32,
}

/// What the purge removed (what the tenant held when it was offboarded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgedCounts {
    pub records: u64,
    pub index_tokens: u64,
    pub files: u64,
    /// Stored objects, every version of each counted.
    pub objects: u64,
    pub api_keys: u64,
    pub collections: u64,
}

// ---------------------------------------------------------------------------------------
// Tenant administration (admin key)

/// `POST /v1/tenants/{tenant}/api-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// `admin`, `writer`, `reader` or `auditor`.
    pub role: String,
}

/// `201` answer to `POST /v1/tenants/{tenant}/api-keys`. `key` is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreated {
    pub id: String,
    pub name: String,
    pub role: String,
    pub key: String,
}

/// A collection schema, as `PUT` and `GET /v1/tenants/{tenant}/collections/{collection}`
/// carry it. `SchemaDoc::into_model` applies the schema rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaDoc {
    pub fields: BTreeMap<String, FieldDoc>,
    #[serde(default)]
    pub required: Vec<String>,
    /// The string identifier field naming a record's data subject (for export and
    /// erasure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analytics: Option<AnalyticsDoc>,
}

/// One field of a collection schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDoc {
    /// `string`, `integer`, `number`, `boolean` or `timestamp`.
    #[serde(rename = "type")]
    pub field_type: String,
    /// `identifier`, `quasi_identifier`, `sensitive` or `public`.
    pub class: String,
    /// Blind-indexed for exact-match search; only on a non-public field.
    #[serde(default)]
    pub searchable: bool,
}

/// The analytics export policy of a collection schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsDoc {
    pub k: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l: Option<u32>,
    #[serde(default)]
    pub pseudonymize: Vec<String>,
}

impl SchemaDoc {
    /// The schema as a validated model value; the error names the offending path
    /// (`fields.age.type`, `required[1]`, `analytics.k`).
    pub fn into_model(self) -> Result<model::CollectionSchema, model::SchemaError> {
        let mut fields = BTreeMap::new();
        for (name, doc) in self.fields {
            let within = |err: model::SchemaError| err.within(&format!("fields.{name}"));
            let spec = model::FieldSpec {
                field_type: model::FieldType::parse(&doc.field_type).map_err(within)?,
                class: model::FieldClass::parse(&doc.class).map_err(within)?,
                searchable: doc.searchable,
            };
            fields.insert(name, spec);
        }
        let analytics = self.analytics.map(|a| model::AnalyticsSpec {
            k: a.k,
            l: a.l,
            pseudonymize: a.pseudonymize,
        });
        model::CollectionSchema::new(fields, self.required, self.subject_field, analytics)
    }

    pub fn from_model(schema: &model::CollectionSchema) -> Self {
        Self {
            fields: schema
                .fields()
                .iter()
                .map(|(name, spec)| {
                    let doc = FieldDoc {
                        field_type: spec.field_type.as_str().to_owned(),
                        class: spec.class.as_str().to_owned(),
                        searchable: spec.searchable,
                    };
                    (name.clone(), doc)
                })
                .collect(),
            required: schema.required().to_vec(),
            subject_field: schema.subject_field().map(str::to_owned),
            analytics: schema.analytics().map(|a| AnalyticsDoc {
                k: a.k,
                l: a.l,
                pseudonymize: a.pseudonymize.clone(),
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Records and files (writer; reader for reads)

/// `POST` and `PUT` of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordBody {
    /// Field name → value, checked against the collection's schema.
    pub data: Map<String, Value>,
}

/// A record as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordView {
    pub id: String,
    /// 1 on creation, +1 each update; also the `ETag`.
    pub version: i64,
    pub data: Map<String, Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; absent until the first update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// A page of search results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecordPage {
    pub records: Vec<RecordView>,
    /// `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `201` answer to `PUT .../records/{id}/files/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileStored {
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

// ---------------------------------------------------------------------------------------
// Audit (auditor key)

/// One audit event. It carries ids, never field values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    /// 1 for the tenant's first event, then +1 each.
    pub seq: u64,
    /// RFC 3339 UTC with microseconds.
    pub time: String,
    /// The tenant's home region, which served the request and keeps the chain.
    pub region: String,
    pub tenant: String,
    pub actor: ActorView,
    /// E.g. `record.create`, `subject.erase`.
    pub action: String,
    /// An id path such as `records/<id>`.
    pub resource: String,
    /// `success`, `denied` or `error`.
    pub outcome: String,
    pub request_id: String,
    /// The region whose endpoint received the request.
    pub via_region: String,
    /// The previous event's `hash`, lowercase hex.
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and the event, lowercase hex.
    pub hash: String,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ActorView {
    /// `operator`, `api_key` or `system`.
    pub kind: String,
    /// An operator name, an API key id (never the secret) or a component name.
    pub id: String,
}

/// `GET /v1/tenants/{tenant}/audit/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEventPage {
    pub events: Vec<AuditEventView>,
    /// `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `GET /v1/audit/keys`: the public keys that verify checkpoints, manifests and evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditKeys {
    pub keys: Vec<AuditKeyView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditKeyView {
    pub key_id: String,
    pub region: String,
    /// `ed25519`.
    pub algorithm: String,
    /// Standard base64.
    pub public_key: String,
    /// When the key began to sign (RFC 3339). Absent when unknown: a key imported from the
    /// region's configured key text may have signed before the region recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// When the key stopped signing (RFC 3339): it was rotated out then. Absent while it
    /// is the key that signs. A retired key keeps verifying what it signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// `POST /v1/audit/keys/rotate` (operator token): the region's keys after the rotation,
/// the new signing key first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditKeyRotated {
    /// The key that signs from now on.
    pub key_id: String,
    /// The key it replaced, still published and verifying what it signed.
    pub previous_key_id: String,
    pub keys: Vec<AuditKeyView>,
}

// ---------------------------------------------------------------------------------------
// Residency evidence (auditor key)

/// `GET /v1/tenants/{tenant}/residency`: where the tenant's data lives, signed by the home
/// region's audit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ResidencyEvidence {
    pub tenant: String,
    pub home_region: String,
    pub allowed_regions: Vec<String>,
    pub database: EvidenceDatabase,
    pub bucket: String,
    pub kms_key: String,
    pub key_versions: Vec<KeyVersionView>,
    /// Number of records.
    pub records: u64,
    /// Number of files.
    pub files: u64,
    pub audit_head: AuditHeadView,
    /// RFC 3339.
    pub generated_at: String,
    /// The signing key, as listed by `GET /v1/audit/keys`.
    pub key_id: String,
    /// Ed25519, standard base64.
    pub signature: String,
}

/// The databases holding the tenant's rows: the home region's primary and its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EvidenceDatabase {
    pub primary: String,
    pub replicas: Vec<String>,
}

/// One version of the tenant's data key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyVersionView {
    pub version: u32,
    /// RFC 3339.
    pub created_at: String,
    pub state: String,
}

/// The last event of the tenant's audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditHeadView {
    pub seq: u64,
    /// Lowercase hex.
    pub hash: String,
}

// ---------------------------------------------------------------------------------------
// Tenant listing (operator token)

/// `GET /v1/tenants`: the active tenants homed in one region, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TenantPage {
    pub tenants: Vec<TenantView>,
    /// `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Key rotation (admin key)

/// Where the re-encryption after a rotation stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReencryptionView {
    /// `queued`, `running`, `done` or `failed`.
    pub status: String,
    pub done: u64,
    pub total: u64,
}

/// `202` answer to `POST /v1/tenants/{tenant}/keys/rotate`: the version that seals every
/// new write from now on, and the re-encryption of what is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyRotationStarted {
    pub key_version: u32,
    pub reencryption: ReencryptionView,
}

/// `GET /v1/tenants/{tenant}/keys`: the tenant's data key versions and the latest
/// re-encryption (`null` before the first rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyStatus {
    pub versions: Vec<KeyVersionView>,
    #[serde(default)]
    #[schema(required = true)]
    pub reencryption: Option<ReencryptionView>,
}

/// `PUT /v1/tenants/{tenant}/keys/policy`: the tenant's own bounds of automatic data key
/// rotation; `null` (or absent) for the region's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPolicyBody {
    /// The most values one data key version may seal before it rotates.
    #[serde(default)]
    #[schema(required = true)]
    pub max_seals: Option<u64>,
    /// The oldest (in seconds) a data key version may get before it rotates.
    #[serde(default)]
    #[schema(required = true)]
    pub max_age_seconds: Option<u64>,
}

/// `GET`/`PUT /v1/tenants/{tenant}/keys/policy`: the tenant's bounds as set (`null`: the
/// region's default) and the region's defaults, which are also the largest values a
/// tenant may set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyPolicyView {
    #[serde(default)]
    #[schema(required = true)]
    pub max_seals: Option<u64>,
    #[serde(default)]
    #[schema(required = true)]
    pub max_age_seconds: Option<u64>,
    pub default_max_seals: u64,
    pub default_max_age_seconds: u64,
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;

    /// Parses `json` as `T`, writes it back, and checks that nothing was lost or renamed.
    fn round_trip<T>(json: Value) -> T
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let parsed: T = serde_json::from_value(json.clone()).expect("parse");
        let written = serde_json::to_value(&parsed).expect("serialize");
        assert_eq!(written, json);
        let reparsed: T = serde_json::from_value(written).expect("parse again");
        assert_eq!(reparsed, parsed);
        parsed
    }

    fn refuses_extra_field<T: DeserializeOwned + std::fmt::Debug>(mut json: Value) {
        json.as_object_mut()
            .expect("an object")
            .insert("surprise".to_owned(), json!(1));
        let err = serde_json::from_value::<T>(json).expect_err("unknown field refused");
        assert!(err.to_string().contains("surprise"), "{err}");
    }

    #[test]
    fn tenant_bodies_round_trip() {
        let full = json!({
            "name": "acme",
            "home_region": "eu-central-1",
            "allowed_regions": ["eu-central-1", "eu-west-1"],
            "transit": "redirect",
            "analytics_export": true
        });
        let create: CreateTenant = round_trip(full.clone());
        assert_eq!(create.transit.as_deref(), Some("redirect"));
        let minimal: CreateTenant =
            round_trip(json!({"name": "acme", "home_region": "eu-central-1"}));
        assert_eq!(minimal.allowed_regions, None);
        assert_eq!(minimal.analytics_export, None);
        refuses_extra_field::<CreateTenant>(full);

        round_trip::<TenantCreated>(json!({
            "id": "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60",
            "name": "acme",
            "home_region": "eu-central-1",
            "allowed_regions": ["eu-central-1"],
            "transit": "proxy",
            "analytics_export": false,
            "admin_key": "rk_secret"
        }));
        round_trip::<TenantView>(json!({
            "id": "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60",
            "name": "acme",
            "home_region": "eu-central-1",
            "allowed_regions": ["eu-central-1"],
            "transit": "proxy",
            "analytics_export": false,
            "created_at": "2026-03-01T12:34:56.789012Z"
        }));
        round_trip::<OffboardStatus>(json!({"status": "offboarding"}));
    }

    #[test]
    fn tenant_pages_and_key_bodies_round_trip() {
        let page: TenantPage = round_trip(json!({
            "tenants": [{
                "id": "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60",
                "name": "acme",
                "home_region": "eu-central-1",
                "allowed_regions": ["eu-central-1"],
                "transit": "proxy",
                "analytics_export": false,
                "created_at": "2026-03-01T12:34:56.789012Z"
            }],
            "next_cursor": "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60"
        }));
        assert_eq!(page.tenants.len(), 1);
        round_trip::<TenantPage>(json!({"tenants": [], "next_cursor": null}));

        let reencryption = json!({"status": "running", "done": 10, "total": 40});
        round_trip::<KeyRotationStarted>(json!({"key_version": 2, "reencryption": reencryption}));
        round_trip::<KeyStatus>(json!({
            "versions": [
                {"version": 1, "created_at": "2026-03-01T12:34:56Z", "state": "retired"},
                {"version": 2, "created_at": "2026-03-02T12:34:56Z", "state": "active"}
            ],
            "reencryption": reencryption
        }));
        round_trip::<KeyStatus>(json!({"versions": [], "reencryption": null}));
        round_trip::<KeyPolicyBody>(json!({"max_seals": 1000, "max_age_seconds": null}));
        round_trip::<KeyPolicyView>(json!({
            "max_seals": null, "max_age_seconds": 86400,
            "default_max_seals": 1073741824, "default_max_age_seconds": 7776000
        }));
    }

    #[test]
    fn api_key_bodies_round_trip() {
        let create = json!({"name": "ci", "role": "writer"});
        round_trip::<CreateApiKey>(create.clone());
        refuses_extra_field::<CreateApiKey>(create);
        round_trip::<ApiKeyCreated>(
            json!({"id": "k1", "name": "ci", "role": "writer", "key": "rk_x"}),
        );
    }

    #[test]
    fn the_example_schema_round_trips_into_a_valid_model() {
        let doc: SchemaDoc =
            serde_json::from_value(crate::examples::collection_schema()).expect("parse");
        // The answer spells `searchable` out on every field.
        let mut written = crate::examples::collection_schema();
        for field in written["fields"]
            .as_object_mut()
            .expect("fields")
            .values_mut()
        {
            let field = field.as_object_mut().expect("a field");
            field.entry("searchable").or_insert(json!(false));
        }
        assert_eq!(round_trip::<SchemaDoc>(written), doc);
        let schema = doc
            .clone()
            .into_model()
            .expect("API.md's example schema is valid");
        assert_eq!(schema.subject_field(), Some("email"));
        assert_eq!(schema.fields().len(), 6);
        let email = schema.field("email").expect("email field");
        assert!(email.searchable);
        assert_eq!(email.class, model::FieldClass::Identifier);
        assert_eq!(schema.analytics().map(|a| (a.k, a.l)), Some((10, Some(2))));
        assert_eq!(SchemaDoc::from_model(&schema), doc);
    }

    #[test]
    fn a_minimal_schema_round_trips_with_defaults() {
        let doc: SchemaDoc = serde_json::from_value(
            json!({"fields": {"plan": {"type": "string", "class": "public"}}}),
        )
        .expect("parse");
        assert!(doc.required.is_empty());
        let schema = doc.into_model().expect("valid");
        assert_eq!(
            serde_json::to_value(SchemaDoc::from_model(&schema)).expect("serialize"),
            json!({
                "fields": {"plan": {"type": "string", "class": "public", "searchable": false}},
                "required": []
            })
        );
    }

    #[test]
    fn schema_documents_refuse_unknown_fields_at_every_level() {
        refuses_extra_field::<SchemaDoc>(crate::examples::collection_schema());
        let mut field = crate::examples::collection_schema();
        field["fields"]["age"]["pii"] = json!(true);
        assert!(serde_json::from_value::<SchemaDoc>(field).is_err());
        let mut analytics = crate::examples::collection_schema();
        analytics["analytics"]["epsilon"] = json!(1.0);
        assert!(serde_json::from_value::<SchemaDoc>(analytics).is_err());
    }

    #[test]
    fn schema_errors_name_the_path() {
        let cases = [
            ("/fields/age/type", json!("int"), "fields.age.type"),
            ("/fields/age/class", json!("secret"), "fields.age.class"),
            (
                "/fields/plan",
                json!({"type": "string", "class": "public", "searchable": true}),
                "fields.plan.searchable",
            ),
            ("/required", json!(["email", "phone"]), "required[1]"),
            ("/subject_field", json!("zip"), "subject_field"),
            ("/analytics/k", json!(1), "analytics.k"),
            ("/analytics/l", json!(11), "analytics.l"),
            (
                "/analytics/pseudonymize",
                json!(["age"]),
                "analytics.pseudonymize[0]",
            ),
        ];
        for (pointer, value, path) in cases {
            let mut json = crate::examples::collection_schema();
            *json.pointer_mut(pointer).expect("pointer into the example") = value;
            let doc: SchemaDoc = serde_json::from_value(json).expect("parse");
            let err = doc.into_model().expect_err("schema refused");
            assert_eq!(err.field, path, "{pointer}: {err}");
        }
    }

    #[test]
    fn record_bodies_round_trip() {
        let body = json!({"data": {"email": "ada@example.com", "age": 36}});
        let parsed: RecordBody = round_trip(body.clone());
        assert_eq!(parsed.data["age"], json!(36));
        refuses_extra_field::<RecordBody>(body);

        let created = json!({
            "id": "r1",
            "version": 1,
            "data": {"email": "ada@example.com"},
            "created_at": "2026-03-01T12:34:56.789012Z"
        });
        let view: RecordView = round_trip(created.clone());
        assert_eq!(view.updated_at, None);
        round_trip::<RecordView>(json!({
            "id": "r1",
            "version": 2,
            "data": {"email": "ada@example.com"},
            "created_at": "2026-03-01T12:34:56.789012Z",
            "updated_at": "2026-03-02T12:34:56.789012Z"
        }));

        round_trip::<RecordPage>(json!({"records": [created.clone()], "next_cursor": "c2"}));
        let last: RecordPage = round_trip(json!({"records": [created], "next_cursor": null}));
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn file_stored_round_trips() {
        round_trip::<FileStored>(json!({
            "name": "scan.pdf",
            "size": 1024,
            "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        }));
    }

    #[test]
    fn audit_bodies_round_trip() {
        let event = json!({
            "seq": 7,
            "time": "2026-03-01T12:34:56.789012Z",
            "region": "eu-central-1",
            "tenant": "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60",
            "actor": {"kind": "api_key", "id": "k1"},
            "action": "record.create",
            "resource": "records/r1",
            "outcome": "success",
            "request_id": "req-1",
            "via_region": "us-east-1",
            "prev_hash": "00".repeat(32),
            "hash": "ab".repeat(32)
        });
        let view: AuditEventView = round_trip(event.clone());
        assert_eq!(view.actor.kind, "api_key");
        round_trip::<AuditEventPage>(json!({"events": [event], "next_cursor": null}));
        round_trip::<AuditKeys>(json!({"keys": [{
            "key_id": "eu-central-1-0123456789abcdef",
            "region": "eu-central-1",
            "algorithm": "ed25519",
            "public_key": "MCowBQYDK2VwAyEA"
        }]}));
        let rotated = json!({
            "key_id": "eu-central-1-1111111111111111",
            "region": "eu-central-1",
            "algorithm": "ed25519",
            "public_key": "MCowBQYDK2VwAyEA",
            "valid_from": "2026-03-01T12:34:56Z"
        });
        let retired = json!({
            "key_id": "eu-central-1-0123456789abcdef",
            "region": "eu-central-1",
            "algorithm": "ed25519",
            "public_key": "MCowBQYDK2VwAyEA",
            "valid_until": "2026-03-01T12:34:56Z"
        });
        let keys: AuditKeys = round_trip(json!({"keys": [rotated.clone(), retired.clone()]}));
        assert_eq!(keys.keys[0].valid_until, None);
        assert_eq!(keys.keys[1].valid_from, None);
        round_trip::<AuditKeyRotated>(json!({
            "key_id": "eu-central-1-1111111111111111",
            "previous_key_id": "eu-central-1-0123456789abcdef",
            "keys": [rotated, retired]
        }));
    }

    #[test]
    fn residency_evidence_round_trips() {
        round_trip::<ResidencyEvidence>(json!({
            "tenant": "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60",
            "home_region": "eu-central-1",
            "allowed_regions": ["eu-central-1"],
            "database": {"primary": "eu-central-1/primary", "replicas": ["eu-central-1/replica-1"]},
            "bucket": "residency-eu-central-1",
            "kms_key": "arn:aws:kms:eu-central-1:000000000000:key/k",
            "key_versions": [{"version": 1, "created_at": "2026-03-01T12:34:56Z", "state": "active"}],
            "records": 3,
            "files": 1,
            "audit_head": {"seq": 7, "hash": "ab".repeat(32)},
            "generated_at": "2026-03-01T12:34:56Z",
            "key_id": "eu-central-1-0123456789abcdef",
            "signature": "c2lnbmF0dXJl"
        }));
    }

    #[test]
    fn every_type_has_an_openapi_schema() {
        use utoipa::OpenApi;

        #[derive(OpenApi)]
        #[openapi(components(schemas(
            CreateTenant,
            TenantCreated,
            TenantView,
            OffboardStatus,
            OffboardingCertificate,
            DestroyedKeyVersion,
            PurgedCounts,
            CreateApiKey,
            ApiKeyCreated,
            SchemaDoc,
            RecordBody,
            RecordPage,
            FileStored,
            AuditEventPage,
            AuditKeys,
            AuditKeyRotated,
            ResidencyEvidence,
            crate::Problem,
            crate::Readiness,
            crate::Liveness,
        )))]
        struct Doc;

        let doc = serde_json::to_value(Doc::openapi()).expect("serialize");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let schemas = &doc["components"]["schemas"];
        // Nested types are registered with the types that use them.
        for name in [
            "FieldDoc",
            "AnalyticsDoc",
            "RecordView",
            "AuditEventView",
            "ActorView",
            "AuditKeyView",
            "EvidenceDatabase",
            "KeyVersionView",
            "AuditHeadView",
            "ReadinessChecks",
        ] {
            assert!(schemas.get(name).is_some(), "{name} missing");
        }
        let field = &schemas["FieldDoc"]["properties"];
        assert!(field.get("type").is_some(), "serde renames apply: {field}");
        assert_eq!(
            schemas["Problem"]["properties"]["type"]["type"],
            json!("string")
        );
        // A page always carries `next_cursor`, `null` on the last one.
        for page in ["RecordPage", "AuditEventPage"] {
            let required = &schemas[page]["required"];
            assert!(
                required
                    .as_array()
                    .is_some_and(|r| r.contains(&json!("next_cursor"))),
                "{page}: {required}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Data subjects (admin key)

/// What a subject export's signature covers, before the export's JSON.
pub const SUBJECT_EXPORT_CONTEXT: &[u8] = b"residency-subject-export-v1\n";

/// `GET /v1/tenants/{tenant}/subjects/{subject}/export`: one page of everything stored
/// about a data subject, signed by the home region's audit key. A page holds at most
/// `limit` records; `next_cursor` asks for the next one (each page is signed on its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubjectExport {
    /// The subject as requested.
    pub subject: String,
    /// The subject's token in the tenant's subject index (hex): what the audit event names.
    pub subject_token: String,
    pub tenant: String,
    pub region: String,
    /// The subject's records in every collection, in (collection, id) order.
    pub records: Vec<SubjectRecord>,
    /// The cursor this page was asked with (`null` for the first page).
    pub cursor: Option<String>,
    /// The next page's cursor, `null` on the last page.
    pub next_cursor: Option<String>,
    /// RFC 3339.
    pub generated_at: String,
    /// The signing key, as listed by `GET /v1/audit/keys`.
    pub key_id: String,
    /// Ed25519 over [`SUBJECT_EXPORT_CONTEXT`] then this JSON with an empty `signature`,
    /// standard base64.
    pub signature: String,
}

/// `200` answer to `POST /v1/tenants/{tenant}/subjects/{subject}/erase`: what was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectErasure {
    /// The subject as requested.
    pub subject: String,
    pub records_erased: u64,
    pub files_erased: u64,
    /// The seq of the erasure's `subject.erase` event in the tenant's audit chain.
    pub audit_seq: u64,
}

/// `202` answer to `POST /v1/tenants/{tenant}/subjects/{subject}/erase` for a subject with
/// more records than the inline bound (1,000): the job erasing them, as it stands. Asking
/// again answers the same job while it runs, then `200` with nothing left to erase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectErasureStarted {
    /// The subject as requested.
    pub subject: String,
    pub job: ErasureJobView,
}

/// A subject's erasure job: its id, state and records erased of the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErasureJobView {
    pub id: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub done: u64,
    pub total: u64,
}

/// `200` answer to `POST /v1/subjects/erasures/reapply` (operator): the region's erasure
/// ledger re-applied to its database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErasureLedgerReapplied {
    /// Entries in the region's audit bucket.
    pub entries: u64,
    /// Entries the database lacked, erased again now.
    pub reapplied: u64,
    /// Records erased again by those.
    pub records_erased: u64,
    /// Entries of tenants the database does not hold (skipped).
    pub skipped: u64,
}

impl SubjectExport {
    /// The bytes the signature covers: the context, then this export's JSON with an empty
    /// `signature` (fields in their declared order, `data` as parsed).
    pub fn signed_payload(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut unsigned = self.clone();
        unsigned.signature = String::new();
        signing_input(SUBJECT_EXPORT_CONTEXT, &unsigned)
    }
}

/// One record of a subject, opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubjectRecord {
    pub collection: String,
    pub id: String,
    pub version: i64,
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    pub files: Vec<SubjectFile>,
    /// The audit events whose resource is this record or one of its files.
    pub audit_events: Vec<SubjectAuditEvent>,
}

/// A file of a subject's record. File names rest in the database only as keyed tokens,
/// so a file is named by its token here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectFile {
    /// The keyed token of the file's name (hex), as stored.
    pub name_token: String,
    pub size: u64,
    /// Hex.
    pub sha256: String,
    pub content_type: String,
    /// RFC 3339.
    pub created_at: String,
    /// The record's files path: `GET` it with `/{name}` appended to download the file.
    pub files_path: String,
}

/// An audit event about a subject's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SubjectAuditEvent {
    pub seq: u64,
    /// RFC 3339.
    pub time: String,
    pub action: String,
}
