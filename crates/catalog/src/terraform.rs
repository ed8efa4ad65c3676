//! The catalogue as Terraform input: [`terraform_vars`] renders every region as the
//! committed `terraform/envs/example/regions.auto.tfvars.json`. Pure and stable (sorted
//! regions, fixed key order, two-space indentation, trailing newline), so the file in the
//! repository can be compared byte for byte with a fresh rendering. Secrets appear only as
//! references (an environment variable's name or a file's path), never as values.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::{Catalog, DbEndpoint, RegionSpec, SecretRef};

/// Where the rendering is committed, relative to the repository root.
pub const TERRAFORM_VARS_PATH: &str = "terraform/envs/example/regions.auto.tfvars.json";

/// The command that rewrites [`TERRAFORM_VARS_PATH`] from `regions/`.
pub const TERRAFORM_VARS_COMMAND: &str = "cargo run -p residency -- terraform-vars";

/// The catalogue as a Terraform variables file (JSON): one `regions` entry per region,
/// keyed by id, holding what the `region`, `region_compute` and `global` modules take.
pub fn terraform_vars(catalog: &Catalog) -> String {
    let regions = catalog
        .regions()
        .map(|spec| (spec.id.to_string(), region(spec)))
        .collect();
    let root = Json::Object(vec![
        (
            "//".into(),
            Json::str(format!(
                "Generated from regions/*.toml by `{TERRAFORM_VARS_COMMAND}`; do not edit."
            )),
        ),
        ("regions".into(), Json::Object(regions)),
    ]);
    let mut out = String::new();
    root.write(&mut out, 0);
    out.push('\n');
    out
}

fn region(spec: &RegionSpec) -> Json {
    let id = spec.id.as_str();
    let replicas = spec
        .database
        .replicas
        .iter()
        .enumerate()
        .map(|(i, replica)| {
            Json::Object(vec![
                (
                    "identifier".into(),
                    Json::str(identifier(
                        replica,
                        &format!("residency-{id}-replica-{}", i + 1),
                    )),
                ),
                ("host".into(), Json::str(&replica.host)),
                ("port".into(), Json::Number(replica.port.into())),
                ("region".into(), Json::str(replica.region.as_str())),
            ])
        })
        .collect();
    let primary = &spec.database.primary;
    Json::Object(vec![
        ("jurisdiction".into(), Json::str(spec.jurisdiction.code())),
        ("display_name".into(), Json::str(&spec.display_name)),
        (
            "endpoints".into(),
            Json::Object(vec![
                ("public".into(), Json::str(spec.endpoints.public.as_str())),
                (
                    "public_host".into(),
                    Json::str(spec.endpoints.public.host_str().unwrap_or_default()),
                ),
                (
                    "internal".into(),
                    Json::str(spec.endpoints.internal.as_str()),
                ),
                (
                    "internal_host".into(),
                    Json::str(spec.endpoints.internal.host_str().unwrap_or_default()),
                ),
                (
                    "internal_port".into(),
                    Json::Number(
                        spec.endpoints
                            .internal
                            .port_or_known_default()
                            .unwrap_or(443)
                            .into(),
                    ),
                ),
            ]),
        ),
        ("kms_key_alias".into(), Json::str(kms_alias(&spec.kms.key))),
        ("data_bucket".into(), Json::str(&spec.storage.data_bucket)),
        ("audit_bucket".into(), Json::str(&spec.storage.audit_bucket)),
        (
            "analytics".into(),
            Json::Object(vec![
                ("bucket".into(), Json::str(&spec.analytics.bucket)),
                ("prefix".into(), Json::str(&spec.analytics.prefix)),
            ]),
        ),
        (
            "database".into(),
            Json::Object(vec![
                (
                    "primary".into(),
                    Json::Object(vec![
                        (
                            "identifier".into(),
                            Json::str(identifier(primary, &format!("residency-{id}"))),
                        ),
                        ("host".into(), Json::str(&primary.host)),
                        ("port".into(), Json::Number(primary.port.into())),
                        ("database".into(), Json::str(&primary.database)),
                        ("user".into(), Json::str(&primary.user)),
                        ("region".into(), Json::str(primary.region.as_str())),
                    ]),
                ),
                ("replicas".into(), Json::Array(replicas)),
            ]),
        ),
        ("secrets".into(), secrets(spec)),
        (
            "secret_env_names".into(),
            Json::Array(
                secret_refs(spec)
                    .filter_map(|(_, reference)| match reference {
                        SecretRef::Env(name) => Some(name.as_str()),
                        SecretRef::File(_) => None,
                    })
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(Json::str)
                    .collect(),
            ),
        ),
    ])
}

