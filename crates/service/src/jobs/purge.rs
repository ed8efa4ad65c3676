//! The `purge` job: removes everything an offboarded tenant had in its home region except
//! its audit chain and this job's own row, then signs the offboarding certificate.
//!
//! Phases, one checkpoint each batch (`Checkpoint`):
//! 1. `count`: what the tenant holds (rows per table, objects) and which key versions
//!    were destroyed, for the certificate (taken from a failed earlier purge of the tenant
//!    when there is one); nothing deleted, so it may run twice.
//! 2. `objects`: first the tenant's rows of the outbox of object deletions, up to
//!    `batch_size` per batch (each object's every version, then the rows); then up to
//!    `batch_size` stored objects (on S3 every version and delete marker) under
//!    `tenants/{tenant}/` per batch, until none is left. The `tenant` phase goes back here
//!    if an outbox row of the tenant appeared since, and the database refuses to delete a
//!    tenant row while one is left (migration 0017).
//! 3. `rows`: up to `batch_size` rows of one table per batch (index tokens, files,
//!    records, collections, API keys), children first.
//! 4. `tenant`: the key rows (all destroyed) and the tenant row, in one transaction.
//! 5. `directory`: the tenant's directory entry (other regions then answer 404 alone).
//! 6. `certify`: the final audit head, the certificate signed by the region's current
//!    audit key, checkpointed into the job row (where `GET .../offboarding` finds it);
//!    then the job is done.
//!
//! Every deletion deletes whatever of the tenant is still there, so a batch that runs
//! again (its node died before the checkpoint) deletes nothing twice.

use std::sync::Arc;
use std::time::SystemTime;

use audit::Hash;
use envelope::objects::ObjectStore;
use serde::{Deserialize, Serialize};
use store::RegionDatabase;
use store::object_deletions::{self, DeletionFailure};
use store::purge::{self, PurgeTable};
use wire::api::{AuditHeadView, DestroyedKeyVersion, OffboardingCertificate, PurgedCounts};

use super::{BatchDone, BatchError, BatchInput, JobHandler, NextBatch, database_unavailable};
use crate::object_deletions::delete_every_version;
use crate::{AuditLog, TenantRegistry};

/// The kind of the offboarding purge job.
pub const PURGE: &str = "purge";

/// Runs `purge` jobs.
#[derive(Debug, Clone)]
pub struct PurgeJob {
    database: RegionDatabase,
    objects: Arc<dyn ObjectStore>,
    audit: AuditLog,
    registry: Option<Arc<dyn TenantRegistry>>,
}

impl PurgeJob {
    pub fn new(
        database: RegionDatabase,
        objects: Arc<dyn ObjectStore>,
        audit: AuditLog,
        registry: Option<Arc<dyn TenantRegistry>>,
    ) -> Self {
        Self {
            database,
            objects,
            audit,
            registry,
        }
    }
}

/// Where a purge stands between batches, with what the certificate will say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    phase: Phase,
    requested_at: String,
    key_versions_destroyed: Vec<DestroyedKeyVersion>,
    purged: PurgedCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<OffboardingCertificate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "name", content = "table")]
enum Phase {
    Objects,
    Rows(String),
    Tenant,
    Directory,
    Certify,
    Done,
}

