//! The analytics export run, inside the home region: for each tenant that turned export
//! on and each collection with an `analytics` section, the records are opened from a
//! replica snapshot (wrapped keys read on that snapshot, unwrapped through the region's
//! KMS), anonymized by the `export` engine under the tenant's pseudonym key, and released
//! to the analytics bucket under the region's prefix as
//! `<prefix><tenant pseudonym>/<collection>/run=<id>/` (parts, then `_manifest.json`, last;
//! see `export::release` for how runs stay idempotent and incremental). The watermark is
//! the collection's schema version, record count and latest change, read on the same
//! snapshot as the records, with the erasures of data subjects that snapshot reflects.
//! After an erasure, a collection whose releases hold pseudonyms is released afresh and
//! its earlier runs withdrawn (`export::release::withdraw_before_erasures`,
//! `docs/privacy.md`). Plaintext exists here only on its way into the engine; no value is
//! logged.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use envelope::kms::Kms;
use envelope::objects::{ByteStream, ObjectKey, ObjectStore, ObjectStoreError};
use envelope::{DataKey, KeyMaterial, KeyPurpose, KeyVersion};
use export::release::{self, Plan, ReleaseLocation, ReleaseStore, SourcePosition};
use futures::TryStreamExt as _;
use model::{RegionId, TenantId};
use serde_json::{Map, Value};
use store::collections::CollectionRow;
use store::export::{ExportReplica, TenantSnapshot};

use crate::ServiceError;
use crate::keys::{KeyError, unwrap_stored};
use crate::records::{DataKeys, open_data};

/// Records read per statement.
const PAGE: i64 = 1000;

/// One tenant's keys for one export run, unwrapped once each.
#[derive(Debug)]
pub struct ExportKeys {
    kms: Arc<dyn Kms>,
    region: RegionId,
    tenant: TenantId,
    keys: HashMap<(KeyPurpose, KeyVersion), Arc<DataKey>>,
}

impl ExportKeys {
    pub fn new(kms: Arc<dyn Kms>, region: RegionId, tenant: TenantId) -> Self {
        Self {
            kms,
            region,
            tenant,
            keys: HashMap::new(),
        }
    }

    async fn key(
        &mut self,
        snapshot: &TenantSnapshot<'_>,
        purpose: KeyPurpose,
        version: Option<KeyVersion>,
    ) -> Result<Arc<DataKey>, ServiceError> {
        if let Some(version) = version
            && let Some(key) = self.keys.get(&(purpose, version))
        {
            return Ok(key.clone());
        }
        let stored = match version {
            Some(version) => {
                store::tenant_keys::by_version(snapshot.client(), &self.tenant, purpose, version)
                    .await?
            }
            None => store::tenant_keys::active(snapshot.client(), &self.tenant, purpose).await?,
        };
        let stored = stored.ok_or(KeyError::NotProvisioned {
            tenant: self.tenant,
        })?;
        let version = stored.version;
        let key = Arc::new(
            unwrap_stored(self.kms.as_ref(), &self.region, stored)
                .await
                .map_err(KeyError::from)?,
        );
        self.keys.insert((purpose, version), key.clone());
        Ok(key)
    }

    /// The tenant's analytics pseudonym key (see `envelope::pseudonym`).
    pub async fn pseudonym_key(
        &mut self,
        snapshot: &TenantSnapshot<'_>,
    ) -> Result<KeyMaterial, ServiceError> {
        let index = self.key(snapshot, KeyPurpose::Index, None).await?;
        Ok(envelope::pseudonym::analytics_pseudonym_key(&index))
    }
}

/// The export's keys, read on its snapshot, as the record decoder asks for them.
struct SnapshotKeys<'a, 's> {
    keys: &'a mut ExportKeys,
    snapshot: &'a TenantSnapshot<'s>,
}

impl DataKeys for SnapshotKeys<'_, '_> {
    async fn data_key(&mut self, version: KeyVersion) -> Result<Arc<DataKey>, ServiceError> {
        self.keys
            .key(self.snapshot, KeyPurpose::Data, Some(version))
            .await
    }
}

