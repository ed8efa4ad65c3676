//! Collection schemas: the fields a tenant's collection holds, their types and privacy
//! classes, which are required, whose data subject a record belongs to, and the analytics
//! export policy. Also checks a record's `data` against its schema; those errors name the
//! field, never the value (the value may be personal data).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// Most fields a collection may declare.
pub const MAX_FIELDS: usize = 256;

/// Longest field or collection name, in bytes (ASCII).
const MAX_NAME_LEN: usize = 63;

/// A schema that cannot be accepted. `field` is a path into the schema document
/// (`fields.age.type`, `required[1]`, `analytics.k`); `reason` says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SchemaError {
    pub field: String,
    pub reason: String,
}

impl SchemaError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error with `prefix` put in front of its path: `type` within `fields.age`
    /// becomes `fields.age.type`.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// A record that does not fit its collection's schema. `field` is the record field's
/// name; `reason` never contains the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The JSON type of a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    String,
    /// A JSON integer within the range of `i64`.
    Integer,
    /// A finite JSON number; integers are accepted.
    Number,
    Boolean,
    /// An RFC 3339 timestamp, as a JSON string (see [`parse_timestamp`]).
    Timestamp,
}

impl FieldType {
    pub const ALL: [FieldType; 5] = [
        Self::String,
        Self::Integer,
        Self::Number,
        Self::Boolean,
        Self::Timestamp,
    ];

    /// Parses a type name. The error's path is `type`; put the field's path in front of
    /// it with [`SchemaError::within`].
    pub fn parse(raw: &str) -> Result<Self, SchemaError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == raw)
            .ok_or_else(|| {
                SchemaError::new(
                    "type",
                    format!(
                        "unknown type `{}`: expected one of string, integer, number, boolean, timestamp",
                        truncated(raw)
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Timestamp => "timestamp",
        }
    }

    /// Why `value` is not of this type, or `None` when it is. The reason never contains
    /// the value.
    fn mismatch(self, value: &Value) -> Option<&'static str> {
        if value.is_null() {
            return Some("must not be null");
        }
        match self {
            Self::String => (!value.is_string()).then_some("must be a string"),
            Self::Integer => match value {
                Value::Number(n) if n.is_i64() => None,
                Value::Number(n) if n.is_u64() => {
                    Some("must be an integer between -9223372036854775808 and 9223372036854775807")
                }
                _ => Some("must be an integer"),
            },
            Self::Number => match value {
                Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => None,
                _ => Some("must be a finite number"),
            },
            Self::Boolean => (!value.is_boolean()).then_some("must be a boolean"),
            Self::Timestamp => match value {
                Value::String(s) if parse_timestamp(s).is_some() => None,
                _ => Some("must be an RFC 3339 timestamp"),
            },
        }
    }
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The privacy class of a field: how it is protected at rest and in analytics exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldClass {
    /// Names a person directly (email, name). Encrypted; dropped or pseudonymized in
    /// analytics.
    Identifier,
    /// Names a person in combination with others (age, zip). Encrypted; generalized to
    /// k-anonymity in analytics.
    QuasiIdentifier,
    /// The attribute worth protecting (diagnosis). Encrypted; l-diverse in analytics.
    Sensitive,
    /// Not personal. Stored in clear and searchable by value.
    Public,
}

impl FieldClass {
    pub const ALL: [FieldClass; 4] = [
        Self::Identifier,
        Self::QuasiIdentifier,
        Self::Sensitive,
        Self::Public,
    ];

    /// Parses a class name. The error's path is `class`; put the field's path in front of
    /// it with [`SchemaError::within`].
    pub fn parse(raw: &str) -> Result<Self, SchemaError> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == raw)
            .ok_or_else(|| {
                SchemaError::new(
                    "class",
                    format!(
                        "unknown class `{}`: expected one of identifier, quasi_identifier, sensitive, public",
                        truncated(raw)
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identifier => "identifier",
            Self::QuasiIdentifier => "quasi_identifier",
            Self::Sensitive => "sensitive",
            Self::Public => "public",
        }
    }

    /// Whether values of this class are sealed at rest: every class but `public`.
    pub fn is_encrypted(self) -> bool {
        !matches!(self, Self::Public)
    }
}

impl fmt::Display for FieldClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One field of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    pub field_type: FieldType,
    pub class: FieldClass,
    /// Whether an encrypted field gets a blind index for exact-match search. Never set on
    /// a public field: those are searchable by value anyway.
    pub searchable: bool,
}

impl FieldSpec {
    /// A field of `field_type` and `class` without a blind index.
    pub fn unindexed(field_type: FieldType, class: FieldClass) -> Self {
        Self {
            field_type,
            class,
            searchable: false,
        }
    }
}

/// The analytics export policy of a collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsSpec {
    /// Every combination of quasi-identifier values in an export is shared by at least
    /// `k` records.
    pub k: u32,
    /// If set, every such group holds at least `l` distinct values of each sensitive field.
    pub l: Option<u32>,
    /// Identifier fields exported as keyed pseudonyms rather than dropped.
    pub pseudonymize: Vec<String>,
}

