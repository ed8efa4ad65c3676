//! The router under abuse: a client address over its rate is refused where it arrives
//! (and a forwarded request counts against the client the entry region signed, not
//! against that region); unknown tenant ids are remembered briefly and cost the shared
//! directory a bounded number of queries while known tenants keep being served; a tenant
//! created on a node is found there at once; a body that does not arrive is answered.

use std::time::Duration;

use anyhow::Result;
use axum::body::Body;
use futures::StreamExt as _;
use http::{Request, StatusCode, header};
use model::{TenantId, Transit};
use router::{DirectoryEntry, DirectoryLimits, ForwardSigner, Forwarded, ForwardingKey, Rate};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::*;

const XFF: &str = "x-forwarded-for";

fn slow_rate(burst: f64) -> Rate {
    Rate {
        per_second: 0.01,
        burst,
    }
}

fn random_tenant() -> TenantId {
    TenantId::from_random_bytes(*uuid::Uuid::new_v4().as_bytes())
}

/// A GET of `path` at `node` from the client `forwarded_for` says (as a load balancer
/// would write it).
async fn get_as(
    cluster: &Cluster,
    node: &str,
    path: &str,
    forwarded_for: &str,
) -> Result<http::Response<Body>> {
    cluster
        .send(
            Request::get(cluster.url(node, path))
                .header(XFF, forwarded_for)
                .body(Body::empty())?,
        )
        .await
}

/// A GET of `path` at `node`, forwarded (signed) by `entry` for `client`.
async fn signed_get(
    cluster: &Cluster,
    node: &str,
    entry: &str,
    client: &str,
    path: &str,
) -> Result<http::Response<Body>> {
    let (mut parts, body) = Request::get(cluster.url(node, path))
        .body(Body::empty())?
        .into_parts();
    ForwardSigner::new(ForwardingKey::new(KEY)?, Duration::from_secs(30)).sign(
        &mut parts,
        &Forwarded {
            entry_region: region(entry),
            client_address: client.to_owned(),
            request_id: uuid::Uuid::new_v4().to_string(),
        },
        &region(node),
    );
    cluster.send(Request::from_parts(parts, body)).await
}

async fn assert_rate_limited(response: http::Response<Body>) -> Result<()> {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(response.headers(), "retry-after")
        .expect("Retry-After")
        .parse()?;
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(
        header(response.headers(), "content-type"),
        Some("application/problem+json")
    );
    let problem = json(response).await?;
    assert_eq!(problem["status"], 429, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("rate-limited")),
        "{problem}"
    );
    Ok(())
}

