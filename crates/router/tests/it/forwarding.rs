//! Route decisions end to end: local, proxy, redirect, 421 correction, outages, tenant
//! creation, and streaming of large bodies through the forwarding hop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use axum::body::Body;
use hop::InternalProtocol;
use http::{Method, Request, StatusCode, header};
use model::Transit;
use router::{DirectoryEntry, ForwardSigner, Forwarded, ForwardingKey, headers};
use serde_json::Value;

use crate::harness::{
    AP, Cluster, DEAD, EU, KEY, Options, PACE_WINDOW, PROTOCOLS, PeerBy, SILENT, US, count_body,
    header, json, paced_body, public_url, region,
};

#[tokio::test]
async fn a_local_tenant_is_served_in_process_with_no_extra_hop() -> Result<()> {
    let cluster = Cluster::start().await?;
    let tenant = cluster.tenant(EU, Transit::Proxy).await?;

    let response = cluster
        .get(EU, &format!("/v1/tenants/{tenant}/collections/c?x=1"))
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(EU)
    );
    assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(EU));
    let body = json(response).await?;
    assert_eq!(body["region"], EU);
    assert_eq!(body["query"], "x=1");
    assert!(body["entry_region"].is_null(), "{body}");
    assert!(body["forwarded_for"].is_null(), "no hop: {body}");
    assert_eq!(cluster.hits()[EU], 1);
    assert_eq!(cluster.hits()[US] + cluster.hits()[AP], 0);

    // Operational paths and unknown tenants are the local node's.
    let response = cluster.get(US, "/healthz").await?;
    assert_eq!(json(response).await?["region"], US);
    let unknown = model::TenantId::from_random_bytes([3; 16]);
    let response = cluster.get(AP, &format!("/v1/tenants/{unknown}")).await?;
    assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(AP));
    assert_eq!(json(response).await?["region"], AP);
    assert_eq!(cluster.hits()[US], 1);
    assert_eq!(cluster.hits()[AP], 1);

    // A percent-encoded id names the same tenant.
    let encoded = format!(
        "%{:02x}{}",
        tenant.as_str().as_bytes()[0],
        &tenant.as_str()[1..]
    );
    let response = cluster
        .get(US, &format!("/v1/tenants/{encoded}/keys"))
        .await?;
    assert_eq!(json(response).await?["region"], EU);

    let metrics = cluster.metrics(EU);
    assert!(
        metrics.contains(r#"router_requests_total{decision="local",outcome="2xx"} 2"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn the_client_address_reaches_handlers_and_the_home_however_the_server_gives_it() -> Result<()>
{
    for peer_by in [PeerBy::Connection, PeerBy::ConnectInfo] {
        let cluster = Cluster::with(Options {
            peer_by,
            ..Options::default()
        })
        .await?;
        let tenant = cluster.tenant(US, Transit::Proxy).await?;
        let path = format!("/v1/tenants/{tenant}/collections/c");

        // Served where it arrived: the handler reads its client's address.
        let local = json(cluster.get(US, &path).await?).await?;
        assert_eq!(local["region"], US, "{peer_by:?}: {local}");
        assert_eq!(local["peer"], "127.0.0.1", "{peer_by:?}: {local}");
        assert!(local["forwarded_for"].is_null(), "{peer_by:?}: {local}");

        // Forwarded: the entry vouches for its client's address, and the home's handler
        // still reads the address of its own client, the entry node.
        let forwarded = json(cluster.get(EU, &path).await?).await?;
        assert_eq!(forwarded["region"], US, "{peer_by:?}: {forwarded}");
        assert_eq!(
            forwarded["forwarded_for"], "127.0.0.1",
            "{peer_by:?}: {forwarded}"
        );
        assert_eq!(forwarded["peer"], "127.0.0.1", "{peer_by:?}: {forwarded}");
    }
    Ok(())
}

/// Runs `test` over each protocol of the hop between regions.
async fn over_each_protocol<F, T>(test: F) -> Result<()>
where
    F: Fn(InternalProtocol) -> T,
    T: Future<Output = Result<()>>,
{
    for protocol in PROTOCOLS {
        test(protocol)
            .await
            .with_context(|| format!("over {protocol:?}"))?;
    }
    Ok(())
}

#[tokio::test]
async fn the_hop_between_regions_speaks_the_configured_protocol() -> Result<()> {
    for (protocol, expected) in [
        (InternalProtocol::Http2, "HTTP/2.0"),
        (InternalProtocol::Http1, "HTTP/1.1"),
    ] {
        let cluster = Cluster::with(Options::over(protocol)).await?;
        let tenant = cluster.tenant(US, Transit::Proxy).await?;
        let path = format!("/v1/tenants/{tenant}/collections/c/records");
        // Many requests at once through one entry: each is answered, by the home.
        let answers = futures::future::join_all((0..32).map(|_| cluster.get(EU, &path))).await;
        let mut connections = HashSet::new();
        for answer in answers {
            let seen = json(answer?).await?;
            assert_eq!(seen["region"], US, "{protocol:?}: {seen}");
            assert_eq!(seen["version"], expected, "{protocol:?}: {seen}");
            connections.insert(seen["peer_address"].to_string());
        }
        if protocol == InternalProtocol::Http2 {
            // The burst opened one connection, not one per request.
            assert_eq!(connections.len(), 1, "{connections:?}");
        }
        // The client's own request is HTTP/1.1 whatever the hop speaks.
        let local = json(cluster.get(US, &path).await?).await?;
        assert_eq!(local["version"], "HTTP/1.1", "{protocol:?}: {local}");
    }
    Ok(())
}

#[tokio::test]
async fn past_its_http1_connections_the_hop_multiplexes_the_rest_over_one_http2_connection()
-> Result<()> {
    let protocol = InternalProtocol::Http1WithHttp2Overflow {
        http1_connections: 2,
    };
    let cluster = Cluster::with(Options::over(protocol)).await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    // Slow enough that all of them are in flight at once.
    let slow = format!("/v1/tenants/{tenant}/collections/c/records?wait_ms=300");
    let answers = futures::future::join_all((0..10).map(|_| cluster.get(EU, &slow))).await;
    let mut connections: HashMap<String, HashSet<String>> = HashMap::new();
    for answer in answers {
        let seen = json(answer?).await?;
        assert_eq!(seen["region"], US, "{seen}");
        let version = seen["version"].as_str().unwrap_or_default().to_owned();
        let peer = seen["peer_address"].as_str().unwrap_or_default().to_owned();
        connections.entry(version).or_default().insert(peer);
    }
    let http1 = connections.get("HTTP/1.1").map_or(0, HashSet::len);
    let http2 = connections.get("HTTP/2.0").map_or(0, HashSet::len);
    assert!(
        (1..=2).contains(&http1),
        "at most 2 HTTP/1.1 connections: {connections:?}"
    );
    assert_eq!(
        http2, 1,
        "the rest share one HTTP/2 connection: {connections:?}"
    );

    // One request at a time takes an idle HTTP/1.1 connection again.
    let quick = format!("/v1/tenants/{tenant}/collections/c/records");
    for _ in 0..3 {
        let seen = json(cluster.get(EU, &quick).await?).await?;
        assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
        assert!(
            connections["HTTP/1.1"].contains(seen["peer_address"].as_str().unwrap_or_default()),
            "a pooled connection is reused: {seen}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn while_http2_carries_as_many_requests_as_the_pool_has_connections_new_ones_join_it()
-> Result<()> {
    let protocol = InternalProtocol::Http1WithHttp2Overflow {
        http1_connections: 2,
    };
    let cluster = Cluster::with(Options::over(protocol)).await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let wait = |ms: u64| format!("/v1/tenants/{tenant}/collections/c/records?wait_ms={ms}");
    let version = |seen: &Value| seen["version"].as_str().unwrap_or_default().to_owned();

    // Two requests fill the pool of HTTP/1.1 connections for 600 ms; eight more, sent
    // meanwhile, find it full and busy and share one HTTP/2 connection for 2 s. (Margins
    // of several hundred milliseconds, for a machine busy with other tests.)
    let (medium, slow) = (wait(600), wait(2000));
    let pool = futures::future::join_all((0..2).map(|_| cluster.get(EU, &medium)));
    let busy = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        futures::future::join_all((0..8).map(|_| cluster.get(EU, &slow))).await
    };
    // Once the pool's requests are answered, its connections are idle while the eight
    // are still in flight: the link is busy, and new requests join HTTP/2.
    let joining = async {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut versions = Vec::new();
        for _ in 0..3 {
            versions.push(version(&json(cluster.get(EU, &wait(0)).await?).await?));
        }
        anyhow::Ok(versions)
    };
    let (pool, busy, joining) = tokio::join!(pool, busy, joining);
    for answer in pool {
        assert_eq!(version(&json(answer?).await?), "HTTP/1.1");
    }
    for answer in busy {
        assert_eq!(version(&json(answer?).await?), "HTTP/2.0");
    }
    assert_eq!(
        joining?, ["HTTP/2.0"; 3],
        "a busy link's new requests join HTTP/2"
    );

    // With nothing in flight, requests take the idle HTTP/1.1 connections again.
    let seen = json(cluster.get(EU, &wait(0)).await?).await?;
    assert_eq!(version(&seen), "HTTP/1.1", "{seen}");
    Ok(())
}

#[tokio::test]
async fn a_foreign_tenant_is_proxied_home_for_get_put_and_post() -> Result<()> {
    over_each_protocol(a_foreign_tenant_is_proxied_home_for_get_put_and_post_over).await
}

async fn a_foreign_tenant_is_proxied_home_for_get_put_and_post_over(
    protocol: InternalProtocol,
) -> Result<()> {
    let cluster = Cluster::with(Options::over(protocol)).await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let path = format!("/v1/tenants/{tenant}/collections/c/records");

    let response = cluster
        .send(
            Request::get(cluster.url(EU, &format!("{path}?limit=5")))
                .header(headers::REQUEST_ID, "req-42")
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(US)
    );
    assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(EU));
    let body = json(response).await?;
    assert_eq!(body["region"], US);
    assert_eq!(body["path"], path);
    assert_eq!(body["query"], "limit=5");
    assert_eq!(body["entry_region"], EU);
    assert_eq!(body["forwarded_for"], "127.0.0.1");
    assert_eq!(body["request_id"], "req-42");

    let put = cluster
        .send(
            Request::put(cluster.url(EU, &format!("{path}/r1")))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"email":"someone@example.com"}"#))?,
        )
        .await?;
    assert_eq!(put.status(), StatusCode::OK);
    let body = json(put).await?;
    assert_eq!(
        (body["method"].as_str(), body["bytes"].as_u64()),
        (Some("PUT"), Some(31))
    );
    let generated = body["request_id"].as_str().unwrap_or_default();
    assert!(
        uuid::Uuid::parse_str(generated).is_ok(),
        "the entry gives a request without an id a new one: {generated:?}"
    );

    let post = cluster
        .send(Request::post(cluster.url(AP, &path)).body(Body::from(vec![1u8; 100_000]))?)
        .await?;
    assert_eq!(post.status(), StatusCode::CREATED);
    assert_eq!(header(post.headers(), headers::RESIDENCY_VIA), Some(AP));
    let body = json(post).await?;
    assert_eq!(
        (body["region"].as_str(), body["bytes"].as_u64()),
        (Some(US), Some(100_000))
    );
    assert_eq!(body["entry_region"], AP);

    let hits = cluster.hits();
    assert_eq!(
        (hits[EU], hits[US], hits[AP]),
        (0, 3, 0),
        "only the home app serves"
    );
    let metrics = cluster.metrics(EU);
    assert!(
        metrics.contains(r#"router_requests_total{decision="forward",outcome="2xx"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"router_forward_duration_seconds_count{region="us-east-1"} 2"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn large_bodies_stream_both_ways_through_the_forwarder_with_bounded_memory() -> Result<()> {
    over_each_protocol(large_bodies_stream_both_ways_through_the_forwarder_with_bounded_memory_over)
        .await
}

async fn large_bodies_stream_both_ways_through_the_forwarder_with_bounded_memory_over(
    protocol: InternalProtocol,
) -> Result<()> {
    const SIZE: u64 = 20 * 1024 * 1024;
    let cluster = Cluster::with(Options::over(protocol)).await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let path = format!("/v1/tenants/{tenant}/collections/c/records/r/files/f");
    let flow = Arc::clone(&cluster.flow);

    // The producer never runs more than PACE_WINDOW ahead of what the home app has read,
    // so a forwarder that held the body would stall these requests: the timeout fails them.
    let within = Duration::from_secs(60);
    let upload = async {
        let put = Request::put(cluster.url(EU, &path))
            .header(header::CONTENT_LENGTH, SIZE)
            .body(paced_body(Arc::clone(&flow), SIZE, PACE_WINDOW))?;
        let response = cluster.send(put).await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json(response).await?["bytes"], SIZE);

        // Chunked (no declared length): crosses the 64 KiB retry buffer, then streams.
        let post = Request::post(cluster.url(EU, &path)).body(paced_body(
            Arc::clone(&flow),
            SIZE,
            PACE_WINDOW,
        ))?;
        let response = cluster.send(post).await?;
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(json(response).await?["bytes"], SIZE);
        anyhow::Ok(())
    };
    tokio::time::timeout(within, upload)
        .await
        .map_err(|_| anyhow::anyhow!("upload stalled: the forwarder is not streaming"))??;

    let download = async {
        let response = cluster
            .get(EU, &format!("/v1/tenants/{tenant}/blob?size={SIZE}"))
            .await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(EU));
        count_body(&flow, response.into_body()).await
    };
    let received = tokio::time::timeout(within, download)
        .await
        .map_err(|_| anyhow::anyhow!("download stalled: the forwarder is not streaming"))??;
    assert_eq!(received, SIZE);
    assert_eq!(cluster.hits()[EU], 0);
    Ok(())
}

#[tokio::test]
async fn a_redirect_tenant_gets_307_to_its_home_public_endpoint() -> Result<()> {
    let cluster = Cluster::start().await?;
    let tenant = cluster.tenant(AP, Transit::Redirect).await?;
    let path = format!("/v1/tenants/{tenant}/collections/c/records?q=a%20b&n=2");

    let response = cluster.get(EU, &path).await?;
    assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        header(response.headers(), header::LOCATION.as_str()),
        Some(format!("{}{path}", public_url(AP)).as_str())
    );
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(AP)
    );
    assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(EU));
    // A redirect names a request id like any answer: generated when none (or none this
    // node keeps) was sent, else the client's.
    let generated = header(response.headers(), headers::REQUEST_ID).unwrap_or_default();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated:?}");
    for (sent, echoed) in [("trace 7", true), ("", false)] {
        let response = cluster
            .send(
                http::Request::get(cluster.url(US, &path))
                    .header(headers::REQUEST_ID, sent)
                    .body(Body::empty())?,
            )
            .await?;
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        let answered = header(response.headers(), headers::REQUEST_ID).unwrap_or_default();
        assert_eq!(answered == sent, echoed, "{sent:?} -> {answered:?}");
        assert!(
            echoed || uuid::Uuid::parse_str(answered).is_ok(),
            "{answered:?}"
        );
    }
    let hits = cluster.hits();
    assert_eq!((hits[EU], hits[US], hits[AP]), (0, 0, 0));

    // At home it is served.
    let response = cluster.get(AP, &path).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await?["region"], AP);
    assert!(
        cluster
            .metrics(EU)
            .contains(r#"decision="redirect",outcome="3xx"} 1"#)
    );
    Ok(())
}

