//! Integration tests of the transport: a real server (`hop::serve_service`) on loopback
//! ports, and upstreams dialling it in every protocol mode, with tokio's paused clock where
//! the behaviour depends on time.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

mod connectors;
mod hygiene;
mod listeners;

/// The head limits of the test servers (those of a node, in round numbers).
pub const LIMITS: hop::HeadLimits = hop::HeadLimits {
    max_headers: 132,
    max_head_bytes: 480 * 1024,
    max_header_list_size: 480 * 1024,
};

/// Sends one `GET path` over HTTP/1.1 and reads the response up to the end of its body.
pub async fn request(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: node\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    read_response(stream).await
}

/// Reads one HTTP/1.1 response (its head and `content-length` body) from `stream`.
pub async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
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

/// An HTTP/2 client (prior knowledge) on `stream`, its connection driven by a task.
pub async fn http2_client(
    stream: TcpStream,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    (sender, tokio::spawn(connection))
}

/// One request over an HTTP/2 connection: the status and the body.
pub async fn http2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
) -> (http::StatusCode, String) {
    use http_body_util::BodyExt as _;
    let request = http::Request::get(format!("http://node{path}"))
        .body(http_body_util::Empty::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("HTTP/2 response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
