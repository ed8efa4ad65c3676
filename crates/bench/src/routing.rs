//! `residency-bench router`: what the region-pinned router costs, against baselines in the
//! same run. (a) A local tenant through the router layer against the bare regional
//! handler (added p50/p99); (b) a foreign tenant forwarded by an entry node to its home
//! node against calling the home node directly, the handler doing about 1 ms of async
//! work (throughput ratio, added p50/p99); (c) our forwarding hop against Debian's nginx
//! `proxy_pass` (one worker, keep-alive upstream) in front of the same home node, at
//! saturation (requests per second ratio).
//!
//! Every server and the load generator run in this process, each on an event loop of its
//! own (a current-thread runtime on a named thread; nginx: one worker process), so that
//! the hops are compared on equal terms and each party's CPU per request can be read; the
//! handler's async work completes on a timer thread to the microsecond (tokio's timer
//! rounds to milliseconds). The cases are measured in interleaved rounds and the medians
//! reported. A throughput at saturation drifts with the VM's load, over minutes and
//! within seconds, so (c)'s two cases take turns within each round, in short slices
//! ordered ABBA ([`C_TURNS`] each), and its ratio is the median of the rounds' ratios.
//!
//! By default the load generator and the timer thread (the clients and the database) run
//! on one CPU and the servers under test on another, as a load generator is kept off a
//! server's cores ([`CpuLayout`]): on a shared 2-core machine the load generator's CPU
//! otherwise competes with the hop it measures. (c) then compares what the CPU of the
//! servers buys, the hop's cost against the upstream's, and the load generator's own CPU,
//! the same for both hops, no longer dilutes the ratio.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use model::{RegionId, TenantId, Transit};
use router::{
    CachedDirectory, Directory as _, DirectoryEntry, ForwardSigner, ForwardingKey, MemoryDirectory,
    RegionEndpoints, RouterConfig,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::Layer as _;

use crate::cpu::CpuClock;
use crate::{median, percentile};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RouterArgs {
    /// Where to write the JSON results.
    #[arg(long, default_value = ".residency/bench/router.json")]
    output: PathBuf,
    /// Time per measurement; each case is measured in several interleaved rounds.
    #[arg(long, default_value_t = 3.0, value_parser = crate::tenant_api::positive_seconds)]
    seconds_per_round: f64,
    /// Interleaved rounds per case (the median is reported). On a shared 2-core machine a
    /// 3-round median of (b)'s added p50 ranged over +82…+145 µs between runs; 7 rounds
    /// gave +95…+109.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Concurrent clients for the latency cases (a) and (b): below saturation, so that
    /// the added latency is the hop's, not a queue's.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Concurrent clients for the throughput case (c): enough to saturate the hop.
    #[arg(long, default_value_t = 64)]
    saturating_clients: usize,
    /// The async work of the handler behind the forwarding cases, in milliseconds.
    #[arg(long, default_value_t = 1.0)]
    handler_ms: f64,
    /// The nginx binary for case (c).
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// Which CPUs each party runs on.
    #[arg(long, value_enum, default_value_t = CpuLayout::Isolated)]
    cpu_layout: CpuLayout,
    /// The protocol of the hop between the entry and the home node (a node's default,
    /// the only one `serve` and `dev` run: HTTP/1.1 up to a number of connections,
    /// HTTP/2 past it; see `hop::InternalProtocol`). `http1` or `http2` alone are here
    /// to measure against.
    #[arg(long, value_enum, default_value_t = InternalProtocolFlag::Http1ThenHttp2)]
    hop: InternalProtocolFlag,
    /// With `--hop http1-then-http2`: the HTTP/1.1 connections the entry node keeps to
    /// the home node before further requests share one HTTP/2 connection.
    #[arg(
        long,
        default_value_t = hop::DEFAULT_HTTP1_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000)
    )]
    hop_http1_connections: usize,
    /// Exit non-zero when a target is missed.
    #[arg(long)]
    check: bool,
}

/// The protocols the entry node may forward in, by their command-line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum InternalProtocolFlag {
    Http1ThenHttp2,
    Http1,
    Http2,
}

impl InternalProtocolFlag {
    /// The router's protocol, `http1_connections` bounding HTTP/1.1 where it is bounded.
    fn protocol(self, http1_connections: usize) -> hop::InternalProtocol {
        match self {
            Self::Http1 => hop::InternalProtocol::Http1,
            Self::Http2 => hop::InternalProtocol::Http2,
            Self::Http1ThenHttp2 => {
                hop::InternalProtocol::Http1WithHttp2Overflow { http1_connections }
            }
        }
    }

    /// Its name on the command line.
    fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .expect("no value is skipped")
            .get_name()
            .to_owned()
    }

    /// `http1_connections` when the protocol is bounded by it.
    fn http1_connections(self, http1_connections: usize) -> Option<usize> {
        (self == Self::Http1ThenHttp2).then_some(http1_connections)
    }
}

