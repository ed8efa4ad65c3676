//! The region's audit log as use cases see it: append an event inside the caller's
//! transaction (so the change and its event commit or roll back together), read events,
//! sign checkpoints of chain heads that moved, and export a tenant's signed bundle.

use std::sync::Arc;
use std::time::SystemTime;

use audit::{
    Action, Actor, ActorKind, BundleWriter, Event, Hash, Head, NewEvent, Outcome, PublicKey,
    SigningKey,
};
use model::{RegionId, TenantId};
use store::audit::{self as rows, AuditRow, CheckpointRow, EventFilter};
use store::{PrimaryTx, RegionDatabase, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The event names another region: a node records only its own region's events.
    #[error("event for region {event}, but this node keeps region {node}'s audit log")]
    WrongRegion { event: RegionId, node: RegionId },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bundle(#[from] audit::BundleError),
    #[error("stored audit event is corrupt: {0}")]
    Corrupt(String),
}

/// The audit log of one region. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    database: RegionDatabase,
    key: SigningKey,
    /// Public keys of earlier signing keys, still published so old bundles verify.
    retired: Vec<PublicKey>,
    /// The head this node last appended per tenant: a guess the database re-checks.
    heads: moka::sync::Cache<TenantId, Head>,
}

/// Tenants whose last head this node remembers.
const HEAD_CACHE_CAPACITY: u64 = 100_000;

/// Events per page read from the database while exporting.
const EXPORT_PAGE: u32 = 1000;

impl AuditLog {
    /// # Panics
    /// When `key` is another region's: the region signs its own log only.
    pub fn new(database: RegionDatabase, key: SigningKey, retired: Vec<PublicKey>) -> Self {
        assert_eq!(
            key.region(),
            database.region(),
            "the signing key must be the node's region's"
        );
        let heads = moka::sync::Cache::new(HEAD_CACHE_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                database,
                key,
                retired,
                heads,
            }),
        }
    }

    pub fn region(&self) -> &RegionId {
        self.inner.database.region()
    }

    /// The current and retired public keys, for `GET /v1/audit/keys`.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        std::iter::once(self.inner.key.public())
            .chain(self.inner.retired.iter().cloned())
            .collect()
    }

    /// Links `event` after its tenant's chain head and stores it, inside `tx`. Writers of
    /// one tenant wait for each other on the head; the event exists only if `tx` commits.
    ///
    /// Fast path: link after the head this node last wrote for the tenant; the database
    /// accepts it only if that is still the head (same seq and hash), in one statement.
    /// Otherwise (another node wrote, or that transaction rolled back) lock the head, read
    /// it, and link after it.
    pub async fn append(&self, tx: &PrimaryTx<'_>, event: NewEvent) -> Result<Event, AuditError> {
        if &event.region != self.region() {
            return Err(AuditError::WrongRegion {
                event: event.region,
                node: self.region().clone(),
            });
        }
        let tenant = event.tenant;
        if let Some(head) = self.inner.heads.get(&tenant) {
            let linked = audit::next(Some(head), event.clone());
            if rows::append(tx, &to_row(&linked)).await? {
                self.inner.heads.insert(tenant, linked.head());
                return Ok(linked);
            }
        }
        let head = rows::lock_head(tx, &tenant).await?.map(|(seq, hash)| Head {
            seq,
            hash: Hash::from_bytes(hash),
        });
        let linked = audit::next(head, event);
        if !rows::append(tx, &to_row(&linked)).await? {
            return Err(AuditError::Corrupt(format!(
                "the head of tenant {tenant} moved while locked"
            )));
        }
        self.inner.heads.insert(tenant, linked.head());
        Ok(linked)
    }

    /// Events of `tenant` matching `filter`, in seq order (from the primary).
    pub async fn events(
        &self,
        tenant: &TenantId,
        filter: &EventFilter,
    ) -> Result<Vec<Event>, AuditError> {
        let primary = self.inner.database.primary().get().await?;
        rows::events(primary.client(), tenant, filter)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Signs the heads of chains that moved since their last checkpoint, `batch` at a
    /// time; returns how many it signed.
    pub async fn checkpoint(&self, batch: i64) -> Result<u64, AuditError> {
        let mut signed = 0;
        loop {
            let mut primary = self.inner.database.primary().get().await?;
            let heads = rows::heads_without_checkpoint(primary.client(), batch).await?;
            if heads.is_empty() {
                return Ok(signed);
            }
            let tx = primary.begin().await?;
            for (tenant, seq, hash) in heads {
                let checkpoint = audit::sign_checkpoint(
                    &self.inner.key,
                    &tenant,
                    seq,
                    &Hash::from_bytes(hash),
                    SystemTime::now(),
                );
                rows::insert_checkpoint(
                    &tx,
                    &CheckpointRow {
                        tenant,
                        seq,
                        hash,
                        signed_at: checkpoint.signed_at,
                        key_id: checkpoint.key_id,
                        signature: checkpoint.signature.as_bytes().to_vec(),
                    },
                )
                .await?;
                signed += 1;
            }
            tx.commit().await?;
        }
    }

    /// The tenant's events in `[from, to)` as a bundle (NDJSON lines, then the signed
    /// manifest line), written to `out` page by page.
    pub async fn export(
        &self,
        tenant: &TenantId,
        from: Option<SystemTime>,
        to: Option<SystemTime>,
        out: &mut Vec<u8>,
    ) -> Result<u64, AuditError> {
        let mut writer = BundleWriter::new(*tenant, self.region().clone(), from, to);
        let mut filter = EventFilter {
            from,
            to,
            action: None,
            after_seq: 0,
            limit: EXPORT_PAGE,
        };
        loop {
            let page = self.events(tenant, &filter).await?;
            let Some(last) = page.last() else { break };
            filter.after_seq = last.seq;
            for event in &page {
                writer.write_event(event, out)?;
            }
        }
        let count = writer.count();
        out.extend_from_slice(
            writer
                .finish(&self.inner.key, SystemTime::now())?
                .as_bytes(),
        );
        Ok(count)
    }
}

