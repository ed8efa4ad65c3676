//! API keys of a tenant (admin): issuing one (its secret shown once, only a hash stored)
//! and revoking one, each with its audit event in the same transaction.

use std::time::SystemTime;

use audit::{Action, Outcome};
use model::{ApiKeyId, KeyName, Role, TenantId};

use crate::ServiceError;
use crate::access::{self, IssuedKey};
use crate::tenancy::{Caller, CreatedKey, RegionService};
use crate::unit_of_work::EventTiming;

impl RegionService {
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        name: &KeyName,
        role: &str,
    ) -> Result<CreatedKey, ServiceError> {
        let name = name.as_str();
        let role = Role::parse(role).map_err(|_| {
            ServiceError::invalid("role", "must be admin, writer, reader or auditor")
        })?;
        let key = access::issue_key(&caller.tenant);
        let resource = format!("apikeys/{}", key.key_id);
        let event = self.caller_event(caller, Action::ApiKeyCreate, &resource, Outcome::Success);
        self.write(
            &caller.tenant,
            EventTiming::AfterChange,
            [event],
            async |tx| {
                store::api_keys::insert(tx, &key_row(&caller.tenant, &key, name, role)).await?;
                Ok(())
            },
        )
        .await?;
        self.key_issued(&caller.tenant, &key.key_id);
        Ok(CreatedKey {
            name: name.to_owned(),
            role,
            key,
        })
    }

    pub async fn revoke_api_key(
        &self,
        caller: &Caller,
        key_id: &ApiKeyId,
    ) -> Result<(), ServiceError> {
        let resource = format!("apikeys/{key_id}");
        let event = self.caller_event(caller, Action::ApiKeyDelete, &resource, Outcome::Success);
        self.write(
            &caller.tenant,
            EventTiming::AfterChange,
            [event],
            async |tx| {
                if store::api_keys::revoke(tx, &caller.tenant, key_id.as_str()).await? {
                    Ok(())
                } else {
                    Err(ServiceError::NotFound { what: "api key" })
                }
            },
        )
        .await?;
        let key = (caller.tenant, key_id.as_str().to_owned());
        self.inner.keys.invalidate(&key).await;
        self.inner.verified_keys.invalidate(&key);
        Ok(())
    }
}

pub(crate) fn key_row(
    tenant: &TenantId,
    key: &IssuedKey,
    name: &str,
    role: Role,
) -> store::api_keys::ApiKeyRow {
    store::api_keys::ApiKeyRow {
        key_id: key.key_id.clone(),
        tenant: *tenant,
        name: name.to_owned(),
        role: role.as_str().to_owned(),
        secret_hash: key.secret_hash,
        created_at: SystemTime::now(),
        revoked_at: None,
    }
}
