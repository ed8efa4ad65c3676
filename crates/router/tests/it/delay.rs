//! The delay proxy adds its one-way latency in each direction without turning the link
//! into stop-and-wait.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use router::DelayProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server() -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok((addr, task))
}

#[tokio::test]
async fn the_delay_proxy_adds_its_one_way_latency_each_way() -> Result<()> {
    let one_way = Duration::from_millis(40);
    let (echo, server) = echo_server().await?;
    let (addr, proxy) = DelayProxy::start("127.0.0.1:0".parse()?, echo, one_way).await?;
    assert_eq!(proxy.address(), addr);

    let mut conn = TcpStream::connect(addr).await?;
    conn.set_nodelay(true)?;
    for _ in 0..3 {
        let started = Instant::now();
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await?;
        let rtt = started.elapsed();
        assert_eq!(&buf, b"ping");
        assert!(rtt >= one_way * 2, "round trip {rtt:?}");
        assert!(
            rtt < one_way * 2 + Duration::from_millis(500),
            "round trip {rtt:?}"
        );
    }

    // 4 MiB in 64 KiB reads: stop-and-wait would take 64 round trips (> 5 s).
    let payload = vec![0x33u8; 4 * 1024 * 1024];
    let started = Instant::now();
    let (mut r, mut w) = conn.into_split();
    let writer = tokio::spawn(async move { w.write_all(&payload).await });
    let mut got = vec![0u8; 4 * 1024 * 1024];
    r.read_exact(&mut got).await?;
    writer.await??;
    let elapsed = started.elapsed();
    assert!(got.iter().all(|b| *b == 0x33));
    assert!(
        elapsed < Duration::from_millis(2500),
        "bulk transfer took {elapsed:?}"
    );

    drop(proxy);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "a dropped proxy stops listening"
    );
    server.abort();
    Ok(())
}