/// Where the parties of the benchmark run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CpuLayout {
    /// The servers under test (the home node, the entry node, nginx's worker) share one
    /// CPU; the load generator and the handler's timer thread, which stand for the
    /// clients and the database, run on another. What a hop costs is then its own CPU
    /// and hand-overs, not the load generator's CPU competing with it.
    Isolated,
    /// Every party runs wherever the kernel's scheduler places it.
    Shared,
}

/// The CPUs the two sides of [`CpuLayout::Isolated`] are pinned to.
#[derive(Debug, Clone, Copy)]
struct Pinning {
    /// The load generator and the handler's timer thread.
    clients: usize,
    /// The home node, the entry node and nginx's worker.
    servers: usize,
}

impl Pinning {
    /// The first and the last CPU this process may run on, or `None` for the shared
    /// layout.
    fn for_layout(layout: CpuLayout) -> anyhow::Result<Option<Self>> {
        if layout == CpuLayout::Shared {
            return Ok(None);
        }
        let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .context("read the CPUs this process may run on")?;
        let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
            .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
            .collect();
        match (cpus.first(), cpus.last()) {
            (Some(&clients), Some(&servers)) if clients != servers => {
                Ok(Some(Self { clients, servers }))
            }
            _ => anyhow::bail!(
                "the isolated CPU layout needs two CPUs and this process may use {}: pass --cpu-layout shared",
                cpus.len()
            ),
        }
    }

    fn describe(pinning: Option<Self>) -> String {
        match pinning {
            Some(Self { clients, servers }) => format!(
                "load generator and the handler's timer thread on CPU {clients}; home node, entry node and nginx's worker on CPU {servers}"
            ),
            None => "every party wherever the scheduler places it".to_owned(),
        }
    }
}

/// Pins the calling thread to one CPU.
fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("name CPU {cpu}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pin a thread to CPU {cpu}"))
}

/// Starts a thread named `name` that pins itself to `cpu` (when given) and then runs
/// `work`. Returns once the thread is pinned; when pinning fails, the thread ends without
/// running `work` and the error is returned.
fn spawn_pinned(
    name: &str,
    cpu: Option<usize>,
    work: impl FnOnce() + Send + 'static,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let (pinned, pinning) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let result = cpu.map_or(Ok(()), pin_current_thread);
            let ok = result.is_ok();
            let _ = pinned.send(result);
            if ok {
                work();
            }
        })
        .with_context(|| format!("start the {name} thread"))?;
    pinning
        .recv()
        .with_context(|| format!("the {name} thread ended at start"))??;
    Ok(thread)
}

/// (b): forwarded throughput at least this share of direct.
const FORWARD_THROUGHPUT_TARGET: f64 = 0.9;
/// (b): added p50 at most this.
const FORWARD_P50_TARGET: Duration = Duration::from_micros(100);
/// (b): added p99 at most this.
const FORWARD_P99_TARGET: Duration = Duration::from_millis(1);
/// (c): our hop's requests per second at least this share of nginx's.
const NGINX_TARGET: f64 = 0.8;

const HOME: &str = "eu-central-1";
/// Thread names of the runtimes, for their CPU time.
const HOME_THREAD: &str = "bench-home";
const ENTRY_THREAD: &str = "bench-entry";
const LOAD: &str = crate::cpu::LOAD_THREAD;
const ENTRY: &str = "us-east-1";
const FORWARDING_KEY: &[u8; 32] = b"bench-router-forwarding-key-0001";
/// The collection whose handler does the configured async work; any other answers at once.
const SLOW: &str = "slow";
const FAST: &str = "fast";

/// The measured cases, each a target behind a URL and a concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Case {
    /// (a) baseline: the regional handler with no router in front.
    BareHandler,
    /// (a): a local tenant through the home node's router layer.
    LocalThroughRouter,
    /// (b) baseline: the home node called directly (its router serves locally).
    Direct,
    /// (b): the entry node forwards to the home node.
    Forwarded,
    /// (c) baseline: nginx proxy_pass to the home node.
    Nginx,
    /// (c): the entry node forwards to the home node, at nginx's concurrency.
    ForwardedSaturated,
    /// A reference for (b): nginx proxy_pass in front of the home node at (b)'s load.
    NginxAtForwardingLoad,
}

impl Case {
    const ALL: [Case; 7] = [
        Case::BareHandler,
        Case::LocalThroughRouter,
        Case::Direct,
        Case::Forwarded,
        Case::NginxAtForwardingLoad,
        Case::Nginx,
        Case::ForwardedSaturated,
    ];

    /// The order of round `round`: [`Case::ALL`], with (c)'s two cases, which are measured
    /// together ([`interleaved`]), in turns first, so that neither always opens.
    fn in_round(round: usize) -> [Case; 7] {
        let mut cases = Case::ALL;
        if round % 2 == 1 {
            let nginx = cases.iter().position(|&c| c == Case::Nginx);
            let ours = cases.iter().position(|&c| c == Case::ForwardedSaturated);
            if let (Some(nginx), Some(ours)) = (nginx, ours) {
                cases.swap(nginx, ours);
            }
        }
        cases
    }

