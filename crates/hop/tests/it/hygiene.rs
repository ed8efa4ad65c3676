//! Connection hygiene of the accept side: a trickled request head and an idle connection
//! are closed after their timeouts (and an idle keep-alive connection is not closed by the
//! head's), a listener beyond its connection cap answers `503` with `Retry-After`, a
//! partial HTTP/2 preface waits without waking and is closed at the sniffing deadline
//! (and a peer that closes after one is answered at once, without a busy loop),
//! HTTP/2 rapid reset ends in `GOAWAY` for that connection only, and oversized header
//! lists are refused; a stopping server lets in-flight requests finish within its drain
//! timeout and cuts what is left at it. Timeouts run on tokio's paused clock where the
//! test is about time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use hop::{ClosedReason, ConnectionLimits, ConnectionMetrics, HeadLimits, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::{LIMITS, http2_client, http2_get, read_response, request};

/// A running test server: its address, its counters and the way to stop it.
struct Server {
    address: SocketAddr,
    metrics: ConnectionMetrics,
    _stop: oneshot::Sender<()>,
}

/// Serves `app` with `connections` (and `head`) on a free port.
async fn serve(app: Router, head: HeadLimits, connections: ConnectionLimits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let metrics = ConnectionMetrics::default();
    let config = ServerConfig {
        head,
        connections,
        metrics: metrics.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(hop::serve_service(listener, config, app, async move {
        let _ = stopped.await;
    }));
    Server {
        address,
        metrics,
        _stop: stop,
    }
}

fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

/// Waits until the server closes `stream` (end of stream or reset), discarding what it
/// sends; fails after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {limit:?}"
    );
}

fn limits(header_read: Duration, idle: Duration) -> ConnectionLimits {
    ConnectionLimits {
        sniff_timeout: header_read,
        header_read_timeout: header_read,
        idle_timeout: idle,
        ..ConnectionLimits::PRODUCTION
    }
}