#[tokio::test]
async fn a_stale_directory_entry_is_corrected_through_421_refresh_and_one_retry() -> Result<()> {
    over_each_protocol(a_stale_directory_entry_is_corrected_through_421_refresh_and_one_retry_over)
        .await
}

async fn a_stale_directory_entry_is_corrected_through_421_refresh_and_one_retry_over(
    protocol: InternalProtocol,
) -> Result<()> {
    let cluster = Cluster::with(Options::over(protocol)).await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    // EU still believes the tenant lives in AP (a relocation EU has not heard of).
    let stale = DirectoryEntry {
        tenant,
        home: region(AP),
        allowed: vec![region(AP)],
        transit: Transit::Proxy,
        version: 0,
    };
    cluster.node(EU).cache.record(stale.clone()).await;

    let path = format!("/v1/tenants/{tenant}/collections/c");
    let response = cluster
        .send(Request::put(cluster.url(EU, &path)).body(Body::from("{}"))?)
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(US)
    );
    assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(EU));
    let body = json(response).await?;
    assert_eq!(
        (body["region"].as_str(), body["bytes"].as_u64()),
        (Some(US), Some(2))
    );
    assert_eq!(body["entry_region"], EU);
    let hits = cluster.hits();
    assert_eq!(
        (hits[EU], hits[US], hits[AP]),
        (0, 1, 0),
        "AP never served it"
    );
    assert_eq!(
        cluster
            .node(EU)
            .cache
            .lookup(&tenant)
            .await?
            .map(|e| e.home),
        Some(region(US))
    );
    assert!(
        cluster
            .metrics(EU)
            .contains(r#"router_forward_retries_total{reason="misdirected"} 1"#)
    );
    assert!(
        cluster
            .metrics(AP)
            .contains(r#"decision="misdirected",outcome="4xx"} 1"#)
    );

    // A body too large to keep for a retry: the 421 reaches the client, the cache is
    // corrected anyway, and the next request goes straight home.
    cluster.node(EU).cache.invalidate(&tenant).await;
    cluster.node(EU).cache.record(stale).await;
    let big = vec![7u8; 100 * 1024];
    let response = cluster
        .send(Request::put(cluster.url(EU, &path)).body(Body::from(big))?)
        .await?;
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(US)
    );
    let response = cluster.get(EU, &path).await?;
    assert_eq!(json(response).await?["region"], US);
    assert_eq!(cluster.hits()[AP], 0);
    Ok(())
}