    /// The other case of (c)'s pair, for (c)'s two cases.
    fn paired(self) -> Option<Case> {
        match self {
            Case::Nginx => Some(Case::ForwardedSaturated),
            Case::ForwardedSaturated => Some(Case::Nginx),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Case::BareHandler => "(a) bare regional handler",
            Case::LocalThroughRouter => "(a) local tenant through the node",
            Case::Direct => "(b) direct to the home node",
            Case::Forwarded => "(b) forwarded by the entry node",
            Case::Nginx => "(c) nginx proxy_pass",
            Case::ForwardedSaturated => "(c) our forwarding hop",
            Case::NginxAtForwardingLoad => "(b) reference: nginx proxy_pass",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Case::BareHandler => "bare_handler",
            Case::LocalThroughRouter => "local_through_router",
            Case::Direct => "direct",
            Case::Forwarded => "forwarded",
            Case::Nginx => "nginx",
            Case::ForwardedSaturated => "forwarded_saturated",
            Case::NginxAtForwardingLoad => "nginx_at_forwarding_load",
        }
    }
}

/// The slices each of (c)'s two cases is measured in per round. On this shared 2-core
/// VM the two cases' requests per second, measured back to back for 3 s each, gave
/// round ratios from 0.63 to 1.28 within one run: the machine's speed moves within
/// seconds, and slices a few hundred milliseconds long, taken in turns, expose both
/// cases to the same moments.
const C_TURNS: usize = 4;

/// The order of the slices of (c)'s pair in a round when `first` opens: ABBA, repeated,
/// `turns` each, so that each case has as many early turns as late ones and a drift
/// across the round weighs on both alike.
fn interleaved(first: Case, second: Case, turns: usize) -> Vec<Case> {
    (0..2 * turns)
        .map(|slice| {
            if matches!(slice % 4, 0 | 3) {
                first
            } else {
                second
            }
        })
        .collect()
}

/// What one round of a case measured.
#[derive(Debug, Default)]
struct Round {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
    cpu: Cpu,
}

/// CPU spent during a round, by who spent it.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    load: Duration,
    entry: Duration,
    home: Duration,
    nginx: Duration,
}

impl Cpu {
    fn sample(clock: &CpuClock, nginx: Option<i32>) -> Self {
        Self {
            load: clock.threads(LOAD),
            entry: clock.threads(ENTRY_THREAD),
            home: clock.threads(HOME_THREAD),
            nginx: nginx.map_or(Duration::ZERO, |pid| clock.process_tree(pid)),
        }
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            load: self.load.saturating_sub(earlier.load),
            entry: self.entry.saturating_sub(earlier.entry),
            home: self.home.saturating_sub(earlier.home),
            nginx: self.nginx.saturating_sub(earlier.nginx),
        }
    }

    fn add(&mut self, other: Cpu) {
        self.load += other.load;
        self.entry += other.entry;
        self.home += other.home;
        self.nginx += other.nginx;
    }
}

impl Round {
    /// Adds what another part of the same case measured (a client's loop, a slice).
    fn absorb(&mut self, slice: Round) {
        self.ok += slice.ok;
        self.errors += slice.errors;
        if self.first_error.is_none() {
            self.first_error = slice.first_error;
        }
        self.elapsed += slice.elapsed;
        self.latencies.extend(slice.latencies);
        self.cpu.add(slice.cpu);
    }

    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// A case over all its rounds: median throughput, percentiles over every request.
#[derive(Debug)]
struct Summary {
    per_sec: f64,
    /// Each round's requests per second, in the order the rounds ran.
    round_per_sec: Vec<f64>,
    p50: Duration,
    p99: Duration,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    cpu: Cpu,
}

impl Summary {
    fn of(rounds: Vec<Round>) -> Self {
        let round_per_sec: Vec<f64> = rounds.iter().map(Round::per_sec).collect();
        let per_sec = median(round_per_sec.clone());
        let ok = rounds.iter().map(|r| r.ok).sum();
        let errors = rounds.iter().map(|r| r.errors).sum();
        let first_error = rounds.iter().find_map(|r| r.first_error.clone());
        let mut cpu = Cpu::default();
        for round in &rounds {
            cpu.add(round.cpu);
        }
        let mut latencies: Vec<Duration> = rounds.into_iter().flat_map(|r| r.latencies).collect();
        latencies.sort_unstable();
        Self {
            per_sec,
            round_per_sec,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            ok,
            errors,
            first_error,
            cpu,
        }
    }

    /// CPU microseconds per request of one party.
    fn cpu_us(&self, spent: Duration) -> f64 {
        crate::cpu::micros_per_op(spent, self.ok + self.errors)
    }