/// Every record of `collection` on the snapshot, opened (public and sealed fields in one
/// object), handed to `each` in record id order, a page at a time; the count.
pub async fn open_records(
    snapshot: &TenantSnapshot<'_>,
    keys: &mut ExportKeys,
    collection: &CollectionRow,
    mut each: impl FnMut(Map<String, Value>) -> Result<(), ServiceError>,
) -> Result<u64, ServiceError> {
    let mut after: Option<String> = None;
    let mut count = 0;
    loop {
        let rows = snapshot
            .records(&collection.name, after.as_deref(), PAGE)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(count);
        };
        after = Some(last.id.clone());
        for row in rows {
            let mut source = SnapshotKeys { keys, snapshot };
            let data = open_data(
                &mut source,
                &collection.name,
                &row.id,
                row.public,
                &row.sealed,
            )
            .await?;
            each(data)?;
            count += 1;
        }
    }
}

/// Where releases go: the analytics bucket (or a directory in dev), under this region's
/// prefix (`eu-central-1/`, from the catalogue).
#[derive(Debug, Clone)]
pub struct ExportTarget {
    pub objects: Arc<dyn ObjectStore>,
    pub prefix: String,
}

/// Rows per Parquet part.
const ROWS_PER_PART: usize = 1_000_000;

/// What one pass over the region did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub tenants: u64,
    /// Collections released by this pass (`resumed` of them completed a stopped run).
    pub released: u64,
    pub resumed: u64,
    /// Collections whose current watermark was already released.
    pub unchanged: u64,
    pub rows_released: u64,
    pub rows_suppressed: u64,
    /// Stored records the current schema no longer accepts (left out and counted).
    pub rows_invalid: u64,
    /// Earlier runs withdrawn because they may hold an erased subject's pseudonym.
    pub withdrawn: u64,
    /// The manifests written, as object keys.
    pub manifests: Vec<String>,
}

/// One pass: every exporting tenant's analytics collections, from `replica`.
pub async fn export_once(
    replica: &mut ExportReplica,
    region: &RegionId,
    kms: &Arc<dyn Kms>,
    target: &ExportTarget,
) -> Result<RunSummary, ServiceError> {
    let store = Releases(target.clone());
    let mut summary = RunSummary::default();
    for tenant in replica.exporting_tenants().await? {
        summary.tenants += 1;
        let snapshot = replica.snapshot(&tenant).await?;
        let mut keys = ExportKeys::new(kms.clone(), region.clone(), tenant);
        let material = keys.pseudonym_key(&snapshot).await?;
        let pseudonyms = export::PseudonymKey::new(material.expose());
        // The tenant's directory: its id under its own key, so analysts can tell tenants
        // apart but not name them, and no two tenants' directories are linkable.
        let tenant_dir = pseudonyms.pseudonym(export::PseudonymValue::String(tenant.as_str()));
        for collection in snapshot.collections().await? {
            let schema = serde_json::from_value::<wire::api::SchemaDoc>(collection.schema.clone())
                .map_err(|err| ServiceError::internal_while("read the stored schema", err))
                .and_then(|doc| {
                    doc.into_model()
                        .map_err(|err| ServiceError::internal_while("read the stored schema", err))
                })?;
            let location = ReleaseLocation::new(&tenant_dir, &collection.name).map_err(internal)?;
            let erasures = snapshot.erasures(&collection).await?;
            if schema.analytics().is_none() {
                // Not released (any more), but runs released while it was may hold an
                // erased subject's pseudonym: they are withdrawn all the same.
                let source = SourcePosition {
                    watermark: String::new(),
                    erasures,
                };
                summary.withdrawn += withdraw(&store, &location, &source).await?;
                continue;
            }
            let source = SourcePosition {
                watermark: snapshot.watermark(&collection).await?,
                erasures,
            };
            match release::plan_release(&store, &location, &source)
                .await
                .map_err(internal)?
            {
                Plan::UpToDate { .. } => summary.unchanged += 1,
                Plan::Write { run, resumed } => {
                    let mut table = export::TableBuilder::new(&schema);
                    let mut invalid = 0u64;
                    open_records(&snapshot, &mut keys, &collection, |data| {
                        if table.push_json(&schema, &data).is_err() {
                            invalid += 1;
                        }
                        Ok(())
                    })
                    .await?;
                    let anonymized = export::anonymize(&table.finish(), &schema, &pseudonyms)
                        .map_err(internal)?;
                    release::write_release(
                        &store,
                        &location,
                        &run,
                        &anonymized,
                        &source,
                        ROWS_PER_PART,
                    )
                    .await
                    .map_err(internal)?;
                    summary.released += 1;
                    summary.resumed += u64::from(resumed);
                    summary.rows_released += anonymized.report.rows_released;
                    summary.rows_suppressed += anonymized.report.rows_suppressed;
                    summary.rows_invalid += invalid;
                    summary.manifests.push(format!(
                        "{}{}",
                        target.prefix,
                        location.manifest_key(&run)
                    ));
                    tracing::info!(
                        tenant = %tenant,
                        collection = %collection.name,
                        run,
                        resumed,
                        rows = anonymized.report.rows_released,
                        suppressed = anonymized.report.rows_suppressed,
                        "released an anonymized snapshot"
                    );
                }
            }
            // After the release, so what is withdrawn is superseded; also on a pass that
            // found the release written (a crash between the two is finished here).
            summary.withdrawn += withdraw(&store, &location, &source).await?;
        }
        snapshot.finish().await?;
    }
    Ok(summary)
}

