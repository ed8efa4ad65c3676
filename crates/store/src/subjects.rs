//! The subject index (migration `0012`): a record's subject token is one more row of
//! `record_index`, field [`SUBJECT_TOKEN_FIELD`], written, replaced and deleted with the
//! record by [`records`](crate::records)' statements. Here: finding a subject's records
//! across a tenant's collections (one indexed query, keyset pages), and the backfill's
//! walk and conditional rewrite of tokens.

use model::TenantId;
use tokio_postgres::GenericClient;
use tokio_postgres::types::{ToSql, Type};

use crate::records::{RecordRow, decode};
use crate::{Primary, PrimaryTx, StoreError};

/// The `record_index.field` of subject tokens. Schema field names never hold a colon, so
/// it cannot collide with a searchable field's tokens.
pub const SUBJECT_TOKEN_FIELD: &str = "subject:";

/// A record and its collection.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionRecord {
    pub collection: String,
    pub row: RecordRow,
}

/// Where a page in (collection, record id) order ends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordPosition {
    pub collection: String,
    pub record_id: String,
}

impl CollectionRecord {
    pub fn position(&self) -> RecordPosition {
        RecordPosition {
            collection: self.collection.clone(),
            record_id: self.row.id.clone(),
        }
    }
}

fn decode_with_collection(row: &tokio_postgres::Row) -> Result<CollectionRecord, StoreError> {
    Ok(CollectionRecord {
        row: decode(row)?,
        collection: row.try_get(6)?,
    })
}

/// A page, in (collection, record id) order after `after`, of the tenant's records whose
/// subject token is `token`, in every collection.
pub async fn find_page<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    token: &[u8; 32],
    after: Option<&RecordPosition>,
    limit: i64,
) -> Result<Vec<CollectionRecord>, StoreError> {
    let sql = "select r.record_id, r.version, r.public, r.sealed, r.created_at, r.updated_at,
                      r.collection
               from record_index i
               join records r on r.tenant_id = i.tenant_id and r.collection = i.collection
                             and r.record_id = i.record_id
               where i.tenant_id = $1 and i.field = 'subject:' and i.token = $2
                 and ($3::text is null or (i.collection, i.record_id) > ($3, $4))
               order by i.collection, i.record_id limit $5";
    let (after_collection, after_id) = split(after);
    let params: [(&(dyn ToSql + Sync), Type); 5] = [
        (&tenant.as_str(), Type::TEXT),
        (&token.as_slice(), Type::BYTEA),
        (&after_collection, Type::TEXT),
        (&after_id, Type::TEXT),
        (&limit, Type::INT8),
    ];
    collection_records(client, sql, &params).await
}

async fn collection_records<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<CollectionRecord>, StoreError> {
    client
        .query_typed(sql, params)
        .await?
        .iter()
        .map(decode_with_collection)
        .collect()
}

fn split(after: Option<&RecordPosition>) -> (Option<&str>, Option<&str>) {
    match after {
        Some(at) => (Some(at.collection.as_str()), Some(at.record_id.as_str())),
        None => (None, None),
    }
}

/// A page, in (collection, record id) order after `after`, of all the tenant's records:
/// the backfill's walk.
pub async fn tenant_records_page<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    after: Option<&RecordPosition>,
    limit: i64,
) -> Result<Vec<CollectionRecord>, StoreError> {
    let sql = "select record_id, version, public, sealed, created_at, updated_at, collection
               from records
               where tenant_id = $1 and ($2::text is null or (collection, record_id) > ($2, $3))
               order by collection, record_id limit $4";
    let (after_collection, after_id) = split(after);
    let params: [(&(dyn ToSql + Sync), Type); 4] = [
        (&tenant.as_str(), Type::TEXT),
        (&after_collection, Type::TEXT),
        (&after_id, Type::TEXT),
        (&limit, Type::INT8),
    ];
    collection_records(client, sql, &params).await
}

/// The subject token a record at `version` should carry (`None`: none, its collection has
/// no subject field or the record no subject).
#[derive(Debug, Clone)]
pub struct SubjectTokenUpdate {
    pub collection: String,
    pub record_id: String,
    pub version: i64,
    pub token: Option<[u8; 32]>,
}