/// A validated collection schema; see [`CollectionSchema::new`] for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionSchema {
    fields: BTreeMap<String, FieldSpec>,
    required: Vec<String>,
    subject_field: Option<String>,
    analytics: Option<AnalyticsSpec>,
}

impl CollectionSchema {
    /// Checks the schema rules, naming the offending path on the first one broken:
    /// - `fields`: 1 to 256 fields, names matching `^[a-z][a-z0-9_]{0,62}$`;
    /// - `fields.<name>.searchable`: only on a non-public class;
    /// - `required[i]`: a field, listed once;
    /// - `subject_field`: a string field of class `identifier`;
    /// - `analytics`: `k` ≥ 2, 1 ≤ `l` ≤ `k` (and a sensitive field to be diverse in),
    ///   `pseudonymize` lists identifier fields once each, and there is at least one
    ///   quasi-identifier field.
    pub fn new(
        fields: BTreeMap<String, FieldSpec>,
        required: Vec<String>,
        subject_field: Option<String>,
        analytics: Option<AnalyticsSpec>,
    ) -> Result<Self, SchemaError> {
        check_fields(&fields)?;
        check_required(&fields, &required)?;
        if let Some(subject) = &subject_field {
            check_subject_field(&fields, subject)?;
        }
        if let Some(analytics) = &analytics {
            check_analytics(&fields, analytics)?;
        }
        Ok(Self {
            fields,
            required,
            subject_field,
            analytics,
        })
    }

    pub fn fields(&self) -> &BTreeMap<String, FieldSpec> {
        &self.fields
    }

    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.get(name)
    }

    pub fn required(&self) -> &[String] {
        &self.required
    }

    pub fn subject_field(&self) -> Option<&str> {
        self.subject_field.as_deref()
    }

    pub fn analytics(&self) -> Option<&AnalyticsSpec> {
        self.analytics.as_ref()
    }

    /// The first change from `self` (a stored schema) to `next` that records already
    /// written under `self` would not follow: a field kept in both whose value moves
    /// between plaintext and sealed storage (public ↔ an encrypted class), or that becomes
    /// searchable (records written before have no blind-index tokens). `None` when every
    /// stored record stays as protected and as findable as `next` says.
    pub fn storage_change(&self, next: &CollectionSchema) -> Option<FieldError> {
        for (name, before) in &self.fields {
            let Some(after) = next.fields.get(name) else {
                continue;
            };
            if before.class.is_encrypted() != after.class.is_encrypted() {
                return Some(FieldError::new(
                    name,
                    format!(
                        "cannot change class from {} to {} while the collection has records: they hold this field {}",
                        before.class.as_str(),
                        after.class.as_str(),
                        if before.class.is_encrypted() {
                            "encrypted"
                        } else {
                            "unencrypted"
                        }
                    ),
                ));
            }
            if after.searchable && !before.searchable {
                return Some(FieldError::new(
                    name,
                    "cannot become searchable while the collection has records: they have no blind-index tokens for it",
                ));
            }
        }
        None
    }

    /// Checks a record's `data` object: every key is a schema field, every value has the
    /// field's type (null is refused; timestamps are RFC 3339 strings; integers are JSON
    /// integers within i64; numbers are finite JSON numbers, integers accepted), every
    /// required field present. Reports the first problem: keys in `data`'s order, then
    /// missing required fields in the schema's order.
    pub fn validate_record(&self, data: &Map<String, Value>) -> Result<(), FieldError> {
        for (name, value) in data {
            let spec = self
                .fields
                .get(name)
                .ok_or_else(|| FieldError::new(name, "is not in the collection's schema"))?;
            if let Some(reason) = spec.field_type.mismatch(value) {
                return Err(FieldError::new(name, reason));
            }
        }
        match self.required.iter().find(|name| !data.contains_key(*name)) {
            Some(missing) => Err(FieldError::new(missing, "is required")),
            None => Ok(()),
        }
    }
}

