//! Three regions in one process through the real node (router, tenant API, PostgreSQL
//! primary and replica, local KMS and object store), every inter-region link behind a
//! delay proxy that adds WAN latency: tenants homed in each region are used through every
//! other region's endpoint; when a home node stops, the other entries answer `503` with
//! `Retry-After`; and nothing about a tenant rests in another region's database or store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use devstack::testing::{TestDatabase, connect};
use envelope::kms::local::LocalKms;
use envelope::objects::local::LocalObjectStore;
use model::RegionId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use service::{AuditKeys, AuditSettings};
use store::{DatabaseSettings, PgEndpoint};

use node::{ApiSettings, Backends, NodeAudit, NodeConfig, Platform, Routing, RunningNode};

const REGIONS: [&str; 3] = ["eu-central-1", "us-east-1", "ap-southeast-1"];
/// Added each way on every inter-region link.
const ONE_WAY: Duration = Duration::from_millis(15);
const OPERATOR: &str = "rso.three-region-test-operator-token-0123456789";

struct Region {
    id: RegionId,
    public: String,
    database: TestDatabase,
    objects: std::path::PathBuf,
    node: Option<RunningNode>,
    _proxy: router::DelayProxyHandle,
}

struct ThreeRegions {
    regions: Vec<Region>,
    /// The deployment's tenant directory, which every region reads.
    directory: Arc<dyn router::Directory>,
    http: reqwest::Client,
    _state: tempfile::TempDir,
}

/// The inter-region secret every region signs with, in the tests without a rotation.
const SECRET: &str = "a-forwarding-secret-of-at-least-32-bytes";

impl ThreeRegions {
    async fn start() -> Self {
        Self::with_secrets([(SECRET, None); 3]).await
    }

