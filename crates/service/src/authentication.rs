//! Who is calling and may they: authentication of the bearer token (the key cache by
//! tenant and key id, the short negative cache, the buckets), authorization by role and
//! residency, and the denials: counted, and recorded once a minute per tenant and reason
//! (`denials.rs`) or, for a verified caller, as one event each.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use audit::{Action, Actor, ActorKind, NewEvent, Outcome};
use model::{Access, ClientKey, Role, TenantId};

use crate::ServiceError;
use crate::access::{PresentedKey, Principal};
use crate::denials::{Denial, DueWindow};
use crate::rate_limit::Bucket;

use crate::tenancy::{
    AGGREGATE_REQUEST_ID, Attempt, Caller, KeyRef, OperatorGrant, RegionService, RequestContext,
    TENANT_LOOKUPS_PER_PASS, Tenant, access_name, tenant_from_row,
};

/// Why a token did not make a caller.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The token did not verify (401); with a wait when the bucket shared by such tokens
    /// is empty (429).
    Unverified {
        reason: Denial,
        retry_after: Option<Duration>,
    },
    /// A verified caller over its own bucket (429).
    OverLimit(Duration),
    Failed(ServiceError),
}

impl From<ServiceError> for Refusal {
    fn from(err: ServiceError) -> Self {
        Self::Failed(err)
    }
}

impl Refusal {
    pub(crate) fn into_error(self) -> ServiceError {
        match self {
            Refusal::Unverified {
                retry_after: Some(retry_after),
                ..
            }
            | Refusal::OverLimit(retry_after) => ServiceError::RateLimited { retry_after },
            Refusal::Unverified {
                retry_after: None, ..
            } => ServiceError::Unauthenticated,
            Refusal::Failed(err) => err,
        }
    }
}