fn check_fields(fields: &BTreeMap<String, FieldSpec>) -> Result<(), SchemaError> {
    if fields.is_empty() {
        return Err(SchemaError::new(
            "fields",
            "must declare at least one field",
        ));
    }
    if fields.len() > MAX_FIELDS {
        return Err(SchemaError::new(
            "fields",
            format!("must declare at most {MAX_FIELDS} fields"),
        ));
    }
    for (name, spec) in fields {
        if !is_field_name(name) {
            return Err(SchemaError::new(
                format!("fields.{}", truncated(name)),
                "field names must match ^[a-z][a-z0-9_]{0,62}$",
            ));
        }
        if spec.searchable && spec.class == FieldClass::Public {
            return Err(SchemaError::new(
                format!("fields.{name}.searchable"),
                "must not be set on a public field: public fields are always searchable by value",
            ));
        }
    }
    Ok(())
}

fn check_required(
    fields: &BTreeMap<String, FieldSpec>,
    required: &[String],
) -> Result<(), SchemaError> {
    let mut seen = BTreeSet::new();
    for (i, name) in required.iter().enumerate() {
        let path = || format!("required[{i}]");
        if !fields.contains_key(name) {
            return Err(SchemaError::new(
                path(),
                format!("`{}` is not a field of the schema", truncated(name)),
            ));
        }
        if !seen.insert(name) {
            return Err(SchemaError::new(
                path(),
                format!("`{name}` is listed twice"),
            ));
        }
    }
    Ok(())
}

fn check_subject_field(
    fields: &BTreeMap<String, FieldSpec>,
    subject: &str,
) -> Result<(), SchemaError> {
    let path = "subject_field";
    let spec = fields.get(subject).ok_or_else(|| {
        SchemaError::new(
            path,
            format!("`{}` is not a field of the schema", truncated(subject)),
        )
    })?;
    if spec.class != FieldClass::Identifier {
        return Err(SchemaError::new(
            path,
            format!(
                "must name an identifier field, and `{subject}` is {}",
                spec.class
            ),
        ));
    }
    if spec.field_type != FieldType::String {
        return Err(SchemaError::new(
            path,
            format!(
                "must name a string field, and `{subject}` is {}",
                spec.field_type
            ),
        ));
    }
    Ok(())
}