/// Every secret reference of a region with what it is for, in a fixed order. Replica
/// passwords are listed only when they differ from the primary's.
fn secret_refs(spec: &RegionSpec) -> impl Iterator<Item = (String, &SecretRef)> {
    let primary = &spec.database.primary.password;
    let replicas = spec
        .database
        .replicas
        .iter()
        .enumerate()
        .filter(move |(_, replica)| &replica.password != primary)
        .map(|(i, replica)| (format!("db_password_replica_{}", i + 1), &replica.password));
    [
        ("audit_signing_key", spec.audit_signing_key.as_ref()),
        ("db_password", Some(primary)),
        ("forwarding_secret", spec.forwarding_secret.as_ref()),
    ]
    .into_iter()
    .filter_map(|(name, reference)| reference.map(|r| (name.to_owned(), r)))
    .chain(replicas)
}

fn secrets(spec: &RegionSpec) -> Json {
    Json::Object(
        secret_refs(spec)
            .map(|(name, reference)| {
                let (kind, value) = match reference {
                    SecretRef::Env(var) => ("env", var.clone()),
                    SecretRef::File(path) => ("file", path.display().to_string()),
                };
                (name, Json::Object(vec![(kind.into(), Json::str(value))]))
            })
            .collect(),
    )
}

/// The RDS instance identifier: the first label of an RDS host
/// (`residency-eu-west-1.c9akciq32ldn.eu-west-1.rds.amazonaws.com`), else `fallback`.
fn identifier(endpoint: &DbEndpoint, fallback: &str) -> String {
    let host = endpoint.host.to_ascii_lowercase();
    if host.ends_with(".rds.amazonaws.com")
        && let Some((label, _)) = host.split_once('.')
    {
        return label.to_owned();
    }
    fallback.to_owned()
}

/// `alias/name` from an alias or an alias ARN; anything else (a key ARN) as it is, which
/// the region module's validation then refuses with a message saying to use an alias.
fn kms_alias(key: &str) -> &str {
    match key.find(":alias/") {
        Some(at) if key.starts_with("arn:") => &key[at + 1..],
        _ => key,
    }
}

/// Just enough JSON for the variables file: objects keep their insertion order.
#[derive(Debug)]
enum Json {
    String(String),
    Number(u64),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn str(value: impl Into<String>) -> Self {
        Self::String(value.into())
    }

    fn write(&self, out: &mut String, indent: usize) {
        match self {
            Self::String(value) => write_string(out, value),
            Self::Number(value) => {
                let _ = write!(out, "{value}");
            }
            Self::Array(items) if items.is_empty() => out.push_str("[]"),
            Self::Object(fields) if fields.is_empty() => out.push_str("{}"),
            Self::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    pad(out, indent + 1);
                    item.write(out, indent + 1);
                }
                out.push('\n');
                pad(out, indent);
                out.push(']');
            }
            Self::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    pad(out, indent + 1);
                    write_string(out, key);
                    out.push_str(": ");
                    value.write(out, indent + 1);
                }
                out.push('\n');
                pad(out, indent);
                out.push('}');
            }
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

