//! `residency-bench`: the benchmark binary (never shipped in the container image).
//! Benchmarks that compare our code with a baseline in the same run and report ratios. `envelope`: sealing and opening values through the keyring (cache
//! lookup, associated data, versioned format) against raw aws-lc-rs AES-256-GCM on the
//! same buffers, and KMS calls per 100k seals spread over 100 tenants. `audit`: writing
//! a record alone against the record plus its audit event in one transaction (the
//! product's record write; audited, the row and its event in one statement as
//! `create_record` writes them; a minimal four-column row too),
//! with the CPU each costs, the batched read-event writer against a multi-row prototype
//! (`events.rs`), and offline bundle verification in events per second on one
//! core. `api` (`tenant_api.rs`): the tenant API over HTTP against the same SQL work done
//! directly. `router` (`routing.rs`): the router's overhead, against nginx too.
//! `export` (`export_engine.rs`): the anonymization engine on one core. `keys`
//! (`key_lifecycle.rs`): re-encryption after a rotation, writes during it, offboarding.
//! `subjects` (`subjects.rs`): a data subject's export and erasure among a million records.
//!
//! It runs on mimalloc like the `residency` binary, so that what it measures of our code
//! is measured with the production allocator.

mod abuse;
mod cpu;
mod events;
mod export_engine;
mod key_lifecycle;
mod local_node;
mod routing;
mod subjects;
mod tenant_api;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use devstack::{LocalRegion, LocalRegionOptions, PgBinaries};
use envelope::kms::faulty::FaultyKms;
use envelope::kms::local::LocalKms;
use envelope::seal::SealContext;
use model::{RegionId, TenantId};
use residency::process::ProcessFlags;
use serde_json::{Value, json};
use service::{Keyring, KeyringSettings};
use store::{DatabaseSettings, PgEndpoint, RegionDatabase, embedded_migrations};
use telemetry::NodeMetrics;

#[derive(Debug, clap::Parser)]
#[command(
    name = "residency-bench",
    version,
    about = "Benchmarks of the residency platform against a baseline measured in the same run"
)]
struct Cli {
    #[command(flatten)]
    process: ProcessFlags,
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, clap::Subcommand)]
enum Which {
    /// Seal/open throughput against raw AES-256-GCM, and KMS calls per seal.
    Envelope(EnvelopeArgs),
    /// Write throughput with and without the audit event, and verify speed.
    Audit(AuditArgs),
    /// Create and read-by-id throughput of the tenant API over HTTP against the same SQL
    /// work done directly, on a local region and node the command starts itself.
    Api(tenant_api::ApiArgs),
    /// The router's overhead: a local tenant through the router against the bare
    /// handler, forwarding against calling the home node directly, and our forwarding
    /// hop against nginx proxy_pass.
    Router(routing::RouterArgs),
    /// Legitimate reads alone and during a flood of unauthenticated junk (random API
    /// keys, random tenant ids, long path segments) from another address, on a local
    /// region and node the command starts itself; database transactions per junk request.
    Abuse(abuse::AbuseArgs),
    /// The key lifecycle: a rotation's re-encryption job against a bare batched UPDATE of
    /// the same bytes (records) and an object-to-object copy (files), API writes during
    /// the job against without, and how long a second node of the region keeps opening
    /// an offboarded tenant's data; on a local region and nodes the command starts itself.
    Keys(key_lifecycle::KeysArgs),
    /// A data subject's export and erasure among a million records in five collections,
    /// against reading the same rows by id directly; on a local region and node the
    /// command starts itself.
    Subjects(subjects::SubjectsArgs),
    /// The anonymization engine on synthetic rows (Mondrian time; our Parquet writing
    /// against a bare arrow-rs ArrowWriter on the same batches), on one core.
    Export(ExportBenchArgs),
}

