//! `residency-bench keys`: the key lifecycle against baselines of the same run, on a local
//! region (PostgreSQL primary and replica) and regional nodes the command starts itself.
//!
//! 1. **Re-encryption.** One tenant gets `--records` records of API.md's `people`
//!    collection (5 sealed fields each) and `--files` files of `--file-kib`, through the
//!    API (`--loaders` concurrent keep-alive writers). `POST .../keys/rotate` starts the
//!    `reencrypt` job; the job is polled (`GET /v1/jobs/{job}`) from the `202` until it is
//!    `done`: records per second up to the moment its progress passes the records (the job
//!    walks records first), MiB per second of file plaintext after. Baselines, before the
//!    rotation: the records' keyset pages (the job's own query, `--batch-size` rows), each
//!    written back by a bare pipelined `UPDATE records SET sealed = $bytes` (the same
//!    rows, the same number of bytes) in one transaction per page; the files' objects
//!    copied object to object through the same object store (`get` streamed into `put`,
//!    one file at a time, as the job goes). `VACUUM` runs before each, so neither meets the
//!    other's dead rows.
//! 2. **Writes during the re-encryption.** `--writers` concurrent API writers create
//!    records of the tenant for `--write-seconds` without a job running (before and after),
//!    and during a second rotation's job (until it ends, at most as long): the ratio.
//! 3. **Offboarding.** Two nodes of the region (one database, KMS and object store; their
//!    job runners idle, so no purge removes a row while it is measured) serve
//!    `--offboard-tenants` tenants, one at a time: a record is read through both (each
//!    caches the tenant and its keys), `DELETE /v1/tenants/{t}` goes to the first, and the
//!    second is read in a loop from the moment the `202` arrives until it no longer answers
//!    `200` with the record's plaintext: how long the region's other node kept opening the
//!    tenant's ciphertexts (its key cache is dropped by the database's notification).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::body::Bytes;
use devstack::LocalRegion;
use envelope::objects::ObjectKey;
use envelope::objects::ObjectStore as _;
use envelope::objects::local::LocalObjectStore;
use futures::StreamExt as _;
use futures::future::try_join_all;
use http_body_util::{BodyExt as _, Full};
use model::{RegionId, TenantId};
use serde_json::{Value, json};
use store::RegionDatabase;
use store::reencryption::{self, RecordPosition};

use crate::cpu::{CpuClock, CpuSample, micros_per_op};
use crate::local_node::BenchNode;
use crate::tenant_api::positive_seconds;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KeysArgs {
    /// Where to write the JSON results.
    #[arg(
        long = "json",
        value_name = "PATH",
        default_value = ".residency/bench/keys.json"
    )]
    json: PathBuf,
    /// Records of the re-encrypted tenant (5 sealed fields each).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    records: u64,
    /// Files of the re-encrypted tenant (one per record, on the first records).
    #[arg(long, default_value_t = 100)]
    files: u64,
    /// Size of each file, KiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=102_400))]
    file_kib: u64,
    /// Items a job batch takes (the node's job setting); the baseline's pages too.
    #[arg(long, default_value_t = node::JobSettings::default().batch_size as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    batch_size: u64,
    /// Concurrent API writers that load the records (untimed against any goal).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=256))]
    loaders: u64,
    /// Concurrent API writers of the write-throughput comparison.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    writers: u64,
    /// Seconds of each write-throughput case.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    write_seconds: f64,
    /// Tenants offboarded one after the other for the key-drop latency.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    offboard_tenants: u64,
    #[command(flatten)]
    node: crate::local_node::NodeFlags,
}

/// Goals from issue 28.
const REENCRYPT_GOAL: f64 = 0.6;
const WRITES_GOAL: f64 = 0.8;
const OFFBOARD_GOAL: Duration = Duration::from_secs(1);

const REGION: &str = "eu-central-1";
const COLLECTION: &str = "people";
/// How often the job is polled while it runs.
const JOB_POLL: Duration = Duration::from_millis(20);
/// The measurement node's job runner looks for work this often (production: 2 s), so
/// that the wait for a lease is small next to the job it times.
const RUNNER_POLL: Duration = Duration::from_millis(100);
/// The longest a job may take before the benchmark gives up.
const JOB_DEADLINE: Duration = Duration::from_secs(3600);
/// The longest the other node may keep serving an offboarded tenant before the benchmark
/// stops waiting (and reports the miss).
const OFFBOARD_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let report = crate::on_local_region("keys", &args.json, async |databases| {
        with_nodes(&args, databases).await
    })
    .await?;
    if args.node.check && !crate::every_goal_met(&report) {
        bail!("a benchmark goal was missed or operations failed");
    }
    Ok(())
}