#[async_trait::async_trait]
impl JobHandler for PurgeJob {
    fn kind(&self) -> &'static str {
        PURGE
    }

    async fn run_batch(&self, input: BatchInput<'_>) -> Result<BatchDone, BatchError> {
        let tenant = input.tenant.ok_or(BatchError {
            reason: "purge without a tenant",
            cause: None,
        })?;
        let Some(checkpoint) = input.checkpoint else {
            return self.count(input.job, tenant).await;
        };
        let mut at: Checkpoint =
            serde_json::from_value(checkpoint.clone()).map_err(|_| BatchError {
                reason: "corrupt checkpoint",
                cause: None,
            })?;
        let limit = input.batch_size;
        let (processed, next) = match &at.phase {
            Phase::Objects => {
                // The outbox's rows of the tenant first, so that none is left when the
                // tenant row goes (the database refuses that while one is).
                let outbox = self.delete_outbox_rows(tenant, limit).await?;
                if outbox > 0 {
                    return Ok(BatchDone {
                        processed: outbox,
                        failed: 0,
                        total: None,
                        next: NextBatch::Continue(to_json(&at)?),
                    });
                }
                let deleted = self
                    .objects
                    .purge(&object_prefix(tenant), limit)
                    .await
                    .map_err(|err| BatchError::new("object store unavailable", err))?;
                let next = if deleted == 0 {
                    Phase::Rows(PurgeTable::ALL[0].as_str().to_owned())
                } else {
                    Phase::Objects
                };
                (deleted, next)
            }
            Phase::Rows(table) => {
                let table = PurgeTable::parse(table).ok_or(BatchError {
                    reason: "corrupt checkpoint",
                    cause: None,
                })?;
                let primary = self.primary().await?;
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let deleted = purge::delete_batch(&primary, table, tenant, limit)
                    .await
                    .map_err(database_unavailable)?;
                let next = if deleted < u64::try_from(limit).unwrap_or(u64::MAX) {
                    match PurgeTable::ALL.iter().position(|t| *t == table) {
                        Some(at) if at + 1 < PurgeTable::ALL.len() => {
                            Phase::Rows(PurgeTable::ALL[at + 1].as_str().to_owned())
                        }
                        _ => Phase::Tenant,
                    }
                } else {
                    Phase::Rows(table.as_str().to_owned())
                };
                (deleted, next)
            }
            Phase::Tenant => {
                let mut primary = self.primary().await?;
                // An object deletion named since the objects phase: back to it.
                if !object_deletions::list_for_tenant(&primary, tenant, 1)
                    .await
                    .map_err(database_unavailable)?
                    .is_empty()
                {
                    at.phase = Phase::Objects;
                    return Ok(BatchDone {
                        processed: 0,
                        failed: 0,
                        total: None,
                        next: NextBatch::Continue(to_json(&at)?),
                    });
                }
                purge::delete_tenant(&mut primary, tenant)
                    .await
                    .map_err(database_unavailable)?;
                (0, Phase::Directory)
            }
            Phase::Directory => {
                if let Some(registry) = &self.registry {
                    registry
                        .unregister(tenant)
                        .await
                        .map_err(|err| BatchError::new("tenant directory unavailable", err))?;
                }
                (0, Phase::Certify)
            }
            Phase::Certify => {
                at.certificate = Some(self.certify(input.job, tenant, &at).await?);
                (0, Phase::Done)
            }
            Phase::Done => {
                return Ok(BatchDone {
                    processed: 0,
                    failed: 0,
                    total: None,
                    next: NextBatch::Finished,
                });
            }
        };
        at.phase = next;
        Ok(BatchDone {
            processed,
            failed: 0,
            total: None,
            next: NextBatch::Continue(to_json(&at)?),
        })
    }
}

impl PurgeJob {
    async fn primary(&self) -> Result<store::Primary, BatchError> {
        self.database
            .primary()
            .get()
            .await
            .map_err(database_unavailable)
    }

    /// Deletes the objects of up to `limit` of the tenant's rows in the outbox of object
    /// deletions (every version) and removes the rows; returns how many there were.
    async fn delete_outbox_rows(
        &self,
        tenant: &model::TenantId,
        limit: usize,
    ) -> Result<u64, BatchError> {
        let primary = self.primary().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let pending = object_deletions::list_for_tenant(&primary, tenant, limit)
            .await
            .map_err(database_unavailable)?;
        for row in &pending {
            match delete_every_version(self.objects.as_ref(), &row.object_key).await {
                // A key that names no object: the prefix's purge deletes whatever there is.
                Ok(()) | Err(DeletionFailure::MalformedKey) => {}
                Err(failure) => {
                    return Err(BatchError {
                        reason: "object store unavailable",
                        cause: Some(failure.as_str().into()),
                    });
                }
            }
        }
        let ids: Vec<_> = pending.iter().map(|row| row.id).collect();
        object_deletions::done(&primary, &ids)
            .await
            .map_err(database_unavailable)?;
        Ok(pending.len() as u64)
    }