    /// Per region (in `REGIONS` order): the forwarding secret it signs with and another
    /// it also accepts.
    async fn with_secrets(secrets: [(&str, Option<&str>); 3]) -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let directory: Arc<dyn router::Directory> = Arc::new(router::MemoryDirectory::new());
        let mut listeners = Vec::new();
        let mut proxies = Vec::new();
        let mut endpoints = HashMap::new();
        for id in REGIONS {
            let id = RegionId::parse(id).expect("region id");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let node = listener.local_addr().expect("address");
            // Other regions reach this node over the "WAN"; clients call it directly.
            let (_, proxy) =
                router::DelayProxy::start("127.0.0.1:0".parse().expect("addr"), node, ONE_WAY)
                    .await
                    .expect("delay proxy");
            endpoints.insert(
                id.clone(),
                router::RegionEndpoints {
                    internal: format!("http://{}", proxy.address()).parse().expect("uri"),
                    public: format!("http://{node}").parse().expect("uri"),
                },
            );
            listeners.push((id, listener));
            proxies.push(proxy);
        }
        let platform = Platform {
            regions: listeners.iter().map(|(id, _)| id.clone()).collect(),
            operator: service::access::OperatorToken::new(OPERATOR),
            api: ApiSettings {
                max_file_bytes: 16 * 1024 * 1024,
                rate_limit: node::RateLimit {
                    per_second: 10_000.0,
                    burst: 10_000.0,
                },
                // Every test client is one loopback address.
                client_rate: router::Rate {
                    per_second: 100_000.0,
                    burst: 100_000.0,
                },
                // Few, so that requests at once between the regions also take HTTP/2.
                internal_protocol: node::InternalProtocol::Http1WithHttp2Overflow {
                    http1_connections: 2,
                },
                metrics_access: node::MetricsAccess::default(),
                jobs: node::JobSettings::default(),
                key_policy: service::key_policy::KeyPolicy::default(),
                shutdown: node::ShutdownSettings::default(),
            },
            routing: Some(Routing {
                regions: endpoints,
                directory: directory.clone(),
                forwarding_secret: catalog::Secret::new(SECRET.into()),
                previous_forwarding_secret: None,
                behind_load_balancer: false,
            }),
        };
        let mut regions = Vec::new();
        for (((id, listener), proxy), (secret, previous)) in
            listeners.into_iter().zip(proxies).zip(secrets)
        {
            let mut platform = platform.clone();
            if let Some(routing) = &mut platform.routing {
                routing.forwarding_secret = catalog::Secret::new(secret.into());
                routing.previous_forwarding_secret =
                    previous.map(|p| catalog::Secret::new(p.into()));
            }
            let root = state.path().join(id.as_str());
            std::fs::create_dir_all(&root).expect("region dir");
            let objects = root.join("objects");
            let backends = Backends {
                kms: Arc::new(
                    LocalKms::open_or_create(&root.join("kms"), id.clone()).expect("kms"),
                ),
                objects: Arc::new(LocalObjectStore::new(objects.clone()).expect("object store")),
                audit_objects: Arc::new(
                    LocalObjectStore::new(root.join("audit-bucket")).expect("audit bucket"),
                ),
            };
            let database = TestDatabase::create(None).await;
            let settings = DatabaseSettings::new(
                PgEndpoint::new("primary", database.node_primary.clone()),
                vec![PgEndpoint::new("replica-1", database.node_replica.clone())],
            )
            .with_owner(PgEndpoint::new("owner", database.primary.clone()));
            let audit = NodeAudit {
                keys: AuditKeys::generate(id.clone()),
                settings: AuditSettings::default(),
            };
            let public = format!("http://{}", listener.local_addr().expect("address"));
            let node = node::start(
                NodeConfig {
                    region: id.clone(),
                    database: settings,
                    backends,
                    audit,
                    platform: platform.clone(),
                },
                listener,
            )
            .await
            .unwrap_or_else(|err| panic!("start the {id} node: {err:#}"));
            regions.push(Region {
                id,
                public,
                database,
                objects,
                node: Some(node),
                _proxy: proxy,
            });
        }
        Self {
            regions,
            directory,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            _state: state,
        }
    }

    fn region(&self, id: &str) -> &Region {
        self.regions
            .iter()
            .find(|region| region.id.as_str() == id)
            .expect("a region of the test")
    }

    async fn call(
        &self,
        entry: &str,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.region(entry).public))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("send")
    }

    async fn stop(&mut self, id: &str) {
        let region = self
            .regions
            .iter_mut()
            .find(|region| region.id.as_str() == id)
            .expect("region");
        if let Some(node) = region.node.take() {
            node.stop().await.expect("stop the node");
        }
    }
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// A tenant created through `entry`, homed in `home`, with a collection.
struct Tenant {
    id: String,
    home: &'static str,
    admin: String,
}

async fn create_tenant(platform: &ThreeRegions, entry: &str, home: &'static str) -> Tenant {
    let created = platform
        .call(
            entry,
            Method::POST,
            "/v1/tenants",
            OPERATOR,
            Some(json!({"name": format!("Tenant of {home}"), "home_region": home})),
        )
        .await;
    assert_eq!(
        created.status(),
        StatusCode::CREATED,
        "create through {entry}"
    );
    assert_eq!(header(&created, "x-residency-region"), home);
    let created: Value = created.json().await.expect("tenant");
    let tenant = Tenant {
        id: created["id"].as_str().expect("id").to_owned(),
        home,
        admin: created["admin_key"].as_str().expect("key").to_owned(),
    };
    let schema = json!({
        "fields": {
            "email": {"type": "string", "class": "identifier", "searchable": true},
            "plan": {"type": "string", "class": "public"}
        },
        "required": ["email"]
    });
    let put = platform
        .call(
            entry,
            Method::PUT,
            &format!("/v1/tenants/{}/collections/people", tenant.id),
            &tenant.admin,
            Some(schema),
        )
        .await;
    assert_eq!(put.status(), StatusCode::CREATED);
    tenant
}

