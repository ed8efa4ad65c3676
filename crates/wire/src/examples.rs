//! Example bodies of the public contract (`API.md`), one copy each, for the tests and the
//! benchmarks that speak the API as a client would.

use serde_json::{Value, json};

/// API.md's example collection schema (`people`: every field type and class, a searchable
/// identifier, a subject field and analytics settings).
pub fn collection_schema() -> Value {
    json!({
        "fields": {
            "email":     {"type": "string",  "class": "identifier", "searchable": true},
            "name":      {"type": "string",  "class": "identifier"},
            "age":       {"type": "integer", "class": "quasi_identifier"},
            "zip":       {"type": "string",  "class": "quasi_identifier"},
            "diagnosis": {"type": "string",  "class": "sensitive"},
            "plan":      {"type": "string",  "class": "public"}
        },
        "required": ["email"],
        "subject_field": "email",
        "analytics": {"k": 10, "l": 2, "pseudonymize": ["email"]}
    })
}
