//! What a node does when the region's keys change elsewhere: the database's notifications
//! (`store::notifications`) drop a tenant's cached keys and active versions at once (a
//! shred, a rotation or a rewrap on any node of the region), and make the node load the
//! region's current audit signing key (a rotation). On every (re)connection of the
//! listener both happen for everything, since changes may have gone unheard.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use model::TenantId;

use store::{Listener, ListenerSettings, Notice, RegionDatabase};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::audit_signing::RegionAuditKeys;
use crate::{AuditLog, Keyring};

/// The first wait after a failed load of the audit keys; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// What drops a node's cached copy of a tenant (`Some`) or of every tenant (`None`): a
/// tenant whose keys changed may have been offboarded, and must stop being served at once.
pub type TenantCacheHook = Arc<dyn Fn(Option<&TenantId>) + Send + Sync>;

/// The running listener and audit-key loader of one node. [`KeyChanges::stop`] ends them;
/// dropping it does too.
pub struct KeyChanges {
    listener: Listener,
    tenants: Arc<OnceLock<TenantCacheHook>>,
    loader: Option<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for KeyChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyChanges")
            .field("listener", &self.listener)
            .field("forgets_tenants", &self.tenants.get().is_some())
            .finish_non_exhaustive()
    }
}

impl KeyChanges {
    /// Listens on `database`'s primary: tenant key changes go to `keyring`; audit key
    /// changes, when `audit` is given, are loaded from the region's database into the log.
    pub fn spawn(
        database: &RegionDatabase,
        keyring: Keyring,
        audit: Option<(AuditLog, RegionAuditKeys)>,
        settings: ListenerSettings,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let loader = audit
            .map(|(log, keys)| tokio::spawn(load_audit_keys(log, keys, wake.clone(), stopped)));
        let tenants: Arc<OnceLock<TenantCacheHook>> = Arc::new(OnceLock::new());
        let forget = tenants.clone();
        let listener = database.listen(
            settings,
            Arc::new(move |notice| match notice {
                Notice::TenantKeys(tenant) => {
                    keyring.forget_tenant(&tenant);
                    if let Some(hook) = forget.get() {
                        hook(Some(&tenant));
                    }
                }
                Notice::AuditKeys => wake.notify_one(),
                Notice::Resync => {
                    keyring.forget_everything();
                    if let Some(hook) = forget.get() {
                        hook(None);
                    }
                    wake.notify_one();
                }
            }),
        );
        Self {
            listener,
            tenants,
            loader,
            stop,
        }
    }

    /// From now on a tenant's key change also drops the node's cached copy of the tenant
    /// (set once, when the tenant service exists; a second call is ignored). An offboarding
    /// shreds the tenant's keys in the transaction that marks it offboarded, so every node
    /// of the region stops serving it when it hears the notification.
    pub fn forget_tenants_with(&self, hook: TenantCacheHook) {
        let _ = self.tenants.set(hook);
    }

    /// How many times the listener has started listening (see [`Listener::sessions`]).
    pub fn sessions(&self) -> watch::Receiver<u64> {
        self.listener.sessions()
    }

    /// Stops listening and loading, and waits for both.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(loader) = self.loader.take()
            && let Err(err) = loader.await
            && err.is_panic()
        {
            tracing::error!("the audit key loader panicked: {err}");
        }
        self.listener.stop().await;
    }
}

/// Loads the region's audit keys into `log` each time it is woken, retrying with backoff
/// until a load succeeds (a wake meanwhile is kept and served by the next load). Until
/// then the node signs with the key it has, which stays published and verifiable.
async fn load_audit_keys(
    log: AuditLog,
    keys: RegionAuditKeys,
    wake: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            _ = wake.notified() => {}
        }
        let mut retry = FIRST_RETRY;
        let mut failing = false;
        loop {
            // The held keys are the region's own once loaded, so this only reads and
            // opens; it imports the node's configured key if the start could not.
            match keys.bootstrap(&log.signing_keys()).await {
                Ok(loaded) => {
                    if failing {
                        tracing::info!(region = %log.region(), "loaded the region's audit signing keys again");
                    }
                    log.install_keys(loaded);
                    break;
                }
                Err(err) => {
                    if !failing {
                        failing = true;
                        tracing::error!(
                            region = %log.region(),
                            "cannot load the region's audit signing keys, signing with the previous key and retrying: {err}"
                        );
                    }
                }
            }
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }
}