/// Withdraws the collection's runs that may hold the pseudonym of a subject erased since
/// they were released (`export::release::withdraw_before_erasures`); how many.
async fn withdraw(
    store: &Releases,
    location: &ReleaseLocation,
    source: &SourcePosition,
) -> Result<u64, ServiceError> {
    if source.erasures.is_empty() {
        return Ok(0);
    }
    let withdrawn_at = audit::time::format(std::time::SystemTime::now());
    let withdrawn = release::withdraw_before_erasures(store, location, source, &withdrawn_at)
        .await
        .map_err(internal)?;
    if !withdrawn.is_empty() {
        // The location is the tenant's pseudonym and the collection: no personal data.
        tracing::info!(
            release = location.prefix(),
            runs = withdrawn.len(),
            "withdrew runs released before a subject erasure"
        );
    }
    Ok(withdrawn.len() as u64)
}

fn internal(err: impl std::error::Error + Send + Sync + 'static) -> ServiceError {
    ServiceError::internal_while("run the analytics export", err)
}

/// The region's object store as the release writer sees it: keys under the region's
/// prefix.
struct Releases(ExportTarget);

impl Releases {
    fn key(&self, key: &str) -> Result<ObjectKey, release::StoreError> {
        let full = format!("{}{key}", self.0.prefix);
        ObjectKey::parse(&full)
            .map_err(|err| release::StoreError(format!("object key {full}: {err}")))
    }
}

fn store_error(err: ObjectStoreError) -> release::StoreError {
    release::StoreError(err.to_string())
}

#[async_trait]
impl ReleaseStore for Releases {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), release::StoreError> {
        let body: ByteStream =
            Box::pin(futures::stream::once(async move { Ok(Bytes::from(bytes)) }));
        self.0
            .objects
            .put(&self.key(key)?, body)
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, release::StoreError> {
        let body = match self.0.objects.get(&self.key(key)?).await {
            Ok(body) => body,
            Err(ObjectStoreError::NotFound(_)) => return Ok(None),
            Err(err) => return Err(store_error(err)),
        };
        let chunks: Vec<Bytes> = body.try_collect().await.map_err(store_error)?;
        Ok(Some(chunks.concat()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, release::StoreError> {
        let full = format!("{}{prefix}", self.0.prefix);
        let keys = self.0.objects.list(&full).await.map_err(store_error)?;
        Ok(keys
            .iter()
            .filter_map(|key| key.as_str().strip_prefix(&self.0.prefix))
            .map(str::to_owned)
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), release::StoreError> {
        self.0
            .objects
            .delete(&self.key(key)?)
            .await
            .map_err(store_error)
    }
}