#[derive(Debug, clap::Args)]
struct ExportBenchArgs {
    /// Where to write the JSON results.
    #[arg(long, default_value = ".residency/bench/export.json")]
    output: PathBuf,
    /// Synthetic rows (8 quasi-identifiers, k = 10).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Exit non-zero when a target is missed.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    /// Where to write the JSON results.
    #[arg(long, default_value = ".residency/bench/audit.json")]
    output: PathBuf,
    /// Time per measurement; each case is measured in several interleaved rounds.
    #[arg(long, default_value_t = 2.0)]
    seconds_per_round: f64,
    /// Interleaved rounds per case (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Concurrent writers, each on its own tenant.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Events in the bundle whose verification is timed.
    #[arg(long, default_value_t = 500_000)]
    verify_events: u64,
    /// Read events written through the batched queue (and the multi-row prototype).
    #[arg(long, default_value_t = 20_000)]
    read_events: usize,
    /// Tenants the read events are spread over.
    #[arg(long, default_value_t = 32)]
    read_event_tenants: usize,
    /// Exit non-zero when a target is missed.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, clap::Args)]
struct EnvelopeArgs {
    /// Where to write the JSON results.
    #[arg(long, default_value = ".residency/bench/envelope.json")]
    output: PathBuf,
    /// Time per measurement; each case is measured in several interleaved rounds.
    #[arg(long, default_value_t = 0.3)]
    seconds_per_round: f64,
    /// Interleaved rounds per case (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seals spread over `--tenants` for the KMS-call count.
    #[arg(long, default_value_t = 100_000)]
    seals: u64,
    #[arg(long, default_value_t = 100)]
    tenants: u64,
    /// Exit non-zero when a target is missed.
    #[arg(long)]
    check: bool,
}

/// The allocator of the `residency` binary (see its `main.rs` for why mimalloc).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    residency::process::run(&cli.process, async move {
        match cli.which {
            Which::Envelope(args) => envelope(args).await,
            Which::Audit(args) => audit_bench(args).await,
            Which::Api(args) => tenant_api::run(args).await,
            Which::Router(args) => routing::run(args).await,
            Which::Export(args) => export_bench(args).await,
            Which::Abuse(args) => abuse::run(args).await,
            Which::Keys(args) => key_lifecycle::run(args).await,
            Which::Subjects(args) => subjects::run(args).await,
        }
    })
}

/// Says on stderr that figures of a debug build mean little, and how to get real ones.
fn warn_if_unoptimized(command: &str) {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is an unoptimized build; run `cargo run --release -p bench -- {command}` for real figures"
        );
    }
}

/// A throwaway PostgreSQL primary and replica for one benchmark run, named `name`.
async fn start_local_region(name: &str) -> anyhow::Result<LocalRegion> {
    LocalRegion::start(&PgBinaries::locate()?, LocalRegionOptions::ephemeral(name))
        .await
        .context("start a local region for the benchmark")
}

async fn export_bench(args: ExportBenchArgs) -> anyhow::Result<()> {
    warn_if_unoptimized("export");
    let rows = args.rows;
    // One core: the engine runs on this one blocking thread.
    let report = tokio::task::spawn_blocking(move || export_engine::bench_export(rows))
        .await
        .context("join the export benchmark")?;
    print!("{}", report.render());
    let mut json = serde_json::to_value(&report)?;
    json["benchmark"] = json!("export");
    json["optimized_build"] = json!(!cfg!(debug_assertions));
    write_results(&args.output, &json)?;
    if args.check && !(report.anonymize_goal_met && report.writer_goal_met) {
        anyhow::bail!("a benchmark target was missed");
    }
    Ok(())
}

/// Runs `measure` on a throwaway local region (primary and replica) of its own, stops the
/// region whatever happened (its guardian stops it should this process die first), and
/// writes the JSON report `measure` returned to `json`.
pub(crate) async fn on_local_region(
    command: &str,
    json: &std::path::Path,
    measure: impl AsyncFnOnce(&LocalRegion) -> anyhow::Result<Value>,
) -> anyhow::Result<Value> {
    warn_if_unoptimized(command);
    let databases = start_local_region(&format!("bench-{command}")).await?;
    let result = measure(&databases).await;
    let stopped = databases.stop().await;
    let report = result?;
    stopped.context("stop the local region")?;
    write_results(json, &report)?;
    Ok(report)
}

/// Whether the report lists results and every one met its goal.
pub(crate) fn every_goal_met(report: &Value) -> bool {
    report["results"]
        .as_array()
        .is_some_and(|results| results.iter().all(|r| r["met"] == true))
}

/// Writes a benchmark's JSON results to `path` (creating its directory) and says where.
pub(crate) fn write_results(path: &std::path::Path, report: &Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    println!("results written to {}", path.display());
    Ok(())
}

/// The `p` quantile (0 to 1, nearest rank) of sorted latencies; zero when there are none.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).max(1) - 1;
    sorted[rank.min(sorted.len() - 1)]
}