#[tokio::test]
async fn two_regions_sending_a_tenant_to_each_other_stop_at_the_first_repeat() -> Result<()> {
    // US signs with a key EU does not know, and the reverse: neither trusts the other's
    // forwarding headers, so neither answers 421. Their caches disagree about the tenant
    // (homed in AP): EU sends it to US, US back to EU.
    let cluster = Cluster::with(Options {
        other_keys: HashMap::from([(US, b"another-forwarding-key-for-us-01")]),
        ..Options::default()
    })
    .await?;
    let tenant = cluster.tenant(AP, Transit::Proxy).await?;
    cluster.node(EU).cache.record(stale_entry(tenant, US)).await;
    cluster.node(US).cache.record(stale_entry(tenant, EU)).await;

    let started = Instant::now();
    let response = cluster
        .get(EU, &format!("/v1/tenants/{tenant}/collections/c"))
        .await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ended at the repeat, not at the 10 s upstream timeout: {:?}",
        started.elapsed()
    );
    let body = json(response).await?;
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("routing-loop")),
        "{body}"
    );
    assert_eq!(cluster.hits().values().sum::<u64>(), 0, "nobody served it");
    assert!(
        cluster
            .metrics(EU)
            .contains(r#"router_requests_total{decision="unrouted",outcome="loop"} 1"#),
        "{}",
        cluster.metrics(EU)
    );
    // EU, where the loop closed, re-reads its entry in the background: its next request
    // goes to AP, where the tenant lives.
    until_served_by(
        &cluster,
        EU,
        &format!("/v1/tenants/{tenant}/collections/c"),
        AP,
    )
    .await?;
    Ok(())
}

