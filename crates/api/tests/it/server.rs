//! The node's HTTP server (`api::serve_service`, `api::serve_connections`): the peer
//! address reaches handlers or each connection's service, and shutdown closes idle
//! connections and refuses new ones at once, while a request in flight still gets its
//! whole response before the server returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

/// Sends one `GET path` and reads the response up to the end of its body.
async fn request(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: node\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse().ok())
                .expect("content-length");
            if received.len() >= end + 4 + length {
                return text;
            }
        }
        let n = stream.read(&mut buf).await.expect("read response");
        assert!(n > 0, "connection closed mid-response: {text:?}");
        received.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_the_rest() {
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let app = Router::new()
        .route(
            "/peer",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
        )
        .route(
            "/slow",
            get({
                let (release, started) = (release.clone(), started.clone());
                move || async move {
                    started.notify_one();
                    release.notified().await;
                    "finished"
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(api::serve_service(listener, app, async move {
        let _ = stopped.await;
    }));

    // The handler sees the client's own address.
    let mut idle = TcpStream::connect(address).await.expect("connect");
    let response = request(&mut idle, "/peer").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let own = idle.local_addr().expect("local address").to_string();
    assert!(response.ends_with(&own), "{response} names {own}");

    let mut busy = TcpStream::connect(address).await.expect("connect");
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: node\r\n\r\n")
        .await
        .expect("write");
    started.notified().await;
    stop.send(()).expect("server running");

    // The idle keep-alive connection is closed, and nobody new gets in.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("the idle connection is closed at shutdown");
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(address).await.is_err(),
        "the listener is closed"
    );
    // The request in flight holds the server open...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !server.is_finished(),
        "the server waits for the request in flight"
    );

    // ...and gets its whole response, then the connection closes and the server returns.
    release.notify_one();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_string(&mut response))
        .await
        .expect("the request in flight completes")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("finished"), "{response}");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server returns once every connection closed")
        .expect("server task")
        .expect("server result");
}

#[tokio::test]
async fn serve_connections_makes_each_connection_a_service_that_knows_its_peer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    // The service for a connection answers with the peer it was made for, and with
    // whether the request carried `ConnectInfo` too (it does not: the service knows).
    let for_connection = |peer: SocketAddr| {
        Router::new().route(
            "/peer",
            get(move |request: axum::extract::Request| async move {
                let given = request
                    .extensions()
                    .get::<ConnectInfo<SocketAddr>>()
                    .is_some();
                format!("connect-info={given} peer={peer}")
            }),
        )
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(api::serve_connections(
        listener,
        for_connection,
        async move {
            let _ = stopped.await;
        },
    ));

    let mut streams = [
        TcpStream::connect(address).await.expect("connect"),
        TcpStream::connect(address).await.expect("connect"),
    ];
    // Each connection keeps its own service: the first is asked again after the second.
    for index in [0, 1, 0] {
        let stream = &mut streams[index];
        let own = stream.local_addr().expect("local address");
        let response = request(stream, "/peer").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.ends_with(&format!("connect-info=false peer={own}")),
            "{response} for {own}"
        );
    }

    stop.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server returns")
        .expect("server task")
        .expect("server result");
}
