//! `residency-bench api`: create and read-by-id throughput of the tenant API over HTTP,
//! at a fixed number of concurrent keep-alive clients for a fixed time, against a
//! baseline that does the same SQL work directly through the region's deadpool-postgres
//! pools, in the same run.
//!
//! The command starts everything itself: an ephemeral local region (PostgreSQL primary
//! and streaming replica) and a regional node built like `serve` builds one
//! (`node::start`) on a loopback port. Over HTTP it creates the tenants, API.md's
//! `people` collection and one writer key per client (the node's per-key rate limit is
//! 1000 requests/s: one key for all clients would measure the limiter).
//!
//! Cases, each for `--seconds` in all, in `--rounds` interleaved rounds:
//! - create, baseline: one transaction on the primary with `store::records::insert` (a
//!   sealed column of the API's size, a blind-index token, the public field) and
//!   `AuditLog::append`, then `COMMIT`;
//! - create, SQL as the API issues it: the same, in a tenant-scoped transaction sent
//!   and committed in one round trip (`AuditLog::create_record`), still without HTTP, authorization,
//!   validation or sealing: the gap between this and the baseline is the database
//!   round trips the service adds, the rest of the gap is everything else;
//! - create, API: `POST .../records`;
//! - read, baseline: `store::records::get` by id on the server the API's reads go to;
//! - read, SQL as the API issues it: the same select in a read-only repeatable-read
//!   tenant-scoped transaction sent in one round trip (`store::records::get_scoped`),
//!   and the read event through a batched audit queue;
//! - read, API: `GET .../records/{id}` of records the API created.
//!
//! The node takes `serve`'s API and audit flags (`--rate-limit`, `--audit-reads`, …);
//! with the default batched read events, reads beyond what the queue's writer makes
//! durable are refused with 503 and counted as errors. Clients are spread over one tenant each unless
//! `--tenants` says otherwise.
//!
//! PostgreSQL CPU, the node's CPU and the load generator's CPU per operation are
//! reported too (the load generator runs on a runtime of its own, [`LOAD_THREAD`]).
//!
//! [`LOAD_THREAD`]: crate::cpu::LOAD_THREAD

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use axum::body::Bytes;
use devstack::LocalRegion;
use http_body_util::{BodyExt as _, Full};
use model::{RegionId, TenantId};
use serde_json::{Value, json};
use service::{AuditKeys, AuditLog};
use store::records::IndexEntry;
use store::{DatabaseSettings, RegionDatabase};

use crate::cpu::{CpuClock, CpuSample, LOAD_THREAD, micros_per_op};
use node::RunningNode;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ApiArgs {
    /// Where to write the JSON results.
    #[arg(
        long = "json",
        value_name = "PATH",
        default_value = ".residency/bench/api.json"
    )]
    json: PathBuf,
    /// Seconds each case runs in all, split over `--rounds` interleaved rounds (so that
    /// background work of the database, autovacuum and checkpoints, falls on every case
    /// alike).
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    seconds: f64,
    /// Interleaved rounds: each round runs every path of an operation in turn.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Concurrent clients: keep-alive HTTP connections, or baseline tasks.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    clients: u64,
    /// Tenants the clients are spread over (client i uses tenant i mod N); default: one
    /// per client. Writers of one tenant take turns on its audit chain head, in the API
    /// and the baseline alike, so `--tenants 1` measures that lock more than the API.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    tenants: Option<u64>,
    /// Worker threads of the load generator (default: one per CPU). The node runs on
    /// the main runtime.
    #[arg(long)]
    load_threads: Option<usize>,
    #[command(flatten)]
    node: crate::local_node::NodeFlags,
}

pub(crate) fn positive_seconds(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 && seconds < 86_400.0 => Ok(seconds),
        _ => Err("must be a number of seconds above 0 and below a day".into()),
    }
}

impl ApiArgs {
    fn tenant_count(&self) -> u64 {
        self.tenants.unwrap_or(self.clients).min(self.clients)
    }
}

/// Targets from issue 5: API throughput / baseline throughput.
const CREATE_TARGET: f64 = 0.6;
const READ_TARGET: f64 = 0.7;