/// A directory entry placing `tenant` in `home`, as a node's cache may still hold it after
/// the tenant moved.
fn stale_entry(tenant: model::TenantId, home: &str) -> DirectoryEntry {
    DirectoryEntry {
        tenant,
        home: region(home),
        allowed: vec![region(home)],
        transit: Transit::Proxy,
        version: 0,
    }
}

/// Polls `path` through `entry` until its home `expected` serves it (a background refresh
/// is correcting the entry's cache), for at most 5 s; until then, only 503s are allowed.
async fn until_served_by(cluster: &Cluster, entry: &str, path: &str, expected: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        let response = cluster.get(entry, path).await?;
        let status = response.status();
        if status == StatusCode::OK && json(response).await?["region"] == expected {
            return Ok(());
        }
        seen.push(status);
        anyhow::ensure!(
            status == StatusCode::SERVICE_UNAVAILABLE,
            "only 503 may come before the true home serves: {seen:?}"
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "{entry} still does not send {path} to {expected}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_home_failure_makes_the_entry_re_read_a_stale_directory_entry() -> Result<()> {
    let cluster = Cluster::start().await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    // EU believes the tenant lives in a region that is down (it moved away before).
    cluster
        .node(EU)
        .cache
        .record(stale_entry(tenant, DEAD))
        .await;

    let path = format!("/v1/tenants/{tenant}/collections/c");
    let response = cluster.get(EU, &path).await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(DEAD)
    );
    // The failure made EU re-read the directory: the next requests go to the true home,
    // long before the cached entry's 60 s TTL.
    until_served_by(&cluster, EU, &path, US).await?;
    assert_eq!(
        cluster
            .node(EU)
            .cache
            .lookup(&tenant)
            .await?
            .map(|e| e.home),
        Some(region(US))
    );
    assert_eq!(cluster.hits()[AP] + cluster.hits()[EU], 0);
    Ok(())
}