/// Throughput targets from the issue: ours / raw at each size.
const TARGETS: [(usize, f64); 2] = [(1024, 0.5), (16 * 1024, 0.8)];
/// KMS calls may be at most this share of operations.
const KMS_CALL_TARGET: f64 = 0.01;
const REGION: &str = "eu-central-1";

async fn envelope(args: EnvelopeArgs) -> anyhow::Result<()> {
    warn_if_unoptimized("envelope");
    let region = RegionId::parse(REGION)?;
    let databases = start_local_region("bench").await?;
    let result = measure(&args, &region, &databases).await;
    databases.stop().await?;
    let report = result?;

    write_results(&args.output, &report)?;
    let all_met = report["results"]
        .as_array()
        .is_some_and(|r| r.iter().all(|r| r["met"] == true))
        && report["kms"]["met"] == true;
    if args.check && !all_met {
        anyhow::bail!("a benchmark target was missed");
    }
    Ok(())
}

async fn measure(
    args: &EnvelopeArgs,
    region: &RegionId,
    databases: &LocalRegion,
) -> anyhow::Result<serde_json::Value> {
    let settings = DatabaseSettings::new(
        PgEndpoint::new("primary", databases.primary_config("postgres")),
        vec![PgEndpoint::new(
            "replica-1",
            databases.replica_config("postgres"),
        )],
    );
    let database = RegionDatabase::new(region.clone(), &settings)?;
    database.prepare(embedded_migrations()).await?;
    let kms_dir = tempfile::tempdir()?;
    let local = Arc::new(LocalKms::open_or_create(kms_dir.path(), region.clone())?);
    let kms = Arc::new(FaultyKms::new(local));
    let metrics = Arc::new(NodeMetrics::new(region.as_str()));
    let keyring = Keyring::new(
        database.clone(),
        kms.clone(),
        metrics,
        KeyringSettings::default(),
    );

    let tenants = provision(&keyring, &database, args.tenants).await?;
    let throughput = throughput(args, &keyring, &tenants[0]).await?;

    // KMS calls while sealing `seals` values round-robin over the tenants, on a keyring
    // with a cold cache (as after a node start).
    let cold = Keyring::new(
        database,
        kms.clone(),
        Arc::new(NodeMetrics::new(region.as_str())),
        KeyringSettings::default(),
    );
    let before = kms.calls();
    let value = vec![0x5a; 256];
    for i in 0..args.seals {
        let tenant = &tenants[(i % args.tenants) as usize];
        cold.seal(
            tenant,
            &SealContext {
                collection: "bench",
                record: "r",
                field: "f",
            },
            &value,
        )
        .await?;
    }
    let calls = kms.calls() - before;
    let share = calls as f64 / args.seals as f64;
    println!();
    println!(
        "KMS calls: {calls} for {} seals over {} tenants = {:.3}% of operations (target ≤ {:.0}%)",
        args.seals,
        args.tenants,
        share * 100.0,
        KMS_CALL_TARGET * 100.0
    );

    Ok(json!({
        "benchmark": "envelope",
        "optimized_build": !cfg!(debug_assertions),
        "rounds": args.rounds,
        "seconds_per_round": args.seconds_per_round,
        "baseline": "aws-lc-rs AES-256-GCM seal_in_place_append_tag / open_in_place, random nonce, same buffers",
        "results": throughput,
        "kms": {
            "seals": args.seals,
            "tenants": args.tenants,
            "kms_calls": calls,
            "share_of_operations": share,
            "target_share": KMS_CALL_TARGET,
            "met": share <= KMS_CALL_TARGET,
        },
    }))
}

async fn provision(
    keyring: &Keyring,
    database: &RegionDatabase,
    count: u64,
) -> anyhow::Result<Vec<TenantId>> {
    let mut tenants = Vec::new();
    for _ in 0..count {
        let tenant = TenantId::from_random_bytes(rand::random());
        let mut primary = database.primary().get().await?;
        let tx = primary.begin().await?;
        keyring.provision(&tx, &tenant).await?;
        tx.commit().await?;
        tenants.push(tenant);
    }
    Ok(tenants)
}