fn check_analytics(
    fields: &BTreeMap<String, FieldSpec>,
    analytics: &AnalyticsSpec,
) -> Result<(), SchemaError> {
    if analytics.k < 2 {
        return Err(SchemaError::new("analytics.k", "must be at least 2"));
    }
    if let Some(l) = analytics.l {
        if l < 1 {
            return Err(SchemaError::new("analytics.l", "must be at least 1"));
        }
        if l > analytics.k {
            return Err(SchemaError::new("analytics.l", "must not exceed k"));
        }
        if !fields.values().any(|f| f.class == FieldClass::Sensitive) {
            return Err(SchemaError::new(
                "analytics.l",
                "needs at least one sensitive field to be diverse in",
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, name) in analytics.pseudonymize.iter().enumerate() {
        let path = || format!("analytics.pseudonymize[{i}]");
        let spec = fields.get(name).ok_or_else(|| {
            SchemaError::new(
                path(),
                format!("`{}` is not a field of the schema", truncated(name)),
            )
        })?;
        if spec.class != FieldClass::Identifier {
            return Err(SchemaError::new(
                path(),
                format!(
                    "must name an identifier field, and `{name}` is {}",
                    spec.class
                ),
            ));
        }
        if !seen.insert(name) {
            return Err(SchemaError::new(
                path(),
                format!("`{name}` is listed twice"),
            ));
        }
    }
    if !fields
        .values()
        .any(|f| f.class == FieldClass::QuasiIdentifier)
    {
        return Err(SchemaError::new(
            "analytics",
            "needs at least one quasi_identifier field to generalize",
        ));
    }
    Ok(())
}

/// `^[a-z][a-z0-9_]{0,62}$`
fn is_field_name(name: &str) -> bool {
    is_name(name, |b| b == b'_')
}

/// `^[a-z][a-z0-9<extra>]{0,62}$`
fn is_name(name: &str, extra: impl Fn(u8) -> bool) -> bool {
    let bytes = name.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            bytes.len() <= MAX_NAME_LEN
                && first.is_ascii_lowercase()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra(b))
        }
        None => false,
    }
}

/// A name the client sent, cut short for an error message so that a huge input does not
/// make a huge error.
fn truncated(raw: &str) -> String {
    const SHOWN: usize = 64;
    match raw.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &raw[..end]),
        None => raw.to_owned(),
    }
}

/// The name of a tenant's collection, as it appears in paths: `^[a-z][a-z0-9_-]{0,62}$`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionName(String);