/// The node settings of the measurement: `serve`'s, with the job runner's poll shortened
/// (or, for the offboarding nodes, made so long that it never finds work after starting).
fn settings(args: &KeysArgs, runner_poll: Duration) -> anyhow::Result<node::ApiSettings> {
    let mut settings = args.node.api.settings()?;
    settings.jobs.poll_interval = runner_poll;
    settings.jobs.batch_size = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    settings.max_file_bytes = settings.max_file_bytes.max(args.file_kib * 1024);
    Ok(settings)
}

async fn with_nodes(args: &KeysArgs, databases: &LocalRegion) -> anyhow::Result<Value> {
    let region = RegionId::parse(REGION)?;
    let first = crate::local_node::start_with(
        &region,
        databases,
        settings(args, RUNNER_POLL)?,
        &args.node.audit,
        crate::local_node::loopback_listener().await?,
        None,
    )
    .await?;
    let clock = CpuClock::new([
        databases.primary().postmaster_pid(),
        databases.replica().postmaster_pid(),
    ]);
    let reencryption = measure_reencryption(args, &first, &clock).await;
    // The offboarding nodes are peers of the first (its KMS holds the region's keys);
    // the first stops before they are measured, so no runner of it purges meanwhile.
    let idle = settings(args, Duration::from_secs(24 * 3600))?;
    let peers = match &reencryption {
        Ok(_) => Some(start_peers(&first, databases, idle, &args.node.audit).await),
        Err(_) => None,
    };
    let reencryption = first.stop_after(reencryption).await?;
    let (a, b) = peers.expect("the peers start once the re-encryption succeeded")?;
    let offboarding = measure_offboarding(args, &a, &b).await;
    let offboarding = b.stop_after(offboarding).await;
    let offboarding = a.stop_after(offboarding).await?;
    Ok(report(args, reencryption, offboarding))
}

async fn start_peers(
    first: &BenchNode,
    databases: &LocalRegion,
    settings: node::ApiSettings,
    audit: &residency::flags::AuditFlags,
) -> anyhow::Result<(BenchNode, BenchNode)> {
    let listener = crate::local_node::loopback_listener().await?;
    let a = first
        .peer(databases, settings.clone(), audit, listener)
        .await?;
    let listener = crate::local_node::loopback_listener().await?;
    match first.peer(databases, settings, audit, listener).await {
        Ok(b) => Ok((a, b)),
        Err(err) => a.stop_after(Err(err)).await,
    }
}

/// The HTTP side of the benchmark: setup calls through reqwest, the measured creates
/// through hyper's pooled keep-alive client.
#[derive(Debug, Clone)]
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) operator: String,
    pub(crate) http: reqwest::Client,
    load: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

/// A tenant with its admin key and writer keys (`Bearer …` header values).
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub(crate) id: TenantId,
    pub(crate) admin: String,
    pub(crate) writers: Vec<http::HeaderValue>,
}

impl Api {
    pub(crate) fn new(node: &BenchNode, clients: usize) -> anyhow::Result<Self> {
        Ok(Self {
            base: format!("http://{}", node.node.address),
            operator: node.operator.clone(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(clients)
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(120))
                .build()
                .context("build the HTTP client")?,
            load: crate::load_client(clients),
        })
    }

    fn on(&self, node: &BenchNode) -> Self {
        Self {
            base: format!("http://{}", node.node.address),
            ..self.clone()
        }
    }