/// Seal and open at each size: ours through the keyring (warm cache), raw with aws-lc-rs
/// on the same buffers, in interleaved rounds; the medians and their ratio.
async fn throughput(
    args: &EnvelopeArgs,
    keyring: &Keyring,
    tenant: &TenantId,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let round = Duration::from_secs_f64(args.seconds_per_round);
    let context = SealContext {
        collection: "patients",
        record: "0f9a3c2e-5d1b-4a7e-8c6f-2b1d0e9f8a7c",
        field: "diagnosis",
    };
    let raw_key = {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).expect("system RNG");
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &bytes).expect("32-byte key"))
    };
    println!(
        "{:<6} {:>7} {:>14} {:>14} {:>7} {:>7}  ",
        "op", "size", "raw ops/s", "ours ops/s", "ratio", "target"
    );
    let mut results = Vec::new();
    for (size, target) in TARGETS {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let ours_sealed = keyring.seal(tenant, &context, &plaintext).await?;
        let raw_sealed = raw_seal(&raw_key, &plaintext);

        let mut seal_raw = Vec::new();
        let mut seal_ours = Vec::new();
        let mut open_raw = Vec::new();
        let mut open_ours = Vec::new();
        for _ in 0..args.rounds {
            seal_raw.push(rate(round, || {
                std::hint::black_box(raw_seal(&raw_key, &plaintext));
            }));
            seal_ours.push(
                rate_async(round, || async {
                    std::hint::black_box(
                        keyring
                            .seal(tenant, &context, &plaintext)
                            .await
                            .expect("seal"),
                    );
                })
                .await,
            );
            open_raw.push(rate(round, || {
                std::hint::black_box(raw_open(&raw_key, &raw_sealed));
            }));
            open_ours.push(
                rate_async(round, || async {
                    std::hint::black_box(
                        keyring
                            .open(tenant, &context, &ours_sealed)
                            .await
                            .expect("open"),
                    );
                })
                .await,
            );
        }
        for (operation, raw, ours) in [("seal", seal_raw, seal_ours), ("open", open_raw, open_ours)]
        {
            let (raw, ours) = (median(raw), median(ours));
            let ratio = ours / raw;
            let met = ratio >= target;
            println!(
                "{operation:<6} {:>7} {raw:>14.0} {ours:>14.0} {ratio:>7.2} {:>7}  {}",
                format!("{} KiB", size / 1024),
                format!("≥{target}"),
                if met { "met" } else { "MISSED" }
            );
            results.push(json!({
                "operation": operation,
                "size_bytes": size,
                "raw_ops_per_sec": raw,
                "residency_ops_per_sec": ours,
                "raw_mib_per_sec": raw * size as f64 / 1048576.0,
                "residency_mib_per_sec": ours * size as f64 / 1048576.0,
                "ratio": ratio,
                "target_ratio": target,
                "met": met,
            }));
        }
    }
    Ok(results)
}

fn raw_seal(key: &LessSafeKey, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).expect("system RNG");
    let mut buffer = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
    buffer.extend_from_slice(&nonce);
    buffer.extend_from_slice(plaintext);
    let mut body = buffer.split_off(NONCE_LEN);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
        .expect("seal");
    buffer.extend_from_slice(&body);
    buffer
}

fn raw_open(key: &LessSafeKey, sealed: &[u8]) -> Vec<u8> {
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce");
    let mut body = body.to_vec();
    let len = key
        .open_in_place(nonce, Aad::empty(), &mut body)
        .expect("open")
        .len();
    body.truncate(len);
    body
}