fn to_row(event: &Event) -> AuditRow {
    AuditRow {
        tenant: event.tenant,
        seq: event.seq,
        time: event.time,
        region: event.region.to_string(),
        actor_kind: event.actor.kind.as_str().to_owned(),
        actor_id: event.actor.id.clone(),
        action: event.action.as_str().to_owned(),
        resource: event.resource.clone(),
        outcome: event.outcome.as_str().to_owned(),
        request_id: event.request_id.clone(),
        via_region: event.via_region.to_string(),
        prev_hash: *event.prev_hash.as_bytes(),
        hash: *event.hash.as_bytes(),
    }
}

/// Stored rows are read back as they are: a tampered row keeps its stored hash, so that
/// verification downstream detects the tampering instead of this code hiding it.
fn from_row(row: &AuditRow) -> Result<Event, AuditError> {
    let corrupt = |what: &str| AuditError::Corrupt(format!("seq {}: {what}", row.seq));
    Ok(Event {
        seq: row.seq,
        time: row.time,
        region: RegionId::parse(&row.region).map_err(|_| corrupt("region"))?,
        tenant: row.tenant,
        actor: Actor {
            kind: ActorKind::parse(&row.actor_kind).map_err(|_| corrupt("actor kind"))?,
            id: row.actor_id.clone(),
        },
        action: Action::parse(&row.action).map_err(|_| corrupt("action"))?,
        resource: row.resource.clone(),
        outcome: Outcome::parse(&row.outcome).map_err(|_| corrupt("outcome"))?,
        request_id: row.request_id.clone(),
        via_region: RegionId::parse(&row.via_region).map_err(|_| corrupt("via region"))?,
        prev_hash: Hash::from_bytes(row.prev_hash),
        hash: Hash::from_bytes(row.hash),
    })
}