    fn json(&self) -> Value {
        json!({
            "per_sec": self.per_sec,
            "round_per_sec": self.round_per_sec,
            "p50_us": micros(self.p50),
            "p99_us": micros(self.p99),
            "requests": self.ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "cpu_us_per_request": {
                "load_generator": self.cpu_us(self.cpu.load),
                "entry_node": self.cpu_us(self.cpu.entry),
                "home_node": self.cpu_us(self.cpu.home),
                "nginx": self.cpu_us(self.cpu.nginx),
            },
        })
    }
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Signed difference in microseconds (`ours - baseline`).
fn added_micros(ours: Duration, baseline: Duration) -> f64 {
    micros(ours) - micros(baseline)
}

pub(crate) async fn run(args: RouterArgs) -> anyhow::Result<()> {
    crate::warn_if_unoptimized("router");
    let nginx_binary = find_nginx(&args.nginx)?;
    let pinning = Pinning::for_layout(args.cpu_layout)?;
    let (clients_cpu, servers_cpu) = (pinning.map(|p| p.clients), pinning.map(|p| p.servers));
    let home_runtime = EventLoop::start(HOME_THREAD, servers_cpu)?;
    let entry_runtime = EventLoop::start(ENTRY_THREAD, servers_cpu)?;
    let load_runtime = EventLoop::start(LOAD, clients_cpu)?;

    let topology = Topology::start(&args, &home_runtime, &entry_runtime, clients_cpu).await?;
    let nginx = Nginx::start(&nginx_binary, topology.home, servers_cpu).await?;
    let targets: HashMap<Case, (String, usize)> = [
        (Case::BareHandler, topology.bare, FAST, args.clients),
        (Case::LocalThroughRouter, topology.home, FAST, args.clients),
        (Case::Direct, topology.home, SLOW, args.clients),
        (Case::Forwarded, topology.entry, SLOW, args.clients),
        (Case::Nginx, nginx.address, SLOW, args.saturating_clients),
        (
            Case::NginxAtForwardingLoad,
            nginx.address,
            SLOW,
            args.clients,
        ),
        (
            Case::ForwardedSaturated,
            topology.entry,
            SLOW,
            args.saturating_clients,
        ),
    ]
    .into_iter()
    .map(|(case, address, collection, clients)| {
        let url = format!(
            "http://{address}/v1/tenants/{}/collections/{collection}/records/r1",
            topology.tenant
        );
        (case, (url, clients))
    })
    .collect();

    let measured = {
        let args = args.clone();
        let nginx_pid = nginx.child.id().and_then(|pid| i32::try_from(pid).ok());
        load_runtime
            .handle()
            .spawn(async move { measure(&args, &targets, nginx_pid).await })
            .await
            .context("join the load generator")?
    };
    nginx.stop().await;
    drop((home_runtime, entry_runtime, load_runtime));
    let results = measured?;
    report(&args, pinning, results)
}

/// Every case in interleaved rounds, after a warm-up of each.
async fn measure(
    args: &RouterArgs,
    targets: &HashMap<Case, (String, usize)>,
    nginx: Option<i32>,
) -> anyhow::Result<HashMap<Case, Summary>> {
    let clock = CpuClock::new([]);
    let client = crate::load_client(args.saturating_clients.max(args.clients));
    for case in Case::ALL {
        let (url, clients) = &targets[&case];
        let warm_up = load(&client, url, *clients, Duration::from_millis(300)).await;
        anyhow::ensure!(
            warm_up.ok > 0,
            "{}: no request succeeded during the warm-up ({})",
            case.name(),
            warm_up.first_error.unwrap_or_else(|| "no answer".into())
        );
    }
    let round = Duration::from_secs_f64(args.seconds_per_round);
    let mut rounds: HashMap<Case, Vec<Round>> = HashMap::new();
    let slice = round / u32::try_from(C_TURNS).expect("a handful of turns");
    for index in 0..args.rounds.max(1) {
        let mut measured_this_round: HashMap<Case, Round> = HashMap::new();
        for case in Case::in_round(index) {
            if measured_this_round.contains_key(&case) {
                continue;
            }
            let slices = match case.paired() {
                Some(second) => interleaved(case, second, C_TURNS)
                    .into_iter()
                    .map(|case| (case, slice))
                    .collect(),
                None => vec![(case, round)],
            };
            for (case, duration) in slices {
                let (url, clients) = &targets[&case];
                let before = Cpu::sample(&clock, nginx);
                let mut measured = load(&client, url, *clients, duration).await;
                measured.cpu = Cpu::sample(&clock, nginx).since(before);
                measured_this_round
                    .entry(case)
                    .or_default()
                    .absorb(measured);
            }
        }
        for (case, measured) in measured_this_round {
            rounds.entry(case).or_default().push(measured);
        }
    }
    Ok(rounds
        .into_iter()
        .map(|(case, rounds)| (case, Summary::of(rounds)))
        .collect())
}

/// `clients` loops, each sending one GET after the other for `duration`.
async fn load(
    client: &Client<HttpConnector, Body>,
    url: &str,
    clients: usize,
    duration: Duration,
) -> Round {
    let uri: http::Uri = url.parse().expect("the bench builds valid URLs");
    let started = Instant::now();
    let tasks = (0..clients.max(1)).map(|_| {
        let (client, uri) = (client.clone(), uri.clone());
        tokio::spawn(async move {
            let mut round = Round::default();
            while started.elapsed() < duration {
                let sent = Instant::now();
                match get(&client, &uri).await {
                    Ok(()) => {
                        round.ok += 1;
                        round.latencies.push(sent.elapsed());
                    }
                    Err(err) => {
                        round.errors += 1;
                        round.first_error.get_or_insert_with(|| format!("{err:#}"));
                    }
                }
            }
            round
        })
    });
    let mut total = Round::default();
    for task in futures::future::join_all(tasks).await {
        let Ok(round) = task else {
            total.errors += 1;
            continue;
        };
        // A client's loop has counts and latencies only; the time is the whole load's.
        total.absorb(round);
    }
    total.elapsed = started.elapsed();
    total
}

async fn get(client: &Client<HttpConnector, Body>, uri: &http::Uri) -> anyhow::Result<()> {
    let request = http::Request::get(uri.clone()).body(Body::empty())?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status == StatusCode::OK && body.as_ref() == HANDLER_BODY,
        "status {status}, {} body bytes",
        body.len()
    );
    Ok(())
}

fn report(
    args: &RouterArgs,
    pinning: Option<Pinning>,
    results: HashMap<Case, Summary>,
) -> anyhow::Result<()> {
    let get = |case: Case| &results[&case];
    let (bare, local) = (get(Case::BareHandler), get(Case::LocalThroughRouter));
    let (direct, forwarded) = (get(Case::Direct), get(Case::Forwarded));
    let (nginx, ours) = (get(Case::Nginx), get(Case::ForwardedSaturated));

    let forward_ratio = forwarded.per_sec / direct.per_sec;
    let forward_p50 = added_micros(forwarded.p50, direct.p50);
    let forward_p99 = added_micros(forwarded.p99, direct.p99);
    // What a mature proxy adds at the same load on this machine: the floor of (b).
    let reference = get(Case::NginxAtForwardingLoad);
    let reference_ratio = reference.per_sec / direct.per_sec;
    let reference_p50 = added_micros(reference.p50, direct.p50);
    let reference_p99 = added_micros(reference.p99, direct.p99);
    // (c) is a throughput at saturation, which drifts with the VM's load: each round's
    // pair took turns in short slices, so the ratio within a round is steadier than the
    // ratio of the two medians, whose rounds may come from different minutes.
    let round_ratios: Vec<f64> = ours
        .round_per_sec
        .iter()
        .zip(&nginx.round_per_sec)
        .map(|(ours, nginx)| ours / nginx)
        .collect();
    let nginx_ratio = median(round_ratios.clone());
    let (lowest, highest) = round_ratios
        .iter()
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), &r| {
            (lo.min(r), hi.max(r))
        });
    let ratio_of_medians = ours.per_sec / nginx.per_sec;
    // Steadier than the requests/s ratio, which also depends on how the VM schedules the
    // single-threaded parties on the cores: the CPU every party spent per request.
    let ours_cpu = ours.cpu_us(ours.cpu.load + ours.cpu.entry + ours.cpu.home);
    let nginx_cpu = nginx.cpu_us(nginx.cpu.load + nginx.cpu.nginx + nginx.cpu.home);
    let forward_met = forward_ratio >= FORWARD_THROUGHPUT_TARGET
        && forward_p50 <= micros(FORWARD_P50_TARGET)
        && forward_p99 <= micros(FORWARD_P99_TARGET);
    let nginx_met = nginx_ratio >= NGINX_TARGET;
    let errors: u64 = results.values().map(|s| s.errors).sum();

    println!(
        "CPU layout: {}; hop between entry and home: {}{}",
        Pinning::describe(pinning),
        args.hop.name(),
        args.hop
            .http1_connections(args.hop_http1_connections)
            .map_or_else(String::new, |n| format!(
                " ({n} HTTP/1.1 connections, then HTTP/2)"
            ))
    );
    println!(
        "{:<38} {:>8} {:>10} {:>10} {:>10} {:>11}",
        "case", "clients", "req/s", "p50 µs", "p99 µs", "hop cpu µs"
    );
    for case in Case::ALL {
        let summary = get(case);
        let clients = match case {
            Case::Nginx | Case::ForwardedSaturated => args.saturating_clients,
            _ => args.clients,
        };
        // The CPU of the hop under test: the router in front of the handler, the entry
        // node, or nginx.
        let hop = match case {
            Case::BareHandler | Case::Direct => Duration::ZERO,
            Case::LocalThroughRouter => summary.cpu.home,
            Case::Forwarded | Case::ForwardedSaturated => summary.cpu.entry,
            Case::Nginx | Case::NginxAtForwardingLoad => summary.cpu.nginx,
        };
        println!(
            "{:<38} {clients:>8} {:>10.0} {:>10.0} {:>10.0} {:>11.1}",
            case.name(),
            summary.per_sec,
            micros(summary.p50),
            micros(summary.p99),
            summary.cpu_us(hop)
        );
    }
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!(
        "(a) router on a local tenant: added p50 {:+.0} µs, p99 {:+.0} µs",
        added_micros(local.p50, bare.p50),
        added_micros(local.p99, bare.p99)
    );
    println!(
        "(b) forwarded / direct: throughput {forward_ratio:.2} (target ≥{FORWARD_THROUGHPUT_TARGET}), added p50 {forward_p50:+.0} µs (≤{}), p99 {forward_p99:+.0} µs (≤{})  {}",
        micros(FORWARD_P50_TARGET),
        micros(FORWARD_P99_TARGET),
        verdict(forward_met)
    );
    println!(
        "    reference, nginx in front of the same home node at that load: throughput {reference_ratio:.2}, added p50 {reference_p50:+.0} µs, p99 {reference_p99:+.0} µs"
    );
    println!(
        "(c) our hop / nginx: requests/s {nginx_ratio:.2} (target ≥{NGINX_TARGET})  {}",
        verdict(nginx_met)
    );
    println!(
        "    median of {} rounds, each {lowest:.2}…{highest:.2} (the two in turns, {C_TURNS} slices each, ABBA); ratio of the two medians {ratio_of_medians:.2}",
        round_ratios.len()
    );
    println!(
        "    CPU per request (load generator + hop + home): ours {ours_cpu:.1} µs, nginx's {nginx_cpu:.1} µs; nginx's / ours {:.2}",
        nginx_cpu / ours_cpu
    );
    if errors > 0 {
        println!("errors: {errors} requests failed (see the JSON)");
    }

    let report = json!({
        "benchmark": "router",
        "optimized_build": !cfg!(debug_assertions),
        "rounds": args.rounds,
        "seconds_per_round": args.seconds_per_round,
        "clients": args.clients,
        "saturating_clients": args.saturating_clients,
        "handler_ms": args.handler_ms,
        "threads": "home node, entry node and load generator: one current-thread event loop each; nginx: one worker process",
        "cpu_layout": Pinning::describe(pinning),
        "hop_protocol": args.hop.name(),
        "hop_http1_connections": args.hop.http1_connections(args.hop_http1_connections),
        "cases": Case::ALL.iter().map(|&case| (case.key().to_owned(), get(case).json())).collect::<serde_json::Map<_, _>>(),
        "local": {
            "added_p50_us": added_micros(local.p50, bare.p50),
            "added_p99_us": added_micros(local.p99, bare.p99),
        },
        "forwarding": {
            "throughput_ratio": forward_ratio,
            "added_p50_us": forward_p50,
            "added_p99_us": forward_p99,
            "nginx_reference": {
                "throughput_ratio": reference_ratio,
                "added_p50_us": reference_p50,
                "added_p99_us": reference_p99,
            },
            "targets": {
                "throughput_ratio": FORWARD_THROUGHPUT_TARGET,
                "added_p50_us": micros(FORWARD_P50_TARGET),
                "added_p99_us": micros(FORWARD_P99_TARGET),
            },
            "met": forward_met,
        },
        "nginx": {
            "ratio": nginx_ratio,
            "round_ratios": round_ratios,
            "ratio_of_medians": ratio_of_medians,
            "cpu_us_per_request": {"ours": ours_cpu, "nginx": nginx_cpu},
            "target_ratio": NGINX_TARGET,
            "met": nginx_met,
        },
        "errors": errors,
    });
    crate::write_results(&args.output, &report)?;
    anyhow::ensure!(errors == 0, "{errors} requests failed");
    if args.check && !(forward_met && nginx_met) {
        anyhow::bail!("a benchmark target was missed");
    }
    Ok(())
}

