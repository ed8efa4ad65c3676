//! The answer to a connection beyond the listener's cap: a fixed HTTP/1.1
//! `503 Service Unavailable` with `Retry-After` and a problem+json body, written straight
//! to the socket from the accept loop, and the connection closed. Nothing is awaited, so a
//! refused client can never hold the accept loop or a task.

use std::io::{Read as _, Write as _};

use tokio::net::TcpStream;

/// Bytes of a refused connection's request read (and dropped) before the answer: a
/// socket closed with unread bytes is reset, and a reset may discard the answer before
/// the client reads it.
const DISCARDED_AT_MOST: usize = 16 * 1024;

/// The `503` a refused connection gets, made once per server.
#[derive(Debug)]
pub(super) struct Refusal {
    response: Vec<u8>,
}

impl Refusal {
    pub(super) fn new(retry_after_secs: u32) -> Self {
        let body = "{\"type\":\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\
                    \"detail\":\"The server has as many connections open as it may; try again after Retry-After seconds.\"}";
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\n\
             content-type: application/problem+json\r\n\
             retry-after: {retry_after_secs}\r\n\
             connection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        Self {
            response: response.into_bytes(),
        }
    }

    /// Answers `stream` and closes it. A client whose answer does not fit in the socket's
    /// send buffer at once (it never happens on a new connection) is closed without it.
    pub(super) fn answer(&self, stream: TcpStream) {
        // Out of tokio's reactor, so that the calls below go to the socket as they are
        // (tokio's `try_` calls refuse before the reactor has seen the socket ready).
        let Ok(mut stream) = stream.into_std() else {
            return;
        };
        let mut discarded = 0;
        let mut scratch = [0u8; 4096];
        while discarded < DISCARDED_AT_MOST {
            match stream.read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
        if let Err(err) = stream.write_all(&self.response) {
            tracing::debug!(error = %err, "cannot answer a refused connection");
        }
    }
}