    /// A call's status and JSON answer (`null` when the body is not JSON).
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A setup call that must succeed; its JSON answer.
    pub(crate) async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.call(method, path, token, body).await?;
        if !(200..300).contains(&status) {
            bail!("{path}: {status}: {answer}");
        }
        Ok(answer)
    }

    /// A tenant with the `people` collection and `writers` writer keys.
    pub(crate) async fn tenant(&self, name: &str, writers: u64) -> anyhow::Result<Tenant> {
        let created = self
            .ok(
                reqwest::Method::POST,
                "/v1/tenants",
                &self.operator,
                Some(json!({"name": name, "home_region": REGION})),
            )
            .await
            .context("create a tenant")?;
        let id = TenantId::parse(created["id"].as_str().unwrap_or_default())
            .map_err(|_| anyhow::anyhow!("tenant creation returned no tenant id"))?;
        let admin = created["admin_key"]
            .as_str()
            .context("tenant creation returned no admin key")?
            .to_owned();
        self.ok(
            reqwest::Method::PUT,
            &format!("/v1/tenants/{id}/collections/{COLLECTION}"),
            &admin,
            Some(wire::examples::collection_schema()),
        )
        .await
        .context("put the people collection")?;
        let mut keys = Vec::new();
        for n in 0..writers {
            let created = self
                .ok(
                    reqwest::Method::POST,
                    &format!("/v1/tenants/{id}/api-keys"),
                    &admin,
                    Some(json!({"name": format!("bench writer {n}"), "role": "writer"})),
                )
                .await
                .context("create a writer key")?;
            let key = created["key"]
                .as_str()
                .context("key creation returned no key")?;
            keys.push(http::HeaderValue::from_str(&format!("Bearer {key}"))?);
        }
        Ok(Tenant {
            id,
            admin,
            writers: keys,
        })
    }

    /// Creates one record of `tenant` as writer `writer`; its id.
    async fn create(&self, tenant: &Tenant, writer: usize, body: String) -> anyhow::Result<String> {
        self.create_in(tenant, writer, COLLECTION, body).await
    }

    /// Creates one record of `tenant` in `collection` as writer `writer`; its id.
    pub(crate) async fn create_in(
        &self,
        tenant: &Tenant,
        writer: usize,
        collection: &str,
        body: String,
    ) -> anyhow::Result<String> {
        let request = http::Request::post(format!(
            "{}/v1/tenants/{}/collections/{collection}/records",
            self.base, tenant.id
        ))
        .header(http::header::AUTHORIZATION, tenant.writers[writer].clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
        let response = self.load.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::CREATED {
            bail!("create: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        let created: Value = serde_json::from_slice(&bytes)?;
        Ok(created["id"]
            .as_str()
            .context("create returned no id")?
            .to_owned())
    }

    /// The job's view, as the operator sees it.
    async fn job(&self, job: &str) -> anyhow::Result<wire::jobs::JobView> {
        let view = self
            .ok(
                reqwest::Method::GET,
                &format!("/v1/jobs/{job}"),
                &self.operator,
                None,
            )
            .await?;
        Ok(serde_json::from_value(view)?)
    }

    /// Rotates the tenant's data key; the id of the re-encryption job it started.
    async fn rotate(&self, tenant: &Tenant) -> anyhow::Result<String> {
        self.ok(
            reqwest::Method::POST,
            &format!("/v1/tenants/{}/keys/rotate", tenant.id),
            &tenant.admin,
            None,
        )
        .await
        .context("rotate the tenant's key")?;
        let page = self
            .ok(
                reqwest::Method::GET,
                &format!("/v1/jobs?kind=reencrypt&tenant={}&limit=1", tenant.id),
                &self.operator,
                None,
            )
            .await?;
        let page: wire::jobs::JobPage = serde_json::from_value(page)?;
        Ok(page
            .jobs
            .first()
            .context("the rotation listed no re-encryption job")?
            .id
            .clone())
    }
}

/// How a re-encryption job went, timed from the rotation's `202`.
#[derive(Debug, Clone)]
struct JobTiming {
    /// Until its progress passed `records` (`None`: not watched for).
    records: Option<Duration>,
    total: Duration,
    /// CPU spent from the `202` until its progress passed `records`, and in all.
    records_cpu: Option<CpuSample>,
    total_cpu: CpuSample,
    view: wire::jobs::JobView,
}

/// When a job was started: the instant and the CPU clock's reading.
struct Started {
    at: Instant,
    cpu: CpuSample,
}

/// Polls `job` until it is done; `done` is raised when it is.
async fn watch_job(
    api: &Api,
    job: &str,
    (started, clock): (&Started, &CpuClock),
    records: Option<u64>,
    done: &AtomicBool,
) -> anyhow::Result<JobTiming> {
    let mut records_at = None;
    loop {
        let view = api.job(job).await?;
        if records_at.is_none() && records.is_some_and(|records| view.progress.done >= records) {
            records_at = Some((started.at.elapsed(), clock.sample() - started.cpu));
        }
        match view.state.as_str() {
            "done" => {
                let total = started.at.elapsed();
                let total_cpu = clock.sample() - started.cpu;
                done.store(true, Ordering::Relaxed);
                let records_at = records_at.or(records.map(|_| (total, total_cpu)));
                return Ok(JobTiming {
                    records: records_at.map(|(at, _)| at),
                    total,
                    records_cpu: records_at.map(|(_, cpu)| cpu),
                    total_cpu,
                    view,
                });
            }
            "failed" | "cancelled" => {
                done.store(true, Ordering::Relaxed);
                bail!(
                    "the re-encryption job ended {}: {:?}",
                    view.state,
                    view.last_error
                );
            }
            _ => {}
        }
        if started.at.elapsed() > JOB_DEADLINE {
            bail!("the re-encryption job did not finish within {JOB_DEADLINE:?}");
        }
        tokio::time::sleep(JOB_POLL).await;
    }
}

/// What phases 1 and 2 measured.
#[derive(Debug)]
struct Reencryption {
    load_seconds: f64,
    sealed_bytes: u64,
    object_bytes: u64,
    baseline_records: Duration,
    baseline_files: Duration,
    baseline_records_cpu: CpuSample,
    baseline_files_cpu: CpuSample,
    job: JobTiming,
    writes_before: Writes,
    writes_during: Writes,
    writes_after: Writes,
    job_with_writes: JobTiming,
}

async fn measure_reencryption(
    args: &KeysArgs,
    node: &BenchNode,
    clock: &CpuClock,
) -> anyhow::Result<Reencryption> {
    let clients = args.loaders.max(args.writers);
    let api = Api::new(node, usize::try_from(clients).unwrap_or(usize::MAX))?;
    let database = RegionDatabase::new(node.node.region.clone(), &node.database)
        .context("build the baseline's pools")?;
    let tenant = api.tenant("Bench rotation", clients).await?;

    let loading = Instant::now();
    let ids = load(args, &api, &tenant).await?;
    let load_seconds = loading.elapsed().as_secs_f64();
    let files = &ids[..usize::try_from(args.files)
        .unwrap_or(usize::MAX)
        .min(ids.len())];
    load_files(args, &api, &tenant, files).await?;
    eprintln!(
        "loaded {} records and {} files in {load_seconds:.1} s (+ files)",
        ids.len(),
        files.len()
    );

    let objects = LocalObjectStore::new(node.objects_dir())?;
    vacuum(&database).await?;
    let before = clock.sample();
    let (baseline_records, sealed_bytes) =
        baseline_records(&database, &tenant.id, args.batch_size).await?;
    let between = clock.sample();
    let (baseline_files, object_bytes) = baseline_files(&database, &objects, &tenant.id).await?;
    let baseline_files_cpu = clock.sample() - between;
    let baseline_records_cpu = between - before;
    vacuum(&database).await?;
    eprintln!(
        "baseline: records {:.2} s, files {:.2} s",
        baseline_records.as_secs_f64(),
        baseline_files.as_secs_f64()
    );

    let started = Started {
        at: Instant::now(),
        cpu: clock.sample(),
    };
    let job = api.rotate(&tenant).await?;
    let ended = AtomicBool::new(false);
    let job = watch_job(&api, &job, (&started, clock), Some(args.records), &ended).await?;
    eprintln!("re-encryption: {:.2} s", job.total.as_secs_f64());
    check_all_resealed(&database, &tenant.id, &job).await?;

    let seconds = Duration::from_secs_f64(args.write_seconds);
    let writers = usize::try_from(args.writers).unwrap_or(usize::MAX);
    // Raised by nothing: the cases without a job run their full time.
    let never = AtomicBool::new(false);
    let writes_before = write_for(&api, &tenant, writers, seconds, &never, 0).await;
    let started = Started {
        at: Instant::now(),
        cpu: clock.sample(),
    };
    let job_id = api.rotate(&tenant).await?;
    let done = AtomicBool::new(false);
    let (writes_during, job_with_writes) = tokio::join!(
        write_for(&api, &tenant, writers, seconds, &done, 1),
        watch_job(&api, &job_id, (&started, clock), None, &done),
    );
    let job_with_writes = job_with_writes?;
    let writes_after = write_for(&api, &tenant, writers, seconds, &never, 2).await;
    check_all_resealed(&database, &tenant.id, &job_with_writes).await?;
    Ok(Reencryption {
        load_seconds,
        sealed_bytes,
        object_bytes,
        baseline_records,
        baseline_files,
        baseline_records_cpu,
        baseline_files_cpu,
        job,
        writes_before,
        writes_during,
        writes_after,
        job_with_writes,
    })
}

/// Creates `--records` records over `--loaders` writers; their ids in creation order of
/// each writer, writers interleaved.
async fn load(args: &KeysArgs, api: &Api, tenant: &Tenant) -> anyhow::Result<Vec<String>> {
    let loaders = args.loaders;
    let per_loader = try_join_all((0..loaders).map(|loader| {
        let (api, tenant) = (api.clone(), tenant.clone());
        let count = args.records / loaders + u64::from(loader < args.records % loaders);
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let writer = usize::try_from(loader).unwrap_or(0);
            for i in 0..count {
                let body = crate::tenant_api::person(writer, i as usize);
                ids.push(api.create(&tenant, writer, body).await?);
            }
            anyhow::Ok(ids)
        })
    }))
    .await
    .context("join a loader")?;
    let mut ids = Vec::new();
    for loaded in per_loader {
        ids.extend(loaded?);
    }
    Ok(ids)
}

