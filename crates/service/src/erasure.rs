//! Erasure of a data subject (issue 29, items 3 and 4): the subject's records in every
//! collection, their index tokens and their files' rows deleted in one audited
//! transaction with a `subject.erase` event and a row of the erasure ledger
//! (`store::erasures`); then, after the commit, the files' objects (every version) and the
//! ledger entry in the region's audit bucket, which a node re-applies after a database
//! restore (`docs/privacy.md`, "The erasure ledger").
//!
//! What happens after the commit is durable: the transaction names the objects in the
//! outbox of object deletions (`crate::object_deletions`, whose sweeper deletes them if
//! this node dies first) and queues the follow-up job (`jobs::erasure`), which writes the
//! ledger entry; both are idempotent. Erasure by token needs no subject value: the token
//! is what the index and the ledger hold. A subject with more than [`ERASE_INLINE_BOUND`]
//! records is erased by the `subject_erasure` job, in batches.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use audit::{Action, Event, NewEvent, Outcome};
use envelope::objects::{ObjectKey, ObjectStore};
use futures::TryStreamExt as _;
use model::TenantId;
use serde::{Deserialize, Serialize};
use store::erasures::{self, ErasedRows, ErasureRow};
use store::object_deletions::{DeletionReason, QueuedDeletion};

use crate::object_deletions::{enqueue, purge_object};
use crate::subjects::subject_key;
use crate::tenancy::{Caller, RegionService, random_bytes};
use crate::unit_of_work::{EventTiming, UnitOfWork};
use crate::{OperatorGrant, ServiceError};

/// A subject with more records than this is erased by a job (`202`); up to it, in the
/// request's one transaction.
pub const ERASE_INLINE_BOUND: u64 = 1_000;

/// Where the ledger's entries rest in the audit bucket: `erasures/{tenant}/{entry}.json`.
pub const LEDGER_PREFIX: &str = "erasures/";

/// What an erasure did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureOutcome {
    pub records_erased: u64,
    pub files_erased: u64,
    /// The seq of the erasure's `subject.erase` event in the tenant's chain.
    pub audit_seq: u64,
}

/// An erasure's answer: done, or left to a job for a subject with many records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectErasure {
    Done(ErasureOutcome),
    Started(ErasureJob),
}

/// The job erasing a subject with many records, as it stood when asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureJob {
    pub job: store::jobs::JobId,
    pub state: String,
    pub done: u64,
    pub total: u64,
}

/// One entry of the erasure ledger in the audit bucket (JSON). Holds the subject's token,
/// never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// `1`.
    pub format: u32,
    pub tenant: String,
    pub region: String,
    pub entry_id: String,
    /// The subject's token (hex) under the tenant's subject-index key.
    pub subject_token: String,
    /// RFC 3339.
    pub erased_at: String,
    pub records_erased: u64,
    pub files_erased: u64,
    pub collections: Vec<String>,
    /// The seq of the `subject.erase` event in the database that made the erasure.
    pub audit_seq: u64,
}

/// What a re-application of the ledger did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerReapplied {
    /// Entries in the audit bucket.
    pub entries: u64,
    /// Entries this database lacked, erased again now.
    pub reapplied: u64,
    /// Records erased again by those.
    pub records_erased: u64,
    /// Entries of tenants this database does not hold (offboarded, or created after it).
    pub skipped: u64,
}