/// Sets the subject tokens of records that are still at the version the update names, in
/// one tenant-scoped statement; a record changed since (its writer set its token) or gone
/// is left alone. Returns how many records were at their version.
pub async fn set_tokens(
    primary: &mut Primary,
    tenant: &TenantId,
    updates: &[SubjectTokenUpdate],
) -> Result<u64, StoreError> {
    // The records are locked first (`for update`): a concurrent writer either committed
    // before (then the version differs and the record is skipped) or waits for us.
    let sql = "with batch as (
                   select * from unnest($2::text[], $3::text[], $4::bigint[], $5::bytea[])
                       as b (collection, record_id, version, token)
               ), current as (
                   select b.collection, b.record_id, b.token
                   from batch b
                   join records r on r.tenant_id = $1 and r.collection = b.collection
                                 and r.record_id = b.record_id and r.version = b.version
                   for update of r
               ), stale as (
                   delete from record_index i using current c
                   where i.tenant_id = $1 and i.field = 'subject:'
                     and i.collection = c.collection and i.record_id = c.record_id
                     and i.token is distinct from c.token
               ), fresh as (
                   insert into record_index (tenant_id, collection, field, token, record_id)
                   select $1, c.collection, 'subject:', c.token, c.record_id
                   from current c where c.token is not null
                   on conflict do nothing
               )
               select count(*) from current";
    let collections: Vec<&str> = updates.iter().map(|u| u.collection.as_str()).collect();
    let ids: Vec<&str> = updates.iter().map(|u| u.record_id.as_str()).collect();
    let versions: Vec<i64> = updates.iter().map(|u| u.version).collect();
    let tokens: Vec<Option<&[u8]>> = updates
        .iter()
        .map(|u| u.token.as_ref().map(<[u8; 32]>::as_slice))
        .collect();
    let tenant_text = tenant.as_str();
    let params: [&(dyn ToSql + Sync); 5] = [&tenant_text, &collections, &ids, &versions, &tokens];
    let (rows, _) = primary.write_scoped(tenant, sql, &params).await?;
    let row = rows
        .first()
        .ok_or_else(|| StoreError::Corrupt("count returned no row".into()))?;
    let count: i64 = row.try_get(0)?;
    u64::try_from(count).map_err(|_| StoreError::Corrupt("negative count".into()))
}

/// An audit event about a record (or one of its files), as a subject export lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRef {
    /// The record's resource (`collections/{c}/records/{id}`).
    pub record_resource: String,
    pub seq: u64,
    pub time: std::time::SystemTime,
    pub action: String,
}

/// The tenant's audit events whose resource is one of `record_resources` or a file of one
/// (`…/files/…`), in seq order. Each record's events are one range of the index
/// `audit_events_by_resource` (migration 0019, which says why ranges): never change one
/// without the other.
pub async fn events_about<C: GenericClient>(
    client: &C,
    tenant: &TenantId,
    record_resources: &[String],
) -> Result<Vec<EventRef>, StoreError> {
    if record_resources.is_empty() {
        return Ok(Vec::new());
    }
    // [R, R/files0) in byte order: R itself and every R/files/… ('/' < '0').
    let bounds: Vec<String> = record_resources
        .iter()
        .flat_map(|resource| [resource.clone(), format!("{resource}/files0")])
        .collect();
    let ranges: Vec<String> = (0..record_resources.len())
        .map(|n| {
            format!(
                "(resource collate \"C\" >= ${} and resource collate \"C\" < ${})",
                2 * n + 2,
                2 * n + 3
            )
        })
        .collect();
    let sql = format!(
        "select split_part(resource, '/files/', 1), seq, time, action from audit_events
         where tenant_id = $1 and ({})
         order by seq",
        ranges.join(" or ")
    );
    let tenant_id = tenant.as_str();
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&tenant_id, Type::TEXT)];
    params.extend(
        bounds
            .iter()
            .map(|bound| (bound as &(dyn ToSql + Sync), Type::TEXT)),
    );
    client
        .query_typed(&sql, &params)
        .await?
        .iter()
        .map(|row| {
            let seq: i64 = row.try_get(1)?;
            Ok(EventRef {
                record_resource: row.try_get(0)?,
                seq: u64::try_from(seq).map_err(|_| StoreError::Corrupt("negative seq".into()))?,
                time: row.try_get(2)?,
                action: row.try_get(3)?,
            })
        })
        .collect()
}

/// The job kind of the subject-index backfill (`service::jobs::SUBJECT_INDEX`).
pub const BACKFILL_KIND: &str = "subject_index";

/// Queues the tenant's subject-index backfill in `tx` (the schema change that needs it),
/// unless one is queued and not started yet (it will read the schemas when it runs). One
/// that is running may have passed the changed collection, so another is queued behind it.
pub async fn queue_backfill(tx: &PrimaryTx<'_>, tenant: &TenantId) -> Result<(), StoreError> {
    tx.client()
        .execute(
            "insert into jobs (kind, tenant_id)
             select $1, $2
             where not exists (select from jobs
                               where kind = $1 and tenant_id = $2 and state = 'queued')",
            &[&BACKFILL_KIND, &tenant.as_str()],
        )
        .await?;
    Ok(())
}
