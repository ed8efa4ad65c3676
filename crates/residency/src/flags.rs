//! The flag groups `serve` and `dev` share (and `residency-bench api` takes too, so that
//! its node runs as a served one): the tenant API's limits and the audit log's settings,
//! turned into `node`'s configuration. The protocol between regions is not a flag: a node
//! always forwards in `node::ApiSettings`'s documented default.

use std::time::Duration;

use node::{ApiSettings, AuditSettings, MetricsAccess, ReadAudit};

/// Limits of the tenant API.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiFlags {
    /// Largest file a tenant may upload, in MiB.
    #[arg(
        long,
        env = "RESIDENCY_MAX_FILE_MIB",
        default_value_t = 100,
        value_parser = clap::value_parser!(u64).range(1..=1_048_576)
    )]
    max_file_mib: u64,
    /// Requests per second each API key may make on average.
    #[arg(long, env = "RESIDENCY_RATE_LIMIT", default_value_t = 1000.0)]
    rate_limit: f64,
    /// Requests an idle API key may make at once.
    #[arg(long, env = "RESIDENCY_RATE_BURST", default_value_t = 2000.0)]
    rate_burst: f64,
    /// Who may read `/metrics` on the API listener: `public` (anyone), `operator-token`
    /// (`Authorization: Bearer <operator token>`; 401 otherwise) or `operations-listener`
    /// (nobody there: 404). The operations listener always serves it.
    #[arg(long, env = "RESIDENCY_METRICS_ACCESS", value_enum, default_value_t = MetricsAccessFlag::OperatorToken)]
    metrics_access: MetricsAccessFlag,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MetricsAccessFlag {
    Public,
    OperatorToken,
    OperationsListener,
}

impl From<MetricsAccessFlag> for MetricsAccess {
    fn from(flag: MetricsAccessFlag) -> Self {
        match flag {
            MetricsAccessFlag::Public => Self::Public,
            MetricsAccessFlag::OperatorToken => Self::OperatorToken,
            MetricsAccessFlag::OperationsListener => Self::OperationsListener,
        }
    }
}

impl ApiFlags {
    /// The node's API settings; refuses a rate limit that is not positive or a burst
    /// below one request.
    pub fn settings(&self) -> anyhow::Result<ApiSettings> {
        anyhow::ensure!(
            self.rate_limit > 0.0 && self.rate_burst >= 1.0,
            "--rate-limit must be positive and --rate-burst at least 1"
        );
        Ok(ApiSettings {
            max_file_bytes: self.max_file_mib * 1024 * 1024,
            rate_limit: node::RateLimit {
                per_second: self.rate_limit,
                burst: self.rate_burst,
            },
            metrics_access: self.metrics_access.into(),
            ..ApiSettings::default()
        })
    }
}

/// The audit log's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditFlags {
    /// Seconds between signed checkpoints of the audit chain heads that moved.
    #[arg(
        long,
        env = "RESIDENCY_AUDIT_CHECKPOINT_INTERVAL",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    audit_checkpoint_interval: u64,
    /// How read events (record.read, file.get, record.search, denials) are written:
    /// `batched` through a bounded queue, or `sync` before the read answers.
    #[arg(long, env = "RESIDENCY_AUDIT_READS", value_enum, default_value_t = ReadMode::Batched)]
    audit_reads: ReadMode,
    /// Read events the batched queue holds; while it is full, reads fail with 503.
    #[arg(
        long,
        env = "RESIDENCY_AUDIT_QUEUE_CAPACITY",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    audit_queue_capacity: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ReadMode {
    Batched,
    Sync,
}

impl AuditFlags {
    pub fn settings(&self) -> AuditSettings {
        let reads = match self.audit_reads {
            ReadMode::Sync => ReadAudit::Sync,
            ReadMode::Batched => {
                ReadAudit::batched(usize::try_from(self.audit_queue_capacity).unwrap_or(usize::MAX))
            }
        };
        AuditSettings {
            reads,
            checkpoint_interval: Duration::from_secs(self.audit_checkpoint_interval),
            ..AuditSettings::default()
        }
    }
}