#[tokio::test]
async fn a_client_address_over_its_rate_gets_429_and_other_addresses_are_still_served() -> Result<()>
{
    let cluster = Cluster::with(Options {
        client_rate: slow_rate(5.0),
        behind_load_balancer: true,
        ..Options::default()
    })
    .await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let path = format!("/v1/tenants/{tenant}/collections/c");

    for _ in 0..5 {
        let response = get_as(&cluster, EU, &path, "203.0.113.7").await?;
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_rate_limited(get_as(&cluster, EU, &path, "203.0.113.7").await?).await?;
    // What a client writes before the load balancer's entry does not make it anyone else.
    assert_rate_limited(get_as(&cluster, EU, &path, "198.51.100.1, 203.0.113.7").await?).await?;
    assert_eq!(
        cluster.hits()[US],
        5,
        "refused at the entry, never forwarded"
    );

    let other = get_as(&cluster, EU, &path, "203.0.113.8").await?;
    assert_eq!(
        other.status(),
        StatusCode::OK,
        "another address has its own bucket"
    );
    assert_eq!(json(other).await?["region"], US);
    // The home vouched for by the entry region learnt the load balancer's client address.
    let forwarded = json(get_as(&cluster, EU, &path, "192.0.2.55").await?).await?;
    assert_eq!(forwarded["forwarded_for"], "192.0.2.55", "{forwarded}");

    let metrics = cluster.metrics(EU);
    assert!(
        metrics.contains(r#"router_limited_total{limit="client_address"} 2"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains("203.0.113"),
        "no address in a label: {metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn without_a_load_balancer_x_forwarded_for_is_ignored() -> Result<()> {
    let cluster = Cluster::with(Options {
        client_rate: slow_rate(3.0),
        ..Options::default()
    })
    .await?;
    let tenant = cluster.tenant(EU, Transit::Proxy).await?;
    let path = format!("/v1/tenants/{tenant}");
    for i in 0..3 {
        let response = get_as(&cluster, EU, &path, &format!("203.0.113.{i}")).await?;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // A new X-Forwarded-For every time, one peer: one bucket.
    assert_rate_limited(get_as(&cluster, EU, &path, "203.0.113.99").await?).await?;
    assert_eq!(cluster.hits()[EU], 3);

    // Forwarded elsewhere, the entry vouches for the peer, not for the header.
    let tenant = cluster.tenant(AP, Transit::Proxy).await?;
    let answer = json(
        get_as(
            &cluster,
            US,
            &format!("/v1/tenants/{tenant}"),
            "203.0.113.50",
        )
        .await?,
    )
    .await?;
    assert_eq!(answer["forwarded_for"], "127.0.0.1", "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_forwarded_request_counts_against_its_signed_client_address() -> Result<()> {
    let cluster = Cluster::with(Options {
        client_rate: slow_rate(3.0),
        ..Options::default()
    })
    .await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let path = format!("/v1/tenants/{tenant}");

    // Every request below comes from one peer (127.0.0.1), as all of a region's do.
    for _ in 0..3 {
        let response = signed_get(&cluster, US, EU, "198.51.100.7", &path).await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json(response).await?["entry_region"], EU);
    }
    assert_rate_limited(signed_get(&cluster, US, EU, "198.51.100.7", &path).await?).await?;
    // Other clients of the same region, and the peer itself, are not that client.
    for client in ["198.51.100.8", "2001:db8::1", "unknown"] {
        let response = signed_get(&cluster, US, AP, client, &path).await?;
        assert_eq!(response.status(), StatusCode::OK, "{client}");
    }
    let direct = cluster.get(US, &path).await?;
    assert_eq!(
        direct.status(),
        StatusCode::OK,
        "the peer's own bucket is full"
    );
    assert_eq!(cluster.hits()[US], 7);

    // Forwarding headers that do not verify are stripped: the request is the peer's.
    for _ in 0..2 {
        let response = cluster
            .send(
                Request::get(cluster.url(US, &path))
                    .header(
                        router::headers::FORWARDED,
                        "v2;at=1;entry=eu-west-1;for=198.51.100.9;sig=00",
                    )
                    .body(Body::empty())?,
            )
            .await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(json(response).await?["entry_region"].is_null());
    }
    assert_rate_limited(cluster.get(US, &path).await?).await?;
    assert_eq!(
        signed_get(&cluster, US, EU, "198.51.100.9", &path)
            .await?
            .status(),
        StatusCode::OK,
        "the client named in the forged header has its bucket still"
    );
    Ok(())
}

#[tokio::test]
async fn random_tenant_ids_cost_bounded_directory_queries_while_known_tenants_are_served()
-> Result<()> {
    let cluster = Cluster::with(Options {
        ttl: Duration::from_millis(300),
        directory_limits: DirectoryLimits {
            unknown_ttl: Duration::from_secs(5),
            misses: Rate {
                per_second: 2.0,
                burst: 20.0,
            },
        },
        // The flood and the legitimate client are one address here: this test is about
        // the node's budget, the next about each address's share of it.
        client_directory_misses: Rate::CLIENT_DEFAULT,
        ..Options::default()
    })
    .await?;
    let known = cluster.tenant(US, Transit::Proxy).await?;
    let known_path = format!("/v1/tenants/{known}/collections/c");
    assert_eq!(
        json(cluster.get(EU, &known_path).await?).await?["region"],
        US
    );
    // Its fresh entry expires: it is served from the stale copy while the budget is spent.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = cluster.directory.lookups();
    let started = std::time::Instant::now();

    let flood = futures::stream::iter(0..400)
        .map(|_| async {
            let response = cluster
                .get(EU, &format!("/v1/tenants/{}/records", random_tenant()))
                .await?;
            let status = response.status();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert!(response.headers().contains_key(header::RETRY_AFTER));
                let problem = json(response).await?;
                assert!(
                    problem["type"]
                        .as_str()
                        .is_some_and(|t| t.ends_with("directory-busy")),
                    "{problem}"
                );
            }
            anyhow::Ok(status)
        })
        .buffer_unordered(32);
    let legitimate = async {
        let mut served = 0;
        for _ in 0..20 {
            let response = cluster.get(EU, &known_path).await?;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "a known tenant is served"
            );
            assert_eq!(json(response).await?["region"], US);
            served += 1;
        }
        anyhow::Ok(served)
    };
    let (statuses, served) = tokio::join!(flood.collect::<Vec<_>>(), legitimate);
    assert_eq!(served?, 20);
    let statuses = statuses.into_iter().collect::<Result<Vec<_>>>()?;
    let busy = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    let answered_locally = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(busy + answered_locally, 400, "{statuses:?}");

    let queries = cluster.directory.lookups() - before;
    let allowed = 20 + 2 * started.elapsed().as_secs() + 2;
    assert!(
        queries <= allowed,
        "{queries} directory queries for 400 random ids, at most {allowed} allowed"
    );
    // Each id answered was looked up once; the known tenant's expired entry may have been
    // re-read within the same budget.
    assert!(
        answered_locally as u64 <= queries,
        "{answered_locally} > {queries}"
    );
    assert!(busy >= 400 - allowed as usize, "{busy}");

    let metrics = cluster.metrics(EU);
    let counted = cluster.node(EU).cache.backend_queries();
    assert!(
        metrics.contains(&format!(
            r#"router_directory_queries_total{{reason="miss"}} {counted}"#
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"router_limited_total{{limit="directory_misses"}} {busy}"#
        )),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn one_address_flooding_random_tenant_ids_gets_429_past_its_share_and_others_still_get_lookups()
-> Result<()> {
    let cluster = Cluster::with(Options {
        behind_load_balancer: true,
        client_directory_misses: slow_rate(5.0),
        ..Options::default()
    })
    .await?;
    let before = cluster.directory.lookups();
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let path = format!("/v1/tenants/{}/records", random_tenant());
        statuses.push(get_as(&cluster, EU, &path, "198.51.100.7").await?);
    }
    let mut limited = 0;
    for response in statuses {
        match response.status() {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => {
                assert_rate_limited(response).await?;
                limited += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(limited, 45, "the address's share was five lookups");
    assert_eq!(cluster.directory.lookups() - before, 5, "no lookup past it");

    // Another address still has its share, and the node its budget.
    let path = format!("/v1/tenants/{}/records", random_tenant());
    let response = get_as(&cluster, EU, &path, "203.0.113.9").await?;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "looked up and answered here"
    );
    assert_eq!(cluster.directory.lookups() - before, 6);
    // A tenant the node knows costs the flooding address nothing of its share.
    let known = cluster.tenant(US, Transit::Proxy).await?;
    let known_path = format!("/v1/tenants/{known}/collections/c");
    assert_eq!(
        get_as(&cluster, EU, &known_path, "203.0.113.9")
            .await?
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get_as(&cluster, EU, &known_path, "198.51.100.7")
            .await?
            .status(),
        StatusCode::OK
    );
    let metrics = cluster.metrics(EU);
    assert!(
        metrics.contains(r#"router_limited_total{limit="client_directory_misses"} 45"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unknown_tenant_is_remembered_briefly_and_a_creation_here_is_found_at_once() -> Result<()>
{
    let cluster = Cluster::with(Options {
        directory_limits: DirectoryLimits {
            unknown_ttl: Duration::from_millis(500),
            ..DirectoryLimits::default()
        },
        ..Options::default()
    })
    .await?;
    let tenant = random_tenant();
    let path = format!("/v1/tenants/{tenant}/records");
    for node in [EU, AP] {
        for _ in 0..5 {
            let answer = json(cluster.get(node, &path).await?).await?;
            assert_eq!(answer["region"], node, "unknown: the local node answers");
        }
    }
    assert_eq!(cluster.directory.lookups(), 2, "one query per node");

    // Created on EU's node, homed in US: the directory and EU's cache learn it, as the
    // node's registrar writes them after `POST /v1/tenants`.
    let entry = DirectoryEntry {
        tenant,
        home: region(US),
        allowed: vec![region(US)],
        transit: Transit::Proxy,
        version: 1,
    };
    router::Directory::upsert(cluster.directory.as_ref(), &entry).await?;
    cluster.node(EU).cache.record(entry).await;
    let answer = json(cluster.get(EU, &path).await?).await?;
    assert_eq!(answer["region"], US, "found at once where it was created");
    assert_eq!(
        cluster.directory.lookups(),
        3,
        "EU asked nothing; the home did, once"
    );

    // Elsewhere, the "unknown" holds until it expires, then the tenant is found.
    let answer = json(cluster.get(AP, &path).await?).await?;
    assert_eq!(answer["region"], AP);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let answer = json(cluster.get(AP, &path).await?).await?;
    assert_eq!(answer["region"], US);
    assert_eq!(cluster.directory.lookups(), 4);
    Ok(())
}

/// Sends a request head and part of its body over a raw connection, then stalls; returns
/// the answer's status line and body.
async fn stall(cluster: &Cluster, node: &str, path: &str, declared: usize) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(cluster.node(node).addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {node}\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n{{\"name\":"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() -> Result<()> {
    let cluster = Cluster::with(Options {
        body_read_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let started = std::time::Instant::now();
    let answer = stall(
        &cluster,
        EU,
        &format!("/v1/tenants/{tenant}/collections/c/records"),
        1000,
    )
    .await?;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(300));

    let answer = stall(&cluster, EU, "/v1/tenants", 1000).await?;
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a tenant creation too: {answer}"
    );
    assert_eq!(
        cluster.hits()[US] + cluster.hits()[EU],
        0,
        "nothing was sent on"
    );

    // A body that arrives in time is forwarded as ever.
    let response = cluster
        .send(
            Request::post(cluster.url(EU, &format!("/v1/tenants/{tenant}/records")))
                .body(Body::from("{}"))?,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    let metrics = cluster.metrics(EU);
    assert!(
        metrics.contains(r#"router_requests_total{decision="unrouted",outcome="body_timeout"} 2"#),
        "{metrics}"
    );
    Ok(())
}
