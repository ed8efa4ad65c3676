//! Request bodies as the router sees them: small ones read into memory (so that a request
//! can be sent a second time), larger ones streamed, with what was already read put back in
//! front. The router never inspects, logs or keeps a body beyond one request.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

/// A request body after [`prepare`].
#[derive(Debug)]
pub(crate) enum Prepared {
    /// The whole body, at most the limit; can be sent any number of times.
    Buffered(Bytes),
    /// A body over the limit (or with trailers): can be sent once.
    Streaming(Body),
    /// A streaming body that was sent.
    Taken,
}

impl Prepared {
    /// A body to send; `None` when a streaming body was already taken.
    pub(crate) fn take(&mut self) -> Option<Body> {
        match self {
            // An empty body boxes nothing (most forwarded requests are GETs).
            Self::Buffered(bytes) if bytes.is_empty() => Some(Body::empty()),
            Self::Buffered(bytes) => Some(Body::from(bytes.clone())),
            Self::Streaming(_) => match std::mem::replace(self, Self::Taken) {
                Self::Streaming(body) => Some(body),
                _ => None,
            },
            Self::Taken => None,
        }
    }

    pub(crate) fn is_replayable(&self) -> bool {
        matches!(self, Self::Buffered(_))
    }

    /// Whether [`Prepared::take`] still has a body to give.
    pub(crate) fn is_sendable(&self) -> bool {
        !matches!(self, Self::Taken)
    }

    /// Puts back a taken streaming body that provably was never sent.
    pub(crate) fn restore(&mut self, body: Body) {
        if matches!(self, Self::Taken) {
            *self = Self::Streaming(body);
        }
    }
}

/// Why a body could not be prepared.
#[derive(Debug)]
pub(crate) enum Unread {
    /// The client's body failed (a broken connection, a malformed chunk).
    Failed,
    /// The client did not send it within the deadline.
    TimedOut,
}

/// [`prepare`] within `deadline`: the router holds a request's memory and connection
/// while it reads, so a client that trickles its body (or stops) is answered instead of
/// waited for.
pub(crate) async fn prepare_within(
    body: Body,
    limit: usize,
    deadline: std::time::Duration,
) -> Result<Prepared, Unread> {
    match tokio::time::timeout(deadline, prepare(body, limit)).await {
        Ok(Ok(prepared)) => Ok(prepared),
        Ok(Err(_)) => Err(Unread::Failed),
        Err(_) => Err(Unread::TimedOut),
    }
}

/// Reads `body` into memory if it is at most `limit` bytes; otherwise returns a body that
/// yields what was read and then the rest, without holding more than `limit` bytes.
pub(crate) async fn prepare(mut body: Body, limit: usize) -> Result<Prepared, axum::Error> {
    let hint = body.size_hint();
    if hint.exact() == Some(0) || body.is_end_stream() {
        return Ok(Prepared::Buffered(Bytes::new()));
    }
    if hint.lower() > limit as u64 {
        return Ok(Prepared::Streaming(body));
    }
    let mut frames: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(err)) => return Err(err),
            Some(Ok(frame)) => {
                let trailers = frame.is_trailers();
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                }
                frames.push_back(frame);
                if trailers || total > limit {
                    return Ok(Prepared::Streaming(Body::new(Prefixed {
                        prefix: frames,
                        rest: body,
                    })));
                }
            }
        }
    }
    let mut joined = BytesMut::with_capacity(total);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            joined.extend_from_slice(&data);
        }
    }
    Ok(Prepared::Buffered(joined.freeze()))
}

/// Reads and discards `body`, up to `limit` bytes and for at most `patience`: a node that
/// answers before reading a request body lets the sender finish first, so that closing
/// the connection does not reset it before the sender has read the answer (TCP discards
/// what it received when unread data is left at close).
pub(crate) async fn drain(mut body: Body, limit: usize, patience: std::time::Duration) {
    let mut left = limit;
    let _ = tokio::time::timeout(patience, async {
        while let Some(Ok(frame)) = body.frame().await {
            let Some(data) = frame.data_ref() else {
                continue;
            };
            match left.checked_sub(data.len()) {
                Some(rest) => left = rest,
                None => return,
            }
        }
    })
    .await;
}

/// Frames already read, then the rest of the body.
struct Prefixed {
    prefix: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some(frame) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .prefix
            .iter()
            .filter_map(|f| f.data_ref())
            .map(|d| d.len() as u64)
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of `chunks` whose length is not declared (like a chunked upload); one that
    /// does not `end` stalls after them, as a client that stops sending.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        ends: bool,
    }

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.chunks.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None if self.ends => Poll::Ready(None),
                None => Poll::Pending,
            }
        }
    }

    fn chunked(chunks: Vec<&'static [u8]>) -> Body {
        Body::new(Chunks {
            chunks: chunks.into_iter().map(Bytes::from_static).collect(),
            ends: true,
        })
    }

    fn stalled(chunks: Vec<&'static [u8]>) -> Body {
        Body::new(Chunks {
            chunks: chunks.into_iter().map(Bytes::from_static).collect(),
            ends: false,
        })
    }

    #[tokio::test]
    async fn small_bodies_are_buffered_and_replayable() {
        let mut prepared = prepare(chunked(vec![b"ab", b"cd"]), 4)
            .await
            .expect("prepare");
        assert!(prepared.is_replayable());
        for _ in 0..2 {
            let body = prepared.take().expect("body");
            let bytes = body.collect().await.expect("collect").to_bytes();
            assert_eq!(&bytes[..], b"abcd");
        }
    }

    #[tokio::test]
    async fn large_bodies_stream_once_with_nothing_lost() {
        let mut prepared = prepare(chunked(vec![b"ab", b"cd", b"ef"]), 3)
            .await
            .expect("prepare");
        assert!(!prepared.is_replayable());
        let body = prepared.take().expect("body");
        let bytes = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&bytes[..], b"abcdef");
        assert!(prepared.take().is_none(), "a streamed body is sent once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_not_sent_within_the_deadline_times_out_at_the_deadline() {
        let deadline = std::time::Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        let read = prepare_within(stalled(vec![b"{\"name\":"]), 1024, deadline).await;
        assert!(matches!(read, Err(Unread::TimedOut)), "{read:?}");
        assert_eq!(started.elapsed(), deadline);

        let whole = prepare_within(chunked(vec![b"ab", b"cd"]), 1024, deadline).await;
        assert!(
            matches!(whole, Ok(Prepared::Buffered(ref b)) if &b[..] == b"abcd"),
            "{whole:?}"
        );
        assert_eq!(started.elapsed(), deadline, "a body at hand takes no time");
    }

    #[tokio::test]
    async fn empty_and_declared_large_bodies_are_not_read() {
        assert!(matches!(
            prepare(Body::empty(), 10).await.expect("prepare"),
            Prepared::Buffered(b) if b.is_empty()
        ));
        let big = Body::from(vec![0u8; 100]);
        assert!(matches!(
            prepare(big, 10).await.expect("prepare"),
            Prepared::Streaming(_)
        ));
    }
}
