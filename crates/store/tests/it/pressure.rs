//! Replica routing under pressure, on a real primary and replica: a busy replica sends a
//! read to the primary and stays in rotation; a token no node issued is refused before
//! anything waits on it; an old unsigned token reads the primary at once; a read whose
//! replica dies under it is served on a second try; and reads waiting for a replica to
//! replay up to their token are bounded, the excess going to the primary at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use model::{ConsistencyToken, Lsn, TenantId};
use serde_json::json;
use store::records::RecordRow;
use store::testing::region_database;
use store::{ConsistencyKeys, ReadConsistency, RegionDatabase, ServedBy, StoreError, TokenRefused};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::routing::{REGION, region, served_by, with_settings};
use crate::rows::{TENANT_A, insert_record, tenant, tenant_with_collection};

/// The primary's current WAL position, as the health probe reads it.
async fn primary_lsn(db: &RegionDatabase) -> Lsn {
    db.health(Duration::from_secs(2))
        .await
        .primary
        .state
        .expect("the primary is up")
}

/// Record `id` of `tenant`'s `people`, read through the retrying read path.
async fn read_record(
    db: &RegionDatabase,
    consistency: ReadConsistency,
    tenant: TenantId,
    id: &str,
) -> Result<(Option<RecordRow>, ServedBy), StoreError> {
    db.read(consistency, |mut reader| async move {
        let row = store::records::get_scoped(&mut reader, &tenant, "people", id).await;
        (reader, row)
    })
    .await
}

fn in_rotation(db: &RegionDatabase) -> bool {
    db.rotation() == [("replica-1".to_owned(), true)]
}

#[tokio::test]
async fn a_busy_replica_sends_that_read_to_the_primary_and_stays_in_rotation() {
    let database = crate::migrated(REGION).await;
    let db = with_settings(&database, |s| {
        s.pool_size = 1;
        s.pool_timeout = Duration::from_millis(300);
    });
    db.observe(&db.health(Duration::from_secs(2)).await);
    assert!(in_rotation(&db));

    let held = db.replicas()[0]
        .get()
        .await
        .expect("the replica's one connection");
    let started = Instant::now();
    let ((), served_by_busy) = db
        .read(ReadConsistency::Bounded, |reader| async move {
            (reader, Ok(()))
        })
        .await
        .expect("the read is served");
    assert_eq!(served_by_busy, ServedBy::Primary);
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited for the replica's pool first: {:?}",
        started.elapsed()
    );
    assert!(
        in_rotation(&db),
        "a busy replica is not a broken one: it stays in rotation"
    );

    drop(held);
    assert_eq!(
        served_by(&db, ReadConsistency::Bounded).await,
        ServedBy::Replica
    );
}