#[tokio::test]
async fn a_large_streamed_body_to_a_stale_home_still_corrects_the_entry() -> Result<()> {
    over_each_protocol(a_large_streamed_body_to_a_stale_home_still_corrects_the_entry_over).await
}

async fn a_large_streamed_body_to_a_stale_home_still_corrects_the_entry_over(
    protocol: InternalProtocol,
) -> Result<()> {
    let cluster = Cluster::with(Options::over(protocol)).await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    cluster.node(EU).cache.record(stale_entry(tenant, AP)).await;

    // More than AP reads before answering 421: AP may close with unread data, and EU
    // then sees either the 421 or a reset connection (503). Either way nothing is stored
    // in AP and the entry is corrected.
    let path = format!("/v1/tenants/{tenant}/collections/c");
    let big = vec![7u8; 4 * 1024 * 1024];
    let response = cluster
        .send(Request::put(cluster.url(EU, &path)).body(Body::from(big))?)
        .await?;
    assert!(
        [
            StatusCode::MISDIRECTED_REQUEST,
            StatusCode::SERVICE_UNAVAILABLE
        ]
        .contains(&response.status()),
        "{}",
        response.status()
    );
    until_served_by(&cluster, EU, &path, US).await?;
    assert_eq!(cluster.hits()[AP], 0, "AP never served it");
    Ok(())
}

