//! The analytics export's reading side, inside the home region: a collection's records
//! opened from a replica snapshot (wrapped keys read on that snapshot and unwrapped
//! through the region's KMS), and the tenant's pseudonym key. Plaintext exists here only
//! on its way into the anonymizer; this module writes nothing and logs no value.

use std::collections::HashMap;
use std::sync::Arc;

use envelope::kms::Kms;
use envelope::seal::{self, SealContext};
use envelope::{DataKey, KeyMaterial, KeyPurpose, KeyVersion};
use model::{RegionId, TenantId};
use serde_json::{Map, Value};
use store::collections::CollectionRow;
use store::export::TenantSnapshot;

use crate::ServiceError;
use crate::keys::{KeyError, unwrap_stored};
use crate::records::SealedFields;

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
            let corrupt = |what: &str| ServiceError::Internal(format!("record {}: {what}", row.id));
            let mut data = match row.public {
                Value::Object(map) => map,
                _ => return Err(corrupt("public fields are not an object")),
            };
            for (field, sealed) in
                SealedFields::decode(&row.sealed).ok_or_else(|| corrupt("sealed fields"))?
            {
                let version = seal::sealed_version(sealed).map_err(KeyError::from)?;
                let key = keys.key(snapshot, KeyPurpose::Data, Some(version)).await?;
                let context = SealContext {
                    collection: &collection.name,
                    record: &row.id,
                    field: &field,
                };
                let plaintext = seal::open(&key, &context, sealed).map_err(KeyError::from)?;
                let value =
                    serde_json::from_slice(&plaintext).map_err(|_| corrupt("sealed value"))?;
                data.insert(field, value);
            }
            each(data)?;
            count += 1;
        }
    }
}