#[tokio::test]
async fn forged_tokens_are_refused_before_anything_waits_and_real_ones_are_served() {
    const SECRET: &[u8] = b"the deployment's forwarding secret";
    let (database, writer) = region_database(REGION).await;
    let db = with_settings(&database, |s| {
        s.consistency_keys = ConsistencyKeys::derive(SECRET);
        s.token_wait = Duration::from_secs(10);
    });
    let a = tenant(TENANT_A);
    tenant_with_collection(&writer, a).await;
    db.observe(&db.health(Duration::from_secs(2)).await);
    assert!(in_rotation(&db));

    // A far-future position, tagged under a guessed key; a real token whose position was
    // moved; and one of another deployment.
    let far_future = ConsistencyToken {
        region: region(),
        lsn: Lsn(u64::MAX),
    };
    let guessed = ConsistencyKeys::derive(b"a guess").sign(far_future.clone());
    let mut moved = db.consistency_token(Lsn(1));
    moved.token.lsn = Lsn(u64::MAX);
    let foreign = writer.consistency_token(Lsn(u64::MAX));
    let forged = [guessed.encode(), moved.encode(), foreign.encode()];
    let started = Instant::now();
    for round in 0..2_000 {
        let raw = &forged[round % forged.len()];
        assert_eq!(
            db.read_consistency(Some(raw)),
            Err(TokenRefused::NotIssued),
            "{raw}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refusal costs a parse and a MAC: {:?}",
        started.elapsed()
    );
    let replica_pool = &db.pool_stats()[1];
    assert_eq!(
        (replica_pool.open, replica_pool.waiting),
        (0, 0),
        "no forged token touched a replica connection"
    );
    assert!(in_rotation(&db));
    assert!(matches!(
        db.read_consistency(Some("v2.garbage")),
        Err(TokenRefused::Unreadable(_))
    ));

    // A real token, minted by another node of the deployment, is served by the replica
    // once it has replayed the write.
    let other_node = with_settings(&database, |s| {
        s.consistency_keys = ConsistencyKeys::derive(SECRET);
    });
    let lsn = insert_record(&writer, a, "rec-1", json!({"n": 1}), &[]).await;
    let token = other_node.consistency_token(lsn).encode();
    let consistency = db
        .read_consistency(Some(&token))
        .expect("our deployment's token");
    assert_eq!(consistency, ReadConsistency::AtLeast(lsn));
    let (found, served_by) = read_record(&db, consistency, a, "rec-1")
        .await
        .expect("token read");
    assert_eq!(served_by, ServedBy::Replica);
    assert!(found.is_some(), "read-your-writes on the replica");
    assert!(in_rotation(&db));
}

#[tokio::test]
async fn an_old_unsigned_token_reads_the_primary_without_waiting() {
    let (database, writer) = region_database(REGION).await;
    let db = with_settings(&database, |s| s.token_wait = Duration::from_secs(5));
    let a = tenant(TENANT_A);
    tenant_with_collection(&writer, a).await;
    db.observe(&db.health(Duration::from_secs(2)).await);

    // Minted before tokens were authenticated: its position is not trusted (it cannot
    // make a replica wait), but its write is honoured (the primary has it).
    let lsn = insert_record(&writer, a, "rec-old", json!({}), &[]).await;
    for old in [
        ConsistencyToken {
            region: region(),
            lsn,
        },
        ConsistencyToken {
            region: region(),
            lsn: Lsn(u64::MAX),
        },
    ] {
        let consistency = db
            .read_consistency(Some(&old.encode()))
            .expect("an old token is still accepted");
        assert_eq!(consistency, ReadConsistency::Latest);
        let started = Instant::now();
        let (found, served_by) = read_record(&db, consistency, a, "rec-old")
            .await
            .expect("read");
        assert_eq!(served_by, ServedBy::Primary);
        assert!(found.is_some());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "nothing waited for the token's position: {:?}",
            started.elapsed()
        );
    }
    assert!(in_rotation(&db));
}

/// A TCP relay in front of a server that can be cut at once, as when the server dies:
/// open connections break mid-stream and new ones are refused.
struct Relay {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay address").port();
        let (cut, mut cut_seen) = watch::channel(false);
        let for_connections = cut_seen.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cut_seen.wait_for(|cut| *cut) => return, // drops the listener
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        let mut cut_seen = for_connections.clone();
                        tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = cut_seen.wait_for(|cut| *cut) => {}
                            }
                        });
                    }
                }
            }
        });
        Self { port, cut }
    }

    fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

/// `config` reached through `port` on loopback.
fn through(config: &tokio_postgres::Config, port: u16) -> tokio_postgres::Config {
    let mut fresh = tokio_postgres::Config::new();
    fresh
        .host("127.0.0.1")
        .port(port)
        .user(config.get_user().expect("user"))
        .dbname(config.get_dbname().expect("dbname"));
    if let Some(password) = config.get_password() {
        fresh.password(password);
    }
    fresh
}

fn address(config: &tokio_postgres::Config) -> SocketAddr {
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(_) => panic!("the test replica listens on TCP"),
    };
    let host = if host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    format!("{host}:{}", config.get_ports()[0])
        .parse()
        .expect("replica address")
}

