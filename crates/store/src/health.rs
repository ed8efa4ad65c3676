//! Health of a region's databases: is the primary up, is each replica streaming, and how
//! far behind it is, in WAL bytes and seconds. Each endpoint keeps one dedicated probe
//! connection, so a busy pool never makes a healthy server look down.

use std::time::Duration;

use model::{Lsn, RegionId};
use tokio::sync::Mutex;
use tokio_postgres::Client;

use crate::PgEndpoint;
use crate::pools::read_stamp;

/// Why a server is out of rotation. Carries no server error text: reports are public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// No connection, or the connection failed.
    Unreachable,
    /// No answer within the probe timeout.
    Timeout,
    /// A replica that is not in recovery (promoted, or misconfigured): not a replica.
    NotInRecovery,
    /// A primary that is in recovery (demoted, or pointed at a replica): cannot write.
    InRecovery,
    /// The database is stamped for another region.
    WrongRegion,
}

impl ProbeFailure {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::NotInRecovery => "not_in_recovery",
            Self::InRecovery => "in_recovery",
            Self::WrongRegion => "wrong_region",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrimaryHealth {
    pub name: String,
    pub address: String,
    /// The primary's current WAL position when it is up.
    pub state: Result<Lsn, ProbeFailure>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaState {
    Streaming {
        replay_lsn: Lsn,
        /// WAL bytes the replica has yet to replay; unknown while the primary is down.
        lag_bytes: Option<u64>,
        /// Age of the last replayed transaction when behind; zero when caught up.
        lag_seconds: f64,
    },
    Down(ProbeFailure),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaHealth {
    pub name: String,
    pub address: String,
    pub state: ReplicaState,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseHealth {
    pub primary: PrimaryHealth,
    pub replicas: Vec<ReplicaHealth>,
}

impl DatabaseHealth {
    pub fn primary_up(&self) -> bool {
        self.primary.state.is_ok()
    }
}

/// One endpoint's dedicated probe connection, reopened when it breaks.
#[derive(Debug)]
pub(crate) struct EndpointProbe {
    endpoint: PgEndpoint,
    client: Mutex<Option<Client>>,
}

impl EndpointProbe {
    pub(crate) fn new(endpoint: PgEndpoint) -> Self {
        Self {
            endpoint,
            client: Mutex::new(None),
        }
    }

    /// Runs `check` on the probe connection within `timeout`; a failure drops the
    /// connection so the next probe starts afresh.
    async fn run<T>(
        &self,
        timeout: Duration,
        check: impl AsyncFnOnce(&Client) -> Result<T, ProbeFailure>,
    ) -> Result<T, ProbeFailure> {
        let attempt = async {
            let mut slot = self.client.lock().await;
            if slot.as_ref().is_none_or(Client::is_closed) {
                let mut config = self.endpoint.config.clone();
                config.connect_timeout(timeout);
                let (client, _) = crate::tls::connect(&config, &self.endpoint.tls)
                    .await
                    .map_err(|err| {
                        tracing::debug!(endpoint = %self.endpoint.name, error = %err, "probe connect failed");
                        ProbeFailure::Unreachable
                    })?;
                *slot = Some(client);
            }
            let client = slot.as_ref().ok_or(ProbeFailure::Unreachable)?;
            let result = check(client).await;
            if result.is_err() {
                *slot = None;
            }
            result
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may be wedged: start afresh next time.
                if let Ok(mut slot) = self.client.try_lock() {
                    *slot = None;
                }
                Err(ProbeFailure::Timeout)
            }
        }
    }

    fn name(&self) -> String {
        self.endpoint.name.clone()
    }
}

fn unreachable(err: tokio_postgres::Error) -> ProbeFailure {
    tracing::debug!(error = %err, "probe query failed");
    ProbeFailure::Unreachable
}

async fn check_stamp(client: &Client, region: &RegionId) -> Result<(), ProbeFailure> {
    match read_stamp(client).await.map_err(unreachable)? {
        Some(stamped) if stamped != region.as_str() => Err(ProbeFailure::WrongRegion),
        _ => Ok(()),
    }
}

/// Probes `probes[0]` as the primary, the rest as replicas (concurrently).
pub(crate) async fn probe_all(
    region: &RegionId,
    probes: &[EndpointProbe],
    timeout: Duration,
) -> DatabaseHealth {
    let (primary_probe, replica_probes) = probes
        .split_first()
        .expect("a region always has a primary probe");
    // The primary goes first so that a caught-up replica reads as zero lag.
    let primary_state = primary_probe
        .run(timeout, async |client| {
            let row = client
                .query_one(
                    "select pg_is_in_recovery(), pg_current_wal_lsn()::text",
                    &[],
                )
                .await;
            // pg_current_wal_lsn() fails during recovery; ask again to tell the two apart.
            let row = match row {
                Ok(row) => row,
                Err(err) => {
                    let in_recovery: bool = client
                        .query_one("select pg_is_in_recovery()", &[])
                        .await
                        .map_err(|_| unreachable(err))?
                        .get(0);
                    return Err(if in_recovery {
                        ProbeFailure::InRecovery
                    } else {
                        ProbeFailure::Unreachable
                    });
                }
            };
            if row.get::<_, bool>(0) {
                return Err(ProbeFailure::InRecovery);
            }
            check_stamp(client, region).await?;
            Lsn::parse(row.get::<_, &str>(1)).map_err(|_| ProbeFailure::Unreachable)
        })
        .await;
    let primary_lsn = primary_state.as_ref().ok().copied();

    let replicas = futures::future::join_all(replica_probes.iter().map(|probe| async move {
        let state = probe
            .run(timeout, async |client| {
                let row = client
                    .query_one(
                        "select pg_is_in_recovery(),
                                coalesce(pg_last_wal_replay_lsn()::text, '0/0'),
                                coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp())::float8, 0)",
                        &[],
                    )
                    .await
                    .map_err(unreachable)?;
                if !row.get::<_, bool>(0) {
                    return Err(ProbeFailure::NotInRecovery);
                }
                check_stamp(client, region).await?;
                let replay_lsn = Lsn::parse(row.get::<_, &str>(1)).map_err(|_| ProbeFailure::Unreachable)?;
                let lag_bytes = primary_lsn.map(|primary| replay_lsn.bytes_until(primary));
                let lag_seconds = if lag_bytes == Some(0) { 0.0 } else { row.get::<_, f64>(2).max(0.0) };
                Ok(ReplicaState::Streaming { replay_lsn, lag_bytes, lag_seconds })
            })
            .await
            .unwrap_or_else(ReplicaState::Down);
        ReplicaHealth { name: probe.name(), address: probe.endpoint.address(), state }
    }))
    .await;

    DatabaseHealth {
        primary: PrimaryHealth {
            name: primary_probe.name(),
            address: primary_probe.endpoint.address(),
            state: primary_state,
        },
        replicas,
    }
}
