//! The edge under abuse, end to end: two regions in this process with the production
//! limits (`ApiSettings::default()`), a tenant homed in one, an attacker at another
//! loopback address who knows the tenant's id and one of its key ids, flooding both
//! regions' endpoints while the tenant's own client keeps reading. What must hold: every
//! legitimate read answers 200 throughout; the tenant's audit chain gains at most one
//! denial event per reason and minute, with nothing the attacker wrote in it; the flood
//! costs the databases a bounded handful of transactions however many requests it sends;
//! a known key id cannot lock its key out; forged consistency tokens do not take the
//! replica out of rotation; `/readyz` floods, slowloris heads, partial HTTP/2 prefaces and
//! rapid resets do not stop the node serving.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::testing::{TestDatabase, connect};
use model::RegionId;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use node::{ApiSettings, Platform, Routing, RunningNode};

use crate::support::{local_kms, node_config};

const HOME: &str = "us-east-1";
const ENTRY: &str = "eu-central-1";
const OPERATOR: &str = "rso.abuse-suite-test-operator-token-0123456789abc";
const SECRET: &str = "an-abuse-suite-forwarding-secret-of-32-bytes";
/// What the attacker writes wherever it can; it must turn up in no audit event.
const MARKER: &str = "ATTACKERTEXT7f3a";
/// The attacker's own loopback address (the tenant's client is 127.0.0.1).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// How long each measured window lasts.
const WINDOW: Duration = Duration::from_secs(3);

struct Region {
    id: RegionId,
    public: String,
    database: TestDatabase,
    node: Option<RunningNode>,
}

/// Two regions with production limits, and the target tenant homed in [`HOME`].
struct Edge {
    regions: Vec<Region>,
    tenant: String,
    /// The tenant's reader key, whose id the attacker knows (a key id is not a secret).
    reader: String,
    reader_key_id: String,
    record: String,
    legit: reqwest::Client,
    attacker: reqwest::Client,
    _state: tempfile::TempDir,
}