#[tokio::test]
async fn reads_whose_replica_dies_under_them_are_served_on_a_second_try() {
    const READERS: usize = 8;
    let (database, writer) = region_database(REGION).await;
    let a = tenant(TENANT_A);
    tenant_with_collection(&writer, a).await;
    let lsn = insert_record(&writer, a, "rec-1", json!({"n": 1}), &[]).await;
    // The replica has the record before it is put behind the relay.
    let caught_up = with_settings(&database, |s| s.token_wait = Duration::from_secs(10));
    caught_up.observe(&caught_up.health(Duration::from_secs(2)).await);
    assert_eq!(
        served_by(&caught_up, ReadConsistency::AtLeast(lsn)).await,
        ServedBy::Replica
    );

    let relay = Relay::start(address(&database.replica)).await;
    let db = with_settings(&database, |s| {
        s.replicas[0].config = through(&s.replicas[0].config, relay.port);
        s.pool_timeout = Duration::from_secs(2);
    });
    db.observe(&db.health(Duration::from_secs(2)).await);
    assert!(in_rotation(&db));

    // One read is mid-query on the replica when it dies.
    let slow = db.read(ReadConsistency::Bounded, |reader| async move {
        let slept = reader
            .client()
            .simple_query("select pg_sleep(1)")
            .await
            .map(|_| reader.served_by())
            .map_err(StoreError::from);
        (reader, slept)
    });
    // And readers keep reading before, during and after.
    let replica_served = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let reader_loop = || async {
        let (mut served, mut failed) = (Vec::new(), Vec::new());
        while !done.load(Ordering::Acquire) {
            let read = read_record(&db, ReadConsistency::Bounded, a, "rec-1").await;
            match read {
                Ok((Some(_), served_by)) => {
                    if served_by == ServedBy::Replica {
                        replica_served.store(true, Ordering::Release);
                    }
                    served.push(served_by);
                }
                Ok((None, _)) => failed.push("the record was not found".to_owned()),
                Err(err) => failed.push(err.to_string()),
            }
        }
        (served, failed)
    };
    // Cut once the replica is serving (connections through the relay are open), while
    // the slow read is still sleeping on it.
    let cut = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !replica_served.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the replica never served a read");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        relay.cut();
        // Reads go on for a while after the replica died.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        done.store(true, Ordering::Release);
    };
    let (slow, loops, ()) = tokio::join!(
        slow,
        futures::future::join_all((0..READERS).map(|_| reader_loop())),
        cut
    );

    let (started_on, finished_on) = slow.expect("the slow read succeeds on its second try");
    assert_eq!(started_on, ServedBy::Primary, "it ran again on the primary");
    assert_eq!(finished_on, ServedBy::Primary);
    assert!(db.retried_reads() >= 1);
    let failed: Vec<String> = loops.iter().flat_map(|(_, f)| f.clone()).collect();
    let served: Vec<ServedBy> = loops.iter().flat_map(|(s, _)| s.clone()).collect();
    assert!(failed.is_empty(), "failed reads: {failed:?}");
    assert!(
        served.contains(&ServedBy::Replica) && served.contains(&ServedBy::Primary),
        "reads ran on the replica before it died and on the primary after"
    );
    assert!(
        !in_rotation(&db),
        "a replica that refuses connections leaves the rotation"
    );
}

#[tokio::test]
async fn token_waits_are_bounded_and_the_excess_goes_to_the_primary_at_once() {
    const TOKEN_WAIT: Duration = Duration::from_secs(2);
    let database = crate::migrated(REGION).await;
    let db = with_settings(&database, |s| {
        s.pool_size = 3;
        s.pool_timeout = Duration::from_millis(500);
        s.token_wait = TOKEN_WAIT;
        s.max_token_waits = 2;
    });
    db.observe(&db.health(Duration::from_secs(2)).await);
    // A position no replica reaches while the test runs (a real token could name it
    // only if that much WAL were written).
    let beyond = Lsn(primary_lsn(&db).await.0 + (1 << 40));
    let read = |delay: Duration| {
        let db = &db;
        async move {
            tokio::time::sleep(delay).await;
            let started = Instant::now();
            let served = db
                .reader(ReadConsistency::AtLeast(beyond))
                .await
                .map(|reader| reader.served_by());
            (served, started.elapsed())
        }
    };

    let (first, second, excess) = tokio::join!(
        read(Duration::ZERO),
        read(Duration::ZERO),
        read(Duration::from_millis(300))
    );
    for (waiter, waited) in [first, second] {
        assert_eq!(waiter.expect("served"), ServedBy::Primary);
        assert!(waited >= TOKEN_WAIT, "waited for the replica: {waited:?}");
    }
    let (excess, waited) = excess;
    assert_eq!(excess.expect("served"), ServedBy::Primary);
    assert!(
        waited < Duration::from_millis(800),
        "beyond the bound a read does not wait: {waited:?}"
    );
    assert!(in_rotation(&db), "waiting takes no replica out");

    // With the primary saturated too, the excess is refused (a 503 with Retry-After at
    // the edge) after the primary's pool wait, not after the token wait.
    let held: Vec<_> = futures::future::join_all((0..3).map(|_| db.primary().get()))
        .await
        .into_iter()
        .map(|primary| primary.expect("primary connection"))
        .collect();
    let (_, _, (excess, waited)) = tokio::join!(
        read(Duration::ZERO),
        read(Duration::ZERO),
        read(Duration::from_millis(300))
    );
    assert!(
        matches!(excess, Err(StoreError::Unavailable(_))),
        "{excess:?}"
    );
    assert!(
        waited < Duration::from_millis(1_500),
        "refused after the primary's pool wait: {waited:?}"
    );
    drop(held);
}