#[tokio::test(start_paused = true)]
async fn a_trickled_request_head_is_closed_after_the_header_read_timeout() {
    let second = Duration::from_secs(1);
    let server = serve(hello(), LIMITS, limits(second, 60 * second)).await;

    let mut slow = TcpStream::connect(server.address).await.expect("connect");
    let began = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
    // One header line every 200 ms, for ever: the head never ends.
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b"x-slow: 1\r\n").await.is_err() {
                return;
            }
        }
    });
    let mut rest = Vec::new();
    let read = tokio::time::timeout(30 * second, reader.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a trickled head is closed");
    let took = began.elapsed();
    assert!(
        took >= second && took <= 3 * second,
        "closed after {took:?}, the timeout being 1 s (the watchdog ticks once a second)"
    );
    assert_eq!(server.metrics.closed(ClosedReason::HeaderRead), 1);
    trickle.abort();

    // Others are served as before.
    let mut other = TcpStream::connect(server.address).await.expect("connect");
    let answer = request(&mut other, "/").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_and_closes_after_the_idle_one() {
    let second = Duration::from_secs(1);
    let slow = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(20)).await;
            "finished"
        }),
    );
    let server = serve(hello().merge(slow), LIMITS, limits(second, 5 * second)).await;

    let mut kept = TcpStream::connect(server.address).await.expect("connect");
    assert!(request(&mut kept, "/").await.starts_with("HTTP/1.1 200"));
    // Idle three times the head's timeout: still open, and it serves the next request.
    tokio::time::sleep(3 * second).await;
    assert!(request(&mut kept, "/").await.starts_with("HTTP/1.1 200"));

    // A request in flight for four times the idle timeout is not cut.
    kept.write_all(b"GET /slow HTTP/1.1\r\nhost: node\r\n\r\n")
        .await
        .expect("write");
    let answer = read_response(&mut kept).await;
    assert!(answer.ends_with("finished"), "{answer}");

    // Then, with nothing in flight, it is closed after the idle timeout and not before.
    let idle_since = Instant::now();
    closed_within(&mut kept, 30 * second).await;
    let idle = idle_since.elapsed();
    assert!(
        idle >= 5 * second && idle <= 7 * second,
        "closed after {idle:?} idle, the timeout being 5 s"
    );
    assert_eq!(server.metrics.closed(ClosedReason::Idle), 1);
    assert_eq!(server.metrics.closed(ClosedReason::HeaderRead), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_http2_connection_is_closed_with_goaway_after_the_idle_timeout() {
    let second = Duration::from_secs(1);
    let server = serve(hello(), LIMITS, limits(second, 5 * second)).await;

    let stream = TcpStream::connect(server.address).await.expect("connect");
    let (mut sender, connection) = http2_client(stream).await;
    assert_eq!(http2_get(&mut sender, "/").await.0, http::StatusCode::OK);

    let idle_since = Instant::now();
    let ended = tokio::time::timeout(30 * second, connection).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection is closed");
    let idle = idle_since.elapsed();
    assert!(
        idle >= 5 * second && idle <= 8 * second,
        "closed after {idle:?} idle, the timeout being 5 s"
    );
    assert!(sender.is_closed(), "the client was told to stop (GOAWAY)");
    assert_eq!(server.metrics.closed(ClosedReason::Idle), 1);
}

#[tokio::test]
async fn beyond_the_connection_cap_a_client_gets_503_with_retry_after_and_later_is_served() {
    let cap = ConnectionLimits {
        max_connections: 2,
        retry_after_secs: 3,
        ..ConnectionLimits::PRODUCTION
    };
    let server = serve(hello(), LIMITS, cap).await;

    let mut first = TcpStream::connect(server.address).await.expect("connect");
    let mut second = TcpStream::connect(server.address).await.expect("connect");
    for open in [&mut first, &mut second] {
        assert!(request(open, "/").await.starts_with("HTTP/1.1 200"));
    }

    // The third is answered at once, and closed.
    let mut third = TcpStream::connect(server.address).await.expect("connect");
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: node\r\n\r\n")
        .await
        .expect("write");
    let refused = tokio::time::timeout(Duration::from_secs(5), read_response(&mut third))
        .await
        .expect("a refused connection is answered, not left hanging");
    let (head, body) = refused.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable"),
        "{head}"
    );
    assert!(head.contains("retry-after: 3"), "{head}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: serde_json::Value = serde_json::from_str(body).expect("problem+json");
    assert_eq!(problem["status"], 503);
    assert_eq!(problem["title"], "Service Unavailable");
    closed_within(&mut third, Duration::from_secs(5)).await;
    assert_eq!(server.metrics.refused(), 1);
    // The open ones are still served.
    assert!(request(&mut first, "/").await.starts_with("HTTP/1.1 200"));

    // Once one closes, a new connection is served again.
    drop(second);
    let mut attempts = 0;
    loop {
        let mut next = TcpStream::connect(server.address).await.expect("connect");
        let answer = request(&mut next, "/").await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        attempts += 1;
        assert!(attempts < 100, "never served again: {answer}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_partial_http2_preface_waits_without_waking_and_is_closed_at_the_sniff_deadline() {
    let deadline = Duration::from_millis(300);
    let server = serve(hello(), LIMITS, limits(deadline, Duration::from_secs(60))).await;
    let runtime = tokio::runtime::Handle::current().metrics();

    let mut partial = TcpStream::connect(server.address).await.expect("connect");
    partial
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .expect("write");
    let parks_before = runtime.worker_park_count(0);
    let busy_before = runtime.worker_total_busy_duration(0);
    let began = std::time::Instant::now();
    closed_within(&mut partial, Duration::from_secs(5)).await;
    let took = began.elapsed();
    // The runtime (one thread: the server and this test) slept through the wait: a few
    // wake-ups for the connection, not one per millisecond, and no busy loop either.
    let parks = runtime.worker_park_count(0) - parks_before;
    let busy = runtime.worker_total_busy_duration(0) - busy_before;
    assert!(
        busy < deadline / 3,
        "the runtime was busy {busy:?} of {took:?} while a partial preface waited"
    );
    assert!(
        took >= deadline - Duration::from_millis(20),
        "closed after {took:?}"
    );
    assert!(
        parks < 20,
        "the runtime woke {parks} times in {took:?} while a partial preface waited"
    );
    assert_eq!(server.metrics.closed(ClosedReason::Sniff), 1);
}

#[test]
fn a_peer_that_closes_after_a_partial_preface_is_answered_at_once_without_spinning() {
    // The server runs on a runtime of its own thread, which the test never joins: a server
    // that spun inside one poll would otherwise hang this test instead of failing it.
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let server = serve(hello(), LIMITS, ConnectionLimits::PRODUCTION).await;
            address_tx.send(server.address).expect("send the address");
            std::future::pending::<()>().await;
        });
    });
    let address = address_rx.recv().expect("the server's address");
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    client.block_on(async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(b"PRI * HTTP/2.0\r\n")
            .await
            .expect("write");
        stream.shutdown().await.expect("half-close");
        // Answered (HTTP/1.1 reads what came: not a request it can serve) and closed long
        // before the 10 s sniffing deadline.
        closed_within(&mut stream, Duration::from_secs(2)).await;
        // And the server still serves: it is not stuck in a loop.
        let mut fresh = TcpStream::connect(address).await.expect("connect");
        let answer = tokio::time::timeout(Duration::from_secs(2), request(&mut fresh, "/"))
            .await
            .expect("the server answers a new connection");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    });
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload (RFC 9113 §4.1).
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("frame length");
    let mut frame = length.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const PING: u8 = 0x6;