impl CollectionName {
    /// The error's path is `collection`.
    pub fn parse(raw: &str) -> Result<Self, SchemaError> {
        if is_name(raw, |b| b == b'_' || b == b'-') {
            Ok(Self(raw.to_owned()))
        } else {
            Err(SchemaError::new(
                "collection",
                "collection names must match ^[a-z][a-z0-9_-]{0,62}$",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for CollectionName {
    type Err = SchemaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CollectionName({})", self.0)
    }
}

/// Parses a strict RFC 3339 timestamp, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, into
/// Unix seconds and nanoseconds in UTC. The fraction has 1 to 9 digits; `t` and `z` may be
/// lower case (RFC 3339 §5.6 allows it); the date must exist (leap years included).
/// Refused: a space instead of `T`, missing seconds or offset, offsets beyond ±23:59, and
/// leap seconds (`:60`), which Unix time cannot hold.
pub fn parse_timestamp(raw: &str) -> Option<(i64, u32)> {
    // `time` reads RFC 3339 as the RFC allows it; three of its liberties are refused here:
    // any byte between date and time, leap seconds (read as :59.999999999) and fractions
    // longer than nanoseconds (truncated).
    let b = raw.as_bytes();
    if !matches!(b.get(10), Some(b'T' | b't')) || b.get(17..19) == Some(b"60".as_slice()) {
        return None;
    }
    if let Some((b'.', after_dot)) = b.get(19..).and_then(<[u8]>::split_first) {
        let fraction_digits = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
        if fraction_digits > 9 {
            return None;
        }
    }
    let at =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()?;
    Some((at.unix_timestamp(), at.nanosecond()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(field_type: FieldType, class: FieldClass) -> FieldSpec {
        FieldSpec::unindexed(field_type, class)
    }

    /// API.md's example schema.
    fn example_fields() -> BTreeMap<String, FieldSpec> {
        use FieldClass::*;
        use FieldType::*;
        BTreeMap::from([
            (
                "email".to_owned(),
                FieldSpec {
                    searchable: true,
                    ..spec(String, Identifier)
                },
            ),
            ("name".to_owned(), spec(String, Identifier)),
            ("age".to_owned(), spec(Integer, QuasiIdentifier)),
            ("zip".to_owned(), spec(String, QuasiIdentifier)),
            ("diagnosis".to_owned(), spec(String, Sensitive)),
            ("plan".to_owned(), spec(String, Public)),
        ])
    }

    fn example_analytics() -> AnalyticsSpec {
        AnalyticsSpec {
            k: 10,
            l: Some(2),
            pseudonymize: vec!["email".to_owned()],
        }
    }

    fn example() -> CollectionSchema {
        CollectionSchema::new(
            example_fields(),
            vec!["email".to_owned()],
            Some("email".to_owned()),
            Some(example_analytics()),
        )
        .expect("API.md's example schema is valid")
    }

    fn refused(
        fields: BTreeMap<String, FieldSpec>,
        required: &[&str],
        subject: Option<&str>,
        analytics: Option<AnalyticsSpec>,
    ) -> SchemaError {
        CollectionSchema::new(
            fields,
            required.iter().map(|s| (*s).to_owned()).collect(),
            subject.map(str::to_owned),
            analytics,
        )
        .expect_err("schema should be refused")
    }

    fn assert_path(err: &SchemaError, path: &str) {
        assert_eq!(err.field, path, "{err}");
    }

    #[test]
    fn the_example_schema_is_valid_and_readable() {
        let schema = example();
        assert_eq!(schema.fields().len(), 6);
        assert_eq!(
            schema.field("age"),
            Some(&spec(FieldType::Integer, FieldClass::QuasiIdentifier))
        );
        assert!(schema.field("nope").is_none());
        assert_eq!(schema.required(), ["email".to_owned()]);
        assert_eq!(schema.subject_field(), Some("email"));
        assert_eq!(schema.analytics(), Some(&example_analytics()));
    }

    #[test]
    fn storage_changes_are_moves_between_plaintext_and_sealed_and_new_searchability() {
        let stored = example();
        let with = |name: &str, change: &dyn Fn(&mut FieldSpec)| {
            let mut fields = example_fields();
            change(fields.get_mut(name).expect("example field"));
            CollectionSchema::new(
                fields,
                vec!["email".to_owned()],
                Some("email".to_owned()),
                Some(example_analytics()),
            )
            .expect("valid")
        };
        assert_eq!(stored.storage_change(&stored), None);
        for (name, change) in [
            (
                "plan",
                &(|f: &mut FieldSpec| f.class = FieldClass::Sensitive) as &dyn Fn(&mut FieldSpec),
            ),
            ("name", &|f: &mut FieldSpec| f.class = FieldClass::Public),
            ("zip", &|f: &mut FieldSpec| f.searchable = true),
        ] {
            let err = stored
                .storage_change(&with(name, change))
                .expect("a storage change");
            assert_eq!(err.field, name, "{}", err.reason);
        }
        // Same storage: another encrypted class, searchability dropped, a field removed.
        for (name, change) in [
            (
                "age",
                &(|f: &mut FieldSpec| f.class = FieldClass::Sensitive) as &dyn Fn(&mut FieldSpec),
            ),
            ("email", &|f: &mut FieldSpec| f.searchable = false),
        ] {
            assert_eq!(stored.storage_change(&with(name, change)), None, "{name}");
        }
        let mut fewer = example_fields();
        fewer.remove("plan");
        let fewer = CollectionSchema::new(fewer, vec![], None, None).expect("valid");
        assert_eq!(stored.storage_change(&fewer), None);
    }

    #[test]
    fn a_minimal_schema_is_valid() {
        let fields =
            BTreeMap::from([("a".to_owned(), spec(FieldType::Boolean, FieldClass::Public))]);
        let schema = CollectionSchema::new(fields, vec![], None, None).expect("valid");
        assert!(schema.required().is_empty());
        assert_eq!(schema.subject_field(), None);
        assert_eq!(schema.analytics(), None);
    }

    #[test]
    fn types_and_classes_parse_and_print() {
        for t in FieldType::ALL {
            assert_eq!(FieldType::parse(t.as_str()), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        for c in FieldClass::ALL {
            assert_eq!(FieldClass::parse(c.as_str()), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        let err = FieldType::parse("strng").expect_err("unknown type");
        assert_path(&err, "type");
        assert_path(&err.within("fields.age"), "fields.age.type");
        let err = FieldClass::parse("secret").expect_err("unknown class");
        assert_path(&err, "class");
        assert!(err.reason.contains("quasi_identifier"), "{err}");
        assert!(FieldType::parse("String").is_err());
    }

    #[test]
    fn only_public_fields_are_stored_in_clear() {
        assert!(FieldClass::Identifier.is_encrypted());
        assert!(FieldClass::QuasiIdentifier.is_encrypted());
        assert!(FieldClass::Sensitive.is_encrypted());
        assert!(!FieldClass::Public.is_encrypted());
    }

    #[test]
    fn field_count_is_bounded() {
        let err = refused(BTreeMap::new(), &[], None, None);
        assert_path(&err, "fields");

        let many: BTreeMap<_, _> = (0..=MAX_FIELDS)
            .map(|i| (format!("f{i}"), spec(FieldType::String, FieldClass::Public)))
            .collect();
        assert_path(&refused(many.clone(), &[], None, None), "fields");
        let exactly: BTreeMap<_, _> = many.into_iter().take(MAX_FIELDS).collect();
        assert!(CollectionSchema::new(exactly, vec![], None, None).is_ok());
    }

    #[test]
    fn field_names_are_checked() {
        let long_ok = format!("a{}", "b".repeat(62));
        let field = |name: &str| {
            BTreeMap::from([(name.to_owned(), spec(FieldType::String, FieldClass::Public))])
        };
        assert!(CollectionSchema::new(field(&long_ok), vec![], None, None).is_ok());
        for bad in [
            "",
            "Email",
            "1st",
            "_x",
            "e-mail",
            "e.mail",
            "é",
            &format!("{long_ok}c"),
        ] {
            let err = refused(field(bad), &[], None, None);
            assert!(err.field.starts_with("fields."), "{bad:?}: {err}");
            assert!(err.reason.contains("^[a-z][a-z0-9_]{0,62}$"), "{err}");
        }
    }

    #[test]
    fn searchable_public_fields_are_refused() {
        let mut fields = example_fields();
        fields.insert(
            "plan".to_owned(),
            FieldSpec {
                searchable: true,
                ..spec(FieldType::String, FieldClass::Public)
            },
        );
        let err = refused(fields, &[], None, None);
        assert_path(&err, "fields.plan.searchable");
        assert!(err.reason.contains("always searchable"), "{err}");
    }

    #[test]
    fn required_names_fields_once() {
        let err = refused(example_fields(), &["email", "phone"], None, None);
        assert_path(&err, "required[1]");
        assert!(err.reason.contains("not a field"), "{err}");
        let err = refused(example_fields(), &["email", "age", "email"], None, None);
        assert_path(&err, "required[2]");
        assert!(err.reason.contains("twice"), "{err}");
    }

    #[test]
    fn subject_field_is_a_string_identifier() {
        let err = refused(example_fields(), &[], Some("phone"), None);
        assert_path(&err, "subject_field");
        assert!(err.reason.contains("not a field"), "{err}");
        let err = refused(example_fields(), &[], Some("zip"), None);
        assert_path(&err, "subject_field");
        assert!(err.reason.contains("identifier"), "{err}");

        let mut fields = example_fields();
        fields.insert(
            "patient_no".to_owned(),
            spec(FieldType::Integer, FieldClass::Identifier),
        );
        let err = refused(fields, &[], Some("patient_no"), None);
        assert_path(&err, "subject_field");
        assert!(err.reason.contains("string"), "{err}");
    }

    #[test]
    fn analytics_rules_name_their_path() {
        let with = |change: fn(&mut AnalyticsSpec)| {
            let mut a = example_analytics();
            change(&mut a);
            refused(example_fields(), &[], None, Some(a))
        };
        assert_path(&with(|a| a.k = 1), "analytics.k");
        assert_path(&with(|a| a.k = 0), "analytics.k");
        assert_path(&with(|a| a.l = Some(0)), "analytics.l");
        let err = with(|a| a.l = Some(11));
        assert_path(&err, "analytics.l");
        assert!(err.reason.contains("exceed k"), "{err}");
        let err = with(|a| a.pseudonymize = vec!["email".into(), "phone".into()]);
        assert_path(&err, "analytics.pseudonymize[1]");
        let err = with(|a| a.pseudonymize = vec!["age".into()]);
        assert_path(&err, "analytics.pseudonymize[0]");
        assert!(err.reason.contains("identifier"), "{err}");
        let err = with(|a| a.pseudonymize = vec!["email".into(), "email".into()]);
        assert_path(&err, "analytics.pseudonymize[1]");

        // l == k and no l at all are fine.
        let mut a = example_analytics();
        a.l = Some(a.k);
        assert!(CollectionSchema::new(example_fields(), vec![], None, Some(a)).is_ok());
        let mut a = example_analytics();
        a.l = None;
        assert!(CollectionSchema::new(example_fields(), vec![], None, Some(a)).is_ok());
    }

    #[test]
    fn analytics_needs_quasi_identifiers_and_l_needs_a_sensitive_field() {
        let mut fields = example_fields();
        fields.retain(|_, f| f.class != FieldClass::QuasiIdentifier);
        assert_path(
            &refused(fields, &[], None, Some(example_analytics())),
            "analytics",
        );

        let mut fields = example_fields();
        fields.retain(|_, f| f.class != FieldClass::Sensitive);
        assert_path(
            &refused(fields, &[], None, Some(example_analytics())),
            "analytics.l",
        );
    }

    fn record(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn record_error(schema: &CollectionSchema, value: Value) -> FieldError {
        schema
            .validate_record(&record(value))
            .expect_err("record should be refused")
    }

    #[test]
    fn records_that_fit_are_accepted() {
        let schema = example();
        schema
            .validate_record(&record(json!({
                "email": "ada@example.com",
                "name": "Ada",
                "age": 36,
                "zip": "10115",
                "diagnosis": "none",
                "plan": "pro",
            })))
            .expect("valid record");
        schema
            .validate_record(&record(json!({"email": "ada@example.com"})))
            .expect("only the required field");
    }

    #[test]
    fn record_errors_name_the_field_never_the_value() {
        let schema = example();
        let secret = "ada@example.com";
        let cases = [
            (
                json!({"email": secret, "phone": secret}),
                "phone",
                "is not in the collection's schema",
            ),
            (
                json!({"email": secret, "age": secret}),
                "age",
                "must be an integer",
            ),
            (
                json!({"email": secret, "age": 36.5}),
                "age",
                "must be an integer",
            ),
            (
                json!({"email": secret, "age": null}),
                "age",
                "must not be null",
            ),
            (json!({"email": 42}), "email", "must be a string"),
            (json!({"name": secret}), "email", "is required"),
        ];
        for (data, field, reason) in cases {
            let err = record_error(&schema, data);
            assert_eq!(err.field, field, "{err}");
            assert_eq!(err.reason, reason, "{err}");
            assert!(!err.to_string().contains(secret), "{err}");
        }
        let err = record_error(&schema, json!({"email": secret, "age": u64::MAX}));
        assert_eq!(err.field, "age");
        assert!(
            err.reason.starts_with("must be an integer between"),
            "{err}"
        );
    }

    #[test]
    fn every_type_checks_its_values() {
        use FieldType::*;
        let fields: BTreeMap<_, _> = [
            ("s", String),
            ("i", Integer),
            ("n", Number),
            ("b", Boolean),
            ("t", Timestamp),
        ]
        .into_iter()
        .map(|(name, t)| (name.to_owned(), spec(t, FieldClass::Sensitive)))
        .collect();
        let schema = CollectionSchema::new(fields, vec![], None, None).expect("valid");

        let ok = [
            json!({"s": ""}),
            json!({"i": i64::MIN}),
            json!({"i": i64::MAX}),
            json!({"n": 1}),
            json!({"n": -2.5e300}),
            json!({"b": false}),
            json!({"t": "2026-03-01T12:34:56Z"}),
            json!({}),
        ];
        for data in ok {
            schema
                .validate_record(&record(data.clone()))
                .unwrap_or_else(|e| panic!("{data} should pass: {e}"));
        }
        let refused = [
            (json!({"s": 1}), "s", "must be a string"),
            (json!({"s": ["a"]}), "s", "must be a string"),
            (json!({"i": "1"}), "i", "must be an integer"),
            (json!({"i": 1.0}), "i", "must be an integer"),
            (json!({"n": "1.5"}), "n", "must be a finite number"),
            (json!({"n": null}), "n", "must not be null"),
            (json!({"b": "true"}), "b", "must be a boolean"),
            (json!({"b": 1}), "b", "must be a boolean"),
            (
                json!({"t": "yesterday"}),
                "t",
                "must be an RFC 3339 timestamp",
            ),
            (
                json!({"t": 1_700_000_000}),
                "t",
                "must be an RFC 3339 timestamp",
            ),
            (json!({"t": {}}), "t", "must be an RFC 3339 timestamp"),
        ];
        for (data, field, reason) in refused {
            let err = record_error(&schema, data);
            assert_eq!((err.field.as_str(), err.reason.as_str()), (field, reason));
        }
    }

    #[test]
    fn collection_names() {
        for ok in [
            "patients",
            "a",
            "lab-results_2026",
            &format!("a{}", "-".repeat(62)),
        ] {
            assert_eq!(CollectionName::parse(ok).expect("valid").as_str(), ok);
        }
        for bad in [
            "",
            "Patients",
            "1x",
            "-x",
            "a b",
            "a.b",
            "a/b",
            &"a".repeat(64),
        ] {
            let err = CollectionName::parse(bad).expect_err("invalid");
            assert_eq!(err.field, "collection", "{bad:?}");
        }
    }

    #[test]
    fn timestamps_parse_to_utc() {
        let cases = [
            ("1970-01-01T00:00:00Z", (0, 0)),
            ("1970-01-01t00:00:00z", (0, 0)),
            ("1970-01-01T00:00:00-00:00", (0, 0)),
            ("1969-12-31T23:59:59Z", (-1, 0)),
            ("2026-03-01T12:34:56.789012Z", (1_772_368_496, 789_012_000)),
            (
                "2026-03-01T14:34:56.789012+02:00",
                (1_772_368_496, 789_012_000),
            ),
            (
                "2026-03-01T07:04:56.789012-05:30",
                (1_772_368_496, 789_012_000),
            ),
            ("2026-03-01T12:34:56.1Z", (1_772_368_496, 100_000_000)),
            (
                "2026-03-01T12:34:56.123456789Z",
                (1_772_368_496, 123_456_789),
            ),
            ("2024-02-29T00:00:00Z", (1_709_164_800, 0)),
            ("2000-02-29T00:00:00Z", (951_782_400, 0)),
            ("0000-01-01T00:00:00Z", (-62_167_219_200, 0)),
            ("9999-12-31T23:59:59+23:59", (253_402_214_459, 0)),
        ];
        for (raw, expected) in cases {
            assert_eq!(parse_timestamp(raw), Some(expected), "{raw}");
        }
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for raw in [
            "",
            "2026-03-01",
            "2026-03-01T12:34:56",
            "2026-03-01 12:34:56Z",
            "2026-03-01T12:34Z",
            "2026-3-01T12:34:56Z",
            "2026-03-01T12:34:56.Z",
            "2026-03-01T12:34:56.1234567890Z",
            "2026-03-01T12:34:56,5Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-03-00T00:00:00Z",
            "2026-03-01T24:00:00Z",
            "2026-03-01T12:60:00Z",
            "2016-12-31T23:59:60Z",
            "2026-03-01T12:34:56+24:00",
            "2026-03-01T12:34:56+02:60",
            "2026-03-01T12:34:56+0200",
            "2026-03-01T12:34:56+02",
            "2026-03-01T12:34:56ZZ",
            "2026-03-01T12:34:56Z ",
            " 2026-03-01T12:34:56Z",
            "+2026-03-01T12:34:56Z",
            "2026-03-01T12:34:56UTC",
            "２０２６-03-01T12:34:56Z",
        ] {
            assert_eq!(parse_timestamp(raw), None, "{raw:?}");
        }
    }
}
