//! `residency-bench abuse`: what a flood of unauthenticated junk costs the tenants of a
//! region. On a local region and a node with the region router and the PostgreSQL tenant
//! directory in front, as in production, in one run: an idle phase (the node's own
//! background), legitimate reads alone (throughput, p99), the flood alone from another
//! client address — well-formed random API keys, random tenant ids and 4 KiB path
//! segments — and the legitimate reads during the flood. Database work is counted by the
//! servers themselves (transactions in `pg_stat_database` on the primary and the
//! replica), so a junk request that reaches a database shows whatever path it took; the
//! tenant's audit chain is read before and after for the denials it gained.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use devstack::LocalRegion;
use http_body_util::{BodyExt as _, Empty};
use model::{RegionId, TenantId};
use node::Routing;
use serde_json::{Value, json};
use store::PgEndpoint;
use tokio::sync::Semaphore;

use crate::tenant_api::{LoadRuntime, positive_seconds};
use crate::{percentile, write_results};

const REGION: &str = "eu-central-1";
const COLLECTION: &str = "people";
/// The flood comes from here.
const FLOOD_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Legitimate clients come from 127.0.0.10 and the next addresses, one per reader up to
/// this many (a tenant's backends on a few hosts; one address alone is held to the
/// router's per-address rate, 2,000/s by default).
const LEGITIMATE_ADDRESSES: u8 = 4;
/// Records the legitimate clients read, round robin.
const RECORDS: usize = 32;
/// Junk requests in flight at most; beyond it the flood skips a send (and counts it).
const FLOOD_IN_FLIGHT: usize = 1024;
/// Time for the servers to publish their statistics after a phase (PostgreSQL flushes a
/// backend's counters at most once a second, when it goes idle).
const STATS_SETTLE: Duration = Duration::from_millis(1500);

/// Legitimate throughput during the flood, as a share of the quiet run's.
const THROUGHPUT_TARGET: f64 = 0.8;
/// Legitimate p99 during the flood, as a multiple of the quiet run's.
const P99_TARGET: f64 = 2.0;
/// Database transactions per junk request (the goal is none; this allows for noise).
const QUERIES_PER_JUNK_TARGET: f64 = 0.01;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct AbuseArgs {
    /// Where to write the JSON results.
    #[arg(long, default_value = ".residency/bench/abuse.json")]
    output: PathBuf,
    /// Seconds of each phase: idle (the background), quiet (legitimate reads alone) and
    /// flood (legitimate reads during the flood).
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    seconds: f64,
    /// Concurrent legitimate readers, each with its own reader key.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    clients: u64,
    /// Junk requests per second the flood sends.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    flood_rate: u64,
    /// Worker threads of the load generator (legitimate readers and flood); the node
    /// runs on the main runtime.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    #[command(flatten)]
    node: crate::local_node::NodeFlags,
}

pub(crate) async fn run(args: AbuseArgs) -> anyhow::Result<()> {
    crate::warn_if_unoptimized("abuse");
    let databases = crate::start_local_region("bench-abuse").await?;
    let result = with_node(&args, &databases).await;
    databases.stop().await?;
    let report = result?;
    write_results(&args.output, &report)?;
    print_table(&report);
    if args.node.check && report["met"] != true {
        bail!("a target was missed or a legitimate read failed (see the table)");
    }
    Ok(())
}

async fn with_node(args: &AbuseArgs, databases: &LocalRegion) -> anyhow::Result<Value> {
    let region = RegionId::parse(REGION)?;
    let listener = crate::local_node::loopback_listener().await?;
    let base = format!("http://{}", listener.local_addr()?);
    let endpoint: http::Uri = base.parse().context("the node's URL")?;
    let directory = store::directory::DirectoryDatabase::new(&PgEndpoint::new(
        "directory",
        databases.primary_config("postgres"),
    ))
    .context("the directory pool")?;
    let routing = Routing {
        regions: [(
            region.clone(),
            router::RegionEndpoints {
                internal: endpoint.clone(),
                public: endpoint,
            },
        )]
        .into(),
        directory: node::directory::PgDirectory::new(directory),
        forwarding_secret: catalog::Secret::new(hex::encode(rand::random::<[u8; 32]>())),
        previous_forwarding_secret: None,
        behind_load_balancer: false,
    };
    let bench_node = crate::local_node::start(
        &region,
        databases,
        &args.node.api,
        &args.node.audit,
        listener,
        Some(routing),
    )
    .await?;
    let operator = bench_node.operator.clone();
    let servers = Servers::connect(databases).await;
    let result = match servers {
        Ok(servers) => on_load_runtime(args, base, operator, servers).await,
        Err(err) => Err(err),
    };
    bench_node.stop_after(result).await
}

