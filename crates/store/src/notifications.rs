//! Key-change notifications between the nodes of one region, over PostgreSQL's
//! `LISTEN`/`NOTIFY`: the transactions that change a tenant's keys (rotation, rewrapping,
//! crypto-shredding) or the region's audit signing keys notify, and every node's
//! [`Listener`] hears it when they commit and drops what it cached. Payloads are ids only.
//!
//! The listener holds one dedicated connection to the primary (never a pooled one: a
//! pooled connection would carry its `LISTEN` to other users). When that connection is
//! lost (the primary restarted, a network cut, `pg_terminate_backend`, a heartbeat
//! unanswered) it reconnects with backoff and, once it listens anew, reports
//! [`Notice::Resync`]: whatever changed while nobody listened is covered by dropping
//! everything cached. Nothing is dropped when the connection goes: a key can only change
//! on the primary, so while the primary is down nothing can be missed, and dropping every
//! key then would only send every node to the KMS at the worst moment. While the primary
//! is up, a lost listener is back within its backoff (`max_retry`) and a silent one is
//! noticed within a heartbeat and its timeout.

use std::sync::Arc;
use std::time::Duration;

use model::TenantId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{PgEndpoint, PgTls, PrimaryTx, RegionDatabase, StoreError};

/// Notified with a tenant id when that tenant's keys changed.
pub const TENANT_KEYS_CHANNEL: &str = "residency_tenant_keys";
/// Notified with the new key id when the region's current audit signing key changed.
pub const AUDIT_KEYS_CHANNEL: &str = "residency_audit_keys";
/// The listener's `application_name`, to find its session in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "residency-key-listener";

/// What a listener reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The keys of this tenant changed: drop its cached keys and active versions.
    TenantKeys(TenantId),
    /// The region's current audit signing key changed: load it.
    AuditKeys,
    /// The listener (re)connected: changes may have gone unheard before, so drop
    /// everything cached and load the audit keys again.
    Resync,
}

/// Notifies the region's nodes that `tenant`'s keys change with `tx` (delivered if it
/// commits).
pub async fn notify_tenant_keys(tx: &PrimaryTx<'_>, tenant: &TenantId) -> Result<(), StoreError> {
    tx.client()
        .execute(
            "select pg_notify($1, $2)",
            &[&TENANT_KEYS_CHANNEL, &tenant.as_str()],
        )
        .await?;
    Ok(())
}

/// Notifies the region's nodes that `key_id` becomes the current audit signing key with
/// `tx` (delivered if it commits).
pub(crate) async fn notify_audit_keys(tx: &PrimaryTx<'_>, key_id: &str) -> Result<(), StoreError> {
    tx.client()
        .execute("select pg_notify($1, $2)", &[&AUDIT_KEYS_CHANNEL, &key_id])
        .await?;
    Ok(())
}

/// How a [`Listener`] keeps its connection.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// The wait before the first reconnection attempt; doubled per failure.
    pub first_retry: Duration,
    /// The longest wait between reconnection attempts.
    pub max_retry: Duration,
    /// How often an idle connection is checked with a query (a connection that died
    /// silently, e.g. behind a cut network, is noticed within two of these).
    pub heartbeat: Duration,
    /// Bound on connecting, on `LISTEN` and on a heartbeat query.
    pub timeout: Duration,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_secs(5),
            heartbeat: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a listener calls with each notice, on its connection's task: keep it quick.
pub type NoticeHandler = Arc<dyn Fn(Notice) + Send + Sync>;

/// A running listener. [`Listener::stop`] ends it; dropping it does too.
#[derive(Debug)]
pub struct Listener {
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<()>>,
    sessions: watch::Receiver<u64>,
}

impl RegionDatabase {
    /// Listens for key changes on a dedicated connection to the primary, calling
    /// `on_notice` with each (see the module documentation).
    pub fn listen(&self, settings: ListenerSettings, on_notice: NoticeHandler) -> Listener {
        let (stop, stopped) = watch::channel(false);
        let (sessions_sender, sessions) = watch::channel(0);
        let endpoint = self.primary.endpoint().clone();
        let handle = tokio::spawn(run(endpoint, settings, on_notice, stopped, sessions_sender));
        Listener {
            stop,
            handle: Some(handle),
            sessions,
        }
    }
}

impl Listener {
    /// How many times the listener has started listening (1 after its first connection;
    /// one more per reconnection).
    pub fn sessions(&self) -> watch::Receiver<u64> {
        self.sessions.clone()
    }

