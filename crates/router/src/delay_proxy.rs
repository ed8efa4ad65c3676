//! A small TCP proxy that adds a fixed one-way latency in each direction, for WAN realism
//! in tests and benchmarks (the kernel here has no netem). Bytes are forwarded as they
//! arrive, each chunk released `one_way` after it was read, so throughput is not limited by
//! the delay (like a long link, unlike a stop-and-wait relay).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Chunks in flight per direction; with 64 KiB reads this bounds a connection's memory.
const IN_FLIGHT: usize = 64;
const READ_SIZE: usize = 64 * 1024;

/// Starts delay proxies.
#[derive(Debug)]
pub struct DelayProxy;

/// A running proxy. Dropping it (or [`DelayProxyHandle::stop`]) closes the listener and
/// every connection through it.
#[derive(Debug)]
pub struct DelayProxyHandle {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl DelayProxyHandle {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for DelayProxyHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DelayProxy {
    /// Listens on `listen` (port 0 picks a free port) and relays every connection to
    /// `upstream`, delaying each direction by `one_way`. Returns the bound address.
    pub async fn start(
        listen: SocketAddr,
        upstream: SocketAddr,
        one_way: Duration,
    ) -> io::Result<(SocketAddr, DelayProxyHandle)> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, upstream, one_way));
        Ok((address, DelayProxyHandle { address, task }))
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, one_way: Duration) {
    // Owned here so that aborting this task aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    connections.spawn(relay(client, upstream, one_way));
                }
                Err(err) => {
                    tracing::debug!(error = %err, "delay proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration) {
    // The connection attempt itself crosses the link: SYN one way, SYN-ACK back.
    tokio::time::sleep(one_way * 2).await;
    let server = match TcpStream::connect(upstream).await {
        Ok(server) => server,
        Err(err) => {
            tracing::debug!(error = %err, "delay proxy cannot reach its upstream");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, one_way);
    let down = pipe(server_read, client_write, one_way);
    tokio::join!(up, down);
}

/// Copies `from` to `to`, each chunk `delay` after it was read; end of stream is delayed
/// the same way and becomes a write shutdown.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Bytes>)>(IN_FLIGHT);
    let reader = async move {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            let due = Instant::now() + delay;
            let chunk = (n > 0).then(|| Bytes::copy_from_slice(&buf[..n]));
            let end = chunk.is_none();
            if tx.send((due, chunk)).await.is_err() || end {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