/// Runs the measurement on a runtime of its own, so that the node's runtime serves only
/// the node.
async fn on_load_runtime(
    args: &AbuseArgs,
    base: String,
    operator: String,
    servers: Servers,
) -> anyhow::Result<Value> {
    let runtime = LoadRuntime::new("bench-abuse-load", args.load_threads)?;
    let args = args.clone();
    runtime
        .handle()
        .spawn(async move {
            let bench = Bench::provision(args, base, &operator).await?;
            bench.measure(servers).await
        })
        .await
        .context("join the load generator")?
}

/// Direct connections to the region's primary and replica, for their counters.
struct Servers {
    primary: tokio_postgres::Client,
    replica: tokio_postgres::Client,
}

impl Servers {
    async fn connect(databases: &LocalRegion) -> anyhow::Result<Self> {
        let connect = |config: tokio_postgres::Config| async move {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .context("connect to count transactions")?;
            tokio::spawn(connection);
            anyhow::Ok(client)
        };
        Ok(Self {
            primary: connect(databases.primary_config("postgres")).await?,
            replica: connect(databases.replica_config("postgres")).await?,
        })
    }

    /// Transactions the primary and the replica have finished so far (every database),
    /// once their backends have published their counters.
    async fn transactions(&self) -> anyhow::Result<i64> {
        tokio::time::sleep(STATS_SETTLE).await;
        let mut total = 0;
        for client in [&self.primary, &self.replica] {
            client
                .batch_execute("select pg_stat_clear_snapshot()")
                .await?;
            let row = client
                .query_one(
                    "select coalesce(sum(xact_commit + xact_rollback), 0)::bigint
                     from pg_stat_database",
                    &[],
                )
                .await
                .context("read pg_stat_database")?;
            total += row.get::<_, i64>(0);
        }
        Ok(total)
    }

    /// Denied events in `tenant`'s audit chain (the bench connects as the superuser,
    /// which row-level security does not restrict).
    async fn denials(&self, tenant: &TenantId) -> anyhow::Result<i64> {
        let row = self
            .primary
            .query_one(
                "select count(*) from audit_events where tenant_id = $1 and outcome = 'denied'",
                &[&tenant.as_str()],
            )
            .await
            .context("count the tenant's denied events")?;
        Ok(row.get(0))
    }
}

type LoadClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

struct Bench {
    args: AbuseArgs,
    base: String,
    tenant: TenantId,
    records: Vec<String>,
    /// One reader key per legitimate client (`Bearer ...`).
    readers: Vec<http::HeaderValue>,
    /// One client per legitimate address.
    legitimate: Vec<LoadClient>,
    flood: LoadClient,
}

/// What one phase of legitimate reading measured.
#[derive(Debug, Default)]
struct Reads {
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Reads {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn p(&self, quantile: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return 0.0;
        }
        percentile(&sorted, quantile).as_secs_f64() * 1000.0
    }

    fn to_json(&self) -> Value {
        json!({
            "requests": self.ok + self.failed,
            "ok": self.ok,
            "failed": self.failed,
            "first_failure": self.first_failure,
            "per_sec": self.per_sec(),
            "p50_ms": self.p(0.50),
            "p99_ms": self.p(0.99),
        })
    }
}

/// What the flood sent and what it got back.
#[derive(Debug, Default)]
struct Flood {
    sent: u64,
    /// Sends skipped because `FLOOD_IN_FLIGHT` requests were already waiting.
    skipped: u64,
    /// Answers by status code ("error" for a request that got none).
    statuses: BTreeMap<String, u64>,
    elapsed: Duration,
}

/// The junk the flood sends, in turn.
#[derive(Debug, Clone, Copy)]
enum Junk {
    /// The tenant's real record URL with a random, well-formed API key.
    RandomKey,
    /// A random tenant id.
    RandomTenant,
    /// A 4 KiB path segment where the collection goes.
    LongSegment,
}

const JUNK: [Junk; 3] = [Junk::RandomKey, Junk::RandomTenant, Junk::LongSegment];