    /// Stops listening and waits for the task to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take()
            && let Err(err) = handle.await
            && err.is_panic()
        {
            tracing::error!("the key-change listener panicked: {err}");
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn run(
    endpoint: PgEndpoint,
    settings: ListenerSettings,
    on_notice: NoticeHandler,
    mut stopped: watch::Receiver<bool>,
    sessions: watch::Sender<u64>,
) {
    let mut retry = settings.first_retry;
    // Logged once per outage, not once per attempt.
    let mut failing = false;
    loop {
        let opened = tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            opened = Session::open(&endpoint, &settings, on_notice.clone()) => opened,
        };
        match opened {
            Ok(session) => {
                retry = settings.first_retry;
                if failing {
                    tracing::info!(endpoint = %endpoint.name, "listening for key changes again");
                }
                on_notice(Notice::Resync);
                sessions.send_modify(|count| *count += 1);
                let lost = tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return,
                    lost = session.watch(&settings) => lost,
                };
                failing = true;
                tracing::warn!(
                    endpoint = %endpoint.name,
                    "lost the key-change listener's connection, reconnecting: {lost}"
                );
            }
            Err(err) => {
                if !failing {
                    failing = true;
                    tracing::error!(
                        endpoint = %endpoint.name,
                        "cannot listen for key changes, retrying: {err}"
                    );
                }
            }
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(settings.max_retry);
    }
}

/// One connection that listens: its client, and the task that drives it and hands each
/// notification to the handler.
struct Session {
    client: Client,
    pump: JoinHandle<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Session {
    async fn open(
        endpoint: &PgEndpoint,
        settings: &ListenerSettings,
        on_notice: NoticeHandler,
    ) -> Result<Self, String> {
        let mut config = endpoint.tls.configure(&endpoint.config);
        config.application_name(LISTENER_APPLICATION_NAME);
        config.connect_timeout(settings.timeout);
        let connected = match &endpoint.tls {
            PgTls::Disabled => {
                let connect = config.connect(NoTls);
                tokio::time::timeout(settings.timeout, connect)
                    .await
                    .map(|result| {
                        result.map(|(client, conn)| (client, spawn_pump(conn, on_notice)))
                    })
            }
            PgTls::VerifyFull(rustls) => {
                let connect = config.connect(MakeRustlsConnect::new((**rustls).clone()));
                tokio::time::timeout(settings.timeout, connect)
                    .await
                    .map(|result| {
                        result.map(|(client, conn)| (client, spawn_pump(conn, on_notice)))
                    })
            }
        };
        let (client, pump) = connected
            .map_err(|_| format!("connecting timed out after {:?}", settings.timeout))?
            .map_err(|err| crate::with_causes(&err))?;
        let session = Self { client, pump };
        let listen = format!("listen {TENANT_KEYS_CHANNEL}; listen {AUDIT_KEYS_CHANNEL}");
        tokio::time::timeout(settings.timeout, session.client.batch_execute(&listen))
            .await
            .map_err(|_| format!("LISTEN timed out after {:?}", settings.timeout))?
            .map_err(|err| crate::with_causes(&err))?;
        Ok(session)
    }

    /// Runs until the connection is lost; says why.
    async fn watch(mut self, settings: &ListenerSettings) -> String {
        loop {
            tokio::select! {
                ended = &mut self.pump => {
                    return ended.unwrap_or_else(|err| format!("the connection's task ended: {err}"));
                }
                _ = tokio::time::sleep(settings.heartbeat) => {
                    match tokio::time::timeout(settings.timeout, self.client.simple_query("")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return format!("heartbeat failed: {}", crate::with_causes(&err)),
                        Err(_) => return format!("heartbeat unanswered after {:?}", settings.timeout),
                    }
                }
            }
        }
    }
}

fn spawn_pump<S, T>(connection: Connection<S, T>, on_notice: NoticeHandler) -> JoinHandle<String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(pump(connection, on_notice))
}

/// Drives `connection`, handing each notification to `on_notice`; returns why it ended.
async fn pump<S, T>(mut connection: Connection<S, T>, on_notice: NoticeHandler) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                on_notice(parse(notification.channel(), notification.payload()));
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => return crate::with_causes(&err),
            None => return "the server closed the connection".to_owned(),
        }
    }
}

/// The notice a notification stands for. Only this crate notifies on these channels; a
/// payload it cannot read is answered by dropping everything, the safe side.
fn parse(channel: &str, payload: &str) -> Notice {
    match channel {
        TENANT_KEYS_CHANNEL => match TenantId::parse(payload) {
            Ok(tenant) => Notice::TenantKeys(tenant),
            Err(_) => Notice::Resync,
        },
        AUDIT_KEYS_CHANNEL => Notice::AuditKeys,
        _ => Notice::Resync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_are_read_as_notices_and_unreadable_ones_drop_everything() {
        let tenant = TenantId::from_random_bytes([7; 16]);
        assert_eq!(
            parse(TENANT_KEYS_CHANNEL, tenant.as_str()),
            Notice::TenantKeys(tenant)
        );
        assert_eq!(parse(TENANT_KEYS_CHANNEL, "not a tenant"), Notice::Resync);
        assert_eq!(parse(AUDIT_KEYS_CHANNEL, "eu-west-1-00"), Notice::AuditKeys);
        assert_eq!(parse("elsewhere", ""), Notice::Resync);
    }
}