const REGION: &str = "eu-central-1";
const COLLECTION: &str = "people";
/// Untimed requests per client before measuring: connections, pools, caches, and a few
/// records to read.
const WARM_UP_PER_CLIENT: usize = 8;

pub(crate) async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let report = crate::on_local_region("api", &args.json, async |databases| {
        with_node(&args, databases).await
    })
    .await?;
    let failed = !crate::every_goal_met(&report);
    let errors = report["cases"]
        .as_array()
        .is_none_or(|cases| cases.iter().any(|c| c["errors"] != 0));
    if args.node.check && (failed || errors) {
        bail!("a benchmark target was missed or operations failed");
    }
    Ok(())
}

/// Starts the node, measures, stops the node (also when measuring failed).
async fn with_node(args: &ApiArgs, databases: &LocalRegion) -> anyhow::Result<Value> {
    let region = RegionId::parse(REGION)?;
    let listener = crate::local_node::loopback_listener().await?;
    let bench_node = crate::local_node::start(
        &region,
        databases,
        &args.node.api,
        &args.node.audit,
        listener,
        None,
    )
    .await?;
    let (node, settings) = (&bench_node.node, &bench_node.database);
    let operator = bench_node.operator.clone();
    let clock = CpuClock::new([
        databases.primary().postmaster_pid(),
        databases.replica().postmaster_pid(),
    ]);
    let result = on_load_runtime(args, node, settings, operator, clock).await;
    bench_node.stop_after(result).await
}

/// Runs the measurement on a runtime of its own, so that the load generator's CPU can
/// be told apart from the node's.
async fn on_load_runtime(
    args: &ApiArgs,
    node: &RunningNode,
    settings: &DatabaseSettings,
    operator: String,
    clock: CpuClock,
) -> anyhow::Result<Value> {
    let threads = args.load_threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let runtime = LoadRuntime::new(LOAD_THREAD, threads)?;
    let bench = Bench {
        args: args.clone(),
        base: format!("http://{}", node.address),
        region: node.region.clone(),
        operator,
        clock,
        database: RegionDatabase::new(node.region.clone(), settings)
            .context("build the baseline's pools")?,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(usize::try_from(args.clients).unwrap_or(usize::MAX))
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()
            .context("build the HTTP client")?,
        load: crate::load_client(usize::try_from(args.clients).unwrap_or(usize::MAX)),
    };
    runtime
        .handle()
        .spawn(async move { bench.measure().await })
        .await
        .context("join the load generator")?
}

/// A runtime that may be dropped inside another runtime.
#[derive(Debug)]
pub(crate) struct LoadRuntime(Option<tokio::runtime::Runtime>);

impl LoadRuntime {
    /// A multi-thread runtime of `threads` workers named `name`.
    pub(crate) fn new(name: &str, threads: usize) -> anyhow::Result<Self> {
        Ok(Self(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .thread_name(name)
                .enable_all()
                .build()
                .with_context(|| format!("start the {name} runtime"))?,
        )))
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle()
    }
}

impl Drop for LoadRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[derive(Debug, Clone)]
struct Bench {
    args: ApiArgs,
    base: String,
    region: RegionId,
    operator: String,
    clock: CpuClock,
    /// The baseline's own pools (same sizes as the node's).
    database: RegionDatabase,
    /// Setup calls (tenants, keys, the schema).
    http: reqwest::Client,
    /// The measured requests: hyper's pooled keep-alive client and no more, so that the
    /// load generator's share of the 2 cores stays small, as the baseline's SQL client's is.
    load: LoadClient,
}

type LoadClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// One client's identity: its tenant and API key.
#[derive(Debug, Clone)]
struct Client {
    tenant: TenantId,
    /// `Bearer <key>`, built once.
    authorization: http::HeaderValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Create,
    Read,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Baseline,
    SqlAsApi,
    Api,
}

impl Path {
    fn as_str(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::SqlAsApi => "sql_as_api",
            Self::Api => "api",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Baseline => "baseline (SQL)",
            Self::SqlAsApi => "SQL as the API issues it",
            Self::Api => "API (HTTP)",
        }
    }
}