fn write_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn repo_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn real_catalog() -> Catalog {
        Catalog::load_dir(&repo_root().join("regions")).expect("the repository's catalogue loads")
    }

    /// The committed variables file is what the catalogue renders to: a region added,
    /// removed or edited in `regions/` without regenerating fails here.
    #[test]
    fn committed_terraform_vars_match_the_catalogue() {
        let path = repo_root().join(TERRAFORM_VARS_PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|err| {
            panic!("read {TERRAFORM_VARS_PATH} ({err}): run `{TERRAFORM_VARS_COMMAND}`")
        });
        let generated = terraform_vars(&real_catalog());
        if committed != generated {
            let line = committed
                .lines()
                .zip(generated.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "the end".to_owned(), |i| format!("line {}", i + 1));
            panic!(
                "{TERRAFORM_VARS_PATH} disagrees with regions/ (first difference at {line}): \
                 run `{TERRAFORM_VARS_COMMAND}` and commit the result"
            );
        }
    }

    /// Terraform needs a static provider alias and module call per region: the example
    /// environment must wire every catalogue region, and no other.
    #[test]
    fn the_example_environment_wires_every_catalogue_region() {
        let main = std::fs::read_to_string(repo_root().join("terraform/envs/example/main.tf"))
            .expect("read terraform/envs/example/main.tf");
        let providers =
            std::fs::read_to_string(repo_root().join("terraform/envs/example/providers.tf"))
                .expect("read terraform/envs/example/providers.tf");
        let catalog = real_catalog();
        for id in catalog.ids() {
            let alias = id.as_str().replace('-', "_");
            assert!(
                main.contains(&format!("module \"region_{alias}\"")),
                "terraform/envs/example/main.tf has no `module \"region_{alias}\"` for region {id}"
            );
            assert!(
                providers.contains(&format!("alias  = \"{alias}\""))
                    && providers.contains(&format!("region = \"{id}\"")),
                "terraform/envs/example/providers.tf has no provider alias {alias} for region {id}"
            );
        }
        let wired = main
            .lines()
            .map(str::trim)
            .filter(|line| line.starts_with("source") && line.ends_with("\"../../modules/region\""))
            .count();
        assert_eq!(
            wired,
            catalog.len(),
            "terraform/envs/example/main.tf calls the region module {wired} times for {} catalogue regions",
            catalog.len()
        );
    }

    #[test]
    fn rendering_is_stable_json_with_references_only() {
        let text = terraform_vars(&real_catalog());
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(text, terraform_vars(&real_catalog()));
        assert!(text.contains("\"eu-west-1\": {\n      \"jurisdiction\": \"EU\","));
        assert!(text.contains("\"identifier\": \"residency-eu-west-1-replica-1\""));
        assert!(text.contains("\"db_password\": {\n          \"env\": \"RESIDENCY_DB_PASSWORD\""));
        assert!(text.contains("\"kms_key_alias\": \"alias/residency-us-east-1\""));
        // Regions sorted by id.
        let ap = text.find("\"ap-southeast-1\": {").expect("ap-southeast-1");
        let us = text.find("\"us-east-1\": {").expect("us-east-1");
        assert!(ap < us);
    }

    #[test]
    fn file_references_and_odd_values_render_as_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(repo_root().join("regions/eu-west-1.toml"))
            .expect("read region")
            .replace(
                "password = { env = \"RESIDENCY_DB_PASSWORD\" }\nregion = \"eu-west-1\"\n\n[storage]",
                "password = { file = \"/run/secrets/replica \\\"db\\\"\" }\nregion = \"eu-west-1\"\n\n[storage]",
            )
            .replace("Europe (Ireland)", "Europe\t(Ireland)")
            .replace("alias/residency-eu-west-1", "arn:aws:kms:eu-west-1:111122223333:alias/residency-eu-west-1");
        std::fs::write(dir.path().join("eu-west-1.toml"), text).expect("write region");
        let catalog = Catalog::load_dir(dir.path()).expect("edited catalogue loads");
        let rendered = terraform_vars(&catalog);
        assert!(
            rendered.contains("\"display_name\": \"Europe\\t(Ireland)\""),
            "{rendered}"
        );
        assert!(
            rendered.contains(
                "\"db_password_replica_1\": {\n          \"file\": \"/run/secrets/replica \\\"db\\\"\""
            ),
            "{rendered}"
        );
        assert!(
            rendered.contains("\"kms_key_alias\": \"alias/residency-eu-west-1\""),
            "{rendered}"
        );
        // Only environment references are injected by ECS; file references are listed
        // under `secrets` alone.
        assert!(rendered.contains(
            "\"secret_env_names\": [\n        \"RESIDENCY_AUDIT_SIGNING_KEY\",\n        \"RESIDENCY_DB_PASSWORD\",\n        \"RESIDENCY_FORWARDING_SECRET\"\n      ]"
        ), "{rendered}");
    }

    #[test]
    fn identifiers_fall_back_outside_rds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(repo_root().join("regions/us-east-1.toml"))
            .expect("read region")
            .replace(
                "residency-us-east-1.c7nn1rfs0yqe.us-east-1.rds.amazonaws.com",
                "db.internal.example.com",
            );
        std::fs::write(dir.path().join("us-east-1.toml"), text).expect("write region");
        let rendered = terraform_vars(&Catalog::load_dir(dir.path()).expect("loads"));
        assert!(
            rendered.contains("\"identifier\": \"residency-us-east-1\""),
            "{rendered}"
        );
        assert!(
            rendered.contains("\"identifier\": \"residency-us-east-1-replica-1\""),
            "{rendered}"
        );
    }
}
