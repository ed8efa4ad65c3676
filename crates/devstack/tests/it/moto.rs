//! The moto harness: it answers, and stopping or dropping it leaves nothing running.

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use devstack::MotoServer;
use devstack::testing::shared_moto;

fn answers(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

async fn wait_until_closed(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while answers(port) {
        assert!(Instant::now() < deadline, "moto still listens on {port}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_shared_moto_answers_on_loopback() {
    let moto = shared_moto();
    assert_eq!(
        moto.endpoint_url(),
        format!("http://127.0.0.1:{}", moto.port())
    );
    assert!(answers(moto.port()));
}

#[tokio::test]
async fn stopping_moto_ends_it_and_removes_its_log() {
    let moto = MotoServer::start().await.expect("start moto");
    let (port, log) = (moto.port(), moto.log_path().to_path_buf());
    assert!(
        log.is_file(),
        "{} should exist while moto runs",
        log.display()
    );
    moto.stop().await.expect("stop moto");
    wait_until_closed(port).await;
    assert!(!log.exists(), "{} should be removed", log.display());
}

#[tokio::test]
async fn dropping_moto_without_stop_still_ends_it() {
    let moto = MotoServer::start().await.expect("start moto");
    let port = moto.port();
    drop(moto);
    wait_until_closed(port).await;
}
