//! `residency serve`: one regional node against the databases, KMS key, buckets and
//! audit signing key the catalogue names (composed by `node::serve`), until SIGINT or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use residency::flags::{ApiFlags, AuditFlags};

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The region this node serves (an id of the catalogue).
    #[arg(long, env = "RESIDENCY_REGION")]
    region: String,
    /// The region catalogue directory.
    #[arg(long, env = "RESIDENCY_CATALOG", default_value_os_t = crate::default_catalog())]
    catalog: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "RESIDENCY_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Address of the operations listener: `/healthz`, and `/readyz` and `/metrics` in
    /// detail (addresses, lags, backlog), nothing of the tenant API. Bind it to a private
    /// address only operators and scrapers reach. None by default.
    #[arg(long, env = "RESIDENCY_OPERATIONS_LISTEN")]
    operations_listen: Option<SocketAddr>,
    /// Send KMS and S3 calls to this endpoint instead of AWS (an S3/KMS-compatible
    /// server, or a VPC endpoint). Credentials come from the default AWS chain.
    #[arg(long, env = "RESIDENCY_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    /// The deployment's operator token (manages tenants). Read it from the
    /// environment or a secret store; never put it on a command line.
    #[arg(long, env = "RESIDENCY_OPERATOR_TOKEN", hide_env_values = true, value_parser = crate::parse_secret)]
    operator_token: catalog::Secret,
    /// The tenant directory database (`postgres://…`), shared by every region. It holds
    /// no personal data: tenant id, home region, allowed regions, transit, version.
    #[arg(long, env = "RESIDENCY_DIRECTORY_URL", hide_env_values = true, value_parser = crate::parse_secret)]
    directory_url: catalog::Secret,
    /// During a rotation of the inter-region forwarding secret: the previous secret,
    /// still accepted on forwarded requests (this node signs with the catalogue's
    /// `forwarding_secret`). See docs/operations.md.
    #[arg(long, env = "RESIDENCY_FORWARDING_SECRET_PREVIOUS", hide_env_values = true, value_parser = crate::parse_secret)]
    forwarding_secret_previous: Option<catalog::Secret>,
    /// Seconds the node keeps serving after SIGTERM while `/readyz` fails, so that the load
    /// balancer stops routing to it before it stops accepting (docs/operations.md).
    #[arg(long, env = "RESIDENCY_DEREGISTRATION_DELAY", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    deregistration_delay: u64,
    /// Seconds the node then waits for in-flight requests before cutting them.
    #[arg(long, env = "RESIDENCY_DRAIN_TIMEOUT", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=300))]
    drain_timeout: u64,
    #[command(flatten)]
    audit: AuditFlags,
    #[command(flatten)]
    api: ApiFlags,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let node = node::serve::start(node::serve::ServeConfig {
        api: node::ApiSettings {
            shutdown: node::ShutdownSettings {
                deregistration_delay: Duration::from_secs(args.deregistration_delay),
                drain_timeout: Duration::from_secs(args.drain_timeout),
            },
            ..args.api.settings()?
        },
        audit: args.audit.settings(),
        catalog: args.catalog,
        region: args.region,
        listen: args.listen,
        operations_listen: args.operations_listen,
        aws_endpoint_url: args.aws_endpoint_url,
        operator_token: args.operator_token,
        directory_url: args.directory_url,
        forwarding_secret_previous: args.forwarding_secret_previous,
    })
    .await?;
    let signal = crate::signals::shutdown_requested().await?;
    tracing::info!(signal, "stopping");
    node.stop().await
}
