//! The dial side (`hop::Upstream`) against a real `hop` server on loopback, in every
//! protocol mode: which protocol each request rides, pooled connections reused, the
//! overflow to one shared HTTP/2 connection and back, and the three ways a request gets
//! no response (never sent, failed, timed out). Time runs on tokio's paused clock: the
//! server's handlers wait on it, so the tests take no wall-clock time for their waits.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query};
use axum::routing::get;
use hop::{Connectors, InternalProtocol, Origin, Upstream, UpstreamError};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

use crate::LIMITS;

/// Every protocol mode of the dial side.
const MODES: [InternalProtocol; 3] = [
    InternalProtocol::Http1,
    InternalProtocol::Http2,
    InternalProtocol::Http1WithHttp2Overflow {
        http1_connections: 2,
    },
];

/// Answers `GET /wait?ms=N` after N ms (on tokio's clock) with the protocol version the
/// request arrived in and the address of the connection it came on.
fn echo_app() -> Router {
    #[derive(serde::Deserialize)]
    struct Wait {
        #[serde(default)]
        ms: u64,
    }
    Router::new().route(
        "/wait",
        get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>,
             Query(wait): Query<Wait>,
             request: axum::extract::Request| async move {
                tokio::time::sleep(Duration::from_millis(wait.ms)).await;
                serde_json::json!({
                    "version": format!("{:?}", request.version()),
                    "peer": peer.to_string(),
                })
                .to_string()
            },
        ),
    )
}

/// A `hop` server of [`echo_app`] on a free loopback port, for as long as the test runs.
async fn echo_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(hop::serve_service(
        listener,
        LIMITS,
        echo_app(),
        std::future::pending(),
    ));
    Ok(address)
}

fn upstream(address: SocketAddr, protocol: InternalProtocol) -> Upstream {
    let origin = Origin::parse(&format!("http://{address}").parse().expect("uri")).expect("origin");
    Upstream::new(
        origin,
        Connectors::new(Duration::from_millis(500), LIMITS.max_header_list_size),
        protocol,
    )
    .expect("an IP address is a Host value")
}

/// `GET path` as a caller hands it over: origin-form target, `Host` set.
fn get_request(upstream: &Upstream, path: &str) -> Request<Body> {
    let target = upstream
        .target(Some(&path.parse().expect("path")))
        .expect("target");
    let mut request = Request::get(target).body(Body::empty()).expect("request");
    request
        .headers_mut()
        .insert(header::HOST, upstream.host().clone());
    request
}

/// A deadline `after` from now on tokio's clock (paused in these tests).
fn deadline(after: Duration) -> std::time::Instant {
    (tokio::time::Instant::now() + after).into_std()
}

/// Sends `GET path` and reads the answer to its end: (version, peer) as the server saw
/// them.
async fn exchange(upstream: &Upstream, path: &str) -> Result<(String, String)> {
    let response = upstream
        .send(
            get_request(upstream, path),
            deadline(Duration::from_secs(30)),
        )
        .await
        .map_err(|err| anyhow::anyhow!("GET {path}: {err}"))?;
    anyhow::ensure!(response.status() == StatusCode::OK, "{response:?}");
    let body = response.into_body().collect().await?.to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body)?;
    Ok((
        seen["version"].as_str().unwrap_or_default().to_owned(),
        seen["peer"].as_str().unwrap_or_default().to_owned(),
    ))
}