    /// The first batch: what there is to purge and what was destroyed. Deletes nothing.
    async fn count(
        &self,
        job: store::jobs::JobId,
        tenant: &model::TenantId,
    ) -> Result<BatchDone, BatchError> {
        let mut primary = self.primary().await?;
        // A purge queued after a failed one carries on from what that one counted, so the
        // certificate says what the tenant held when it was offboarded.
        let failed = store::jobs::list(
            &primary,
            &store::jobs::JobFilter {
                kind: Some(PURGE),
                state: Some(store::jobs::JobState::Failed),
                tenant: Some(tenant),
                before: None,
            },
            1,
        )
        .await
        .map_err(database_unavailable)?;
        if let Some(mut at) = failed
            .into_iter()
            .find_map(|job| serde_json::from_value::<Checkpoint>(job.checkpoint?).ok())
        {
            at.phase = Phase::Objects;
            at.certificate = None;
            return Ok(BatchDone {
                processed: 0,
                failed: 0,
                total: None,
                next: NextBatch::Continue(to_json(&at)?),
            });
        }
        let requested_at = store::jobs::get(&primary, job)
            .await
            .map_err(database_unavailable)?
            .map_or_else(SystemTime::now, |job| job.created_at);
        let row = store::tenants::get(primary.client(), tenant)
            .await
            .map_err(database_unavailable)?;
        if row.is_some_and(|row| row.status != "offboarded") {
            return Err(BatchError {
                reason: "the tenant is not offboarded",
                cause: None,
            });
        }
        // The counts and keys of the tenant, read in its own scope (an offboarded
        // tenant's rows stay readable there until they are purged).
        let tx = primary
            .read_tenant(tenant)
            .await
            .map_err(database_unavailable)?;
        let mut counts = [0u64; PurgeTable::ALL.len()];
        for (count, table) in counts.iter_mut().zip(PurgeTable::ALL) {
            *count = purge::count(tx.client(), table, tenant)
                .await
                .map_err(database_unavailable)?;
        }
        let keys = store::tenant_keys::list(tx.client(), tenant)
            .await
            .map_err(database_unavailable)?;
        tx.finish().await.map_err(database_unavailable)?;
        if keys
            .iter()
            .any(|key| key.state != envelope::KeyState::Destroyed)
        {
            return Err(BatchError {
                reason: "the tenant has keys not destroyed",
                cause: None,
            });
        }
        drop(primary);
        let objects = self
            .objects
            .list(&object_prefix(tenant))
            .await
            .map_err(|err| BatchError::new("object store unavailable", err))?
            .len() as u64;
        let [record_index, files, records, collections, api_keys] = counts;
        let purged = PurgedCounts {
            records,
            index_tokens: record_index,
            files,
            objects,
            api_keys,
            collections,
        };
        let total = counts.iter().sum::<u64>() + objects;
        let at = Checkpoint {
            phase: Phase::Objects,
            requested_at: audit::time::format(requested_at),
            key_versions_destroyed: keys
                .iter()
                .map(|key| DestroyedKeyVersion {
                    purpose: key.purpose.as_str().to_owned(),
                    version: key.version.get(),
                })
                .collect(),
            purged,
            certificate: None,
        };
        Ok(BatchDone {
            processed: 0,
            failed: 0,
            total: Some(total),
            next: NextBatch::Continue(to_json(&at)?),
        })
    }

    /// The certificate, signed by the region's current audit key.
    async fn certify(
        &self,
        job: store::jobs::JobId,
        tenant: &model::TenantId,
        at: &Checkpoint,
    ) -> Result<OffboardingCertificate, BatchError> {
        let primary = self.primary().await?;
        let head = store::audit::head(primary.client(), tenant)
            .await
            .map_err(database_unavailable)?;
        let signing_key = self.audit.signing_key();
        let mut certificate = OffboardingCertificate {
            tenant: tenant.to_string(),
            region: self.audit.region().to_string(),
            requested_at: at.requested_at.clone(),
            completed_at: audit::time::format(SystemTime::now()),
            job: job.to_string(),
            key_versions_destroyed: at.key_versions_destroyed.clone(),
            purged: at.purged.clone(),
            audit_head: AuditHeadView {
                seq: head.map_or(0, |(seq, _)| seq),
                hash: head.map_or_else(String::new, |(_, hash)| Hash::from_bytes(hash).to_string()),
            },
            key_id: signing_key.key_id().to_owned(),
            signature: String::new(),
        };
        certificate.signature = signing_key.sign(&certificate.signed_payload()).to_base64();
        Ok(certificate)
    }
}

/// Where a tenant's objects are stored (`files.rs` names them `tenants/{tenant}/...`).
fn object_prefix(tenant: &model::TenantId) -> String {
    format!("tenants/{tenant}/")
}

fn to_json(at: &Checkpoint) -> Result<serde_json::Value, BatchError> {
    serde_json::to_value(at).map_err(|err| BatchError::new("encode checkpoint", err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_refuse_what_they_did_not_write() {
        let at = Checkpoint {
            phase: Phase::Rows("records".to_owned()),
            requested_at: "2026-03-01T12:34:56Z".to_owned(),
            key_versions_destroyed: vec![DestroyedKeyVersion {
                purpose: "data".to_owned(),
                version: 1,
            }],
            purged: PurgedCounts {
                records: 3,
                ..PurgedCounts::default()
            },
            certificate: None,
        };
        let json = to_json(&at).expect("encodes");
        assert_eq!(
            serde_json::from_value::<Checkpoint>(json).expect("decodes"),
            at
        );
        for corrupt in [
            serde_json::json!({}),
            serde_json::json!({"phase": {"name": "shred"}, "requested_at": "x",
                "key_versions_destroyed": [], "purged": {}}),
        ] {
            assert!(serde_json::from_value::<Checkpoint>(corrupt).is_err());
        }
    }
}