/// The home node (router layer + handler, the tenant local), the bare handler, and the
/// entry node (router layer forwarding the tenant home), on their runtimes.
#[derive(Debug)]
struct Topology {
    tenant: TenantId,
    home: SocketAddr,
    bare: SocketAddr,
    entry: SocketAddr,
}

impl Topology {
    async fn start(
        args: &RouterArgs,
        home_runtime: &EventLoop,
        entry_runtime: &EventLoop,
        timer_cpu: Option<usize>,
    ) -> anyhow::Result<Self> {
        let (home_id, entry_id) = (RegionId::parse(HOME)?, RegionId::parse(ENTRY)?);
        let home_listener = TcpListener::bind("127.0.0.1:0").await?;
        let bare_listener = TcpListener::bind("127.0.0.1:0").await?;
        let entry_listener = TcpListener::bind("127.0.0.1:0").await?;
        let (home, bare, entry) = (
            home_listener.local_addr()?,
            bare_listener.local_addr()?,
            entry_listener.local_addr()?,
        );
        let endpoints = |address: SocketAddr| -> anyhow::Result<RegionEndpoints> {
            Ok(RegionEndpoints {
                internal: format!("http://{address}").parse()?,
                public: format!("http://{address}").parse()?,
            })
        };
        let regions = HashMap::from([
            (home_id.clone(), endpoints(home)?),
            (entry_id.clone(), endpoints(entry)?),
        ]);
        let directory = Arc::new(MemoryDirectory::new());
        let tenant = TenantId::from_random_bytes(rand::random());
        directory
            .upsert(&DirectoryEntry {
                tenant,
                home: home_id.clone(),
                allowed: vec![home_id.clone()],
                transit: Transit::Proxy,
                version: 1,
            })
            .await?;
        let handler = Arc::new(HandlerSettings {
            work: Duration::from_secs_f64(args.handler_ms / 1e3),
            delays: Delays::start(timer_cpu)?,
        });
        let node = |region: &RegionId| -> anyhow::Result<_> {
            let cache = CachedDirectory::new(directory.clone(), Duration::from_secs(3600), 1000);
            let signer = ForwardSigner::new(
                ForwardingKey::new(FORWARDING_KEY)?,
                router::DEFAULT_MAX_SKEW,
            );
            let mut config = RouterConfig::new(region.clone(), regions.clone(), cache, signer);
            config.internal_protocol = args.hop.protocol(args.hop_http1_connections);
            // The load generator is one address: its bucket is looked up on every request
            // (the cost is measured) but never runs dry.
            config.client_rate = router::Rate {
                per_second: f64::MAX,
                burst: f64::MAX,
            };
            Ok(router::layer(config).layer(regional_handler(handler.clone())))
        };
        let (home_node, entry_node) = (node(&home_id)?, node(&entry_id)?);
        let bare_app = regional_handler(handler.clone());
        // Served as a node serves (`hop::serve_connections`, the router told each
        // connection's peer); the bare handler as an app without the router is.
        let forever = std::future::pending::<()>;
        let home_node = move |peer| home_node.for_peer(peer);
        let entry_node = move |peer| entry_node.for_peer(peer);
        home_runtime.handle().spawn(hop::serve_connections(
            home_listener,
            api::SERVER_HEAD_LIMITS,
            home_node,
            forever(),
        ));
        home_runtime.handle().spawn(hop::serve_service(
            bare_listener,
            api::SERVER_HEAD_LIMITS,
            bare_app,
            forever(),
        ));
        entry_runtime.handle().spawn(hop::serve_connections(
            entry_listener,
            api::SERVER_HEAD_LIMITS,
            entry_node,
            forever(),
        ));
        Ok(Self {
            tenant,
            home,
            bare,
            entry,
        })
    }
}

