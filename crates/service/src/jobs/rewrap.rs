//! The `rewrap` job: after a change of the region's KMS key, rewraps every stored data
//! key of the region under the KMS's current key, `batch_size` keys a batch, without
//! touching any sealed data; last, the data keys that seal the region's audit signing
//! seeds (a handful, in one step).
//!
//! The walk goes in (tenant, purpose, version) order; the checkpoint is the last key
//! handled and, once the first rewrap told it, the current KMS key. A batch takes only
//! keys not yet wrapped under that key, so a batch that runs again (its node died before
//! the checkpoint) skips the keys it already moved, and each rewrap is conditional on the
//! wrapping it read.

use envelope::kms::KmsError;
use serde_json::{Value, json};
use store::RegionDatabase;
use store::tenant_keys::{self, KeyPosition};

use super::database_unavailable as database;
use super::{BatchDone, BatchError, BatchInput, JobHandler, NextBatch};
use crate::keys::RewrapOutcome;
use crate::{AuditKeyError, KeyError, Keyring, RegionAuditKeys};

/// The kind of the KMS rewrap job.
pub const REWRAP: &str = "rewrap";

/// Runs `rewrap` jobs with the node's keyring.
#[derive(Debug, Clone)]
pub struct RewrapJob {
    keyring: Keyring,
    database: RegionDatabase,
    audit_keys: Option<RegionAuditKeys>,
}

impl RewrapJob {
    pub fn new(keyring: Keyring, database: RegionDatabase) -> Self {
        Self {
            keyring,
            database,
            audit_keys: None,
        }
    }

    /// Also rewraps the data keys sealing the region's audit signing seeds, once the
    /// tenant keys are done.
    pub fn with_audit_keys(mut self, audit_keys: RegionAuditKeys) -> Self {
        self.audit_keys = Some(audit_keys);
        self
    }
}

/// Where a rewrap stands between batches.
#[derive(Debug, Default, PartialEq)]
struct Checkpoint {
    kms_key_id: Option<String>,
    after: Option<KeyPosition>,
}

impl Checkpoint {
    fn parse(value: Option<&Value>) -> Option<Self> {
        let Some(value) = value else {
            return Some(Self::default());
        };
        let kms_key_id = match value.get("kms_key_id")? {
            Value::Null => None,
            Value::String(id) => Some(id.clone()),
            _ => return None,
        };
        let after = match value.get("after")? {
            Value::Null => None,
            after => Some(KeyPosition {
                tenant: model::TenantId::parse(after.get("tenant")?.as_str()?).ok()?,
                purpose: envelope::KeyPurpose::parse(after.get("purpose")?.as_str()?)?,
                version: u32::try_from(after.get("version")?.as_u64()?)
                    .ok()
                    .and_then(envelope::KeyVersion::new)?,
            }),
        };
        Some(Self { kms_key_id, after })
    }

    fn to_json(&self) -> Value {
        json!({
            "kms_key_id": self.kms_key_id,
            "after": self.after.as_ref().map(|at| json!({
                "tenant": at.tenant.as_str(),
                "purpose": at.purpose.as_str(),
                "version": at.version.get(),
            })),
        })
    }
}

#[async_trait::async_trait]
impl JobHandler for RewrapJob {
    fn kind(&self) -> &'static str {
        REWRAP
    }

    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        let mut at = Checkpoint::parse(input.checkpoint).ok_or(BatchError {
            reason: "corrupt checkpoint",
            cause: None,
        })?;
        let limit = i64::try_from(input.batch_size).unwrap_or(i64::MAX);
        let pending = {
            let primary = self.database.primary().get().await.map_err(database)?;
            tenant_keys::pending_rewrap(
                primary.client(),
                at.kms_key_id.as_deref(),
                at.after.as_ref(),
                limit,
            )
            .await
            .map_err(database)?
        };
        let Some(last) = pending.last().map(tenant_keys::StoredKey::position) else {
            // Idempotent: a seed already under the current KMS key is skipped.
            if let Some(audit_keys) = &self.audit_keys {
                audit_keys.rewrap().await.map_err(|err| match err {
                    AuditKeyError::Kms(_) => BatchError::new("kms unavailable", err),
                    other => BatchError::new("database unavailable", other),
                })?;
            }
            return Ok(BatchDone {
                processed: 0,
                failed: 0,
                total: None,
                next: NextBatch::Finished,
            });
        };
        let first_batch = input.checkpoint.is_none();
        let (mut processed, mut failed) = (0, 0);
        for stored in &pending {
            match self.keyring.rewrap_key(stored).await {
                Ok(
                    RewrapOutcome::Rewrapped { kms_key_id }
                    | RewrapOutcome::AlreadyCurrent { kms_key_id }
                    | RewrapOutcome::Changed { kms_key_id },
                ) => {
                    processed += 1;
                    at.kms_key_id = Some(kms_key_id);
                }
                Ok(RewrapOutcome::Destroyed) => processed += 1,
                // This key can never be rewrapped (tampered, foreign, its KMS key gone):
                // counted as failed and skipped, the others go on.
                Err(KeyError::Kms(
                    KmsError::Denied | KmsError::ForeignKey { .. } | KmsError::KeyUnusable { .. },
                )) => failed += 1,
                Err(err @ KeyError::Kms(_)) => return Err(BatchError::new("kms unavailable", err)),
                Err(err) => return Err(BatchError::new("database unavailable", err)),
            }
        }
        at.after = Some(last);
        // The total is known once the current KMS key is: this batch and what is left.
        let total = if first_batch {
            let primary = self.database.primary().get().await.map_err(database)?;
            let left = tenant_keys::count_pending_rewrap(
                primary.client(),
                at.kms_key_id.as_deref(),
                at.after.as_ref(),
            )
            .await
            .map_err(database)?;
            Some(processed + failed + left)
        } else {
            None
        };
        Ok(BatchDone {
            processed,
            failed,
            total,
            next: NextBatch::Continue(at.to_json()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_refuse_what_they_did_not_write() {
        let at = Checkpoint {
            kms_key_id: Some("local-key-2".into()),
            after: Some(KeyPosition {
                tenant: model::TenantId::from_random_bytes([7; 16]),
                purpose: envelope::KeyPurpose::Index,
                version: envelope::KeyVersion::new(3).expect("positive"),
            }),
        };
        assert_eq!(Checkpoint::parse(Some(&at.to_json())), Some(at));
        assert_eq!(Checkpoint::parse(None), Some(Checkpoint::default()));
        for corrupt in [
            json!({}),
            json!({"kms_key_id": 3, "after": null}),
            json!({"kms_key_id": null, "after": {"tenant": "x", "purpose": "data", "version": 1}}),
        ] {
            assert_eq!(Checkpoint::parse(Some(&corrupt)), None, "{corrupt}");
        }
    }
}