impl Edge {
    async fn start() -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let directory: Arc<dyn router::Directory> = Arc::new(router::MemoryDirectory::new());
        let mut listeners = Vec::new();
        let mut endpoints = HashMap::new();
        for id in [HOME, ENTRY] {
            let id = RegionId::parse(id).expect("region id");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("address"));
            endpoints.insert(
                id.clone(),
                router::RegionEndpoints {
                    internal: url.parse().expect("uri"),
                    public: url.parse().expect("uri"),
                },
            );
            listeners.push((id, listener, url));
        }
        let platform = Platform {
            regions: listeners.iter().map(|(id, _, _)| id.clone()).collect(),
            operator: service::access::OperatorToken::new(OPERATOR),
            api: ApiSettings::default(),
            routing: Some(Routing {
                regions: endpoints,
                directory,
                forwarding_secret: catalog::Secret::new(SECRET.into()),
                previous_forwarding_secret: None,
                behind_load_balancer: false,
            }),
        };
        let mut regions = Vec::new();
        for (id, listener, public) in listeners {
            let root = state.path().join(id.as_str());
            let database = TestDatabase::create(None).await;
            let node = node::start(
                node_config(
                    &id,
                    &database,
                    local_kms(&root, &id),
                    &root,
                    platform.clone(),
                ),
                listener,
            )
            .await
            .unwrap_or_else(|err| panic!("start the {id} node: {err:#}"));
            regions.push(Region {
                id,
                public,
                database,
                node: Some(node),
            });
        }
        let legit = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let attacker = reqwest::Client::builder()
            .local_address(IpAddr::V4(ATTACKER))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let home = regions[0].public.clone();
        let created: Value = send(
            legit
                .post(format!("{home}/v1/tenants"))
                .bearer_auth(OPERATOR)
                .json(&json!({"name": "Target Org", "home_region": HOME})),
            StatusCode::CREATED,
        )
        .await;
        let tenant = created["id"].as_str().expect("id").to_owned();
        let admin = created["admin_key"].as_str().expect("admin key").to_owned();
        let base = format!("{home}/v1/tenants/{tenant}");
        send(
            legit
                .put(format!("{base}/collections/people"))
                .bearer_auth(&admin)
                .json(&wire::examples::collection_schema()),
            StatusCode::CREATED,
        )
        .await;
        let record: Value = send(
            legit
                .post(format!("{base}/collections/people/records"))
                .bearer_auth(&admin)
                .json(&json!({"data": {"email": "ada@example.org", "age": 36}})),
            StatusCode::CREATED,
        )
        .await;
        // Reads without a consistency token may go to the replica: wait until it has
        // the record, so that every read of the test can be held to 200.
        let record_url = format!(
            "{base}/collections/people/records/{}",
            record["id"].as_str().expect("id")
        );
        let replayed = Instant::now();
        while legit
            .get(&record_url)
            .bearer_auth(&admin)
            .send()
            .await
            .expect("read")
            .status()
            != StatusCode::OK
        {
            assert!(
                replayed.elapsed() < Duration::from_secs(10),
                "the replica never had the record"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let reader: Value = send(
            legit
                .post(format!("{base}/api-keys"))
                .bearer_auth(&admin)
                .json(&json!({"name": "reader", "role": "reader"})),
            StatusCode::CREATED,
        )
        .await;
        let reader = reader["key"].as_str().expect("key").to_owned();
        Self {
            regions,
            tenant,
            reader_key_id: reader.split('.').nth(2).expect("key id").to_owned(),
            reader,
            record: record["id"].as_str().expect("id").to_owned(),
            legit,
            attacker,
            _state: state,
        }
    }

    fn public(&self, region: &str) -> &str {
        &self.region(region).public
    }

    fn region(&self, id: &str) -> &Region {
        self.regions
            .iter()
            .find(|region| region.id.as_str() == id)
            .expect("a region of the test")
    }

    fn record_url(&self, region: &str) -> String {
        format!(
            "{}/v1/tenants/{}/collections/people/records/{}",
            self.public(region),
            self.tenant,
            self.record
        )
    }

    /// The tenant's client reading its record through both regions, `reads` times at a
    /// steady pace over [`WINDOW`]; panics on any answer but 200.
    async fn read_steadily(&self, reads: u32) -> Vec<String> {
        let pause = WINDOW / reads;
        let mut served_by = Vec::new();
        for n in 0..reads {
            let region = if n % 2 == 0 { HOME } else { ENTRY };
            let response = self
                .legit
                .get(self.record_url(region))
                .bearer_auth(&self.reader)
                .send()
                .await
                .expect("a legitimate read gets an answer");
            let status = response.status();
            let header = response
                .headers()
                .get("x-served-by")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(
                status,
                StatusCode::OK,
                "legitimate read {n} via {region}: {body}"
            );
            served_by.push(header);
            tokio::time::sleep(pause).await;
        }
        served_by
    }

    /// Transactions committed or rolled back in both regions' databases, primaries and
    /// replicas (this test's databases only: other tests share the servers).
    async fn transactions(&self) -> i64 {
        let mut total = 0;
        for region in &self.regions {
            for config in [&region.database.primary, &region.database.replica] {
                let client = connect(config.clone()).await;
                client
                    .batch_execute("select pg_stat_clear_snapshot()")
                    .await
                    .expect("clear the statistics snapshot");
                let row = client
                    .query_one(
                        "select (xact_commit + xact_rollback)::bigint from pg_stat_database
                         where datname = $1",
                        &[&region.database.name],
                    )
                    .await
                    .expect("read pg_stat_database");
                total += row.get::<_, i64>(0);
            }
        }
        total
    }

    /// Transactions during one [`WINDOW`] in which the tenant's client reads as always,
    /// and `flood` runs alongside; statistics are flushed by the servers within a second,
    /// so each count is read after a pause.
    async fn window_transactions<F>(&self, flood: F) -> (i64, F::Output)
    where
        F: std::future::Future,
    {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let before = self.transactions().await;
        let (_, flooded) = tokio::join!(self.read_steadily(30), flood);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        (self.transactions().await - before, flooded)
    }

    async fn stop_all(&mut self) {
        for region in &mut self.regions {
            if let Some(node) = region.node.take() {
                node.stop().await.expect("stop the node");
            }
        }
    }
}