/// Create, read (with the token), update with `If-Match`, search, a file both ways and a
/// delete, all through `entry`; every answer says it came from the home, via the entry.
async fn use_through(platform: &ThreeRegions, tenant: &Tenant, entry: &str) {
    let base = format!("/v1/tenants/{}/collections/people/records", tenant.id);
    let email = format!("marker-{}-{entry}@example.com", tenant.home);
    let started = Instant::now();
    let created = platform
        .call(
            entry,
            Method::POST,
            &base,
            &tenant.admin,
            Some(json!({"data": {"email": email, "plan": "pro"}})),
        )
        .await;
    assert!(
        started.elapsed() >= 2 * ONE_WAY,
        "a forwarded request crosses the WAN link both ways"
    );
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(header(&created, "x-residency-region"), tenant.home);
    assert_eq!(header(&created, "x-residency-via"), entry);
    let token = header(&created, "x-consistency-token").to_owned();
    let record: Value = created.json().await.expect("record");
    let id = record["id"].as_str().expect("id").to_owned();
    let path = format!("{base}/{id}");

    let read = platform
        .http
        .get(format!("{}{path}", platform.region(entry).public))
        .bearer_auth(&tenant.admin)
        .header("x-consistency-token", &token)
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(header(&read, "x-residency-region"), tenant.home);
    assert_eq!(header(&read, "x-residency-via"), entry);
    assert!(!header(&read, "x-served-by").is_empty());
    let read: Value = read.json().await.expect("record");
    assert_eq!(read["data"]["email"], email.as_str());

    let updated = platform
        .http
        .put(format!("{}{path}", platform.region(entry).public))
        .bearer_auth(&tenant.admin)
        .header("if-match", "\"1\"")
        .json(&json!({"data": {"email": email, "plan": "team"}}))
        .send()
        .await
        .expect("update");
    assert_eq!(updated.status(), StatusCode::OK);
    let token = header(&updated, "x-consistency-token").to_owned();
    let stale = platform
        .http
        .put(format!("{}{path}", platform.region(entry).public))
        .bearer_auth(&tenant.admin)
        .header("if-match", "\"1\"")
        .json(&json!({"data": {"email": email}}))
        .send()
        .await
        .expect("stale update");
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);

    // Read-your-writes: the search carries the update's token, so a lagging replica is
    // not asked before it has replayed it.
    let found = platform
        .http
        .get(format!(
            "{}{base}?email={email}",
            platform.region(entry).public
        ))
        .bearer_auth(&tenant.admin)
        .header("x-consistency-token", &token)
        .send()
        .await
        .expect("search");
    assert_eq!(found.status(), StatusCode::OK);
    let found: Value = found.json().await.expect("page");
    assert_eq!(
        found["records"].as_array().map(Vec::len),
        Some(1),
        "{found}"
    );

    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let put = platform
        .http
        .put(format!(
            "{}{path}/files/scan.bin",
            platform.region(entry).public
        ))
        .bearer_auth(&tenant.admin)
        .body(content.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(put.status(), StatusCode::CREATED);
    let token = header(&put, "x-consistency-token").to_owned();
    let got = platform
        .http
        .get(format!(
            "{}{path}/files/scan.bin",
            platform.region(entry).public
        ))
        .bearer_auth(&tenant.admin)
        .header("x-consistency-token", &token)
        .send()
        .await
        .expect("download");
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(header(&got, "x-residency-region"), tenant.home);
    assert_eq!(
        got.bytes().await.expect("bytes").as_ref(),
        content.as_slice()
    );

    // A second record, deleted (with its file) through the entry.
    let doomed = platform
        .call(
            entry,
            Method::POST,
            &base,
            &tenant.admin,
            Some(json!({"data": {"email": format!("doomed-{email}")}})),
        )
        .await;
    assert_eq!(doomed.status(), StatusCode::CREATED);
    let doomed: Value = doomed.json().await.expect("record");
    let doomed = format!("{base}/{}", doomed["id"].as_str().expect("id"));
    let put = platform
        .http
        .put(format!(
            "{}{doomed}/files/doomed.bin",
            platform.region(entry).public
        ))
        .bearer_auth(&tenant.admin)
        .body(vec![7u8; 1000])
        .send()
        .await
        .expect("upload");
    assert_eq!(put.status(), StatusCode::CREATED);
    let deleted = platform
        .call(entry, Method::DELETE, &doomed, &tenant.admin, None)
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = platform
        .http
        .get(format!("{}{doomed}", platform.region(entry).public))
        .bearer_auth(&tenant.admin)
        .header(
            "x-consistency-token",
            header(&deleted, "x-consistency-token"),
        )
        .send()
        .await
        .expect("read after delete");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}