#[tokio::test(start_paused = true)]
async fn every_mode_answers_a_burst_and_a_quiet_link_reuses_its_connection() -> Result<()> {
    for protocol in MODES {
        let upstream = upstream(echo_server().await?, protocol);
        // A burst, all in flight at once.
        let burst = futures::future::join_all((0..10).map(|_| exchange(&upstream, "/wait?ms=300")));
        let mut connections: HashMap<String, HashSet<String>> = HashMap::new();
        for answer in burst.await {
            let (version, peer) = answer.with_context(|| format!("{protocol:?}"))?;
            connections.entry(version).or_default().insert(peer);
        }
        let http1 = connections.get("HTTP/1.1").map_or(0, HashSet::len);
        let http2 = connections.get("HTTP/2.0").map_or(0, HashSet::len);
        match protocol {
            InternalProtocol::Http1 => {
                assert_eq!(
                    (http1, http2),
                    (10, 0),
                    "one connection per request: {connections:?}"
                );
            }
            InternalProtocol::Http2 => {
                assert_eq!(
                    (http1, http2),
                    (0, 1),
                    "the burst shares one: {connections:?}"
                );
            }
            InternalProtocol::Http1WithHttp2Overflow { .. } => {
                assert!(
                    (1..=2).contains(&http1),
                    "at most 2 HTTP/1.1: {connections:?}"
                );
                assert_eq!(http2, 1, "the rest share one HTTP/2: {connections:?}");
            }
        }
        // One request at a time rides a connection the burst opened.
        for _ in 0..3 {
            let (version, peer) = exchange(&upstream, "/wait").await?;
            let expected = if protocol == InternalProtocol::Http2 {
                "HTTP/2.0"
            } else {
                "HTTP/1.1"
            };
            assert_eq!(version, expected, "{protocol:?}");
            assert!(
                connections[expected].contains(&peer),
                "{protocol:?}: a connection is reused, not {peer}"
            );
        }
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn while_http2_carries_as_many_requests_as_the_pool_has_connections_new_ones_join_it()
-> Result<()> {
    let upstream = upstream(
        echo_server().await?,
        InternalProtocol::Http1WithHttp2Overflow {
            http1_connections: 2,
        },
    );
    // Two requests fill the pool of HTTP/1.1 connections for 600 ms; eight more, sent
    // meanwhile, find it full and busy and share one HTTP/2 connection for 2 s.
    let pool = futures::future::join_all((0..2).map(|_| exchange(&upstream, "/wait?ms=600")));
    let busy = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        futures::future::join_all((0..8).map(|_| exchange(&upstream, "/wait?ms=2000"))).await
    };
    // Once the pool's requests are answered, its connections are idle while the eight
    // are still in flight: the link is busy, and new requests join HTTP/2.
    let joining = async {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut versions = Vec::new();
        for _ in 0..3 {
            versions.push(exchange(&upstream, "/wait").await?.0);
        }
        anyhow::Ok(versions)
    };
    let (pool, busy, joining) = tokio::join!(pool, busy, joining);
    for answer in pool {
        assert_eq!(answer?.0, "HTTP/1.1");
    }
    for answer in busy {
        assert_eq!(answer?.0, "HTTP/2.0");
    }
    assert_eq!(
        joining?, ["HTTP/2.0"; 3],
        "a busy link's new requests join HTTP/2"
    );

    // With nothing in flight, requests take the idle HTTP/1.1 connections again.
    assert_eq!(exchange(&upstream, "/wait").await?.0, "HTTP/1.1");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_request_to_a_port_nobody_listens_on_comes_back_never_sent() -> Result<()> {
    let closed = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    for protocol in MODES {
        let upstream = upstream(closed, protocol);
        let request = get_request(&upstream, "/wait?ms=1");
        let sent = upstream
            .send(request, deadline(Duration::from_secs(5)))
            .await;
        match sent {
            Err(UpstreamError::NotSent(request)) => {
                assert_eq!(
                    request.uri().path(),
                    "/wait",
                    "{protocol:?}: the same request"
                );
                assert_eq!(
                    request.headers().get(header::HOST),
                    Some(upstream.host()),
                    "{protocol:?}: handed back as it was given"
                );
            }
            other => panic!("{protocol:?}: {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn no_response_head_by_the_deadline_times_out_at_the_deadline() -> Result<()> {
    let address = echo_server().await?;
    for protocol in MODES {
        let upstream = upstream(address, protocol);
        let started = tokio::time::Instant::now();
        let sent = upstream
            .send(
                get_request(&upstream, "/wait?ms=60000"),
                deadline(Duration::from_secs(2)),
            )
            .await;
        assert!(
            matches!(sent, Err(UpstreamError::TimedOut)),
            "{protocol:?}: {sent:?}"
        );
        let waited = started.elapsed();
        assert!(
            (Duration::from_secs(2)..Duration::from_millis(2100)).contains(&waited),
            "{protocol:?}: gave up after {waited:?}"
        );
        // The connection that timed out is not reused: the next request is answered.
        let (version, _) = exchange(&upstream, "/wait?ms=10").await?;
        assert!(version.starts_with("HTTP/"), "{protocol:?}: {version}");
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_closes_after_reading_the_request_failed_it() -> Result<()> {
    // Reads a request head, then closes without answering.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
        }
    });
    let upstream = upstream(address, InternalProtocol::Http1);
    let sent = upstream
        .send(
            get_request(&upstream, "/wait"),
            deadline(Duration::from_secs(5)),
        )
        .await;
    assert!(
        matches!(sent, Err(UpstreamError::Failed)),
        "the request left, so it is not handed back: {sent:?}"
    );
    Ok(())
}