async fn send(request: reqwest::RequestBuilder, expected: StatusCode) -> Value {
    let response = request.send().await.expect("send");
    let status = response.status();
    let body = response.text().await.expect("body");
    assert_eq!(status, expected, "{body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn random_hex(bytes: usize) -> String {
    hex::encode((0..bytes).map(|_| rand::random::<u8>()).collect::<Vec<_>>())
}

fn random_tenant() -> String {
    let hex = random_hex(16);
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// A well-formed API key token nobody issued: `tenant`'s, under `key_id`.
fn junk_key(tenant: &str, key_id: &str) -> String {
    // 43 characters of the base64url alphabet: 32 bytes once decoded.
    format!("rsk.{tenant}.{key_id}.{}", &random_hex(22)[..43])
}

/// One junk request of the `n`th kind, aimed at `edge`'s tenant or at random tenants,
/// at `region`'s endpoint.
fn junk_request(edge: &Edge, region: &str, n: usize) -> reqwest::RequestBuilder {
    let public = edge.public(region);
    let target = format!("{public}/v1/tenants/{}", edge.tenant);
    let (url, token) = match n % 6 {
        0 => (
            edge.record_url(region),
            Some(junk_key(&edge.tenant, &random_hex(8))),
        ),
        1 => (
            edge.record_url(region),
            Some(junk_key(&edge.tenant, &edge.reader_key_id)),
        ),
        2 => (edge.record_url(region), Some(format!("{MARKER}-{n}"))),
        3 => {
            let tenant = random_tenant();
            (
                format!("{public}/v1/tenants/{tenant}/collections/people/records/x"),
                Some(junk_key(&tenant, &random_hex(8))),
            )
        }
        4 => (
            format!(
                "{target}/collections/{MARKER}{}/records/x",
                "A".repeat(4096)
            ),
            Some(junk_key(&edge.tenant, &random_hex(8))),
        ),
        _ => (edge.record_url(region), None),
    };
    let mut request = edge
        .attacker
        .get(url)
        .header("x-request-id", format!("{MARKER}{n}"))
        .header("user-agent", MARKER);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
}

/// Sends junk for [`WINDOW`] to both regions, `concurrency` requests at a time; returns
/// how many were answered, by status.
async fn flood(edge: &Edge, concurrency: usize) -> HashMap<u16, usize> {
    let until = Instant::now() + WINDOW;
    let workers = (0..concurrency).map(|worker| async move {
        let mut statuses: HashMap<u16, usize> = HashMap::new();
        let mut n = worker;
        while Instant::now() < until {
            let region = if n % 2 == 0 { HOME } else { ENTRY };
            if let Ok(response) = junk_request(edge, region, n).send().await {
                *statuses.entry(response.status().as_u16()).or_default() += 1;
            }
            n += concurrency;
        }
        statuses
    });
    let mut total: HashMap<u16, usize> = HashMap::new();
    for statuses in futures::future::join_all(workers).await {
        for (status, count) in statuses {
            *total.entry(status).or_default() += count;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_junk_flood_through_both_regions_leaves_the_tenant_served_its_chain_clean_and_the_databases_idle()
 {
    let mut edge = Edge::start().await;

    let (quiet, ()) = edge.window_transactions(async {}).await;
    let (flooded, statuses) = edge.window_transactions(flood(&edge, 24)).await;
    let junk: usize = statuses.values().sum();
    assert!(junk >= 1000, "the flood sent {junk} requests: {statuses:?}");
    assert!(
        statuses
            .keys()
            .all(|status| [401, 404, 429, 503].contains(status)),
        "junk gets refusals only: {statuses:?}"
    );
    // The attacker's own shares: 20 key lookups a second (40 at once) and 5 directory
    // lookups a second (20 at once), at each of the two nodes that see its address; the
    // rest of the flood costs no query at all.
    let seconds = WINDOW.as_secs() as i64 + 1;
    let bound = 2 * ((40 + 20 * seconds) + (20 + 5 * seconds)) + 20;
    let extra = flooded - quiet;
    assert!(
        extra <= bound,
        "{junk} junk requests cost {extra} database transactions over the quiet window's {quiet} (bound {bound})"
    );

    // The reader's key id was in a third of the flood, with wrong secrets: its holder was
    // never refused (`read_steadily` asserts every read answered 200).

    edge.stop_all().await;
    let home = connect(edge.region(HOME).database.primary.clone()).await;
    let rows = home
        .query(
            "select resource from audit_events where tenant_id = $1 and action = 'auth.failed'",
            &[&edge.tenant],
        )
        .await
        .expect("read the chain");
    let mut by_reason: HashMap<String, usize> = HashMap::new();
    for row in &rows {
        let resource: String = row.get(0);
        let reason = resource.split('?').next().unwrap_or_default().to_owned();
        *by_reason.entry(reason).or_default() += 1;
    }
    assert!(!by_reason.is_empty(), "the denials were recorded");
    assert!(
        by_reason.values().all(|&events| events <= 2),
        "at most one event per reason and minute (the flood may straddle a minute): {by_reason:?}"
    );
    for region in &edge.regions {
        let client = connect(region.database.primary.clone()).await;
        let row = client
            .query_one(
                "select count(*) from audit_events
                 where strpos(resource || actor_id || request_id || action, $1) > 0",
                &[&MARKER],
            )
            .await
            .expect("search the chains");
        assert_eq!(
            row.get::<_, i64>(0),
            0,
            "{}: no event holds the attacker's text",
            region.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_floods_forged_tokens_and_abusive_connections_leave_reads_on_the_replica() {
    let mut edge = Edge::start().await;
    let home = edge.public(HOME).to_owned();
    let address: SocketAddr = home.trim_start_matches("http://").parse().expect("address");

    // Held open throughout: slowloris heads, partial HTTP/2 prefaces.
    let mut held = Vec::new();
    for n in 0..100 {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let opening: &[u8] = if n % 2 == 0 {
            b"GET /v1/tenants HTTP/1.1\r\nHost: x\r\nX-Slow: "
        } else {
            b"PRI * HTTP/2.0\r\n"
        };
        stream.write_all(opening).await.expect("write");
        held.push(stream);
    }

    // The attacker floods `/readyz` (its address meets the router's limit: 429), while
    // the load balancer's health check, from another address, always finds it ready.
    let readyz = async {
        let until = Instant::now() + WINDOW;
        let mut answered = 0;
        while Instant::now() < until {
            let batch = (0..16).map(|_| edge.attacker.get(format!("{home}/readyz")).send());
            for response in futures::future::join_all(batch).await {
                let response = response.expect("readyz answers");
                let status = response.status();
                assert!(
                    [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS].contains(&status),
                    "{status}"
                );
                let body = response.text().await.expect("body");
                assert!(
                    !body.contains("\"address\""),
                    "no address to strangers: {body}"
                );
                answered += 1;
            }
        }
        answered
    };
    let health_checks = async {
        let until = Instant::now() + WINDOW;
        let mut checks = 0;
        while Instant::now() < until {
            let ready: Value = send(edge.legit.get(format!("{home}/readyz")), StatusCode::OK).await;
            assert_eq!(ready["status"], "ready", "{ready}");
            checks += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        checks
    };
    let forged = async {
        let until = Instant::now() + WINDOW;
        let mut refused = 0;
        while Instant::now() < until {
            let token = format!("v2.{HOME}.FFFFFFFF/FFFFFFFF.{}", random_hex(16));
            let response = edge
                .legit
                .get(edge.record_url(HOME))
                .bearer_auth(&edge.reader)
                .header("x-consistency-token", token)
                .send()
                .await
                .expect("send");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "forged token");
            refused += 1;
        }
        refused
    };
    let rapid_reset = async {
        let mut goaways = 0;
        for _ in 0..5 {
            if rapid_reset_gets_goaway(address).await {
                goaways += 1;
            }
        }
        goaways
    };
    let (served_by, answered, checks, refused, goaways) = tokio::join!(
        edge.read_steadily(60),
        readyz,
        health_checks,
        forged,
        rapid_reset
    );
    assert!(answered >= 100, "{answered} readiness answers");
    assert!(checks >= 10, "{checks} health checks");
    assert!(refused >= 10, "{refused} forged tokens refused");
    assert_eq!(goaways, 5, "every rapid-reset connection is sent GOAWAY");

    // The replica never left rotation: reads without a token kept going to it.
    let on_replica = served_by.iter().filter(|by| *by == "replica").count();
    assert!(
        on_replica * 10 >= served_by.len() * 9,
        "reads stayed on the replica: {served_by:?}"
    );
    let detail: Value = send(
        edge.legit
            .get(format!("{home}/readyz"))
            .bearer_auth(OPERATOR),
        StatusCode::OK,
    )
    .await;
    assert_eq!(detail["checks"]["replicas"][0]["status"], "up", "{detail}");

    drop(held);
    edge.stop_all().await;
}

/// Opens an HTTP/2 connection, opens and resets streams faster than the server takes them
/// up, and reports whether the server answered with `GOAWAY` (`ENHANCE_YOUR_CALM`).
async fn rapid_reset_gets_goaway(address: SocketAddr) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).expect("frame length");
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend_from_slice(&[kind, flags]);
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut burst = PREFACE.to_vec();
    burst.extend(frame(0x4, 0, 0, &[]));
    for n in 0..200u32 {
        let id = 2 * n + 1;
        // HEADERS (END_STREAM | END_HEADERS): GET, http, / from HPACK's static table.
        burst.extend(frame(0x1, 0x5, id, &[0x82, 0x86, 0x84]));
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    if stream.write_all(&burst).await.is_err() {
        return false;
    }
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return false;
            }
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; length];
            if stream.read_exact(&mut payload).await.is_err() {
                return false;
            }
            if head[3] == 0x7 && payload.len() >= 8 {
                return u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]) == 0xb;
            }
        }
    })
    .await;
    read.unwrap_or(false)
}