/// Rows of `tenant` in each tenant table of `region`'s database.
async fn rows_of(region: &Region, tenant: &str) -> HashMap<&'static str, i64> {
    let client = connect(region.database.primary.clone()).await;
    let mut counts = HashMap::new();
    for &table in store::TENANT_TABLES {
        let count: i64 = client
            .query_one(
                &format!("select count(*) from {table} where tenant_id = $1"),
                &[&tenant],
            )
            .await
            .unwrap_or_else(|err| panic!("count {table}: {err}"))
            .get(0);
        counts.insert(table, count);
    }
    counts
}

fn objects_in(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() { objects_in(&path) } else { 1 }
        })
        .sum()
}

#[tokio::test]
async fn tenants_of_every_region_work_through_every_other_and_a_dead_home_gives_503_elsewhere() {
    let mut platform = ThreeRegions::start().await;
    let mut tenants = Vec::new();
    for (i, home) in REGIONS.into_iter().enumerate() {
        // Created through the next region's endpoint.
        let entry = REGIONS[(i + 1) % REGIONS.len()];
        tenants.push(create_tenant(&platform, entry, home).await);
    }
    for tenant in &tenants {
        for entry in REGIONS.into_iter().filter(|entry| *entry != tenant.home) {
            use_through(&platform, tenant, entry).await;
        }
    }

    // Each region holds its own tenant and nothing of the others', in the database and
    // in the object store (its tenant's file, one through each of the two other entries;
    // the deleted records' files are gone).
    for region in &platform.regions {
        for tenant in &tenants {
            let rows = rows_of(region, &tenant.id).await;
            if tenant.home == region.id.as_str() {
                assert_eq!(rows["tenants"], 1);
                assert!(rows["audit_events"] > 0);
            } else {
                assert!(
                    rows.values().all(|count| *count == 0),
                    "{} holds rows of a tenant homed in {}: {rows:?}",
                    region.id,
                    tenant.home
                );
            }
        }
        assert_eq!(
            objects_in(&region.objects),
            2,
            "{}: the files of its own tenant's records, and nothing else",
            region.id
        );
    }

    // The US node stops: its tenant gets 503 + Retry-After from the other entries, for
    // reads and writes, and nothing is served or written elsewhere.
    let us = tenants
        .iter()
        .find(|tenant| tenant.home == "us-east-1")
        .expect("a US tenant");
    platform.stop("us-east-1").await;
    let base = format!("/v1/tenants/{}/collections/people/records", us.id);
    for entry in ["eu-central-1", "ap-southeast-1"] {
        let read = platform
            .call(
                entry,
                Method::GET,
                &format!("{base}?plan=pro"),
                &us.admin,
                None,
            )
            .await;
        assert_eq!(
            read.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "read via {entry}"
        );
        assert!(!header(&read, "retry-after").is_empty());
        assert_eq!(header(&read, "x-residency-region"), "us-east-1");
        let write = platform
            .call(
                entry,
                Method::POST,
                &base,
                &us.admin,
                Some(json!({"data": {"email": "while-down@example.com"}})),
            )
            .await;
        assert_eq!(
            write.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "write via {entry}"
        );
        assert!(!header(&write, "retry-after").is_empty());
        let problem: Value = write.json().await.expect("problem");
        assert!(
            !problem.to_string().contains("while-down"),
            "the error never echoes the body: {problem}"
        );
    }
    for entry in ["eu-central-1", "ap-southeast-1"] {
        let rows = rows_of(platform.region(entry), &us.id).await;
        assert!(
            rows.values().all(|count| *count == 0),
            "{entry} holds rows of the US tenant after its home went down: {rows:?}"
        );
    }
    // The other tenants are unaffected.
    let eu = tenants
        .iter()
        .find(|tenant| tenant.home == "eu-central-1")
        .expect("an EU tenant");
    let fine = platform
        .call(
            "ap-southeast-1",
            Method::GET,
            &format!("/v1/tenants/{}/collections/people/records", eu.id),
            &eu.admin,
            None,
        )
        .await;
    assert_eq!(fine.status(), StatusCode::OK);
    for id in ["eu-central-1", "ap-southeast-1"] {
        platform.stop(id).await;
    }
}

