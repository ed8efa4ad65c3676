//! Which protocol a new connection speaks, read from its first bytes without consuming
//! them: HTTP/2 with prior knowledge when they are HTTP/2's preface, else HTTP/1.1.
//!
//! At most the preface's 24 bytes are peeked. A peek never empties the socket's receive
//! queue, so tokio keeps the socket marked readable and a plain `peek().await` after a
//! partial preface returns the same bytes again at once: waiting for the rest that way is
//! a busy loop (and a timed re-peek is a wake-up per interval for as long as the peer
//! wants). Instead, a peek that found only part of the preface, and nothing new, tells
//! tokio the socket would block: its readiness is cleared and the wait resumes with the
//! peer's next segment (or its close), costing nothing in between.

use std::io;
use std::os::fd::AsRawFd as _;

use nix::sys::socket::{MsgFlags, recv};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The first bytes an HTTP/2 client with prior knowledge sends (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// Waits for the connection's first bytes and reads the protocol from them without
/// consuming them. Anything but the HTTP/2 preface (including a peer that closes at once,
/// or closes after a part of it) is HTTP/1.1, whose parser then answers it. It never
/// resolves while the peer has sent a part of the preface and nothing else: the caller
/// bounds it with a deadline.
pub(super) async fn protocol_of(stream: &TcpStream) -> io::Result<Protocol> {
    let fd = stream.as_raw_fd();
    loop {
        let ready = stream.ready(Interest::READABLE).await?;
        // The peek runs inside `try_io`, so that a "would block" clears only the readiness
        // tokio saw before the peek: a segment that lands after it is not missed, it makes
        // the socket readable again and the peek is repeated.
        let peeked = stream.try_io(Interest::READABLE, || {
            let mut first = [0u8; HTTP2_PREFACE.len()];
            // The socket is non-blocking (tokio made it so); `MSG_DONTWAIT` says it again.
            let seen = recv(fd, &mut first, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)
                .map_err(io::Error::from)?;
            if seen == 0 || first[..seen] != HTTP2_PREFACE[..seen] {
                return Ok(Protocol::Http1);
            }
            if seen == HTTP2_PREFACE.len() {
                return Ok(Protocol::Http2);
            }
            // Part of the preface and then the peer's end: nothing more will come. tokio
            // never clears a closed readiness, so waiting again would return at once, and
            // so on for ever: the HTTP/1.1 parser answers what was sent instead.
            if ready.is_read_closed() {
                return Ok(Protocol::Http1);
            }
            // Part of the preface: wait for the peer's next segment.
            Err(io::ErrorKind::WouldBlock.into())
        });
        match peeked {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}