impl Bench {
    async fn provision(args: AbuseArgs, base: String, operator: &str) -> anyhow::Result<Self> {
        let setup = reqwest::Client::new();
        let call = |method: reqwest::Method, path: String, token: String, body: Value| {
            let request = setup
                .request(method, format!("{base}{path}"))
                .bearer_auth(token)
                .json(&body);
            async move {
                let response = request.send().await?;
                let status = response.status();
                let text = response.text().await?;
                if !status.is_success() {
                    bail!("{path}: {status}: {text}");
                }
                anyhow::Ok(serde_json::from_str::<Value>(&text)?)
            }
        };
        let created = call(
            reqwest::Method::POST,
            "/v1/tenants".into(),
            operator.to_owned(),
            json!({"name": "Flooded Ltd", "home_region": REGION}),
        )
        .await
        .context("create the tenant")?;
        let tenant = TenantId::parse(created["id"].as_str().unwrap_or_default())
            .map_err(|_| anyhow::anyhow!("tenant creation returned no tenant id"))?;
        let admin = created["admin_key"]
            .as_str()
            .context("tenant creation returned no admin key")?
            .to_owned();
        call(
            reqwest::Method::PUT,
            format!("/v1/tenants/{tenant}/collections/{COLLECTION}"),
            admin.clone(),
            wire::examples::collection_schema(),
        )
        .await
        .context("put the people collection")?;
        let mut records = Vec::new();
        for i in 0..RECORDS {
            let created = call(
                reqwest::Method::POST,
                format!("/v1/tenants/{tenant}/collections/{COLLECTION}/records"),
                admin.clone(),
                json!({"data": {"email": format!("person-{i}@example.com"), "age": 40, "plan": "pro"}}),
            )
            .await
            .context("create a record")?;
            records.push(
                created["id"]
                    .as_str()
                    .context("record creation returned no id")?
                    .to_owned(),
            );
        }
        let mut readers = Vec::new();
        for n in 0..args.clients {
            let created = call(
                reqwest::Method::POST,
                format!("/v1/tenants/{tenant}/api-keys"),
                admin.clone(),
                json!({"name": format!("reader {n}"), "role": "reader"}),
            )
            .await
            .context("create a reader key")?;
            let key = created["key"].as_str().context("no key returned")?;
            readers.push(http::HeaderValue::from_str(&format!("Bearer {key}"))?);
        }
        let connections = usize::try_from(args.clients).unwrap_or(usize::MAX);
        Ok(Self {
            legitimate: (0..LEGITIMATE_ADDRESSES)
                .map(|n| client_from(Ipv4Addr::new(127, 0, 0, 10 + n), connections))
                .collect(),
            flood: client_from(FLOOD_ADDRESS, FLOOD_IN_FLIGHT),
            args,
            base,
            tenant,
            records,
            readers,
        })
    }

    async fn measure(self, servers: Servers) -> anyhow::Result<Value> {
        let bench = Arc::new(self);
        let phase = Duration::from_secs_f64(bench.args.seconds);
        // The readers warm the key cache and the replica first.
        Arc::clone(&bench)
            .read_for(Duration::from_millis(500))
            .await;

        let before_idle = servers.transactions().await?;
        tokio::time::sleep(phase).await;
        let after_idle = servers.transactions().await?;
        let quiet = Arc::clone(&bench).read_for(phase).await;
        let after_quiet = servers.transactions().await?;
        let denials_before = servers.denials(&bench.tenant).await?;

        // The flood alone: what it costs the databases, beyond the background.
        let flood_alone = Arc::clone(&bench).flood_for(phase, None).await?;
        let after_flood_alone = servers.transactions().await?;
        // The flood during legitimate reads: what it costs them.
        let reading = Arc::clone(&bench);
        let (flood, flooded) = Arc::clone(&bench)
            .flood_for(phase, Some(Box::pin(reading.read_for(phase))))
            .await?;
        let denials_after = servers.denials(&bench.tenant).await?;

        let seconds = |d: Duration| d.as_secs_f64().max(f64::EPSILON);
        let background_per_sec = (after_idle - before_idle) as f64 / seconds(phase);
        let junk_transactions = (after_flood_alone - after_quiet) as f64
            - background_per_sec * seconds(flood_alone.0.elapsed);
        let per_junk = junk_transactions / (flood_alone.0.sent.max(1)) as f64;
        let flooded = flooded.unwrap_or_default();

        let throughput_ratio = flooded.per_sec() / quiet.per_sec().max(f64::EPSILON);
        let p99_ratio = flooded.p(0.99) / quiet.p(0.99).max(f64::EPSILON);
        let met = throughput_ratio >= THROUGHPUT_TARGET
            && p99_ratio <= P99_TARGET
            && per_junk <= QUERIES_PER_JUNK_TARGET
            && quiet.failed == 0
            && flooded.failed == 0;
        Ok(json!({
            "benchmark": "abuse",
            "optimized_build": !cfg!(debug_assertions),
            "seconds": bench.args.seconds,
            "clients": bench.args.clients,
            "load_threads": bench.args.load_threads,
            "legitimate": "GET one record by id, reader keys of one tenant, from 127.0.0.10 and up",
            "quiet": quiet.to_json(),
            "flooded": flooded.to_json(),
            "flood": {
                "from": FLOOD_ADDRESS.to_string(),
                "requested_per_sec": bench.args.flood_rate,
                "sent": flood.sent,
                "skipped": flood.skipped,
                "per_sec": flood.sent as f64 / seconds(flood.elapsed),
                "statuses": flood.statuses,
                "kinds": "random well-formed API keys on the tenant's record, random tenant ids, 4 KiB path segments, in turn",
            },
            "flood_alone": {
                "sent": flood_alone.0.sent,
                "statuses": flood_alone.0.statuses,
            },
            "database": {
                "background_transactions_per_sec": background_per_sec,
                "flood_alone_transactions": junk_transactions,
                "transactions_per_junk_request": per_junk,
                "target": QUERIES_PER_JUNK_TARGET,
            },
            "audit": {
                "denied_events_added_during_flood": denials_after - denials_before,
            },
            "throughput_ratio": throughput_ratio,
            "throughput_target": THROUGHPUT_TARGET,
            "p99_ratio": p99_ratio,
            "p99_target": P99_TARGET,
            "met": met,
        }))
    }