const END_STREAM_AND_HEADERS: u8 = 0x5;
/// `:method GET`, `:scheme http`, `:path /`, each one byte from HPACK's static table.
const GET_ROOT: [u8; 3] = [0x82, 0x86, 0x84];

/// Reads one frame: type, flags, stream id, payload; `None` once the connection ends.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.ok()?;
    Some((head[3], head[4], id, payload))
}

#[tokio::test]
async fn a_preface_split_across_segments_is_still_http2() {
    let server = serve(hello(), LIMITS, ConnectionLimits::PRODUCTION).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    stream.write_all(&PREFACE[..10]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(&PREFACE[10..]).await.expect("write");
    stream
        .write_all(&frame(SETTINGS, 0, 0, &[]))
        .await
        .expect("write");
    let (kind, _, id, _) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut stream))
        .await
        .expect("the server answers")
        .expect("a frame");
    assert_eq!((kind, id), (SETTINGS, 0), "the server speaks HTTP/2");
}

#[tokio::test]
async fn http2_rapid_reset_gets_goaway_while_other_connections_are_served() {
    let limits = ConnectionLimits {
        http2_max_pending_accept_reset_streams: 5,
        ..ConnectionLimits::PRODUCTION
    };
    let server = serve(hello(), LIMITS, limits).await;

    // A well-behaved HTTP/2 client on its own connection.
    let stream = TcpStream::connect(server.address).await.expect("connect");
    let (mut sender, _connection) = http2_client(stream).await;
    assert_eq!(http2_get(&mut sender, "/").await.0, http::StatusCode::OK);

    // The attacker opens streams and resets each before the server takes it up.
    let mut attacker = TcpStream::connect(server.address).await.expect("connect");
    let mut burst = PREFACE.to_vec();
    burst.extend(frame(SETTINGS, 0, 0, &[]));
    for n in 0..10u32 {
        let id = 2 * n + 1;
        burst.extend(frame(HEADERS, END_STREAM_AND_HEADERS, id, &GET_ROOT));
        burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    attacker.write_all(&burst).await.expect("write");
    let mut goaway = None;
    let frames = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((kind, _, _, payload)) = read_frame(&mut attacker).await {
            if kind == GOAWAY {
                goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
    })
    .await;
    assert!(frames.is_ok(), "the attacker's connection is closed");
    assert_eq!(goaway, Some(0xb), "GOAWAY with ENHANCE_YOUR_CALM");

    // The other connection is still served.
    assert_eq!(http2_get(&mut sender, "/").await.0, http::StatusCode::OK);
}

#[tokio::test]
async fn an_oversized_header_list_is_refused_before_the_handler_in_both_protocols() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/",
        get({
            let calls = calls.clone();
            move || async move {
                calls.fetch_add(1, Ordering::Relaxed);
                "hello"
            }
        }),
    );
    let small = HeadLimits {
        max_headers: 32,
        max_head_bytes: 8 * 1024,
        max_header_list_size: 8 * 1024,
    };
    let server = serve(app, small, ConnectionLimits::PRODUCTION).await;
    let big = "a".repeat(10 * 1024);

    // HTTP/1.1: 431 from the parser.
    let mut plain = TcpStream::connect(server.address).await.expect("connect");
    plain
        .write_all(format!("GET / HTTP/1.1\r\nhost: node\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // HTTP/2: one literal field of 10 KiB (HPACK: literal without indexing, new name),
    // beyond the 8 KiB header list the server announced.
    let mut block = GET_ROOT.to_vec();
    block.push(0x00);
    block.push(5);
    block.extend_from_slice(b"x-big");
    // The value's length as an HPACK integer with a 7-bit prefix.
    let mut length = big.len() - 127;
    block.push(0x7f);
    while length >= 128 {
        block.push(u8::try_from(length % 128).expect("7 bits") | 0x80);
        length /= 128;
    }
    block.push(u8::try_from(length).expect("7 bits"));
    block.extend_from_slice(big.as_bytes());
    let mut h2 = TcpStream::connect(server.address).await.expect("connect");
    let mut request = PREFACE.to_vec();
    request.extend(frame(SETTINGS, 0, 0, &[]));
    request.extend(frame(HEADERS, END_STREAM_AND_HEADERS, 1, &block));
    h2.write_all(&request).await.expect("write");
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((kind, _, id, payload)) = read_frame(&mut h2).await {
            if id == 1 && kind == HEADERS {
                return Some(payload);
            }
        }
        None
    })
    .await
    .expect("the server answers")
    .expect("a response on the stream");
    // `:status 431` is not in HPACK's static table: it is sent as a literal, its value
    // "431" Huffman-coded (RFC 7541 Appendix B: 011010 011001 00001, padded with ones).
    assert!(
        refused
            .windows(3)
            .any(|window| window == [0x69, 0x90, 0xff]),
        "{refused:?}"
    );
    assert_eq!(
        calls.load(Ordering::Relaxed),
        0,
        "no handler saw either request"
    );
}

