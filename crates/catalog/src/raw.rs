//! The TOML shape of a region file, as serde sees it: strings and numbers, every table
//! closed to unknown keys. Only this module derives `Deserialize`; `spec` turns these into
//! the validated domain types.

use std::path::Path;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::CatalogError;
use crate::secret::SecretRef;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    pub id: String,
    pub jurisdiction: String,
    pub display_name: String,
    /// Where `residency serve` reads the region's audit signing key; optional here, since
    /// `residency dev` keeps its keys in the state directory.
    #[serde(default)]
    pub audit_signing_key: Option<RawSecretRef>,
    /// The inter-region secret the routers sign forwarded requests with (the same value in
    /// every region); optional here, since `residency dev` keeps it in the state directory.
    #[serde(default)]
    pub forwarding_secret: Option<RawSecretRef>,
    pub endpoints: RawEndpoints,
    pub database: RawDatabase,
    pub storage: RawStorage,
    pub kms: RawKms,
    pub analytics: RawAnalytics,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoints {
    pub public: String,
    pub internal: String,
    /// Whether the node's listener is reached only through a load balancer that appends
    /// the client's address to `X-Forwarded-For`; off unless written.
    #[serde(default)]
    pub behind_load_balancer: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    pub primary: RawDbEndpoint,
    pub replicas: Vec<RawDbEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDbEndpoint {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: RawSecretRef,
    pub region: String,
    #[serde(default)]
    pub tls: Option<String>,
    #[serde(default)]
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStorage {
    pub data_bucket: String,
    pub audit_bucket: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKms {
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnalytics {
    pub bucket: String,
    pub prefix: String,
}

/// A secret reference as written: `{ env = "NAME" }` or `{ file = "/path" }`. Deserialized
/// by hand so that an inline secret (`password = "hunter2"`) is refused with a message that
/// does not repeat it, which serde's own "invalid type: string ..." would.
#[derive(Debug)]
pub(crate) struct RawSecretRef(pub SecretRef);

const SECRET_BY_REFERENCE: &str =
    "secrets go by reference, never inline: write { env = \"NAME\" } or { file = \"/path\" }";

impl<'de> Deserialize<'de> for RawSecretRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(deserializer)?;
        let table = match value {
            toml::Value::Table(table) => table,
            other => {
                return Err(de::Error::custom(format_args!(
                    "found {} {}; {SECRET_BY_REFERENCE}",
                    article(other.type_str()),
                    other.type_str()
                )));
            }
        };
        let mut entries = table.into_iter();
        let (Some((kind, value)), None) = (entries.next(), entries.next()) else {
            return Err(de::Error::custom(format_args!(
                "a secret reference has exactly one key, `env` or `file`; {SECRET_BY_REFERENCE}"
            )));
        };
        let toml::Value::String(target) = value else {
            return Err(de::Error::custom(format_args!(
                "`{kind}` of a secret reference must be a string"
            )));
        };
        let reference = match kind.as_str() {
            "env" => {
                if !is_env_var_name(&target) {
                    return Err(de::Error::custom(format_args!(
                        "`{target}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
                    )));
                }
                SecretRef::Env(target)
            }
            "file" => {
                if !Path::new(&target).is_absolute() {
                    return Err(de::Error::custom(format_args!(
                        "secret file path `{target}` must be absolute"
                    )));
                }
                SecretRef::File(target.into())
            }
            // The key is not repeated: a secret pasted as a key must not reach the message.
            _ => {
                return Err(de::Error::custom(format_args!(
                    "unknown key in secret reference; {SECRET_BY_REFERENCE}"
                )));
            }
        };
        Ok(Self(reference))
    }
}

fn article(type_str: &str) -> &'static str {
    if type_str.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses one region file, naming the field of any shape error.
pub(crate) fn parse_region(text: &str, file: &Path) -> Result<RawRegion, CatalogError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|err| {
        let field = match err.span() {
            Some(span) => position(text, span.start),
            None => "document".to_owned(),
        };
        CatalogError::Parse {
            file: file.to_owned(),
            field,
            message: err.message().trim_end().to_owned(),
        }
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let message = err.inner().message().trim_end().to_owned();
        CatalogError::Parse {
            file: file.to_owned(),
            field: field_path(&path, &message),
            message,
        }
    })
}

/// serde reports a missing key at the table that should hold it, and depending on the
/// deserializer an unknown key there too; the key itself is then only in the message
/// (``unknown field `hots`, expected ...``). Append it so the field path points at the key.
fn field_path(path: &str, message: &str) -> String {
    let parent = if path == "." { "" } else { path };
    let key = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key);
    match (parent, key) {
        ("", Some(key)) => key.to_owned(),
        ("", None) => "document".to_owned(),
        (parent, Some(key)) if parent.rsplit('.').next() == Some(key) => parent.to_owned(),
        (parent, Some(key)) => format!("{parent}.{key}"),
        (parent, None) => parent.to_owned(),
    }
}

/// `line L, column C` (1-based, columns in characters) of a byte offset.
fn position(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    format!("line {line}, column {column}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_keys_get_their_key_appended() {
        assert_eq!(
            field_path(
                "database.replicas[0]",
                "unknown field `hots`, expected one of `host`"
            ),
            "database.replicas[0].hots"
        );
        assert_eq!(
            field_path("kms.rotation", "unknown field `rotation`, expected `key`"),
            "kms.rotation"
        );
        assert_eq!(field_path(".", "missing field `kms`"), "kms");
        assert_eq!(
            field_path("storage", "missing field `audit_bucket`"),
            "storage.audit_bucket"
        );
        assert_eq!(
            field_path(
                "database.primary.port",
                "invalid type: string \"x\", expected u16"
            ),
            "database.primary.port"
        );
    }

    #[test]
    fn positions_are_one_based() {
        assert_eq!(position("a = 1\nb = \n", 10), "line 2, column 5");
        assert_eq!(position("x", 0), "line 1, column 1");
    }

    #[test]
    fn env_var_names() {
        assert!(is_env_var_name("RESIDENCY_DB_PASSWORD"));
        assert!(is_env_var_name("_X1"));
        assert!(!is_env_var_name(""));
        assert!(!is_env_var_name("1X"));
        assert!(!is_env_var_name("DB-PASSWORD"));
    }

    #[test]
    fn syntax_errors_name_the_position() {
        let err = parse_region("id = \"eu-west-1\"\njurisdiction = \n", Path::new("x.toml"))
            .expect_err("syntax error");
        assert_eq!(err.field(), Some("line 2, column 16"), "{err}");
    }
}