    /// Every legitimate client reads in a loop for `duration`.
    async fn read_for(self: Arc<Self>, duration: Duration) -> Reads {
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let mut clients = Vec::new();
        for (n, authorization) in self.readers.iter().enumerate() {
            let bench = Arc::clone(&self);
            let authorization = authorization.clone();
            clients.push(tokio::spawn(async move {
                let mut reads = Reads::default();
                let mut i = n;
                while Instant::now() < deadline {
                    let id = &bench.records[i % bench.records.len()];
                    i += 1;
                    let sent = Instant::now();
                    match bench.read(n, &authorization, id).await {
                        Ok(()) => {
                            reads.ok += 1;
                            reads.latencies.push(sent.elapsed());
                        }
                        Err(err) => {
                            reads.failed += 1;
                            reads
                                .first_failure
                                .get_or_insert_with(|| format!("{err:#}"));
                        }
                    }
                }
                reads
            }));
        }
        let mut total = Reads::default();
        for client in clients {
            let Ok(reads) = client.await else {
                total.failed += 1;
                continue;
            };
            total.ok += reads.ok;
            total.failed += reads.failed;
            if total.first_failure.is_none() {
                total.first_failure = reads.first_failure;
            }
            total.latencies.extend(reads.latencies);
        }
        total.elapsed = started.elapsed();
        total
    }

    /// Reader `n` reads record `id`, from its address.
    async fn read(
        &self,
        n: usize,
        authorization: &http::HeaderValue,
        id: &str,
    ) -> anyhow::Result<()> {
        let request = http::Request::get(format!(
            "{}/v1/tenants/{}/collections/{COLLECTION}/records/{id}",
            self.base, self.tenant
        ))
        .header(http::header::AUTHORIZATION, authorization.clone())
        .body(Empty::new())?;
        let client = &self.legitimate[n % self.legitimate.len()];
        let response = client.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::OK {
            bail!("read: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(())
    }

    /// Floods for `duration` from a thread and event loop of its own, as another client
    /// machine would (the legitimate readers' loop never waits behind it), while
    /// `alongside` (legitimate reads) runs here; both results.
    async fn flood_for(
        self: Arc<Self>,
        duration: Duration,
        alongside: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Reads> + Send>>>,
    ) -> anyhow::Result<(Flood, Option<Reads>)> {
        let stop = Arc::new(AtomicBool::new(false));
        let flooding = {
            let stop = Arc::clone(&stop);
            tokio::task::spawn_blocking(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(self.flood_until(stop)))
            })
        };
        let reads = match alongside {
            Some(reads) => Some(reads.await),
            None => {
                tokio::time::sleep(duration).await;
                None
            }
        };
        stop.store(true, Ordering::SeqCst);
        let flood = flooding
            .await
            .context("join the flood")?
            .context("start the flood's event loop")?;
        Ok((flood, reads))
    }