#[tokio::test]
async fn a_tenant_relocated_here_is_served_locally_after_the_421() -> Result<()> {
    let cluster = Cluster::start().await?;
    let tenant = cluster.tenant(EU, Transit::Proxy).await?;
    cluster
        .node(EU)
        .cache
        .record(DirectoryEntry {
            tenant,
            home: region(AP),
            allowed: vec![],
            transit: Transit::Proxy,
            version: 0,
        })
        .await;
    let response = cluster
        .send(
            Request::post(cluster.url(EU, &format!("/v1/tenants/{tenant}/keys/rotate")))
                .body(Body::empty())?,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(EU)
    );
    assert_eq!(json(response).await?["region"], EU);
    let hits = cluster.hits();
    assert_eq!((hits[EU], hits[US], hits[AP]), (1, 0, 0));
    Ok(())
}

#[tokio::test]
async fn an_unreachable_home_answers_503_and_no_other_region_serves() -> Result<()> {
    over_each_protocol(an_unreachable_home_answers_503_and_no_other_region_serves_over).await
}

async fn an_unreachable_home_answers_503_and_no_other_region_serves_over(
    protocol: InternalProtocol,
) -> Result<()> {
    let cluster = Cluster::with(Options::over(protocol)).await?;
    let tenant = cluster.tenant(DEAD, Transit::Proxy).await?;
    let path = format!("/v1/tenants/{tenant}/collections/c/records");

    for method in [Method::GET, Method::POST, Method::PATCH] {
        let started = Instant::now();
        let response = cluster
            .send(
                Request::builder()
                    .method(method.clone())
                    .uri(cluster.url(EU, &path))
                    .body(Body::from("{}"))?,
            )
            .await?;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            header(response.headers(), header::RETRY_AFTER.as_str()),
            Some("2")
        );
        assert_eq!(
            header(response.headers(), header::CONTENT_TYPE.as_str()),
            Some(wire::PROBLEM_JSON)
        );
        assert_eq!(
            header(response.headers(), headers::RESIDENCY_REGION),
            Some(DEAD)
        );
        assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(EU));
        let problem = json(response).await?;
        assert_eq!(problem["status"], 503);
        assert!(
            !problem.to_string().contains(&path),
            "no path echoed: {problem}"
        );
    }
    let hits = cluster.hits();
    assert_eq!(
        (hits[EU], hits[US], hits[AP]),
        (0, 0, 0),
        "never served elsewhere"
    );
    let metrics = cluster.metrics(EU);
    assert!(
        metrics.contains(r#"router_upstream_errors_total{region="sa-east-1",kind="connect"} 6"#),
        "each request was tried twice (connect errors never reached the upstream): {metrics}"
    );
    assert!(
        metrics.contains(r#"decision="forward",outcome="unreachable"} 3"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_silent_home_times_out_into_503_without_resending() -> Result<()> {
    over_each_protocol(a_silent_home_times_out_into_503_without_resending_over).await
}

async fn a_silent_home_times_out_into_503_without_resending_over(
    protocol: InternalProtocol,
) -> Result<()> {
    let cluster = Cluster::with(Options {
        internal_protocol: protocol,
        upstream_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await?;
    let tenant = cluster.tenant(SILENT, Transit::Proxy).await?;
    let started = Instant::now();
    let response = cluster
        .send(
            Request::post(cluster.url(US, &format!("/v1/tenants/{tenant}/api-keys")))
                .body(Body::from("{}"))?,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let metrics = cluster.metrics(US);
    assert!(metrics.contains(r#"kind="timeout"} 1"#), "{metrics}");
    assert!(
        !metrics.contains("router_forward_retries_total{"),
        "a POST that may have been sent is not resent: {metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn each_request_on_a_reused_connection_gets_its_own_full_timeout() -> Result<()> {
    over_each_protocol(each_request_on_a_reused_connection_gets_its_own_full_timeout_over).await
}

async fn each_request_on_a_reused_connection_gets_its_own_full_timeout_over(
    protocol: InternalProtocol,
) -> Result<()> {
    let cluster = Cluster::with(Options {
        internal_protocol: protocol,
        upstream_timeout: Duration::from_millis(400),
        ..Options::default()
    })
    .await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let path = |wait_ms: u64| format!("/v1/tenants/{tenant}/collections/c?wait_ms={wait_ms}");
    // One connection, used one request after the other.
    assert_eq!(cluster.get(EU, &path(0)).await?.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Still inside its own 400 ms, though past the first request's deadline.
    assert_eq!(cluster.get(EU, &path(300)).await?.status(), StatusCode::OK);
    let started = Instant::now();
    let response = cluster.get(EU, &path(2000)).await?;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_millis(1500),
        "timed out after {elapsed:?}"
    );
    let metrics = cluster.metrics(EU);
    assert!(metrics.contains(r#"kind="timeout"} 1"#), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn an_unavailable_directory_is_bridged_by_the_cache_else_503() -> Result<()> {
    let cluster = Cluster::with(Options {
        ttl: Duration::from_millis(100),
        ..Options::default()
    })
    .await?;
    let known = cluster.tenant(US, Transit::Proxy).await?;
    let unseen = cluster.tenant(EU, Transit::Proxy).await?;
    let response = cluster.get(EU, &format!("/v1/tenants/{known}")).await?;
    assert_eq!(json(response).await?["region"], US);

    tokio::time::sleep(Duration::from_millis(250)).await;
    cluster.directory.set_unavailable(true);
    let response = cluster.get(EU, &format!("/v1/tenants/{known}")).await?;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "served from the stale copy"
    );
    assert_eq!(json(response).await?["region"], US);

    let response = cluster.get(EU, &format!("/v1/tenants/{unseen}")).await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(cluster.hits()[EU], 0, "not served without knowing the home");

    // A request another region's directory sent here is served by the local node, which
    // holds only its own tenants.
    let (mut parts, body) = Request::get(cluster.url(EU, &format!("/v1/tenants/{unseen}")))
        .body(Body::empty())?
        .into_parts();
    let signer = ForwardSigner::new(ForwardingKey::new(KEY)?, Duration::from_secs(30));
    signer.sign(
        &mut parts,
        &Forwarded {
            entry_region: region(AP),
            client_address: "198.51.100.7".to_owned(),
            request_id: "req-9".to_owned(),
        },
        &region(EU),
    );
    let response = cluster.send(Request::from_parts(parts, body)).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await?["entry_region"], AP);
    assert_eq!(cluster.hits()[EU], 1);
    Ok(())
}

#[tokio::test]
async fn create_tenant_reaches_the_requested_home_region() -> Result<()> {
    over_each_protocol(create_tenant_reaches_the_requested_home_region_over).await
}

async fn create_tenant_reaches_the_requested_home_region_over(
    protocol: InternalProtocol,
) -> Result<()> {
    let cluster = Cluster::with(Options::over(protocol)).await?;
    let create = |at: &str, body: &str| {
        Request::post(cluster.url(at, "/v1/tenants"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
    };
    for (at, body, served_by) in [
        (EU, r#"{"name":"Acme","home_region":"ap-south-1"}"#, AP),
        (
            EU,
            r#"{"name":"Acme","home_region":"us-east-1","transit":"redirect"}"#,
            US,
        ),
        (EU, r#"{"name":"Acme","home_region":"eu-west-1"}"#, EU),
        (US, r#"{"name":"Acme","home_region":"xx-nowhere-9"}"#, US),
        (US, r#"{"name":"Acme","home_region":"NOT A REGION"}"#, US),
        (AP, r#"{"name":"Acme""#, AP),
    ] {
        let response = cluster.send(create(at, body)?).await?;
        assert_eq!(response.status(), StatusCode::CREATED, "{body}");
        let answer = json(response).await?;
        assert_eq!(answer["served_by"], served_by, "{body}");
    }
    let hits = cluster.hits();
    assert_eq!((hits[EU], hits[US], hits[AP]), (1, 3, 2));
    let body = json(
        cluster
            .send(create(US, r#"{"name":"Acme","home_region":"ap-south-1"}"#)?)
            .await?,
    )
    .await?;
    assert_eq!(body["request"]["name"], "Acme", "the body arrives intact");

    let response = cluster
        .send(create(EU, r#"{"name":"Acme","home_region":"sa-east-1"}"#)?)
        .await?;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    Ok(())
}