#[derive(Debug)]
struct HandlerSettings {
    work: Duration,
    delays: Delays,
}

/// Completes waits at their deadline to the microsecond, from a thread of its own: the
/// handler's "async work". tokio's timer rounds every sleep up to whole milliseconds (a
/// 1 ms sleep takes 1 to 2 ms, and clients in a closed loop fall into step with its
/// ticks), which would swamp the tens of microseconds a hop costs.
#[derive(Debug, Clone)]
struct Delays {
    requests: std::sync::mpsc::Sender<(Instant, tokio::sync::oneshot::Sender<()>)>,
}

impl Delays {
    fn start(cpu: Option<usize>) -> anyhow::Result<Self> {
        let (requests, incoming) =
            std::sync::mpsc::channel::<(Instant, tokio::sync::oneshot::Sender<()>)>();
        spawn_pinned("bench-delays", cpu, move || {
            // Linux makes a thread's timed waits up to 50 µs late by default (timer
            // slack), so that it can group wake-ups. Here that would complete waits
            // that were due apart together, and the handler would answer in bursts
            // that queue at whatever sits in front of it. The work ends when due.
            if let Err(err) = nix::sys::prctl::set_timerslack(1) {
                tracing::warn!(error = %err, "cannot tighten the delay thread's timer slack: waits may end up to 50 µs late");
            }
            let mut pending: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>> =
                std::collections::BinaryHeap::new();
            let mut waiters = HashMap::new();
            let mut next_id = 0u64;
            loop {
                let now = Instant::now();
                while let Some(std::cmp::Reverse((deadline, id))) = pending.peek().copied() {
                    if deadline > now {
                        break;
                    }
                    pending.pop();
                    if let Some(waiter) = waiters.remove(&id) {
                        let _: Result<(), ()> = tokio::sync::oneshot::Sender::send(waiter, ());
                    }
                }
                let received = match pending.peek() {
                    Some(std::cmp::Reverse((deadline, _))) => {
                        incoming.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    }
                    None => incoming
                        .recv()
                        .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
                };
                match received {
                    Ok((deadline, waiter)) => {
                        next_id += 1;
                        pending.push(std::cmp::Reverse((deadline, next_id)));
                        waiters.insert(next_id, waiter);
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        })?;
        Ok(Self { requests })
    }

    async fn wait(&self, work: Duration) {
        let (done, finished) = tokio::sync::oneshot::channel();
        if self.requests.send((Instant::now() + work, done)).is_ok() {
            let _ = finished.await;
        }
    }
}

/// What the regional handler answers: about the size of a small record.
const HANDLER_BODY: &[u8] = br#"{"id":"r1","version":1,"data":{"plan":"pro","age":42,"zip":"10115"},"created_at":"2026-11-22T09:00:00Z","updated_at":"2026-11-22T09:00:00Z"}"#;

/// Stands in for the regional app: answers every tenant path with a small JSON body,
/// after `work` of async waiting on the `slow` collection (a database round trip's worth).
fn regional_handler(settings: Arc<HandlerSettings>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(settings)
}

async fn handle(State(settings): State<Arc<HandlerSettings>>, request: Request) -> Response {
    if request
        .uri()
        .path()
        .contains(&format!("/collections/{SLOW}/"))
        && !settings.work.is_zero()
    {
        settings.delays.wait(settings.work).await;
    }
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        HANDLER_BODY,
    )
        .into_response()
}

fn find_nginx(configured: &Path) -> anyhow::Result<PathBuf> {
    let candidates = [configured.to_path_buf(), PathBuf::from("/usr/sbin/nginx")];
    for candidate in candidates {
        let found = std::process::Command::new(&candidate)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if found {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "bench router compares against nginx, which is missing: install Debian's nginx (`apt-get install nginx`) or name the binary with --nginx"
    )
}

/// Debian's nginx with one worker and a keep-alive upstream pool, `proxy_pass`ing every
/// request to the home node, as a child process stopped (and killed if need be) with the
/// benchmark.
#[derive(Debug)]
struct Nginx {
    address: SocketAddr,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(
        binary: &Path,
        upstream: SocketAddr,
        cpu: Option<usize>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("create nginx's directory")?;
        // nginx binds its own port: take a free one and release it just before.
        let address = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let prefix = dir.path().display();
        // nginx's mask names CPUs from the right: CPU 2 is `100`.
        let affinity = cpu.map_or_else(String::new, |cpu| {
            format!("worker_cpu_affinity 1{};\n", "0".repeat(cpu))
        });
        let config = format!(
            "worker_processes 1;
{affinity}daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    upstream home {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {address};
        location / {{
            proxy_pass http://home;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
}}
"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).context("write nginx.conf")?;
        let mut child = tokio::process::Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                anyhow::bail!("nginx exited at start ({status}): {log}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            address,
            child,
            _dir: dir,
        })
    }

    /// Asks nginx to quit (SIGQUIT: finish, then exit), and kills it if it lingers.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A current-thread tokio runtime driven by a thread of its own, named for its CPU time:
/// one event loop, as nginx's one worker is.
#[derive(Debug)]
struct EventLoop {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EventLoop {
    fn start(name: &str, cpu: Option<usize>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .with_context(|| format!("start the {name} runtime"))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = spawn_pinned(name, cpu, move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
            runtime.shutdown_background();
        })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_measures_every_case_once_and_the_pair_of_c_takes_turns_going_first() {
        let position = |round: usize, case: Case| {
            Case::in_round(round)
                .iter()
                .position(|&c| c == case)
                .expect("every case is in every round")
        };
        for round in 0..4 {
            let cases: std::collections::HashSet<Case> =
                Case::in_round(round).into_iter().collect();
            assert_eq!(cases.len(), Case::ALL.len(), "round {round}: {cases:?}");
            let (nginx, ours) = (
                position(round, Case::Nginx),
                position(round, Case::ForwardedSaturated),
            );
            assert_eq!(nginx.abs_diff(ours), 1, "round {round}: measured together");
            assert_eq!(nginx < ours, round % 2 == 0, "round {round}");
        }
    }

    #[test]
    fn the_pair_of_c_takes_as_many_early_turns_as_late_ones() {
        let order = interleaved(Case::Nginx, Case::ForwardedSaturated, 4);
        use Case::{ForwardedSaturated as Ours, Nginx};
        assert_eq!(order, [Nginx, Ours, Ours, Nginx, Nginx, Ours, Ours, Nginx]);
        // The mean position of each case's slices is the same: a steady drift across
        // the round favours neither.
        let mean = |case: Case| {
            let at: Vec<usize> = (0..order.len()).filter(|&i| order[i] == case).collect();
            at.iter().sum::<usize>() as f64 / at.len() as f64
        };
        assert_eq!(mean(Nginx), mean(Ours));
    }

    #[test]
    fn the_hop_protocol_is_chosen_by_flag_with_http1_then_http2_by_default() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            router: RouterArgs,
        }
        let parse = |args: &[&str]| {
            Command::try_parse_from(std::iter::once("router").chain(args.iter().copied())).map(
                |command| {
                    command
                        .router
                        .hop
                        .protocol(command.router.hop_http1_connections)
                },
            )
        };
        assert_eq!(
            parse(&[]).expect("defaults"),
            hop::InternalProtocol::Http1WithHttp2Overflow {
                http1_connections: hop::DEFAULT_HTTP1_CONNECTIONS
            }
        );
        assert_eq!(
            parse(&["--hop-http1-connections", "4"]).expect("a bound"),
            hop::InternalProtocol::Http1WithHttp2Overflow {
                http1_connections: 4
            }
        );
        assert_eq!(
            parse(&["--hop", "http1"]).expect("http1"),
            hop::InternalProtocol::Http1
        );
        assert_eq!(
            parse(&["--hop", "http2"]).expect("http2"),
            hop::InternalProtocol::Http2
        );
        let refused = parse(&["--hop-http1-connections", "0"]).expect_err("no connections");
        assert!(
            refused.to_string().contains("--hop-http1-connections"),
            "{refused}"
        );
        assert!(parse(&["--hop", "spdy"]).is_err());
    }
}
