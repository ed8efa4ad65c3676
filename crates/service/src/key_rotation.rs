//! A tenant's key rotation (admin): a new data key version that seals every new write at
//! once, and its re-encryption job (`jobs::reencrypt`), queued in the same transaction as
//! the new version and the `key.rotate` event; the destruction of a retired version that
//! nothing uses any more (`key.destroy`); and the tenant's key status (versions and the
//! latest re-encryption's progress).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use audit::{Action, Outcome};
use model::{KeyPurpose, KeyState, KeyVersion};
use store::jobs::{Job, JobId};
use store::reencryption;
use store::tenant_keys::{self, StoredKey};

use crate::ServiceError;
use crate::jobs::REENCRYPT;
use crate::tenancy::{Caller, RegionService};
use crate::unit_of_work::EventTiming;

/// What a rotation started.
#[derive(Debug, Clone)]
pub struct RotationStarted {
    /// The data key version that seals every new write from now on.
    pub version: KeyVersion,
    /// The re-encryption of what is stored, as queued.
    pub job: Job,
}

/// The tenant's data key versions (oldest first) and its latest re-encryption.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    pub versions: Vec<StoredKey>,
    pub reencryption: Option<Job>,
}

/// The audit resource of a rotation to `version` re-encrypted by `job`: ids only.
pub(crate) fn rotation_resource(version: KeyVersion, job: JobId) -> String {
    format!("keys/data/v{}?job={job}", version.get())
}

impl RegionService {
    /// Rotates the tenant's data key and queues the re-encryption of everything stored
    /// under older versions. 409 while a re-encryption of the tenant is queued or running
    /// (it would race this one over the same rows; once it ends, a rotation re-encrypts
    /// whatever any older version still seals).
    pub async fn rotate_keys(&self, caller: &Caller) -> Result<RotationStarted, ServiceError> {
        self.start_rotation(caller).await
    }

    /// The rotation, for a caller or for the automatic policy: the KMS call first, then
    /// one transaction: lock the active version, refuse when a re-encryption is active,
    /// retire it, insert the next, queue the job, append `key.rotate` naming the job.
    pub(crate) async fn start_rotation(
        &self,
        caller: &Caller,
    ) -> Result<RotationStarted, ServiceError> {
        let tenant = caller.tenant;
        let keyring = &self.inner.keyring;
        let next = keyring.next_data_key(&tenant).await?;
        // The event names the job, which the change creates: it is built once the change
        // has run (events are appended after it).
        // (Set again by each attempt of the unit of work.)
        let started: Mutex<Option<(KeyVersion, JobId)>> = Mutex::new(None);
        let started_now = || {
            *started
                .lock()
                .expect("rotation state")
                .as_ref()
                .expect("the change ran before its event")
        };
        let event = std::iter::once_with(|| {
            let (version, job) = started_now();
            self.caller_event(
                caller,
                Action::KeyRotate,
                &rotation_resource(version, job),
                Outcome::Success,
            )
        });
        let ((), _) = self
            .write(&tenant, EventTiming::AfterChange, event, async |tx| {
                // Serializes rotations of the tenant (tenant_keys::rotate locks it again).
                tenant_keys::lock_active(tx, &tenant, KeyPurpose::Data).await?;
                if reencryption::has_active_job(tx.client(), REENCRYPT, &tenant).await? {
                    return Err(ServiceError::Conflict("key rotation"));
                }
                let version = keyring.rotate_within(tx, &next).await?;
                let job = reencryption::enqueue_in(tx, REENCRYPT, &tenant).await?;
                *started.lock().expect("rotation state") = Some((version, job));
                Ok(())
            })
            .await?;
        keyring.forget_tenant(&tenant);
        let (version, job) = started_now();
        let primary = self.inner.database.primary().get().await?;
        let job = store::jobs::get(&primary, job)
            .await?
            .ok_or_else(|| ServiceError::internal("a queued re-encryption vanished"))?;
        tracing::info!(region = %self.inner.region, tenant = %tenant, job = %job.id, version = version.get(), "rotated a tenant's data key; re-encryption queued");
        Ok(RotationStarted { version, job })
    }

    /// Destroys the tenant's data key `version`: its wrapped key is erased (state
    /// `destroyed`) and every node of the region forgets it, in one transaction with its
    /// `key.destroy` event. Only a `retired` version that no stored value or file uses any
    /// more (checked in SQL, `reencryption::data_version_in_use`) may go:
    /// [`ServiceError::StateConflict`] otherwise, [`ServiceError::NotFound`] for a version
    /// the tenant never had. Destroying a destroyed version changes nothing (no event).
    pub async fn destroy_key_version(
        &self,
        caller: &Caller,
        version: KeyVersion,
    ) -> Result<(), ServiceError> {
        let tenant = caller.tenant;
        // The event only when the change destroyed something: it is appended after it.
        // (Reset by each attempt of the unit of work.)
        let destroyed = AtomicBool::new(false);
        let event = std::iter::once_with(|| {
            destroyed.load(Ordering::SeqCst).then(|| {
                self.caller_event(
                    caller,
                    Action::KeyDestroy,
                    &format!("keys/data/v{}", version.get()),
                    Outcome::Success,
                )
            })
        })
        .flatten();
        self.write(&tenant, EventTiming::AfterChange, event, async |tx| {
            destroyed.store(false, Ordering::SeqCst);
            let key = tenant_keys::lock_version(tx, &tenant, KeyPurpose::Data, version)
                .await?
                .ok_or(ServiceError::NotFound {
                    what: "key version",
                })?;
            match key.state {
                KeyState::Destroyed => return Ok(()),
                KeyState::Active => {
                    return Err(ServiceError::StateConflict(
                        "the key version is active: rotate first",
                    ));
                }
                KeyState::Retired => {}
            }
            if reencryption::data_version_in_use(tx.client(), &tenant, version).await? {
                return Err(ServiceError::StateConflict(
                    "the key version still seals stored values or files: wait for the re-encryption",
                ));
            }
            if !tenant_keys::destroy_version(tx, &tenant, KeyPurpose::Data, version).await? {
                return Err(ServiceError::internal("a locked retired key version changed"));
            }
            destroyed.store(true, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        if destroyed.load(Ordering::SeqCst) {
            self.inner.keyring.forget_tenant(&tenant);
            tracing::info!(region = %self.inner.region, tenant = %tenant, version = version.get(), "destroyed a retired data key version");
        }
        Ok(())
    }

    /// The tenant's data key versions and its latest re-encryption (`None` before the
    /// first rotation).
    pub async fn key_status(&self, caller: &Caller) -> Result<KeyStatus, ServiceError> {
        let tenant = caller.tenant;
        let mut primary = self.inner.database.primary().get().await?;
        let tx = primary.read_tenant(&tenant).await?;
        let versions = tenant_keys::list(tx.client(), &tenant).await?;
        tx.finish().await?;
        let versions = versions
            .into_iter()
            .filter(|key| key.purpose == KeyPurpose::Data)
            .collect();
        let reencryption = reencryption::latest_job(&primary, REENCRYPT, &tenant).await?;
        Ok(KeyStatus {
            versions,
            reencryption,
        })
    }
}