/// Operations per second of `op`, run for about `duration`.
fn rate(duration: Duration, mut op: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        for _ in 0..64 {
            op();
        }
        count += 64;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

async fn rate_async<F, Fut>(duration: Duration, mut op: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        for _ in 0..64 {
            op().await;
        }
        count += 64;
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// The load generators' HTTP client: hyper's pooled keep-alive client with `TCP_NODELAY`
/// and nothing more, so that its own share of the cores stays small.
pub(crate) fn load_client<B>(
    max_idle: usize,
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, B>
where
    B: axum::body::HttpBody + Send + 'static,
    B::Data: Send,
{
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Audit targets from the issue.
const AUDIT_WRITE_TARGET: f64 = 0.7;
const VERIFY_TARGET: f64 = 500_000.0;

/// One way of writing in the audit benchmark. Every audited case does exactly the same
/// row work as its baseline, plus the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteCase {
    /// A record-shaped row in a four-column table of the benchmark's own, in a plain
    /// `BEGIN`/`COMMIT`: the least work a write can do, so the event's share is largest.
    MinimalRow { audited: bool },
    /// The product's record write as `service::records::create_record` issues it: a
    /// tenant-scoped transaction (`begin_tenant`), `store::records::insert` (the
    /// `records` row with a sealed value, a blind-index token and a public field), and
    /// `commit_lsn` for the consistency token; audited, `AuditLog::insert_record` (the
    /// row and its event in one statement, as `create_record` writes them).
    Record { audited: bool },
}

impl WriteCase {
    const ALL: [WriteCase; 4] = [
        WriteCase::MinimalRow { audited: false },
        WriteCase::MinimalRow { audited: true },
        WriteCase::Record { audited: false },
        WriteCase::Record { audited: true },
    ];

    fn name(self) -> &'static str {
        match self {
            Self::MinimalRow { audited: false } => "minimal row",
            Self::MinimalRow { audited: true } => "minimal row + event",
            Self::Record { audited: false } => "record",
            Self::Record { audited: true } => "record + event",
        }
    }

    fn audited(self) -> bool {
        match self {
            Self::MinimalRow { audited } | Self::Record { audited } => audited,
        }
    }
}

/// What the write cases measured: transactions per second (median of the rounds) and
/// CPU per transaction over all rounds.
#[derive(Debug, Clone, Copy)]
struct CaseResult {
    case: WriteCase,
    per_sec: f64,
    postgres_us: f64,
    bench_us: f64,
}

async fn audit_bench(args: AuditArgs) -> anyhow::Result<()> {
    warn_if_unoptimized("audit");
    let region = RegionId::parse(REGION)?;
    let databases = start_local_region("bench").await?;
    let writes = audit_writes(&args, &region, &databases).await;
    databases.stop().await?;
    let (cases, events) = writes?;
    let verify_rate = verify_speed(&region, args.verify_events)?;

    let rate = |case: WriteCase| {
        cases
            .iter()
            .find(|r| r.case == case)
            .map_or(0.0, |r| r.per_sec)
    };
    let plain = rate(WriteCase::Record { audited: false });
    let audited = rate(WriteCase::Record { audited: true });
    let write_ratio = audited / plain;
    let minimal_ratio = rate(WriteCase::MinimalRow { audited: true })
        / rate(WriteCase::MinimalRow { audited: false });

    println!(
        "{:<40} {:>12} {:>14} {:>14}",
        "case", "tx/s", "postgres µs/tx", "bench µs/tx"
    );
    for result in &cases {
        println!(
            "{:<40} {:>12.0} {:>14.1} {:>14.1}",
            result.case.name(),
            result.per_sec,
            result.postgres_us,
            result.bench_us
        );
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "{:<40} {write_ratio:>12.2}  target ≥{AUDIT_WRITE_TARGET}  {}",
        "ratio (record + event / record)",
        verdict(write_ratio >= AUDIT_WRITE_TARGET)
    );
    println!(
        "{:<40} {minimal_ratio:>12.2}",
        "ratio (minimal row + event / row)"
    );
    println!(
        "{:<40} {:>12.0}",
        "read events/s, batched queue writer", events.queue_per_sec
    );
    println!(
        "{:<40} {:>12.0}",
        "read events/s, multi-row (prototype)", events.prototype_per_sec
    );
    println!(
        "{:<40} {verify_rate:>12.0}  target ≥{VERIFY_TARGET:.0}  {}",
        "verify (events, one core)",
        verdict(verify_rate >= VERIFY_TARGET)
    );
    let report = json!({
        "benchmark": "audit",
        "optimized_build": !cfg!(debug_assertions),
        "writers": args.writers,
        "rounds": args.rounds,
        "seconds_per_round": args.seconds_per_round,
        "baseline": "the product's record write (begin_tenant, store::records::insert, commit_lsn); audited writes the row and its event in one statement (AuditLog::insert_record, as create_record does)",
        "insert_row_per_sec": plain,
        "insert_row_and_event_per_sec": audited,
        "write_ratio": write_ratio,
        "write_target_ratio": AUDIT_WRITE_TARGET,
        "write_met": write_ratio >= AUDIT_WRITE_TARGET,
        "minimal_row_ratio": minimal_ratio,
        "cases": cases.iter().map(|r| json!({
            "case": r.case.name(),
            "audited": r.case.audited(),
            "tx_per_sec": r.per_sec,
            "postgres_cpu_us_per_tx": r.postgres_us,
            "bench_cpu_us_per_tx": r.bench_us,
        })).collect::<Vec<_>>(),
        "read_events": {
            "events": args.read_events,
            "tenants": args.read_event_tenants,
            "batched_queue_per_sec": events.queue_per_sec,
            "multi_row_prototype_per_sec": events.prototype_per_sec,
        },
        "verify_events": args.verify_events,
        "verify_events_per_sec": verify_rate,
        "verify_target_per_sec": VERIFY_TARGET,
        "verify_met": verify_rate >= VERIFY_TARGET,
    });
    write_results(&args.output, &report)?;
    if args.check && !(report["write_met"] == true && report["verify_met"] == true) {
        anyhow::bail!("a benchmark target was missed");
    }
    Ok(())
}

/// The collection every record of the audit benchmark goes into.
const BENCH_COLLECTION: &str = "people";

/// Transactions per second of `writers` concurrent writers, each on a tenant of its own,
/// for every [`WriteCase`], in interleaved rounds (medians), with the CPU they cost.
async fn audit_writes(
    args: &AuditArgs,
    region: &RegionId,
    databases: &LocalRegion,
) -> anyhow::Result<(Vec<CaseResult>, crate::events::EventRates)> {
    let mut settings = DatabaseSettings::new(
        PgEndpoint::new("primary", databases.primary_config("postgres")),
        vec![],
    );
    settings.pool_size = args.writers.max(1) + 1;
    let database = RegionDatabase::new(region.clone(), &settings)?;
    database.prepare(embedded_migrations()).await?;
    // The minimal row: ids, version, sealed data, timestamp.
    database
        .primary()
        .get()
        .await?
        .client()
        .batch_execute(
            "create table bench_records (tenant_id text not null, id text not null, version integer not null,
                                         data bytea not null, created_at timestamptz not null default now(),
                                         primary key (tenant_id, id))",
        )
        .await?;
    let mut tenants = Vec::new();
    for _ in 0..args.writers.max(1) {
        tenants.push(bench_tenant(&database).await?);
    }
    let log = service::AuditLog::new(
        database.clone(),
        audit::SigningKey::generate(region.clone()),
        Vec::new(),
    );
    // Only the primary is written; the replica's replay is not this benchmark's cost.
    let clock = crate::cpu::CpuClock::new([databases.primary().postmaster_pid()]);
    let round = Duration::from_secs_f64(args.seconds_per_round);
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); WriteCase::ALL.len()];
    let mut spent = vec![(crate::cpu::CpuSample::default(), 0u64); WriteCase::ALL.len()];
    for _ in 0..args.rounds.max(1) {
        for (index, case) in WriteCase::ALL.into_iter().enumerate() {
            let before = clock.sample();
            let (count, elapsed) = write_round(&database, &log, case, &tenants, round).await?;
            let cpu = clock.sample() - before;
            rates[index].push(count as f64 / elapsed.as_secs_f64());
            let (total, transactions) = &mut spent[index];
            total.postgres += cpu.postgres;
            total.rest += cpu.rest + cpu.load;
            *transactions += count;
        }
    }
    let events = crate::events::measure(
        &database,
        region,
        args.read_events,
        args.read_event_tenants,
        args.rounds,
    )
    .await?;
    let cases = WriteCase::ALL
        .into_iter()
        .zip(rates)
        .zip(spent)
        .map(|((case, rates), (cpu, transactions))| CaseResult {
            case,
            per_sec: median(rates),
            postgres_us: crate::cpu::micros_per_op(cpu.postgres, transactions),
            bench_us: crate::cpu::micros_per_op(cpu.rest, transactions),
        })
        .collect();
    Ok((cases, events))
}

