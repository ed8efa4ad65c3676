//! The accept side (`hop::serve_service`, `hop::serve_connections`): the peer
//! address reaches handlers or each connection's service, HTTP/1.1 and HTTP/2 (prior
//! knowledge) share a listener, and shutdown closes idle connections and refuses new ones
//! at once, while a request in flight still gets its whole response before the server
//! returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use crate::{LIMITS, http2_client, http2_get, request};

/// `app` with a `/slow` route that signals the first `Notify` when it starts and answers
/// "finished" once the second is notified.
/// Asserts that the server closes `idle` (within 5 s) without writing anything more.
async fn closed_at_shutdown(idle: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("an idle connection is closed at shutdown");
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
}

fn with_slow_route(app: Router) -> (Router, Arc<Notify>, Arc<Notify>) {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let slow = get({
        let (started, release) = (started.clone(), release.clone());
        move || async move {
            started.notify_one();
            release.notified().await;
            "finished"
        }
    });
    (app.route("/slow", slow), started, release)
}

/// Serves `app` with `hop::serve_service` on a free port until the sender fires.
async fn serve(
    app: Router,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(hop::serve_service(listener, LIMITS, app, async move {
        let _ = stopped.await;
    }));
    (address, stop, server)
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_and_closes_the_rest() {
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let (app, started, release) = with_slow_route(app);
    let (address, stop, server) = serve(app).await;

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
    closed_at_shutdown(&mut idle).await;
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
    let server = tokio::spawn(hop::serve_connections(
        listener,
        LIMITS,
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

#[tokio::test]
async fn http2_with_prior_knowledge_shares_the_listener_and_drains_like_http1() {
    let app = Router::new().route(
        "/peer",
        get(
            |ConnectInfo(peer): ConnectInfo<SocketAddr>, request: axum::extract::Request| async move {
                format!("{:?} {peer}", request.version())
            },
        ),
    );
    let (app, started, release) = with_slow_route(app);
    let (address, stop, server) = serve(app).await;

    // A connection that opens with the HTTP/2 preface is served over HTTP/2, with the
    // client's address, and several requests share it.
    let stream = TcpStream::connect(address).await.expect("connect");
    let own = stream.local_addr().expect("local address");
    let (mut sender, connection) = http2_client(stream).await;
    for _ in 0..3 {
        let (status, body) = http2_get(&mut sender, "/peer").await;
        assert_eq!(status, http::StatusCode::OK, "{body}");
        assert_eq!(body, format!("HTTP/2.0 {own}"));
    }
    // HTTP/1.1 on the same listener as before.
    let mut plain = TcpStream::connect(address).await.expect("connect");
    let response = request(&mut plain, "/peer").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("HTTP/1.1 127.0.0.1:"), "{response}");
    // A connection that has not said anything yet.
    let mut silent = TcpStream::connect(address).await.expect("connect");

    let slow = tokio::spawn({
        let mut sender = sender.clone();
        async move { http2_get(&mut sender, "/slow").await }
    });
    started.notified().await;
    stop.send(()).expect("server running");

    // The silent connection and the idle HTTP/1.1 one are closed at once...
    for idle in [&mut silent, &mut plain] {
        closed_at_shutdown(idle).await;
    }
    // ...while the HTTP/2 request in flight holds the server open...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !server.is_finished(),
        "the server waits for the request in flight"
    );
    // ...and gets its whole response; then the server returns.
    release.notify_one();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the request in flight completes")
        .expect("request task");
    assert_eq!((status, body.as_str()), (http::StatusCode::OK, "finished"));
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server returns once every connection closed")
        .expect("server task")
        .expect("server result");
    drop(sender);
    let _ = connection.await;
}