#[tokio::test(start_paused = true)]
async fn an_http2_peer_that_stops_answering_pings_is_closed_when_they_are_on() {
    let second = Duration::from_secs(1);
    let slow = Router::new().route(
        "/",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "finished"
        }),
    );
    let pinging = ConnectionLimits {
        http2_keep_alive_interval: Some(2 * second),
        http2_keep_alive_timeout: second,
        ..limits(second, 60 * second)
    };
    let server = serve(slow, LIMITS, pinging).await;

    // A request in flight (so the idle timeout does not apply), then silence: PINGs go
    // unanswered.
    let mut silent = TcpStream::connect(server.address).await.expect("connect");
    let mut request = PREFACE.to_vec();
    request.extend(frame(SETTINGS, 0, 0, &[]));
    request.extend(frame(HEADERS, END_STREAM_AND_HEADERS, 1, &GET_ROOT));
    silent.write_all(&request).await.expect("write");
    let began = Instant::now();
    let mut pings = 0;
    let ended = tokio::time::timeout(30 * second, async {
        while let Some((kind, _, _, _)) = read_frame(&mut silent).await {
            if kind == PING {
                pings += 1;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a peer that does not answer pings is closed");
    assert!(pings >= 1, "the server pinged");
    let took = began.elapsed();
    assert!(
        took >= 3 * second && took <= 5 * second,
        "closed after {took:?}: a ping after 2 s, unanswered for 1 s"
    );
}

/// A server with a `/slow` route that answers after `work`, and its task (to await its
/// stop) with the sender that stops it.
async fn serve_stoppable(
    work: Duration,
    connections: ConnectionLimits,
) -> (
    SocketAddr,
    ConnectionMetrics,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let metrics = ConnectionMetrics::default();
    let config = ServerConfig {
        head: LIMITS,
        connections,
        metrics: metrics.clone(),
    };
    let app = Router::new().route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(work).await;
            "done"
        }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(hop::serve_service(listener, config, app, async move {
        let _ = stopped.await;
    }));
    (address, metrics, stop, server)
}

/// A connection to `address` with a request of `/slow` sent on it.
async fn slow_request(address: SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(address).await.expect("connect");
    client
        .write_all(b"GET /slow HTTP/1.1\r\nhost: node\r\n\r\n")
        .await
        .expect("write");
    client
}

#[tokio::test(start_paused = true)]
async fn a_stopping_server_finishes_in_flight_requests_within_its_drain_timeout() {
    let second = Duration::from_secs(1);
    let drain = ConnectionLimits {
        drain_timeout: 10 * second,
        ..ConnectionLimits::PRODUCTION
    };
    let (address, metrics, stop, server) = serve_stoppable(3 * second, drain).await;
    let mut client = slow_request(address).await;
    // The request is in flight when the server is told to stop.
    tokio::time::sleep(second).await;
    stop.send(()).expect("the server runs");
    let answer = read_response(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    let began = Instant::now();
    tokio::time::timeout(10 * second, server)
        .await
        .expect("the server stops once its requests are answered")
        .expect("join")
        .expect("serve");
    assert!(
        began.elapsed() < second,
        "it did not wait for the drain timeout"
    );
    assert_eq!(metrics.closed(ClosedReason::Drain), 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_longer_than_the_drain_timeout_is_cut_and_counted() {
    let second = Duration::from_secs(1);
    let drain = ConnectionLimits {
        drain_timeout: 5 * second,
        ..ConnectionLimits::PRODUCTION
    };
    let (address, metrics, stop, server) = serve_stoppable(3600 * second, drain).await;
    let mut client = slow_request(address).await;
    tokio::time::sleep(second).await;
    let began = Instant::now();
    stop.send(()).expect("the server runs");
    tokio::time::timeout(60 * second, server)
        .await
        .expect("the server stops at its drain timeout, not when the request would end")
        .expect("join")
        .expect("serve");
    let took = began.elapsed();
    assert!(
        took >= 5 * second && took < 7 * second,
        "stopped after {took:?}, the drain timeout being 5 s"
    );
    assert_eq!(metrics.closed(ClosedReason::Drain), 1);
    closed_within(&mut client, second).await;
}