#[tokio::test]
async fn forwarded_requests_stay_verified_through_every_step_of_a_secret_rotation() {
    const OLD: &str = "the-old-forwarding-secret-of-32-bytes-or-more";
    const NEW: &str = "the-new-forwarding-secret-of-32-bytes-or-more";
    // Mid-rotation: EU already signs with the new secret, the others still with the old
    // one; every region accepts both. A forwarded request in either direction verifies,
    // so the home names the entry region (`X-Residency-Via`).
    let platform =
        ThreeRegions::with_secrets([(NEW, Some(OLD)), (OLD, Some(NEW)), (OLD, Some(NEW))]).await;
    let eu = create_tenant(&platform, "us-east-1", "eu-central-1").await;
    let us = create_tenant(&platform, "eu-central-1", "us-east-1").await;
    use_through(&platform, &eu, "us-east-1").await;
    use_through(&platform, &us, "eu-central-1").await;
    use_through(&platform, &us, "ap-southeast-1").await;
    drop(platform);

    // A region whose secret nobody accepts is not trusted as an entry: its forwarded
    // requests are still answered by the home (the home serves its own tenants), but the
    // forwarding headers are dropped, so the entry region it claims is not recorded.
    let platform = ThreeRegions::with_secrets([(NEW, None), (OLD, None), (NEW, None)]).await;
    let eu = create_tenant(&platform, "ap-southeast-1", "eu-central-1").await;
    let list = format!("/v1/tenants/{}/collections/people/records", eu.id);
    let untrusted = platform
        .call("us-east-1", Method::GET, &list, &eu.admin, None)
        .await;
    assert_eq!(untrusted.status(), StatusCode::OK);
    let trusted = platform
        .call("ap-southeast-1", Method::GET, &list, &eu.admin, None)
        .await;
    assert_eq!(trusted.status(), StatusCode::OK);
    // What the home believed is in its audit log.
    let auditor = platform
        .call(
            "eu-central-1",
            Method::POST,
            &format!("/v1/tenants/{}/api-keys", eu.id),
            &eu.admin,
            Some(json!({"name": "audit", "role": "auditor"})),
        )
        .await;
    assert_eq!(auditor.status(), StatusCode::CREATED);
    let auditor: Value = auditor.json().await.expect("key");
    let auditor = auditor["key"].as_str().expect("key");
    // Read events are written in batches: wait for both.
    let deadline = Instant::now() + Duration::from_secs(10);
    let vias = loop {
        let events = platform
            .call(
                "eu-central-1",
                Method::GET,
                &format!("/v1/tenants/{}/audit/events?action=record.search", eu.id),
                auditor,
                None,
            )
            .await;
        let events: Value = events.json().await.expect("events");
        let vias: Vec<String> = events["events"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|event| event["via_region"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if vias.len() >= 2 || Instant::now() > deadline {
            break vias;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        vias,
        ["eu-central-1", "ap-southeast-1"],
        "the entry with an unaccepted secret is not believed; the other is"
    );
}

/// One HTTP/1.1 GET written by hand, so that the request carries exactly the header fields
/// given (an HTTP client adds its own, which vary with its features): the status, the
/// response's header lines (lowercase) and its body.
async fn raw_get(base: &str, path: &str, fields: &[(String, String)]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = base.trim_start_matches("http://");
    let mut head = format!("GET {path} HTTP/1.1\r\n");
    for (name, value) in fields {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, head.to_lowercase(), body.to_owned())
}

#[tokio::test]
async fn a_request_head_is_accepted_or_refused_alike_where_it_is_served_and_where_it_is_forwarded()
{
    use wire::limits::{CLIENT_MAX_HEAD_BYTES, CLIENT_MAX_HEADERS};
    let platform = ThreeRegions::start().await;
    let eu = create_tenant(&platform, "us-east-1", "eu-central-1").await;
    let path = format!("/v1/tenants/{}/collections/people", eu.id);
    // Host, authorization and connection, then `extra` fields and one of `big` bytes.
    let fields = |extra: usize, big: usize| {
        let mut fields = vec![
            ("Host".to_owned(), "residency.test".to_owned()),
            ("Authorization".to_owned(), format!("Bearer {}", eu.admin)),
            ("Connection".to_owned(), "close".to_owned()),
        ];
        fields.extend((0..extra).map(|i| (format!("x-extra-{i}"), "1".to_owned())));
        if big > 0 {
            fields.push(("x-big".to_owned(), "a".repeat(big)));
        }
        fields
    };
    // Forwarded home by another region, and served in the home region.
    for entry in ["us-east-1", "eu-central-1"] {
        let base = &platform.region(entry).public;
        let (status, head, _) = raw_get(base, &path, &fields(CLIENT_MAX_HEADERS - 3, 0)).await;
        assert_eq!(
            status, 200,
            "{entry}: {CLIENT_MAX_HEADERS} fields are served"
        );
        assert!(head.contains("x-residency-region: eu-central-1"), "{head}");
        let (status, _, _) = raw_get(base, &path, &fields(0, CLIENT_MAX_HEAD_BYTES - 4096)).await;
        assert_eq!(
            status, 200,
            "{entry}: a head just under {CLIENT_MAX_HEAD_BYTES} bytes is served"
        );

        for (extra, big, why) in [
            (CLIENT_MAX_HEADERS - 3 + 1, 0, "one field too many"),
            (0, CLIENT_MAX_HEAD_BYTES, "a head too large"),
        ] {
            let (status, head, body) = raw_get(base, &path, &fields(extra, big)).await;
            assert_eq!(status, 431, "{entry}: {why}");
            assert!(
                head.contains("content-type: application/problem+json"),
                "{entry}: {why}: {head}"
            );
            assert!(head.contains("x-request-id: "), "{entry}: {why}: {head}");
            let problem: Value = serde_json::from_str(&body).expect("a problem document");
            assert_eq!(
                problem["type"], "https://residency.dev/problems/request-header-fields-too-large",
                "{entry}: {why}: {problem}"
            );
        }
    }
}

#[tokio::test]
async fn a_key_learns_nothing_about_other_tenants_from_any_region() {
    let platform = ThreeRegions::start().await;
    let eu = create_tenant(&platform, "eu-central-1", "eu-central-1").await;
    let eu_neighbour = create_tenant(&platform, "us-east-1", "eu-central-1").await;
    let ap = create_tenant(&platform, "us-east-1", "ap-southeast-1").await;
    let nobody = model::TenantId::from_random_bytes([7; 16]).to_string();
    let forged = format!("rsk.{}.0000000000000000.not-the-secret", ap.id);
    for entry in REGIONS {
        // EU's key asks about a tenant of its own region, one of another region, and one
        // that does not exist: the same answer for all three, from every entry.
        for (other, what) in [
            (&eu_neighbour.id, "a tenant of the key's region"),
            (&ap.id, "a tenant of another region"),
            (&nobody, "no tenant"),
        ] {
            let response = platform
                .call(
                    entry,
                    Method::GET,
                    &format!("/v1/tenants/{other}/collections/people"),
                    &eu.admin,
                    None,
                )
                .await;
            assert_eq!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{entry}, {what}: another tenant's key is told nothing exists"
            );
            let problem: Value = response.json().await.expect("problem");
            assert_eq!(problem["detail"], "tenant not found", "{entry}, {what}");
        }
        // A key that names the path's tenant but is not one of its keys is refused as
        // unauthenticated, from every entry.
        let response = platform
            .call(
                entry,
                Method::GET,
                &format!("/v1/tenants/{}/collections/people", ap.id),
                &forged,
                None,
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{entry}: forged key"
        );
    }
}

#[test]
fn a_node_forwards_in_http1_then_http2_by_default() {
    assert_eq!(
        ApiSettings::default().internal_protocol,
        hop::InternalProtocol::Http1WithHttp2Overflow {
            http1_connections: hop::DEFAULT_HTTP1_CONNECTIONS
        }
    );
}

#[tokio::test]
async fn an_offboarded_tenant_answers_404_through_every_region_at_once_then_leaves_the_directory() {
    let platform = ThreeRegions::start().await;
    let tenant = create_tenant(&platform, "eu-central-1", "us-east-1").await;
    let base = format!("/v1/tenants/{}", tenant.id);
    let created = platform
        .call(
            "ap-southeast-1",
            Method::POST,
            &format!("{base}/collections/people/records"),
            &tenant.admin,
            Some(json!({"data": {"email": "gone@example.com"}})),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let record: Value = created.json().await.expect("record");
    let record_path = format!(
        "{base}/collections/people/records/{}",
        record["id"].as_str().expect("id")
    );

    // Through a region that is not the home.
    let deleted = platform
        .call("ap-southeast-1", Method::DELETE, &base, OPERATOR, None)
        .await;
    assert_eq!(deleted.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&deleted, "x-residency-region"), "us-east-1");
    let status: Value = deleted.json().await.expect("status");
    assert_eq!(status, json!({"status": "offboarding"}));

    let paths = [
        (Method::GET, base.clone(), OPERATOR),
        (Method::GET, record_path.clone(), tenant.admin.as_str()),
        (
            Method::GET,
            format!("{base}/collections/people/records"),
            &tenant.admin,
        ),
        (
            Method::GET,
            format!("{base}/collections/people"),
            &tenant.admin,
        ),
        (Method::GET, format!("{base}/audit/events"), &tenant.admin),
        (Method::GET, format!("{base}/residency"), &tenant.admin),
    ];
    for entry in REGIONS {
        for (method, path, token) in &paths {
            let answer = platform
                .call(entry, method.clone(), path, token, None)
                .await;
            assert_eq!(
                answer.status(),
                StatusCode::NOT_FOUND,
                "{method} {path} through {entry}"
            );
        }
    }

    // Once purged, the certificate is at the home and the directory has no entry (the
    // other regions' routers drop their cached one within the directory TTL; meanwhile
    // they forward to the home's 404).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = platform
            .call(
                "us-east-1",
                Method::GET,
                &format!("{base}/offboarding"),
                OPERATOR,
                None,
            )
            .await;
        if answer.status() == StatusCode::OK {
            break;
        }
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        assert!(Instant::now() < deadline, "the purge did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for entry in REGIONS {
        let answer = platform
            .call(entry, Method::GET, &record_path, &tenant.admin, None)
            .await;
        assert_eq!(answer.status(), StatusCode::NOT_FOUND, "through {entry}");
    }
    let id = model::TenantId::parse(&tenant.id).expect("tenant id");
    assert_eq!(platform.directory.lookup(&id).await.expect("lookup"), None);
}