/// One file of `--file-kib` random bytes on each record of `records`, 4 uploads at once.
async fn load_files(
    args: &KeysArgs,
    api: &Api,
    tenant: &Tenant,
    records: &[String],
) -> anyhow::Result<()> {
    let bytes = usize::try_from(args.file_kib * 1024).unwrap_or(usize::MAX);
    let uploads = futures::stream::iter(records.iter().map(|record| {
        let body: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
        let url = format!(
            "{}/v1/tenants/{}/collections/{COLLECTION}/records/{record}/files/document.bin",
            api.base, tenant.id
        );
        let request = api.http.put(url).bearer_auth(&tenant.admin).body(body);
        async move {
            let response = request.send().await?;
            let status = response.status();
            if status != reqwest::StatusCode::CREATED {
                bail!("put a file: {status}: {}", response.text().await?);
            }
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(4)
    .collect::<Vec<_>>()
    .await;
    uploads.into_iter().collect()
}

/// `VACUUM ANALYZE` of the tables the job and the baseline write.
async fn vacuum(database: &RegionDatabase) -> anyhow::Result<()> {
    let primary = database.primary().get().await?;
    for table in ["records", "files"] {
        primary
            .client()
            .batch_execute(&format!("vacuum analyze {table}"))
            .await
            .with_context(|| format!("vacuum the {table} table"))?;
    }
    Ok(())
}

/// The records' baseline: the job's pages, each written back by a bare pipelined `UPDATE`
/// of the same bytes in one transaction; how long it took and the bytes written.
async fn baseline_records(
    database: &RegionDatabase,
    tenant: &TenantId,
    batch_size: u64,
) -> anyhow::Result<(Duration, u64)> {
    let limit = i64::try_from(batch_size).unwrap_or(i64::MAX);
    let started = Instant::now();
    let mut after: Option<RecordPosition> = None;
    let mut bytes = 0u64;
    loop {
        let mut primary = database.primary().get().await?;
        let page =
            reencryption::records_after(primary.client(), tenant, after.as_ref(), limit).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.position.clone());
        let tx = primary.begin().await?;
        let statement = tx
            .prepare_cached(
                "update records set sealed = $4
                 where tenant_id = $1 and collection = $2 and record_id = $3",
            )
            .await?;
        let (in_tx, statement) = (&tx, &statement);
        let written = try_join_all(page.iter().map(|row| async move {
            in_tx
                .client()
                .execute(
                    statement,
                    &[
                        &tenant.as_str(),
                        &row.position.collection,
                        &row.position.record_id,
                        &row.sealed,
                    ],
                )
                .await
        }))
        .await?;
        tx.commit().await?;
        anyhow::ensure!(
            written.iter().all(|n| *n == 1),
            "a baseline update missed its row"
        );
        bytes += page.iter().map(|row| row.sealed.len() as u64).sum::<u64>();
    }
    Ok((started.elapsed(), bytes))
}

/// The files' baseline: every object of the tenant copied to a sibling key through the
/// same object store, one at a time (the copies are removed afterwards, untimed); how
/// long it took and the bytes copied.
async fn baseline_files(
    database: &RegionDatabase,
    objects: &LocalObjectStore,
    tenant: &TenantId,
) -> anyhow::Result<(Duration, u64)> {
    let keys: Vec<String> = {
        let primary = database.primary().get().await?;
        primary
            .client()
            .query(
                "select object_key from files where tenant_id = $1
                 order by collection, record_id, name",
                &[&tenant.as_str()],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    let started = Instant::now();
    let mut bytes = 0;
    let mut copies = Vec::new();
    for key in keys {
        let source = ObjectKey::parse(&key).context("a stored object key")?;
        let copy = ObjectKey::parse(&format!("{key}.bench-copy")).context("the copy's key")?;
        let body = objects.get(&source).await?;
        bytes += objects.put(&copy, body).await?;
        copies.push(copy);
    }
    let took = started.elapsed();
    for copy in copies {
        objects.delete(&copy).await?;
    }
    Ok((took, bytes))
}

/// Fails unless the job re-sealed every item without a failure and every file row of the
/// tenant names its active data key version (checked in SQL).
async fn check_all_resealed(
    database: &RegionDatabase,
    tenant: &TenantId,
    job: &JobTiming,
) -> anyhow::Result<()> {
    let progress = job.view.progress;
    anyhow::ensure!(
        progress.failed == 0 && progress.done >= progress.total,
        "the re-encryption job ended with {progress:?}"
    );
    let primary = database.primary().get().await?;
    let stale: i64 = primary
        .client()
        .query_one(
            "select count(*) from files f where f.tenant_id = $1 and f.key_version is distinct from
               (select version from tenant_keys k
                where k.tenant_id = $1 and purpose = 'data' and state = 'active')",
            &[&tenant.as_str()],
        )
        .await
        .context("count the files not on the active version")?
        .get(0);
    anyhow::ensure!(
        stale == 0,
        "{stale} files are not on the active key version after the job"
    );
    Ok(())
}

/// What the writers of one case did.
#[derive(Debug, Default, Clone)]
struct Writes {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Writes {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Value {
        json!({
            "records": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": self.elapsed.as_secs_f64(),
            "per_sec": self.per_sec(),
        })
    }
}

/// `writers` concurrent API writers create records for `duration`, or until `stop` is
/// raised; `case` keeps their emails unique across cases.
async fn write_for(
    api: &Api,
    tenant: &Tenant,
    writers: usize,
    duration: Duration,
    stop: &AtomicBool,
    case: usize,
) -> Writes {
    let started = Instant::now();
    let outcomes = futures::future::join_all((0..writers).map(|writer| async move {
        let mut writes = Writes::default();
        let mut i = 0;
        while started.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            let body = crate::tenant_api::person(1_000 * (case + 1) + writer, i);
            i += 1;
            match api.create(tenant, writer, body).await {
                Ok(_) => writes.ok += 1,
                Err(err) => {
                    writes.errors += 1;
                    writes.first_error.get_or_insert_with(|| format!("{err:#}"));
                }
            }
        }
        writes
    }))
    .await;
    let mut total = Writes {
        elapsed: started.elapsed(),
        ..Writes::default()
    };
    for writes in outcomes {
        total.ok += writes.ok;
        total.errors += writes.errors;
        total.first_error = total.first_error.or(writes.first_error);
    }
    total
}

/// What phase 3 measured: per tenant, how long the other node kept serving it.
#[derive(Debug)]
struct Offboarding {
    /// Sorted.
    drops: Vec<Duration>,
    /// How the other node answered once it stopped serving plaintext (status: count).
    statuses: std::collections::BTreeMap<u16, u64>,
    /// Reads of the other node that still answered `200` after the `DELETE` answered.
    reads_served_after_delete: u64,
}

async fn measure_offboarding(
    args: &KeysArgs,
    a: &BenchNode,
    b: &BenchNode,
) -> anyhow::Result<Offboarding> {
    let api = Api::new(a, 4)?;
    let other = api.on(b);
    let mut outcome = Offboarding {
        drops: Vec::new(),
        statuses: std::collections::BTreeMap::new(),
        reads_served_after_delete: 0,
    };
    for n in 0..args.offboard_tenants {
        let tenant = api.tenant(&format!("Bench leaving {n}"), 1).await?;
        let email = format!("leaving-{n}@example.com");
        let (status, created) = api
            .call(
                reqwest::Method::POST,
                &format!("/v1/tenants/{}/collections/{COLLECTION}/records", tenant.id),
                &tenant.admin,
                Some(json!({"data": {"email": email, "name": "Ada Lovelace", "diagnosis": "flu"}})),
            )
            .await?;
        anyhow::ensure!(status == 201, "create a record: {status}: {created}");
        let path = format!(
            "/v1/tenants/{}/collections/{COLLECTION}/records/{}",
            tenant.id,
            created["id"].as_str().context("create returned no id")?
        );
        // Both nodes open the record, and so cache the tenant and its keys.
        for node in [&api, &other] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !opens(node, &path, &tenant.admin, &email).await?.0 {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "a node never served the new record"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let (status, answer) = api
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/tenants/{}", tenant.id),
                &api.operator,
                None,
            )
            .await?;
        let answered = Instant::now();
        anyhow::ensure!(status == 202, "offboard: {status}: {answer}");
        let (served, status) = opens(&api, &path, &tenant.admin, &email).await?;
        anyhow::ensure!(
            !served,
            "the node that offboarded still served the tenant ({status})"
        );
        loop {
            let (served, status) = opens(&other, &path, &tenant.admin, &email).await?;
            if !served {
                outcome.drops.push(answered.elapsed());
                *outcome.statuses.entry(status).or_default() += 1;
                break;
            }
            outcome.reads_served_after_delete += 1;
            if answered.elapsed() > OFFBOARD_DEADLINE {
                outcome.drops.push(answered.elapsed());
                break;
            }
        }
    }
    outcome.drops.sort_unstable();
    Ok(outcome)
}

/// Whether `api`'s node answers the record with its plaintext email, and its status.
async fn opens(api: &Api, path: &str, token: &str, email: &str) -> anyhow::Result<(bool, u16)> {
    let (status, body) = api.call(reqwest::Method::GET, path, token, None).await?;
    Ok((status == 200 && body["data"]["email"] == email, status))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn report(args: &KeysArgs, r: Reencryption, o: Offboarding) -> Value {
    let records = args.records as f64;
    let file_mib = mib(args.files * args.file_kib * 1024);
    let job_records = r.job.records.unwrap_or(r.job.total);
    let job_files = r.job.total.saturating_sub(job_records);
    let records_job = records / job_records.as_secs_f64();
    let records_base = records / r.baseline_records.as_secs_f64();
    let files_job = file_mib / job_files.as_secs_f64().max(1e-9);
    let files_base = file_mib / r.baseline_files.as_secs_f64().max(1e-9);
    let records_ratio = records_job / records_base;
    let files_ratio = files_job / files_base;
    let no_job = (r.writes_before.per_sec() + r.writes_after.per_sec()) / 2.0;
    let writes_ratio = r.writes_during.per_sec() / no_job;
    let write_errors = r.writes_before.errors + r.writes_during.errors + r.writes_after.errors;
    let p50 = crate::percentile(&o.drops, 0.50);
    let p99 = crate::percentile(&o.drops, 0.99);
    let max = o.drops.last().copied().unwrap_or_default();
    let clean_job = r.job.view.progress.failed == 0 && r.job_with_writes.view.progress.failed == 0;
    let job_records_cpu = r.job.records_cpu.unwrap_or(r.job.total_cpu);
    let job_files_cpu = r.job.total_cpu - job_records_cpu;
    let cpu_per_record = |cpu: CpuSample| {
        json!({
            "postgres_us": micros_per_op(cpu.postgres, args.records),
            "process_us": micros_per_op(cpu.rest + cpu.load, args.records),
        })
    };
    let cpu_per_mib = |cpu: CpuSample| {
        json!({
            "postgres_ms": cpu.postgres.as_secs_f64() * 1e3 / file_mib.max(1e-9),
            "process_ms": (cpu.rest + cpu.load).as_secs_f64() * 1e3 / file_mib.max(1e-9),
        })
    };

    println!(
        "loaded {} records ({:.1} MiB sealed) in {:.1} s through the API, {} files of {} KiB",
        args.records,
        mib(r.sealed_bytes),
        r.load_seconds,
        args.files,
        args.file_kib
    );
    println!(
        "{:<34} {:>10} {:>12} {:>12} {:>7} {:>6}",
        "case", "seconds", "job", "baseline", "ratio", "goal"
    );
    println!(
        "{:<34} {:>10.2} {:>10.0}/s {:>10.0}/s {:>7.2} {:>6}",
        "re-encrypt records (records/s)",
        job_records.as_secs_f64(),
        records_job,
        records_base,
        records_ratio,
        format!("≥{REENCRYPT_GOAL}")
    );
    println!(
        "{:<34} {:>10.2} {:>8.1}MiB/s {:>8.1}MiB/s {:>7.2} {:>6}",
        "re-encrypt files (MiB/s)",
        job_files.as_secs_f64(),
        files_job,
        files_base,
        files_ratio,
        "—"
    );
    println!(
        "{:<34} {:>10.2} {:>10.0}/s {:>10.0}/s {:>7.2} {:>6}",
        "API writes during / without job",
        r.writes_during.elapsed.as_secs_f64(),
        r.writes_during.per_sec(),
        no_job,
        writes_ratio,
        format!("≥{WRITES_GOAL}")
    );
    println!(
        "  CPU µs per record, PostgreSQL / this process (node and client): job {:.0} / {:.0}, baseline {:.0} / {:.0}",
        micros_per_op(job_records_cpu.postgres, args.records),
        micros_per_op(job_records_cpu.rest + job_records_cpu.load, args.records),
        micros_per_op(r.baseline_records_cpu.postgres, args.records),
        micros_per_op(
            r.baseline_records_cpu.rest + r.baseline_records_cpu.load,
            args.records
        ),
    );
    println!(
        "  writes without a job: before {:.0}/s, after {:.0}/s; the job under writes took {:.2} s; write errors {write_errors}",
        r.writes_before.per_sec(),
        r.writes_after.per_sec(),
        r.job_with_writes.total.as_secs_f64(),
    );
    println!(
        "offboarding, other node stops opening the tenant: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} tenants (goal ≤ {} ms); its answers then {:?}",
        millis(p50),
        millis(p99),
        millis(max),
        o.drops.len(),
        OFFBOARD_GOAL.as_millis(),
        o.statuses
    );
    let results = vec![
        json!({
            "case": "reencrypt_records",
            "job_per_sec": records_job,
            "baseline_per_sec": records_base,
            "ratio": records_ratio,
            "goal": REENCRYPT_GOAL,
            "met": records_ratio >= REENCRYPT_GOAL && clean_job,
        }),
        json!({
            "case": "writes_during_reencryption",
            "during_per_sec": r.writes_during.per_sec(),
            "without_per_sec": no_job,
            "ratio": writes_ratio,
            "goal": WRITES_GOAL,
            "met": writes_ratio >= WRITES_GOAL && write_errors == 0,
        }),
        json!({
            "case": "offboarding_other_node",
            "p50_ms": millis(p50),
            "p99_ms": millis(p99),
            "max_ms": millis(max),
            "goal_ms": OFFBOARD_GOAL.as_secs_f64() * 1e3,
            "met": p99 <= OFFBOARD_GOAL,
        }),
    ];
    json!({
        "benchmark": "keys",
        "optimized_build": !cfg!(debug_assertions),
        "records": args.records,
        "files": args.files,
        "file_kib": args.file_kib,
        "batch_size": args.batch_size,
        "writers": args.writers,
        "load_seconds": r.load_seconds,
        "sealed_bytes": r.sealed_bytes,
        "reencryption": {
            "job_seconds": r.job.total.as_secs_f64(),
            "job_records_seconds": job_records.as_secs_f64(),
            "job_files_seconds": job_files.as_secs_f64(),
            "job_progress": {"done": r.job.view.progress.done, "total": r.job.view.progress.total, "failed": r.job.view.progress.failed},
            "records_per_sec": records_job,
            "files_mib_per_sec": files_job,
            "baseline_records_seconds": r.baseline_records.as_secs_f64(),
            "baseline_records_per_sec": records_base,
            "baseline_files_seconds": r.baseline_files.as_secs_f64(),
            "baseline_files_mib_per_sec": files_base,
            "baseline_object_bytes": r.object_bytes,
            "records_ratio": records_ratio,
            "files_ratio": files_ratio,
            "cpu_per_record": {
                "job": cpu_per_record(job_records_cpu),
                "baseline": cpu_per_record(r.baseline_records_cpu),
            },
            "cpu_per_file_mib": {
                "job": cpu_per_mib(job_files_cpu),
                "baseline": cpu_per_mib(r.baseline_files_cpu),
            },
        },
        "writes": {
            "before": r.writes_before.json(),
            "during": r.writes_during.json(),
            "after": r.writes_after.json(),
            "job_under_writes_seconds": r.job_with_writes.total.as_secs_f64(),
            "job_under_writes_progress": {"done": r.job_with_writes.view.progress.done, "total": r.job_with_writes.view.progress.total},
        },
        "offboarding": {
            "tenants": o.drops.len(),
            "drops_ms": o.drops.iter().map(|d| millis(*d)).collect::<Vec<_>>(),
            "other_node_statuses": o.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "reads_served_after_delete": o.reads_served_after_delete,
        },
        "results": results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Command {
        #[command(flatten)]
        args: KeysArgs,
    }

    fn parse(argv: &[&str]) -> Result<KeysArgs, clap::Error> {
        <Command as clap::Parser>::try_parse_from(
            std::iter::once("keys").chain(argv.iter().copied()),
        )
        .map(|command| command.args)
    }

    #[test]
    fn the_defaults_are_the_issues_sizes_and_the_nodes_take_the_batch_size() {
        let args = parse(&[]).expect("the defaults parse");
        assert_eq!(
            (args.records, args.files, args.file_kib, args.writers),
            (100_000, 100, 1024, 8)
        );
        assert_eq!(
            args.batch_size,
            node::JobSettings::default().batch_size as u64
        );

        let args = parse(&[
            "--batch-size",
            "250",
            "--max-file-mib",
            "1",
            "--file-kib",
            "2048",
        ])
        .expect("parse");
        let node = settings(&args, RUNNER_POLL).expect("settings");
        assert_eq!(node.jobs.batch_size, 250);
        assert_eq!(node.jobs.poll_interval, RUNNER_POLL);
        assert_eq!(
            node.max_file_bytes,
            2048 * 1024,
            "the nodes accept the benchmark's files"
        );
        assert!(parse(&["--records", "0"]).is_err());
        assert!(parse(&["--batch-size", "0"]).is_err());
    }
}
