//! The operator's commands over a node's HTTP API (`tenants`, `keys`, `jobs`): where the
//! node is and who is calling, from flags, else the environment, else a `residency dev`
//! state directory's `endpoints.json`; tables for people, the API's JSON as it is with
//! `--json`. Every failure (node unreachable, a refused token, a problem the node
//! answered, nothing configured) is one short line on stderr and exit code 1; a token
//! or key is never printed.

pub(crate) mod client;
pub(crate) mod jobs;
pub(crate) mod keys;
pub(crate) mod output;
pub(crate) mod tenants;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use catalog::Secret;
use serde_json::Value;

use self::client::{Api, Credential};

/// What the operator commands' exit codes mean (their help says it).
pub(crate) const EXIT_STATUS: &str = "Exit status: 0 on success; 1 on any failure (node unreachable, \
token or key refused, a problem the node answered, nothing configured), with one line on \
stderr; 2 for a command line that does not parse.";

/// Where the node is, and how to print what it answers: what every operator command takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnectionFlags {
    /// A node's API endpoint, e.g. `https://eu.residency.example.com`. Default: the
    /// `residency dev` state directory's endpoint of --region.
    #[arg(long, env = "RESIDENCY_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,
    /// The `residency dev` state directory to read `endpoints.json` from when the endpoint
    /// or the operator token is not given.
    #[arg(long, default_value = crate::dev::DEFAULT_STATE_DIR, value_name = "DIR")]
    state_dir: PathBuf,
    /// The state directory's region whose endpoint to call. Default: the first one
    /// `endpoints.json` lists.
    #[arg(long, value_name = "REGION")]
    region: Option<String>,
    /// Print the API's JSON answer as it is (for scripts) instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The connection flags and the operator token: what the operator's own endpoints take.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OperatorFlags {
    #[command(flatten)]
    pub(crate) connection: ConnectionFlags,
    /// The deployment's operator token. Default: the state directory's `operator_token`.
    #[arg(
        long,
        env = "RESIDENCY_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        value_parser = crate::parse_secret
    )]
    token: Option<Secret>,
}

/// The connection flags and a tenant's API key: what tenant-administration endpoints take.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TenantKeyFlags {
    #[command(flatten)]
    pub(crate) connection: ConnectionFlags,
    /// The tenant's admin API key (as `POST /v1/tenants` answered it).
    #[arg(
        long,
        env = "RESIDENCY_API_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_parser = crate::parse_secret
    )]
    key: Option<Secret>,
}

impl OperatorFlags {
    /// A client of the node, holding the operator token.
    pub(crate) fn api(&self) -> anyhow::Result<Api> {
        let connection = &self.connection;
        let mut dev = DevState::new(&connection.state_dir);
        let endpoint = connection.endpoint(&mut dev)?;
        let token = match &self.token {
            Some(token) => token.clone(),
            None => dev.operator_token().map_err(|missing| {
                anyhow!("no operator token: pass --token or set RESIDENCY_TOKEN ({missing})")
            })?,
        };
        Api::new(&endpoint, Credential::OperatorToken(token))
    }
}

impl TenantKeyFlags {
    /// A client of the node, holding the tenant's API key.
    pub(crate) fn api(&self) -> anyhow::Result<Api> {
        let mut dev = DevState::new(&self.connection.state_dir);
        let endpoint = self.connection.endpoint(&mut dev)?;
        let Some(key) = &self.key else {
            bail!("no API key: pass --key or set RESIDENCY_API_KEY (the tenant's admin key)");
        };
        Api::new(&endpoint, Credential::ApiKey(key.clone()))
    }
}

impl ConnectionFlags {
    fn endpoint(&self, dev: &mut DevState) -> anyhow::Result<String> {
        if let Some(endpoint) = &self.endpoint {
            return Ok(endpoint.clone());
        }
        dev.api_endpoint(self.region.as_deref()).map_err(|missing| {
            anyhow!("no endpoint: pass --endpoint or set RESIDENCY_ENDPOINT ({missing})")
        })
    }
}

/// A `residency dev` state directory's `endpoints.json`, read when first needed.
#[derive(Debug)]
struct DevState {
    path: PathBuf,
    read: Option<Value>,
}

impl DevState {
    fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join("endpoints.json"),
            read: None,
        }
    }

    /// The document, or why there is none (as the end of an error message).
    fn document(&mut self) -> Result<&Value, String> {
        if self.read.is_none() {
            let text = std::fs::read_to_string(&self.path).map_err(|err| {
                format!(
                    "and {} cannot be read: {err}; is `residency dev` running?",
                    self.path.display()
                )
            })?;
            let document = serde_json::from_str(&text)
                .map_err(|err| format!("and {} is not valid JSON: {err}", self.path.display()))?;
            self.read = Some(document);
        }
        Ok(self.read.as_ref().expect("read just above"))
    }

    fn operator_token(&mut self) -> Result<Secret, String> {
        let path = self.path.display().to_string();
        self.document()?["operator_token"]
            .as_str()
            .map(|token| Secret::new(token.to_owned()))
            .ok_or_else(|| format!("and {path} has no operator_token"))
    }

    /// The API endpoint of `region`, or of the first region listed.
    fn api_endpoint(&mut self, region: Option<&str>) -> Result<String, String> {
        let path = self.path.display().to_string();
        let regions = self.document()?["regions"]
            .as_object()
            .ok_or_else(|| format!("and {path} lists no regions"))?;
        let (name, entry) = match region {
            Some(region) => regions.get_key_value(region).ok_or_else(|| {
                let known: Vec<&str> = regions.keys().map(String::as_str).collect();
                format!(
                    "and {path} has no region {region}; it has {}",
                    known.join(", ")
                )
            })?,
            None => regions
                .iter()
                .next()
                .ok_or_else(|| format!("and {path} lists no regions"))?,
        };
        entry["api"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("and {path} has no api endpoint for {name}"))
    }
}

/// Runs the JSON printing or the table printing of `answer`, as `--json` asks.
pub(crate) fn print<T>(
    json: bool,
    answer: &client::Answer<T>,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let text = if json {
        format!("{}\n", answer.raw.trim_end())
    } else {
        table(&answer.value)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("write to stdout")
}