impl RegionService {
    /// Who `bearer` (the `Authorization: Bearer` token, canonicalized by
    /// [`access::bearer_token`]) is. A key is checked against its own tenant's rows; a key
    /// of a tenant not homed here is unknown here. Draws from the caller's bucket.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, ServiceError> {
        self.identify(bearer, None)
            .await
            .map_err(Refusal::into_error)
    }

    /// [`RegionService::authenticate`], saying why a token did not verify. What a token
    /// that does not verify may cost is a hash, cache lookups and, for a key id in no
    /// cache, one database query drawn from the bucket that all such tokens share
    /// (checked before the query), after the share of it `client` may spend.
    pub(crate) async fn identify(
        &self,
        bearer: Option<&str>,
        client: Option<ClientKey>,
    ) -> Result<Principal, Refusal> {
        // Without a token there is nothing to look up or hash: no bucket either.
        let Some(bearer) = bearer else {
            return Err(Refusal::Unverified {
                reason: Denial::NoToken,
                retry_after: None,
            });
        };
        if let Some(presented) = PresentedKey::parse(bearer) {
            let key: KeyRef = (presented.tenant, presented.key_id.clone());
            let mut drawn = false;
            let row = match self.inner.keys.get(&key).await {
                Some(row) => row,
                None if self.inner.unknown_keys.contains_key(&key) => {
                    return Err(self.unverified(Denial::UnknownKey, drawn, client));
                }
                None => {
                    if !self.inner.verified_keys.contains_key(&key) {
                        drawn = true;
                        if let Err(wait) = self.inner.rate_limiter.check_unverified(client) {
                            return Err(Refusal::Unverified {
                                reason: Denial::Throttled,
                                retry_after: Some(wait),
                            });
                        }
                    }
                    match self.load_api_key(&key).await? {
                        Some(row) => row,
                        None => return Err(self.unverified(Denial::UnknownKey, drawn, client)),
                    }
                }
            };
            if !presented.matches(&row.secret_hash) {
                return Err(self.unverified(Denial::WrongSecret, drawn, client));
            }
            if row.revoked_at.is_some() {
                return Err(self.unverified(Denial::RevokedKey, drawn, client));
            }
            let role = Role::parse(&row.role).map_err(|_| {
                ServiceError::internal(format!("key {} has a bad role", row.key_id))
            })?;
            self.inner.verified_keys.insert(key.clone(), ());
            let (tenant, key_id) = key;
            self.inner
                .rate_limiter
                .check(Bucket::ApiKey {
                    tenant,
                    key_id: key_id.clone(),
                })
                .map_err(Refusal::OverLimit)?;
            return Ok(Principal::ApiKey {
                tenant,
                key_id,
                role,
            });
        }
        if self.inner.operator.matches(bearer) {
            self.inner
                .rate_limiter
                .check(Bucket::Operator)
                .map_err(Refusal::OverLimit)?;
            return Ok(Principal::Operator);
        }
        Err(self.unverified(Denial::MalformedToken, false, client))
    }

    /// A token that did not verify, having drawn (`drawn`) or now drawing from the bucket
    /// such tokens share (after `client`'s share of it).
    pub(crate) fn unverified(
        &self,
        reason: Denial,
        drawn: bool,
        client: Option<ClientKey>,
    ) -> Refusal {
        let retry_after = if drawn {
            None
        } else {
            self.inner.rate_limiter.check_unverified(client).err()
        };
        Refusal::Unverified {
            reason,
            retry_after,
        }
    }

    /// Authenticates and authorizes a tenant-scoped call. A key of another tenant gets
    /// 404 (it may not learn whether `tenant` exists), in every region, whether the key
    /// can be checked here or not; a role without `access` gets 403.
    /// Both denials are audited, in the target tenant's chain when it lives here and in
    /// the caller's own.
    pub async fn authorize(
        &self,
        bearer: Option<&str>,
        tenant: &TenantId,
        access: Access,
        attempt: Attempt<'_>,
        context: &RequestContext,
    ) -> Result<Caller, ServiceError> {
        let principal = match self.identify(bearer, context.client).await {
            Ok(principal) => principal,
            Err(Refusal::Unverified {
                reason,
                retry_after,
            }) => {
                // Counted, and recorded once a window in the tenant's chain (if it lives
                // here, which the recorder checks): nothing of this request goes into it.
                self.count_denial(Some(tenant), reason);
                if let Some(retry_after) = retry_after {
                    return Err(ServiceError::RateLimited { retry_after });
                }
                let of_another_tenant = bearer
                    .and_then(PresentedKey::parse)
                    .is_some_and(|key| key.tenant != *tenant);
                // A key names its tenant. One presented for another tenant's path gets what
                // a valid key of another tenant gets (404) even where it cannot be checked
                // (its tenant lives elsewhere): otherwise the key's own region would answer
                // 404 and the others 401, and which one a request got would tell whether
                // `tenant` exists and where it lives.
                if of_another_tenant {
                    return Err(ServiceError::NotFound { what: "tenant" });
                }
                return Err(ServiceError::Unauthenticated);
            }
            Err(other) => return Err(other.into_error()),
        };
        let (actor, role, own_tenant) = match &principal {
            Principal::Operator => (
                Actor {
                    kind: ActorKind::Operator,
                    id: "operator".to_owned(),
                },
                None,
                None,
            ),
            Principal::ApiKey {
                tenant: key_tenant,
                key_id,
                role,
            } => (
                Actor {
                    kind: ActorKind::ApiKey,
                    id: key_id.clone(),
                },
                Some(*role),
                Some(*key_tenant),
            ),
        };
        let target = self.local_tenant(tenant).await?;
        if own_tenant.is_some_and(|own| own != *tenant) {
            if target.is_some() {
                self.record_denied(tenant, &actor, attempt, context).await?;
            }
            if let Some(own) = own_tenant {
                self.record_denied(&own, &actor, attempt, context).await?;
            }
            return Err(ServiceError::NotFound { what: "tenant" });
        }
        let Some(_) = target else {
            return Err(ServiceError::NotFound { what: "tenant" });
        };
        let allowed = match role {
            Some(role) => role.may(access),
            // The operator manages tenants; it never reads or writes their data.
            None => false,
        };
        if !allowed {
            self.record_denied(tenant, &actor, attempt, context).await?;
            return Err(ServiceError::Forbidden {
                role: role.map_or("operator", Role::as_str),
                operation: access_name(access),
            });
        }
        Ok(Caller {
            tenant: *tenant,
            actor,
            role,
            context: context.clone(),
        })
    }

    /// Checks that `bearer` is the operator token (a request the router named no client
    /// for; see [`RegionService::authorize_operator_from`]).
    pub async fn authorize_operator(
        &self,
        bearer: Option<&str>,
    ) -> Result<OperatorGrant, ServiceError> {
        self.authorize_operator_from(bearer, None).await
    }

    /// Checks that `bearer`, sent by `client`, is the operator token.
    pub async fn authorize_operator_from(
        &self,
        bearer: Option<&str>,
        client: Option<ClientKey>,
    ) -> Result<OperatorGrant, ServiceError> {
        let principal = match self.identify(bearer, client).await {
            Ok(principal) => principal,
            Err(refusal) => {
                if let Refusal::Unverified { reason, .. } = &refusal {
                    self.count_denial(None, *reason);
                }
                return Err(refusal.into_error());
            }
        };
        match principal {
            Principal::Operator => Ok(OperatorGrant(())),
            Principal::ApiKey { .. } => Err(ServiceError::Forbidden {
                role: "api key",
                operation: "manage tenants",
            }),
        }
    }

    pub(crate) async fn record_denied(
        &self,
        tenant: &TenantId,
        actor: &Actor,
        attempt: Attempt<'_>,
        context: &RequestContext,
    ) -> Result<(), ServiceError> {
        let event = self.event(
            tenant,
            actor.clone(),
            attempt.action,
            attempt.resource,
            Outcome::Denied,
            context,
        );
        self.inner.audit.record_denial(event).await?;
        Ok(())
    }

    /// Counts a request refused before authentication: in the metrics, and in the open
    /// window of `tenant` and `reason` (when the request named a tenant).
    pub(crate) fn count_denial(&self, tenant: Option<&TenantId>, reason: Denial) {
        self.inner
            .audit
            .metrics()
            .record_auth_denial(reason.as_str());
        let Some(tenant) = tenant else { return };
        self.inner.denials.count(*tenant, reason);
        self.inner.denial_recorder.call_once(|| {
            let service = Arc::downgrade(&self.inner);
            let tick = self.inner.denials.tick();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(tick).await;
                    // Stops with the service.
                    let Some(inner) = service.upgrade() else { return };
                    let service = RegionService { inner };
                    if let Err(err) = service.record_denials(false).await {
                        tracing::warn!(region = %service.region(), "failed to record denied requests, retrying: {err}");
                    }
                }
            });
        });
    }

    /// Records every open window of denials now, due or not (at shutdown, and in
    /// tests): one `auth.failed` event per tenant and reason, with its count. Windows of
    /// tenants this node has not looked up lately beyond 64 stay open for the next pass.
    pub async fn flush_denials(&self) -> Result<(), ServiceError> {
        self.record_denials(true).await
    }

    /// Records the windows of denials that are due (all when `all`). A window that
    /// cannot be recorded now is put back, its count kept; the first failure is returned.
    pub(crate) async fn record_denials(&self, all: bool) -> Result<(), ServiceError> {
        let mut first_failure = None;
        let mut lookups = 0;
        for window in self.inner.denials.take_due(all) {
            // A tenant this node has not looked up lately costs a query to place; a flood
            // of made-up tenant ids may cost at most this many a pass, the rest wait.
            if !self.inner.tenants.contains_key(&window.tenant) {
                if lookups >= TENANT_LOOKUPS_PER_PASS {
                    self.inner.denials.put_back(window);
                    continue;
                }
                lookups += 1;
            }
            match self.record_window(window).await {
                Ok(()) => {}
                Err(err) => {
                    self.inner.denials.put_back(window);
                    first_failure.get_or_insert(err);
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    pub(crate) async fn record_window(&self, window: DueWindow) -> Result<(), ServiceError> {
        // A tenant that does not live here has no chain here: the metrics counted them.
        if self.local_tenant(&window.tenant).await?.is_none() {
            return Ok(());
        }
        let context = RequestContext {
            request_id: AGGREGATE_REQUEST_ID.to_owned(),
            via_region: self.inner.region.clone(),
            client: None,
        };
        let event = self.event(
            &window.tenant,
            Actor {
                kind: ActorKind::ApiKey,
                id: "unknown".to_owned(),
            },
            Action::AuthFailed,
            &window.reason.resource(window.count),
            Outcome::Denied,
            &context,
        );
        self.inner.audit.record_denial(event).await?;
        Ok(())
    }

    pub(crate) fn event(
        &self,
        tenant: &TenantId,
        actor: Actor,
        action: Action,
        resource: &str,
        outcome: Outcome,
        context: &RequestContext,
    ) -> NewEvent {
        NewEvent {
            time: SystemTime::now(),
            region: self.inner.region.clone(),
            tenant: *tenant,
            actor,
            action,
            resource: resource.to_owned(),
            outcome,
            request_id: context.request_id.clone(),
            via_region: context.via_region.clone(),
        }
    }

    /// An event by the system (a job, the erasure ledger) named `actor`, with
    /// `request_id` naming what it did it for, from this region.
    pub(crate) fn system_event(
        &self,
        tenant: &TenantId,
        actor: &str,
        action: Action,
        resource: &str,
        request_id: String,
    ) -> NewEvent {
        let context = RequestContext {
            request_id,
            via_region: self.inner.region.clone(),
            client: None,
        };
        self.event(
            tenant,
            Actor {
                kind: ActorKind::System,
                id: actor.to_owned(),
            },
            action,
            resource,
            Outcome::Success,
            &context,
        )
    }

    pub(crate) fn caller_event(
        &self,
        caller: &Caller,
        action: Action,
        resource: &str,
        outcome: Outcome,
    ) -> NewEvent {
        self.event(
            &caller.tenant,
            caller.actor.clone(),
            action,
            resource,
            outcome,
            &caller.context,
        )
    }

    /// Records a read (or another event outside a data transaction) through the queue.
    pub(crate) async fn record_read(
        &self,
        caller: &Caller,
        action: Action,
        resource: &str,
    ) -> Result<(), ServiceError> {
        let event = self.caller_event(caller, action, resource, Outcome::Success);
        self.inner.audit.record(event).await?;
        Ok(())
    }

    // ---- lookups -----------------------------------------------------------------

    /// The tenant if it is homed (and active) here.
    pub(crate) async fn local_tenant(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Arc<Tenant>>, ServiceError> {
        if let Some(hit) = self.inner.tenants.get(tenant).await {
            return Ok(hit);
        }
        let id = *tenant;
        let row = self
            .read_primary_first(tenant, move |client| {
                Box::pin(async move { store::tenants::get(client, &id).await })
            })
            .await?;
        let tenant_value = match row {
            Some(row) if row.status == "active" => Some(Arc::new(tenant_from_row(row)?)),
            _ => None,
        };
        self.inner
            .tenants
            .insert(*tenant, tenant_value.clone())
            .await;
        Ok(tenant_value)
    }

    /// Reads `key` from the database (it was in no cache) and caches what it found: the
    /// row, or that there is none (briefly).
    pub(crate) async fn load_api_key(
        &self,
        key: &KeyRef,
    ) -> Result<Option<Arc<store::api_keys::ApiKeyRow>>, ServiceError> {
        let (tenant, key_id) = key.clone();
        self.inner.audit.metrics().record_api_key_lookup();
        let row = self
            .read_primary_first(&tenant, move |client| {
                let key_id = key_id.clone();
                Box::pin(async move { store::api_keys::get(client, &tenant, &key_id).await })
            })
            .await?
            // Row-level security scopes the lookup to the tenant; this says it again.
            .filter(|row| row.tenant == key.0)
            .map(Arc::new);
        match &row {
            Some(row) => self.inner.keys.insert(key.clone(), row.clone()).await,
            None => self.inner.unknown_keys.insert(key.clone(), ()),
        }
        Ok(row)
    }

    /// A key issued on this node: no longer unknown here, and known to verify.
    pub(crate) fn key_issued(&self, tenant: &TenantId, key_id: &str) {
        let key = (*tenant, key_id.to_owned());
        self.inner.unknown_keys.invalidate(&key);
        self.inner.verified_keys.insert(key, ());
    }

    /// API keys read from the database by this node (the key cache missed).
    pub fn api_key_lookups(&self) -> u64 {
        self.inner.audit.metrics().api_key_lookups()
    }
}