    /// Sends junk at `--flood-rate` until `stop`, a millisecond's share at a time.
    async fn flood_until(self: Arc<Self>, stop: Arc<AtomicBool>) -> Flood {
        let started = Instant::now();
        let in_flight = Arc::new(Semaphore::new(FLOOD_IN_FLIGHT));
        let sent = Arc::new(AtomicU64::new(0));
        let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut skipped = 0;
        let mut ticks = tokio::time::interval(Duration::from_millis(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut due = 0.0;
        let mut n = 0_usize;
        while !stop.load(Ordering::SeqCst) {
            ticks.tick().await;
            let should_have_sent = started.elapsed().as_secs_f64() * self.args.flood_rate as f64;
            while due < should_have_sent {
                due += 1.0;
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    skipped += 1;
                    continue;
                };
                let request = self.junk(JUNK[n % JUNK.len()]);
                n += 1;
                sent.fetch_add(1, Ordering::Relaxed);
                let client = self.flood.clone();
                let answers = answers.clone();
                tokio::spawn(async move {
                    let status = match client.request(request).await {
                        Ok(response) => {
                            let status = response.status().as_u16().to_string();
                            let _ = response.into_body().collect().await;
                            status
                        }
                        Err(_) => "error".to_owned(),
                    };
                    let _ = answers.send(status);
                    drop(permit);
                });
            }
        }
        let elapsed = started.elapsed();
        // Every junk request is answered (or fails) before the phase's counters are read.
        let _ = in_flight
            .acquire_many(u32::try_from(FLOOD_IN_FLIGHT).expect("a small bound"))
            .await;
        drop(answers);
        let mut statuses = BTreeMap::new();
        while let Some(status) = answered.recv().await {
            *statuses.entry(status).or_insert(0) += 1;
        }
        Flood {
            sent: sent.load(Ordering::Relaxed),
            skipped,
            statuses,
            elapsed,
        }
    }

    fn junk(&self, kind: Junk) -> http::Request<Empty<Bytes>> {
        let record = &self.records[0];
        let path = match kind {
            Junk::RandomKey => format!(
                "/v1/tenants/{}/collections/{COLLECTION}/records/{record}",
                self.tenant
            ),
            Junk::RandomTenant => format!(
                "/v1/tenants/{}/collections/{COLLECTION}/records/{record}",
                TenantId::from_random_bytes(rand::random())
            ),
            Junk::LongSegment => format!(
                "/v1/tenants/{}/collections/{}/records/{record}",
                self.tenant,
                "x".repeat(4096)
            ),
        };
        http::Request::get(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, junk_token(&self.tenant))
            .body(Empty::new())
            .expect("a valid request")
    }
}

/// A well-formed API key of `tenant` that no one issued: `rsk.<tenant>.<key id>.<secret>`.
fn junk_token(tenant: &TenantId) -> String {
    use base64::Engine as _;
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    format!(
        "Bearer rsk.{tenant}.{}.{secret}",
        hex::encode(rand::random::<[u8; 8]>())
    )
}

/// Keep-alive connections (at most `idle` kept) from `address`.
fn client_from(address: Ipv4Addr, idle: usize) -> LoadClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_local_address(Some(IpAddr::V4(address)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .build(connector)
}

fn print_table(report: &Value) {
    let number = |value: &Value| value.as_f64().unwrap_or(f64::NAN);
    println!("legitimate reads          ops/s    p50 ms    p99 ms   failed");
    for (label, case) in [
        ("quiet", &report["quiet"]),
        ("during the flood", &report["flooded"]),
    ] {
        println!(
            "{label:<20} {:>10.0} {:>9.2} {:>9.2} {:>8}",
            number(&case["per_sec"]),
            number(&case["p50_ms"]),
            number(&case["p99_ms"]),
            case["failed"]
        );
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    let throughput = number(&report["throughput_ratio"]);
    let p99 = number(&report["p99_ratio"]);
    let per_junk = number(&report["database"]["transactions_per_junk_request"]);
    println!(
        "throughput during / quiet {throughput:.2}  target ≥{THROUGHPUT_TARGET}  {}",
        verdict(throughput >= THROUGHPUT_TARGET)
    );
    println!(
        "p99 during / quiet        {p99:.2}  target ≤{P99_TARGET}  {}",
        verdict(p99 <= P99_TARGET)
    );
    println!(
        "flood: {} junk requests sent ({:.0}/s from {}), answers {}",
        report["flood"]["sent"],
        number(&report["flood"]["per_sec"]),
        report["flood"]["from"].as_str().unwrap_or_default(),
        report["flood"]["statuses"]
    );
    println!(
        "database transactions per junk request {per_junk:.4}  target ≤{QUERIES_PER_JUNK_TARGET}  {}",
        verdict(per_junk <= QUERIES_PER_JUNK_TARGET)
    );
    println!(
        "denied events added to the tenant's audit chain during the flood: {}",
        report["audit"]["denied_events_added_during_flood"]
    );
}
