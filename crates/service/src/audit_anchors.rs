//! Anchoring (issue 30): every signed checkpoint is also written, after its commit, to the
//! region's audit bucket as an immutable object (`audit::anchor_name`), where whoever can
//! write the database cannot rewrite it; `residency audit verify --anchors` holds a bundle
//! to those objects. The checkpoint task anchors after each signing round; a checkpoint
//! whose write fails stays waiting (`audit_checkpoints.anchored_at` null, migration 0018)
//! and is retried next interval. Nothing here is on a request's path.

use std::time::{Duration, SystemTime};

use audit::{Checkpoint, Hash, Signature};
use envelope::objects::{ObjectKey, ObjectStore};
use futures::{StreamExt as _, TryStreamExt as _};
use model::TenantId;
use store::audit::{self as rows, CheckpointRow};

use crate::{AuditError, AuditLog};

/// What one anchoring round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnchorRound {
    /// Checkpoints written to the bucket (or found there, as written, by another node).
    pub anchored: u64,
    /// Checkpoints whose object in the bucket holds another head: the chain in the
    /// database was rewritten after it was anchored. The object is kept, the checkpoint
    /// stays waiting (and counted as a failure each round).
    pub conflicts: Vec<(TenantId, u64)>,
    /// When the oldest checkpoint still waiting was signed; `None` when none waits.
    pub waiting_since: Option<SystemTime>,
}

/// Reads of an existing anchor are bounded: it is a few hundred bytes.
const MAX_ANCHOR_CHUNKS: usize = 16;

impl AuditLog {
    /// Writes the signed checkpoints not yet in `bucket` to it, `batch` per query, each
    /// as `checkpoints/<tenant>/<seq>.json`, and marks them anchored. An object already
    /// there is never replaced (on a write-once bucket a second put would be a newer
    /// version): the same bytes mark the checkpoint anchored, other bytes are a conflict.
    /// Stops at the first failure of the bucket (the rest waits for the next round).
    pub async fn anchor(
        &self,
        bucket: &dyn ObjectStore,
        batch: i64,
    ) -> Result<AnchorRound, AuditError> {
        let metrics = self.inner.core.metrics();
        let mut round = AnchorRound::default();
        let outcome = self.anchor_waiting(bucket, batch, &mut round).await;
        metrics.record_audit_anchors(round.anchored);
        for _ in &round.conflicts {
            metrics.record_audit_anchor_failure();
        }
        if outcome.is_err() {
            metrics.record_audit_anchor_failure();
        }
        // The lag is measured after a failed round too (the database may still answer).
        let waiting_since = self.oldest_unanchored().await;
        if let Ok(since) = &waiting_since {
            let lag = since.map_or(Duration::ZERO, |since| {
                SystemTime::now()
                    .duration_since(since)
                    .unwrap_or(Duration::ZERO)
            });
            metrics.set_audit_anchor_lag(lag);
        }
        outcome?;
        round.waiting_since = waiting_since?;
        Ok(round)
    }

    async fn oldest_unanchored(&self) -> Result<Option<SystemTime>, AuditError> {
        let primary = self.inner.core.database.primary().get().await?;
        Ok(rows::oldest_unanchored(primary.client()).await?)
    }

    async fn anchor_waiting(
        &self,
        bucket: &dyn ObjectStore,
        batch: i64,
        round: &mut AnchorRound,
    ) -> Result<(), AuditError> {
        let database = &self.inner.core.database;
        loop {
            let waiting = {
                let primary = database.primary().get().await?;
                rows::unanchored_checkpoints(primary.client(), batch).await?
            };
            let full = i64::try_from(waiting.len()).unwrap_or(i64::MAX) >= batch;
            let mut progress = false;
            for row in waiting {
                let checkpoint = self.checkpoint_of(row)?;
                if write_anchor(bucket, &checkpoint).await? {
                    let primary = database.primary().get().await?;
                    rows::mark_anchored(primary.client(), &checkpoint.tenant, checkpoint.seq)
                        .await?;
                    round.anchored += 1;
                    progress = true;
                } else {
                    round.conflicts.push((checkpoint.tenant, checkpoint.seq));
                }
            }
            if !full || !progress {
                return Ok(());
            }
        }
    }

    fn checkpoint_of(&self, row: CheckpointRow) -> Result<Checkpoint, AuditError> {
        let signature = Signature::from_slice(&row.signature).map_err(|_| {
            AuditError::Corrupt(format!(
                "checkpoint of tenant {} at seq {}: signature is not 64 bytes",
                row.tenant, row.seq
            ))
        })?;
        Ok(Checkpoint {
            tenant: row.tenant,
            region: self.region().clone(),
            seq: row.seq,
            hash: Hash::from_bytes(row.hash),
            signed_at: row.signed_at,
            key_id: row.key_id,
            signature,
        })
    }
}

/// Writes `checkpoint`'s anchor unless its object exists; `false` when an object with
/// other bytes is there (kept as it is).
async fn write_anchor(
    bucket: &dyn ObjectStore,
    checkpoint: &Checkpoint,
) -> Result<bool, AuditError> {
    let bytes = audit::anchor_json(checkpoint);
    let key = ObjectKey::parse(&audit::anchor_name(&checkpoint.tenant, checkpoint.seq))
        .map_err(|err| AuditError::Corrupt(format!("anchor name: {err}")))?;
    // Listed, not probed with a read: in AWS the node may list `checkpoints/` only, and a
    // read of a missing object without the bucket-wide listing right is refused (403),
    // not answered "absent".
    let exists = bucket
        .list(key.as_str())
        .await
        .map_err(AuditError::Bucket)?
        .contains(&key);
    if !exists {
        let body = futures::stream::once(async move { Ok(bytes::Bytes::from(bytes)) });
        bucket
            .put(&key, Box::pin(body))
            .await
            .map_err(AuditError::Bucket)?;
        return Ok(true);
    }
    let chunks: Vec<bytes::Bytes> = bucket
        .get(&key)
        .await
        .map_err(AuditError::Bucket)?
        .take(MAX_ANCHOR_CHUNKS)
        .try_collect()
        .await
        .map_err(AuditError::Bucket)?;
    Ok(chunks.concat() == bytes)
}