/// What one case measured.
#[derive(Debug)]
struct CaseResult {
    operation: Operation,
    path: Path,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Latencies of the operations that succeeded, sorted.
    latencies: Vec<Duration>,
    cpu: CpuSample,
}

impl CaseResult {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        crate::percentile(&self.latencies, p)
    }

    fn json(&self) -> Value {
        let ops = self.ok + self.errors;
        json!({
            "operation": self.operation.as_str(),
            "path": self.path.as_str(),
            "ops": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": self.elapsed.as_secs_f64(),
            "per_sec": self.per_sec(),
            "p50_ms": millis(self.percentile(0.50)),
            "p99_ms": millis(self.percentile(0.99)),
            "cpu_us_per_op": {
                "postgres": micros_per_op(self.cpu.postgres, ops),
                "node": micros_per_op(self.cpu.rest, ops),
                "load_generator": micros_per_op(self.cpu.load, ops),
            },
        })
    }
}

/// Adds a round's result to a case's total (counts, time, latencies and CPU summed).
fn merge_into(slot: &mut Option<CaseResult>, round: CaseResult) {
    match slot {
        None => *slot = Some(round),
        Some(total) => {
            total.ok += round.ok;
            total.errors += round.errors;
            if total.first_error.is_none() {
                total.first_error = round.first_error;
            }
            total.elapsed += round.elapsed;
            total.latencies.extend(round.latencies);
            total.cpu = total.cpu + round.cpu;
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The per-client work of one case.
#[derive(Debug, Clone)]
struct Work {
    bench: Bench,
    operation: Operation,
    path: Path,
    /// What the baseline writes in place of a sealed record of the API.
    shape: RecordShape,
    /// The server kind API reads are served by (the baseline reads there too).
    read_from_replica: bool,
    /// Records to read, per tenant (indexes of `tenants`).
    ids: Arc<Vec<Vec<String>>>,
    tenants: Arc<Vec<TenantId>>,
    /// The baseline's audit log: appends (creates) and its batched queue (reads).
    log: AuditLog,
}

/// The byte sizes of a record the API stored, which the baseline's rows copy.
#[derive(Debug, Clone)]
struct RecordShape {
    sealed_bytes: usize,
    public: Value,
}

impl Bench {
    async fn measure(self) -> anyhow::Result<Value> {
        let clients = self.provision().await?;
        let tenants: Vec<TenantId> = {
            let mut seen = Vec::new();
            for client in &clients {
                if !seen.contains(&client.tenant) {
                    seen.push(client.tenant);
                }
            }
            seen
        };
        // Warm up every connection and cache; the records also tell the sealed size.
        let mut ids: Vec<Vec<String>> = vec![Vec::new(); tenants.len()];
        let warm = futures::future::join_all(clients.iter().enumerate().map(|(n, client)| {
            let bench = self.clone();
            let client = client.clone();
            async move {
                let mut created = Vec::new();
                for i in 0..WARM_UP_PER_CLIENT {
                    created.push(bench.create(&client, n, i).await?);
                }
                anyhow::Ok((client.tenant, created))
            }
        }))
        .await;
        for result in warm {
            let (tenant, created) = result.context("warm up")?;
            let index = tenant_index(&tenants, tenant);
            ids[index].extend(created);
        }
        let shape = self.record_shape(&tenants[0], &ids[0][0]).await?;
        self.wait_for_replica().await?;
        let read_from_replica = self.api_reads_from_replica(&clients[0], &ids[0][0]).await?;
        let work = Work {
            bench: self.clone(),
            operation: Operation::Create,
            path: Path::Baseline,
            shape: shape.clone(),
            read_from_replica,
            ids: Arc::new(Vec::new()),
            tenants: Arc::new(tenants.clone()),
            log: AuditLog::with_settings(
                self.database.clone(),
                AuditKeys::generate(self.region.clone()),
                self.args.node.audit.settings(),
                Arc::new(telemetry::NodeMetrics::new(self.region.as_str())),
            ),
        };
        // The baseline's connections open before its case is timed, like the node's did.
        self.warm_baseline(read_from_replica).await?;

        let paths = [Path::Baseline, Path::SqlAsApi, Path::Api];
        let mut creates: Vec<Option<CaseResult>> = paths.iter().map(|_| None).collect();
        for _ in 0..self.args.rounds {
            for (slot, path) in creates.iter_mut().zip(paths) {
                let work = Work {
                    path,
                    ..work.clone()
                };
                let (result, created) = self.case(&work, &clients).await?;
                if path == Path::Api {
                    for (tenant, id) in created {
                        ids[tenant_index(&tenants, tenant)].push(id);
                    }
                }
                merge_into(slot, result);
            }
        }
        self.wait_for_replica().await?;
        let ids = Arc::new(ids);
        let mut reads: Vec<Option<CaseResult>> = paths.iter().map(|_| None).collect();
        for _ in 0..self.args.rounds {
            for (slot, path) in reads.iter_mut().zip(paths) {
                let work = Work {
                    operation: Operation::Read,
                    path,
                    ids: ids.clone(),
                    ..work.clone()
                };
                merge_into(slot, self.case(&work, &clients).await?.0);
                // The next case starts with an empty queue of read events.
                tokio::time::timeout(Duration::from_secs(60), work.log.flush())
                    .await
                    .context("the baseline's read events were not written within a minute")??;
            }
        }
        let mut results: Vec<CaseResult> = creates.into_iter().chain(reads).flatten().collect();
        for result in &mut results {
            result.latencies.sort_unstable();
        }
        work.log
            .shutdown(Duration::from_secs(10))
            .await
            .context("write the baseline's queued read events")?;
        Ok(self.report(&results, &shape, read_from_replica))
    }

    /// Tenants, the collection and one writer key per client, over HTTP.
    async fn provision(&self) -> anyhow::Result<Vec<Client>> {
        let mut tenants = Vec::new();
        for n in 0..self.args.tenant_count() {
            let created = self
                .call(
                    reqwest::Method::POST,
                    "/v1/tenants",
                    &self.operator,
                    json!({"name": format!("Bench tenant {n}"), "home_region": REGION}),
                )
                .await
                .context("create a tenant")?;
            let tenant = TenantId::parse(created["id"].as_str().unwrap_or_default())
                .map_err(|_| anyhow::anyhow!("tenant creation returned no tenant id"))?;
            let admin = created["admin_key"]
                .as_str()
                .context("tenant creation returned no admin key")?
                .to_owned();
            self.call(
                reqwest::Method::PUT,
                &format!("/v1/tenants/{tenant}/collections/{COLLECTION}"),
                &admin,
                wire::examples::collection_schema(),
            )
            .await
            .context("put the people collection")?;
            tenants.push((tenant, admin));
        }
        let mut clients = Vec::new();
        for n in 0..self.args.clients {
            let (tenant, admin) = &tenants[(n % self.args.tenant_count()) as usize];
            let created = self
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/tenants/{tenant}/api-keys"),
                    admin,
                    json!({"name": format!("bench writer {n}"), "role": "writer"}),
                )
                .await
                .context("create a writer key")?;
            let key = created["key"]
                .as_str()
                .context("key creation returned no key")?;
            clients.push(Client {
                tenant: *tenant,
                authorization: http::HeaderValue::from_str(&format!("Bearer {key}"))
                    .context("the key is a header value")?,
            });
        }
        Ok(clients)
    }

    /// A setup call that must succeed; its JSON answer.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// Creates one record over HTTP; its id.
    async fn create(&self, client: &Client, n: usize, i: usize) -> anyhow::Result<String> {
        let request = http::Request::post(format!(
            "{}/v1/tenants/{}/collections/{COLLECTION}/records",
            self.base, client.tenant
        ))
        .header(http::header::AUTHORIZATION, client.authorization.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(person(n, i))))?;
        let response = self.load.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::CREATED {
            bail!("create: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        #[derive(serde::Deserialize)]
        struct Created {
            id: String,
        }
        Ok(serde_json::from_slice::<Created>(&bytes)?.id)
    }

    /// Reads one record over HTTP; which server answered.
    async fn read(&self, client: &Client, id: &str) -> anyhow::Result<Option<String>> {
        let request = http::Request::get(format!(
            "{}/v1/tenants/{}/collections/{COLLECTION}/records/{id}",
            self.base, client.tenant
        ))
        .header(http::header::AUTHORIZATION, client.authorization.clone())
        .body(Full::new(Bytes::new()))?;
        let response = self.load.request(request).await?;
        let status = response.status();
        let served_by = response
            .headers()
            .get(wire::headers::SERVED_BY)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let bytes = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::OK {
            bail!("read: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(served_by)
    }

    /// The stored size of a record the API created, for the baseline to write alike.
    async fn record_shape(&self, tenant: &TenantId, id: &str) -> anyhow::Result<RecordShape> {
        let primary = self.database.primary().get().await?;
        let row = store::records::get(primary.client(), tenant, COLLECTION, id)
            .await?
            .context("the record the API created is not in the primary")?;
        Ok(RecordShape {
            sealed_bytes: row.sealed.len(),
            public: row.public,
        })
    }

    /// Reads until the node routes reads to the replica (its health poller puts the
    /// replica in rotation within a second or two); false if it never does.
    async fn api_reads_from_replica(&self, client: &Client, id: &str) -> anyhow::Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let read = self.read(client, id).await;
            if read
                .as_ref()
                .is_ok_and(|by| by.as_deref() == Some("replica"))
            {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                read.context("read a record the API created")?;
                eprintln!("warning: the node never served a read from its replica");
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the baseline's pooled connections before it is timed.
    async fn warm_baseline(&self, replica: bool) -> anyhow::Result<()> {
        let connections = self.args.clients.min(16) as usize;
        let mut held = Vec::new();
        for _ in 0..connections {
            held.push(self.database.primary().get().await?);
        }
        drop(held);
        if replica && let Some(pool) = self.database.replicas().first() {
            let mut held = Vec::new();
            for _ in 0..connections {
                held.push(pool.get().await?);
            }
        }
        Ok(())
    }

    /// Waits until the replica has replayed everything written so far, so that reads
    /// of the records just created find them.
    async fn wait_for_replica(&self) -> anyhow::Result<()> {
        let Some(pool) = self.database.replicas().first() else {
            return Ok(());
        };
        let primary = self.database.primary().get().await?;
        // The insert position: past every commit record, even those not yet written
        // (as `commit_lsn` takes it).
        let lsn: String = primary
            .client()
            .query_one("select pg_current_wal_insert_lsn()::text", &[])
            .await?
            .get(0);
        let replica = pool.get().await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let caught_up: bool = replica
                .client()
                .query_one(
                    "select coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, true)",
                    &[&lsn],
                )
                .await?
                .get(0);
            if caught_up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the replica did not replay the benchmark's writes within a minute");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs one round of a case on every client (`--seconds` / `--rounds`); its result
    /// and, for API creates, the records created.
    async fn case(
        &self,
        work: &Work,
        clients: &[Client],
    ) -> anyhow::Result<(CaseResult, Vec<(TenantId, String)>)> {
        let duration = Duration::from_secs_f64(self.args.seconds / f64::from(self.args.rounds));
        let before = self.clock.sample();
        let started = Instant::now();
        let tasks = clients.iter().enumerate().map(|(n, client)| {
            let (work, client) = (work.clone(), client.clone());
            tokio::spawn(async move { work.client_loop(n, &client, started, duration).await })
        });
        let mut outcome = ClientOutcome::default();
        for task in futures::future::join_all(tasks).await {
            outcome.merge(task.context("join a client")?);
        }
        let elapsed = started.elapsed();
        let cpu = self.clock.sample() - before;
        outcome.latencies.sort_unstable();
        Ok((
            CaseResult {
                operation: work.operation,
                path: work.path,
                ok: outcome.ok,
                errors: outcome.errors,
                first_error: outcome.first_error,
                elapsed,
                latencies: outcome.latencies,
                cpu,
            },
            outcome.created,
        ))
    }

    fn report(&self, results: &[CaseResult], shape: &RecordShape, replica: bool) -> Value {
        println!(
            "{:<9} {:<26} {:>9} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9}",
            "operation",
            "path",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "pg µs/op",
            "node µs",
            "load µs"
        );
        for result in results {
            let ops = result.ok + result.errors;
            println!(
                "{:<9} {:<26} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>9.0} {:>9.0} {:>9.0}",
                result.operation.as_str(),
                result.path.label(),
                result.per_sec(),
                millis(result.percentile(0.50)),
                millis(result.percentile(0.99)),
                result.errors,
                micros_per_op(result.cpu.postgres, ops),
                micros_per_op(result.cpu.rest, ops),
                micros_per_op(result.cpu.load, ops),
            );
        }
        let find = |operation, path| {
            results
                .iter()
                .find(|r| r.operation == operation && r.path == path)
        };
        let mut summary = Vec::new();
        for (operation, target) in [
            (Operation::Create, CREATE_TARGET),
            (Operation::Read, READ_TARGET),
        ] {
            let (Some(baseline), Some(api)) =
                (find(operation, Path::Baseline), find(operation, Path::Api))
            else {
                continue;
            };
            let ratio = api.per_sec() / baseline.per_sec();
            let met = ratio >= target && api.errors == 0;
            println!(
                "{:<9} ratio API / baseline {ratio:>6.2}  target ≥{target}  {}",
                operation.as_str(),
                if met { "met" } else { "MISSED" }
            );
            summary.push(json!({
                "operation": operation.as_str(),
                "baseline_per_sec": baseline.per_sec(),
                "api_per_sec": api.per_sec(),
                "ratio": ratio,
                "target_ratio": target,
                "met": met,
                "baseline_p50_ms": millis(baseline.percentile(0.50)),
                "baseline_p99_ms": millis(baseline.percentile(0.99)),
                "api_p50_ms": millis(api.percentile(0.50)),
                "api_p99_ms": millis(api.percentile(0.99)),
            }));
        }
        json!({
            "benchmark": "api",
            "optimized_build": !cfg!(debug_assertions),
            "clients": self.args.clients,
            "tenants": self.args.tenant_count(),
            "seconds_per_case": self.args.seconds,
            "rounds": self.args.rounds,
            "reads_served_by": if replica { "replica" } else { "primary" },
            "audit_reads": self.args.node.audit.settings().reads.mode(),
            "sealed_bytes": shape.sealed_bytes,
            "baseline": {
                "create": "one transaction on the primary: store::records::insert (sealed column of the API's size, one blind-index token, the public field) + AuditLog::append, COMMIT",
                "read": "store::records::get by id on the server the API reads from, no transaction",
            },
            "results": summary,
            "cases": results.iter().map(CaseResult::json).collect::<Vec<_>>(),
        })
    }
}

fn tenant_index(tenants: &[TenantId], tenant: TenantId) -> usize {
    tenants
        .iter()
        .position(|t| *t == tenant)
        .expect("every client's tenant is listed")
}

/// What one client did in a case.
#[derive(Debug, Default)]
struct ClientOutcome {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies: Vec<Duration>,
    created: Vec<(TenantId, String)>,
}

impl ClientOutcome {
    fn merge(&mut self, other: ClientOutcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.latencies.extend(other.latencies);
        self.created.extend(other.created);
    }
}

impl Work {
    async fn client_loop(
        &self,
        n: usize,
        client: &Client,
        started: Instant,
        duration: Duration,
    ) -> ClientOutcome {
        let mut outcome = ClientOutcome::default();
        let tenant = tenant_index(&self.tenants, client.tenant);
        let mut i = WARM_UP_PER_CLIENT;
        while started.elapsed() < duration {
            let begun = Instant::now();
            let result = match self.operation {
                Operation::Create => self.create_once(n, i, client).await,
                Operation::Read => {
                    let ids = &self.ids[tenant];
                    let id = &ids[rand::random_range(0..ids.len())];
                    self.read_once(client, id).await.map(|()| None)
                }
            };
            let took = begun.elapsed();
            i += 1;
            match result {
                Ok(created) => {
                    outcome.ok += 1;
                    outcome.latencies.push(took);
                    if let Some(id) = created {
                        outcome.created.push((client.tenant, id));
                    }
                }
                Err(err) => {
                    outcome.errors += 1;
                    if outcome.first_error.is_none() {
                        outcome.first_error = Some(format!("{err:#}"));
                    }
                }
            }
        }
        outcome
    }

    /// One create; the record's id when the API created it.
    async fn create_once(
        &self,
        n: usize,
        i: usize,
        client: &Client,
    ) -> anyhow::Result<Option<String>> {
        if self.path == Path::Api {
            return self.bench.create(client, n, i).await.map(Some);
        }
        let tenant = client.tenant;
        let id = TenantId::from_random_bytes(rand::random());
        let id = id.as_str();
        let sealed = vec![0x5au8; self.shape.sealed_bytes];
        let index = [IndexEntry {
            field: "email".into(),
            token: rand::random(),
        }];
        let mut primary = self.bench.database.primary().get().await?;
        let event = self.event(tenant, audit::Action::RecordCreate, id);
        if self.path == Path::Baseline {
            let tx = primary.begin().await?;
            store::records::insert(
                &tx,
                &tenant,
                COLLECTION,
                id,
                &self.shape.public,
                &sealed,
                &index,
            )
            .await?;
            self.log.append(&tx, event).await?;
            tx.commit().await?;
        } else {
            // As `create_record` writes it: the row, its tokens and its event in one
            // statement, in a tenant-scoped transaction sent and committed in one round
            // trip (`AuditLog::create_record`).
            let record = store::records::NewRecord {
                tenant: &tenant,
                collection: COLLECTION,
                id,
                public: &self.shape.public,
                sealed: &sealed,
                index: &index,
            };
            self.log.create_record(&mut primary, record, event).await?;
        }
        Ok(None)
    }

    async fn read_once(&self, client: &Client, id: &str) -> anyhow::Result<()> {
        if self.path == Path::Api {
            return self.bench.read(client, id).await.map(drop);
        }
        let tenant = client.tenant;
        let database = &self.bench.database;
        let mut reader = match (self.read_from_replica, database.replicas().first()) {
            (true, Some(pool)) => store::Reader::Replica(pool.get().await?),
            _ => store::Reader::Primary(database.primary().get().await?),
        };
        let found = if self.path == Path::Baseline {
            store::records::get(reader.client(), &tenant, COLLECTION, id).await?
        } else {
            store::records::get_scoped(&mut reader, &tenant, COLLECTION, id).await?
        };
        if found.is_none() {
            bail!("record {id} not found");
        }
        if self.path == Path::SqlAsApi {
            self.log
                .record(self.event(tenant, audit::Action::RecordRead, id))
                .await?;
        }
        Ok(())
    }

    fn event(&self, tenant: TenantId, action: audit::Action, id: &str) -> audit::NewEvent {
        audit::NewEvent {
            time: SystemTime::now(),
            region: self.bench.region.clone(),
            tenant,
            actor: audit::Actor {
                kind: audit::ActorKind::ApiKey,
                id: "key_bench".into(),
            },
            action,
            resource: format!("collections/{COLLECTION}/records/{id}"),
            outcome: audit::Outcome::Success,
            request_id: "bench".into(),
            via_region: self.bench.region.clone(),
        }
    }
}

/// A `people` record body with an email unique to client `n`'s `i`th create.
pub(crate) fn person(n: usize, i: usize) -> String {
    format!(
        r#"{{"data":{{"email":"person-{n}-{i}@example.com","name":"Ada Lovelace","age":36,"zip":"10115","diagnosis":"flu","plan":"pro"}}}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_body_is_json_of_the_people_schema() {
        let body: Value = serde_json::from_str(&person(3, 7)).expect("json");
        assert_eq!(body["data"]["email"], "person-3-7@example.com");
        let fields = wire::examples::collection_schema()["fields"]
            .as_object()
            .expect("fields")
            .clone();
        for field in body["data"].as_object().expect("data").keys() {
            assert!(fields.contains_key(field), "{field} is in the schema");
        }
    }

    #[test]
    fn percentiles_pick_ranks() {
        let result = CaseResult {
            operation: Operation::Read,
            path: Path::Api,
            ok: 100,
            errors: 0,
            first_error: None,
            elapsed: Duration::from_secs(1),
            latencies: (1..=100).map(Duration::from_millis).collect(),
            cpu: CpuSample::default(),
        };
        assert_eq!(result.percentile(0.50), Duration::from_millis(50));
        assert_eq!(result.percentile(0.99), Duration::from_millis(99));
        assert_eq!(result.per_sec(), 100.0);
    }
}