/// A tenant with a collection for the benchmark's records, created as the service
/// would (tenant-scoped transaction), without keys: the benchmark seals nothing.
async fn bench_tenant(database: &RegionDatabase) -> anyhow::Result<TenantId> {
    let tenant = TenantId::from_random_bytes(rand::random());
    let mut primary = database.primary().get().await?;
    let tx = primary.begin_tenant(&tenant).await?;
    store::tenants::insert(
        &tx,
        &store::tenants::TenantRow {
            id: tenant,
            name: "bench".into(),
            home_region: REGION.into(),
            allowed_regions: vec![REGION.into()],
            transit: "proxy".into(),
            analytics_export: false,
            status: "active".into(),
            created_at: std::time::SystemTime::now(),
        },
    )
    .await?;
    store::collections::upsert(&tx, &tenant, BENCH_COLLECTION, &json!({"fields": {}})).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// The sealed column of a record like API.md's `people` example (five sealed fields).
const SEALED_RECORD_BYTES: usize = 384;

/// Runs `case` on one writer per tenant for `duration`; the transactions committed and
/// the time taken.
async fn write_round(
    database: &RegionDatabase,
    log: &service::AuditLog,
    case: WriteCase,
    tenants: &[TenantId],
    duration: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let tasks = tenants.iter().map(|&tenant| {
        let (database, log) = (database.clone(), log.clone());
        tokio::spawn(async move {
            let mut count = 0u64;
            while started.elapsed() < duration {
                write_once(&database, &log, case, tenant).await?;
                count += 1;
            }
            anyhow::Ok(count)
        })
    });
    let mut total = 0;
    for task in futures::future::join_all(tasks).await {
        total += task.context("join writer")??;
    }
    Ok((total, started.elapsed()))
}

async fn write_once(
    database: &RegionDatabase,
    log: &service::AuditLog,
    case: WriteCase,
    tenant: TenantId,
) -> anyhow::Result<()> {
    let id = TenantId::from_random_bytes(rand::random());
    let id = id.as_str();
    let mut primary = database.primary().get().await?;
    match case {
        WriteCase::MinimalRow { audited } => {
            let data = [0x42u8; 256];
            let tx = primary.begin().await?;
            let insert = tx
                .prepare_cached("insert into bench_records (tenant_id, id, version, data) values ($1, $2, 1, $3)")
                .await?;
            tx.client()
                .execute(&insert, &[&tenant.as_str(), &id, &data.as_slice()])
                .await?;
            if audited {
                log.append(&tx, audit_event(tenant, id)).await?;
            }
            tx.commit().await?;
        }
        WriteCase::Record { audited } => {
            let sealed = [0x42u8; SEALED_RECORD_BYTES];
            let public = json!({"plan": "pro"});
            let index = [store::records::IndexEntry {
                field: "email".into(),
                token: rand::random(),
            }];
            let tx = primary.begin_tenant(&tenant).await?;
            let record = store::records::NewRecord {
                tenant: &tenant,
                collection: BENCH_COLLECTION,
                id,
                public: &public,
                sealed: &sealed,
                index: &index,
            };
            if audited {
                log.insert_record(&tx, record, audit_event(tenant, id))
                    .await?;
            } else {
                store::records::insert(
                    &tx,
                    &tenant,
                    BENCH_COLLECTION,
                    id,
                    &public,
                    &sealed,
                    &index,
                )
                .await?;
            }
            tx.commit_lsn().await?;
        }
    }
    Ok(())
}

fn audit_event(tenant: TenantId, record: &str) -> audit::NewEvent {
    let region = RegionId::parse(REGION).expect("the bench region is valid");
    audit::NewEvent {
        time: std::time::SystemTime::now(),
        region: region.clone(),
        tenant,
        actor: audit::Actor {
            kind: audit::ActorKind::ApiKey,
            id: "key_bench".into(),
        },
        action: audit::Action::RecordCreate,
        resource: format!("records/{record}"),
        outcome: audit::Outcome::Success,
        request_id: "bench".into(),
        via_region: region,
    }
}

/// Events per second `audit::verify_bundle` checks on this thread (one core), over a
/// bundle of `events` events built and signed in memory.
fn verify_speed(region: &RegionId, events: u64) -> anyhow::Result<f64> {
    let key = audit::SigningKey::generate(region.clone());
    let tenant = TenantId::from_random_bytes(rand::random());
    let mut writer = audit::BundleWriter::new(tenant, region.clone(), None, None);
    let mut bundle = Vec::new();
    let mut head = None;
    for i in 0..events {
        let event = audit::next(head, audit_event(tenant, &format!("r{i}")));
        head = Some(event.head());
        writer.write_event(&event, &mut bundle)?;
    }
    bundle.extend_from_slice(
        writer
            .finish(&key, std::time::SystemTime::now())?
            .as_bytes(),
    );
    let keys = audit::KeySet::from_keys([key.public()])?;
    let started = Instant::now();
    let summary = audit::verify_bundle(std::io::Cursor::new(&bundle), &keys)?;
    let rate = summary.count as f64 / started.elapsed().as_secs_f64();
    Ok(rate)
}