/// Who erases: a caller's request, or the ledger's re-application.
enum Origin<'a> {
    Request(&'a Caller),
    Ledger { entry_id: &'a str },
}

impl RegionService {
    /// Erases everything stored about `subject` in the caller's tenant (see the module's
    /// documentation); a second erasure erases nothing and is audited again.
    pub async fn erase_subject(
        &self,
        caller: &Caller,
        subject: &str,
    ) -> Result<SubjectErasure, ServiceError> {
        let key = subject_key(&self.inner.keyring, &caller.tenant).await?;
        // The error names the problem, never the value.
        let token = *key
            .token(subject)
            .map_err(|err| ServiceError::BadRequest(format!("subject: {err}")))?
            .as_bytes();
        let tenant = caller.tenant;
        let cap = i64::try_from(ERASE_INLINE_BOUND + 1).unwrap_or(i64::MAX);
        let (count, running) = self
            .read_primary_first(&tenant, |client| {
                Box::pin(async move {
                    let count = erasures::count_records(client, &tenant, &token, cap).await?;
                    let running = erasures::active_job(client, &tenant, &token).await?;
                    Ok((count, running))
                })
            })
            .await?;
        if let Some(job) = running {
            return Ok(SubjectErasure::Started(erasure_job(job)));
        }
        if count > ERASE_INLINE_BOUND {
            // The request is audited with the job it queued; each batch is audited too.
            let event = self.caller_event(
                caller,
                Action::SubjectErase,
                &token_resource(&token),
                Outcome::Success,
            );
            let entry_id = new_entry_id();
            let (job, _) = self
                .write(&tenant, EventTiming::AfterChange, [event], async |tx| {
                    Ok(
                        erasures::queue_erasure_job(tx.client(), &tenant, &token, &entry_id)
                            .await?,
                    )
                })
                .await?;
            return Ok(SubjectErasure::Started(erasure_job(job)));
        }
        let outcome = self
            .erase_token(&tenant, &token, Origin::Request(caller))
            .await?;
        Ok(SubjectErasure::Done(outcome))
    }

    /// Erases the records of `token` in one transaction with the event and the ledger's
    /// row, then does the follow-up (objects, ledger entry) at once.
    async fn erase_token(
        &self,
        tenant: &TenantId,
        token: &[u8; 32],
        origin: Origin<'_>,
    ) -> Result<ErasureOutcome, ServiceError> {
        let (event, entry_id, reapplied) = match &origin {
            Origin::Request(caller) => (
                self.caller_event(
                    caller,
                    Action::SubjectErase,
                    &token_resource(token),
                    Outcome::Success,
                ),
                new_entry_id(),
                false,
            ),
            Origin::Ledger { entry_id } => (
                self.ledger_event(tenant, token, entry_id),
                (*entry_id).to_owned(),
                true,
            ),
        };
        let limit = i64::MAX;
        let (row, _, queued) = self
            .erase_in_transaction(
                tenant,
                event,
                async |tx| Ok(erasures::erase_records(tx, tenant, token, limit).await?),
                |rows: &ErasedRows, seq| ErasureRow {
                    tenant: *tenant,
                    entry_id: entry_id.clone(),
                    subject_token: *token,
                    erased_at: SystemTime::now(),
                    records_erased: rows.records,
                    files_erased: rows.files,
                    collections: rows.collections.clone(),
                    audit_seq: seq,
                    reapplied,
                },
            )
            .await?;
        self.follow_up(&row, &queued).await;
        Ok(ErasureOutcome {
            records_erased: row.records_erased,
            files_erased: row.files_erased,
            audit_seq: row.audit_seq,
        })
    }

    /// Runs `change` (which deletes and says what), appends `event`, writes the ledger's
    /// row `row_of` builds, names the erased files' objects in the outbox of object
    /// deletions and queues the follow-up, in one transaction.
    pub(crate) async fn erase_in_transaction(
        &self,
        tenant: &TenantId,
        event: NewEvent,
        change: impl AsyncFnOnce(&store::PrimaryTx<'_>) -> Result<ErasedRows, ServiceError> + Clone,
        row_of: impl FnOnce(&ErasedRows, u64) -> ErasureRow + Clone,
    ) -> Result<(ErasureRow, ErasedRows, Vec<QueuedDeletion>), ServiceError> {
        let _slot = self.inner.write_slots.acquire(tenant).await?;
        let mut primary = self.inner.database.primary().get().await?;
        let committed = UnitOfWork::new(&self.inner.audit)
            .run_recorded(
                &mut primary,
                tenant,
                [event],
                change,
                async |tx, rows: ErasedRows, events: &[Event]| {
                    let seq = events.first().map(|event| event.seq).ok_or_else(|| {
                        ServiceError::internal("the erasure's event was not linked")
                    })?;
                    let row = row_of.clone()(&rows, seq);
                    erasures::insert(tx, &row).await?;
                    let queued =
                        enqueue(tx, tenant, &rows.object_keys, DeletionReason::SubjectErased)
                            .await?;
                    erasures::queue_follow_up(tx, tenant, Some(&row.entry_id), &[]).await?;
                    Ok((row, rows, queued))
                },
            )
            .await?;
        Ok(committed.value)
    }

    /// The `subject.erase` event of a re-application: by the system, naming the entry.
    pub(crate) fn ledger_event(
        &self,
        tenant: &TenantId,
        token: &[u8; 32],
        entry_id: &str,
    ) -> NewEvent {
        self.system_event(
            tenant,
            LEDGER_ACTOR,
            Action::SubjectErase,
            &token_resource(token),
            format!("ledger-{entry_id}"),
        )
    }

    /// After an erasure's commit: its objects (every version; what fails is left to the
    /// outbox's sweeper) and its ledger entry (a failure is logged and left to the
    /// follow-up job the transaction queued).
    pub(crate) async fn follow_up(&self, row: &ErasureRow, queued: &[QueuedDeletion]) {
        self.delete_objects_now(&row.tenant, queued).await;
        if let Err(err) = self.write_ledger_entry(row).await {
            tracing::warn!(
                tenant = %row.tenant,
                entry = row.entry_id,
                "erasure ledger entry not written yet, the follow-up job will: {err}"
            );
        }
    }

    /// Writes `row`'s entry to the audit bucket unless it is there.
    pub(crate) async fn write_ledger_entry(&self, row: &ErasureRow) -> Result<(), ServiceError> {
        let store = &self.inner.audit_objects;
        let key = ledger_key(&row.tenant, &row.entry_id)?;
        // On a write-once bucket a second put is one more version: write only once.
        if store
            .list(key.as_str())
            .await
            .map_err(unavailable_bucket)?
            .contains(&key)
        {
            return Ok(());
        }
        let entry = LedgerEntry {
            format: 1,
            tenant: row.tenant.to_string(),
            region: self.inner.region.to_string(),
            entry_id: row.entry_id.clone(),
            subject_token: hex::encode(row.subject_token),
            erased_at: audit::time::format(row.erased_at),
            records_erased: row.records_erased,
            files_erased: row.files_erased,
            collections: row.collections.clone(),
            audit_seq: row.audit_seq,
        };
        let bytes = serde_json::to_vec(&entry)
            .map_err(|err| ServiceError::internal_while("encode the ledger entry", err))?;
        let body = futures::stream::once(async move { Ok(bytes::Bytes::from(bytes)) });
        store
            .put(&key, Box::pin(body))
            .await
            .map_err(unavailable_bucket)?;
        Ok(())
    }

    /// The operator's re-application of the erasure ledger ([`Self::reapply_ledger`]).
    pub async fn reapply_erasure_ledger(
        &self,
        _operator: &OperatorGrant,
    ) -> Result<LedgerReapplied, ServiceError> {
        self.reapply_ledger().await
    }

    /// Erases again, by token, every subject of an entry of the audit bucket's ledger that
    /// this database has not applied (a database restored from a backup older than the
    /// erasure): records, tokens, files, objects, a `subject.erase` event by the system
    /// naming the entry, and a ledger row marked `reapplied`. Every node does it at start.
    pub async fn reapply_ledger(&self) -> Result<LedgerReapplied, ServiceError> {
        let keys = self
            .inner
            .audit_objects
            .list(LEDGER_PREFIX)
            .await
            .map_err(unavailable_bucket)?;
        let mut report = LedgerReapplied::default();
        // The entries grouped by tenant (each in listing order): a tenant's state and which of
        // its entries this database holds are one round trip each, not one per entry.
        let mut tenants: std::collections::BTreeMap<TenantId, Vec<(ObjectKey, String)>> =
            std::collections::BTreeMap::new();
        for key in keys {
            let Some((tenant, entry_id)) = parse_ledger_key(key.as_str()) else {
                tracing::warn!(object = %key, "not an erasure ledger entry, skipped");
                continue;
            };
            report.entries += 1;
            tenants.entry(tenant).or_default().push((key, entry_id));
        }
        for (tenant, entries) in tenants {
            let mut primary = self.inner.database.primary().get().await?;
            let known = store::tenants::get(primary.client(), &tenant).await?;
            if known.is_none_or(|row| row.status != "active") {
                report.skipped += entries.len() as u64;
                continue;
            }
            let applied = {
                let ids: Vec<&str> = entries.iter().map(|(_, id)| id.as_str()).collect();
                let tx = primary.begin_tenant(&tenant).await?;
                let applied = erasures::applied_of(tx.client(), &tenant, &ids).await?;
                tx.commit().await?;
                applied
            };
            drop(primary);
            for (key, entry_id) in entries {
                if applied.contains(&entry_id) {
                    continue;
                }
                let entry = self.read_ledger_entry(&key).await?;
                let token = entry_token(&entry, &tenant, &entry_id)?;
                let outcome = self
                    .erase_token(
                        &tenant,
                        &token,
                        Origin::Ledger {
                            entry_id: &entry_id,
                        },
                    )
                    .await?;
                tracing::info!(
                    tenant = %tenant,
                    entry = entry_id,
                    records = outcome.records_erased,
                    "erasure re-applied from the ledger"
                );
                report.reapplied += 1;
                report.records_erased += outcome.records_erased;
            }
        }
        Ok(report)
    }

    async fn read_ledger_entry(&self, key: &ObjectKey) -> Result<LedgerEntry, ServiceError> {
        let body = self
            .inner
            .audit_objects
            .get(key)
            .await
            .map_err(unavailable_bucket)?;
        let chunks: Vec<bytes::Bytes> = body
            .take(MAX_ENTRY_CHUNKS)
            .try_collect()
            .await
            .map_err(unavailable_bucket)?;
        let bytes = chunks.concat();
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(ServiceError::internal(format!(
                "erasure ledger entry {key} is larger than {MAX_ENTRY_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|err| ServiceError::internal_while("read an erasure ledger entry", err))
    }
}

use futures::StreamExt as _;

/// A ledger entry is a few hundred bytes: one read of it is bounded.
const MAX_ENTRY_BYTES: usize = 64 * 1024;
const MAX_ENTRY_CHUNKS: usize = 64;

/// The system actor of a re-applied erasure.
pub const LEDGER_ACTOR: &str = "erasure-ledger";

/// The token of an entry, checked against the tenant and id its name gives.
fn entry_token(
    entry: &LedgerEntry,
    tenant: &TenantId,
    entry_id: &str,
) -> Result<[u8; 32], ServiceError> {
    let corrupt = || ServiceError::internal(format!("erasure ledger entry {entry_id} is corrupt"));
    if entry.tenant != tenant.as_str() || entry.entry_id != entry_id || entry.format != 1 {
        return Err(corrupt());
    }
    hex::decode(&entry.subject_token)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(corrupt)
}

/// Deletes every object of `keys`, on a versioned store every version and delete marker
/// (the objects of a follow-up job queued before the outbox of object deletions existed).
pub(crate) async fn purge_objects(
    store: &dyn ObjectStore,
    keys: &[String],
) -> Result<(), envelope::objects::ObjectStoreError> {
    for key in keys {
        let key = ObjectKey::parse(key)
            .map_err(|err| envelope::objects::ObjectStoreError::Other(err.to_string()))?;
        purge_object(store, &key).await?;
    }
    Ok(())
}

/// The audit resource of an erasure: the token's first 16 hex digits, as the export's.
pub(crate) fn token_resource(token: &[u8; 32]) -> String {
    format!("subjects/{}", &hex::encode(token)[..16])
}

/// A new ledger entry id: the time in milliseconds (13 digits, so ids sort by age), then
/// 16 random hex digits.
pub(crate) fn new_entry_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    let random: [u8; 16] = random_bytes();
    format!("{millis:013}-{}", hex::encode(&random[..8]))
}

fn ledger_key(tenant: &TenantId, entry_id: &str) -> Result<ObjectKey, ServiceError> {
    ObjectKey::parse(&format!("{LEDGER_PREFIX}{tenant}/{entry_id}.json"))
        .map_err(|err| ServiceError::internal_while("name the ledger entry", err))
}

fn parse_ledger_key(key: &str) -> Option<(TenantId, String)> {
    let rest = key.strip_prefix(LEDGER_PREFIX)?;
    let (tenant, file) = rest.split_once('/')?;
    let entry_id = file.strip_suffix(".json")?;
    let valid_id = !entry_id.is_empty()
        && entry_id.len() <= 64
        && entry_id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-');
    valid_id.then(|| Some((TenantId::parse(tenant).ok()?, entry_id.to_owned())))?
}

/// The caller logs the unavailability once; the store's own words go to debug.
fn unavailable_bucket(err: envelope::objects::ObjectStoreError) -> ServiceError {
    tracing::debug!("audit bucket: {err}");
    ServiceError::Unavailable {
        what: "audit bucket",
        retry_after: Duration::from_secs(1),
    }
}

fn erasure_job(job: store::erasures::ErasureJobRow) -> ErasureJob {
    ErasureJob {
        job: job.job,
        state: job.state,
        done: job.done,
        total: job.total,
    }
}

/// The audit bucket's object store, shared.
pub type AuditObjects = Arc<dyn ObjectStore>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_keys_round_trip_and_refuse_other_objects() {
        let tenant = TenantId::from_random_bytes([7; 16]);
        let id = new_entry_id();
        let key = ledger_key(&tenant, &id).expect("key");
        assert_eq!(parse_ledger_key(key.as_str()), Some((tenant, id)));
        for other in [
            "erasures/x",
            "checkpoints/a/b.json",
            "erasures/not-a-tenant/1-a.json",
        ] {
            assert_eq!(parse_ledger_key(other), None, "{other}");
        }
    }

    #[test]
    fn entry_ids_sort_by_age_and_fit_the_table() {
        let id = new_entry_id();
        assert_eq!(id.len(), 13 + 1 + 16);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
        );
    }
}
