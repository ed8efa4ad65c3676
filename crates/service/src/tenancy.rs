//! The regional tenant service: `RegionService`, tenants, and the checks every
//! tenant-scoped call goes through (who is calling, may they, is the tenant homed here),
//! with denied attempts recorded in the audit log (`authentication.rs`). API keys
//! (`api_keys.rs`), collections
//! (`collections.rs`), records and files (`records.rs`, `files.rs`) build on it.
//!
//! Every write runs through the audited unit of work (`unit_of_work.rs`): a tenant-scoped
//! transaction on the primary that appends its audit event in that same transaction.
//! Reads pick a server by consistency and record their event through the audit queue; a
//! full queue fails the read rather than leave it unaudited.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use audit::{Action, Actor, ActorKind, Outcome};
use envelope::objects::ObjectStore;
use model::{
    Access, ClientKey, CollectionName, CollectionSchema, Lsn, NewTenant, RegionId, ResidencyPolicy,
    Role, SignedToken, TenantId, TokenError, Transit,
};
use store::{ReadConsistency, RegionDatabase, StoreError, TokenRefused};

use crate::access::{self, IssuedKey, OperatorToken};
use crate::denials::{DENIAL_WINDOW, DenialWindows, MAX_OPEN_WINDOWS};
use crate::idempotency::{self, KeyedCreate};
use crate::rate_limit::{RateLimit, RateLimiter};
use crate::unit_of_work::EventTiming;
use crate::{AuditLog, Keyring, ServiceError};

/// Limits and knobs of the tenant service.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Largest file accepted, in bytes.
    pub max_file_size: u64,
    /// Page size when a listing names none, and the most a page may hold.
    pub default_page: u32,
    pub max_page: u32,
    /// When tenants' data keys rotate on their own.
    pub key_policy: crate::key_policy::KeyPolicy,
    /// How many write transactions of one tenant run at once on this node (each holds a
    /// pooled primary connection: keep it well under the pool's size), and how long a
    /// write waits for one of them before it answers 503.
    pub tenant_write_slots: usize,
    pub write_slot_wait: std::time::Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            max_file_size: 100 * 1024 * 1024,
            default_page: 50,
            max_page: 500,
            key_policy: crate::key_policy::KeyPolicy::default(),
            // Half of the default pool of 16.
            tenant_write_slots: 8,
            write_slot_wait: std::time::Duration::from_secs(2),
        }
    }
}

/// Where the deployment records which region each tenant lives in (the tenant
/// directory). The home region writes an entry before it creates the tenant, so that every
/// other region can route to it once it exists.
#[async_trait::async_trait]
pub trait TenantRegistry: Send + Sync + std::fmt::Debug {
    /// Records `tenant` as living in `policy.home()`; version 1 at creation.
    async fn register(&self, tenant: &TenantId, policy: &ResidencyPolicy) -> Result<(), String>;

    /// Removes `tenant`'s entry (the end of an offboarding's purge): every region then
    /// answers 404 for it without asking its home. Removing an absent entry succeeds.
    async fn unregister(&self, tenant: &TenantId) -> Result<(), String>;
}

/// What the tenant service is built from: all of one region.
#[derive(Debug)]
pub struct ServiceParts {
    pub database: RegionDatabase,
    pub keyring: Keyring,
    pub objects: Arc<dyn ObjectStore>,
    /// The region's audit bucket: the erasure ledger's entries (write-once in AWS).
    pub audit_objects: Arc<dyn ObjectStore>,
    pub audit: AuditLog,
    /// Every region of the catalogue (tenants may name them as home or allowed).
    pub regions: Vec<RegionId>,
    pub operator: OperatorToken,
    pub settings: ServiceSettings,
    /// The tenant directory, when the deployment has one (every multi-region one does).
    pub registry: Option<Arc<dyn TenantRegistry>>,
    /// Each verified caller's bucket, and the one bucket that every token that does not
    /// verify shares.
    pub rate_limit: RateLimit,
}

/// Per-request facts that go into audit events.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    /// The region whose endpoint received the request.
    pub via_region: RegionId,
    /// Who sent it, as the region router keys clients (`None` when no router stood in
    /// front): what the budget for tokens that do not verify is shared out by.
    pub client: Option<ClientKey>,
}

/// An authenticated, authorized caller acting on one tenant homed here.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantId,
    pub actor: Actor,
    pub role: Option<Role>,
    pub context: RequestContext,
}

/// The tenant as this region keeps it.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub policy: ResidencyPolicy,
    pub analytics_export: bool,
    pub created_at: SystemTime,
}

/// Proof that the caller presented the operator token: what tenant management takes, so
/// that a request is authorized before anything of its body is looked at.
#[derive(Debug)]
pub struct OperatorGrant(pub(crate) ());

/// One page of the operator's tenant listing.
#[derive(Debug)]
pub struct TenantPage {
    pub tenants: Vec<Tenant>,
    /// The last tenant's id when another page follows.
    pub next_cursor: Option<String>,
}

/// A created tenant and its first admin key (shown once).
#[derive(Debug)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub admin_key: IssuedKey,
}

/// A created API key (shown once).
#[derive(Debug)]
pub struct CreatedKey {
    pub name: String,
    pub role: Role,
    pub key: IssuedKey,
}

/// A stored collection schema.
#[derive(Debug, Clone)]
pub struct Collection {
    pub name: CollectionName,
    pub schema: Arc<CollectionSchema>,
    pub version: i32,
}

/// The result of a write: what the client needs to read its own write.
#[derive(Debug, Clone)]
pub struct Written {
    pub token: SignedToken,
}

/// The tenant service of one region. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegionService {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) region: RegionId,
    pub(crate) database: RegionDatabase,
    pub(crate) keyring: Keyring,
    pub(crate) objects: Arc<dyn ObjectStore>,
    pub(crate) audit_objects: Arc<dyn ObjectStore>,
    pub(crate) audit: AuditLog,
    pub(crate) regions: Vec<RegionId>,
    pub(crate) operator: OperatorToken,
    pub(crate) settings: ServiceSettings,
    pub(crate) registry: Option<Arc<dyn TenantRegistry>>,
    pub(crate) tenants: moka::future::Cache<TenantId, Option<Arc<Tenant>>>,
    /// Keys read from the database, by (tenant, key id): a token with a wrong secret
    /// never changes an entry, so it cannot lock the key out.
    pub(crate) keys: moka::future::Cache<KeyRef, Arc<store::api_keys::ApiKeyRow>>,
    /// Key ids the database does not have, briefly, so that repeating one costs no query.
    pub(crate) unknown_keys: moka::sync::Cache<KeyRef, ()>,
    /// Keys that verified on this node lately: looking one up again when its entry in
    /// `keys` expired does not draw from the bucket of unverified tokens, so a flood of
    /// junk cannot keep a real key from being read again.
    pub(crate) verified_keys: moka::sync::Cache<KeyRef, ()>,
    pub(crate) rate_limiter: RateLimiter,
    pub(crate) denials: DenialWindows,
    /// Starts the task that records due windows of denials, with the first denial.
    pub(crate) denial_recorder: std::sync::Once,
    pub(crate) collections: moka::future::Cache<(TenantId, String), Option<Collection>>,
    /// Values this node sealed per data key version since the key policy last counted.
    pub(crate) seal_counts: crate::key_policy::SealCounts,
    pub(crate) write_slots: crate::write_slots::TenantWriteSlots,
}

/// How long a node trusts its copy of a tenant or a collection schema. Changes made on
/// this node are seen at once (the entry is invalidated); other nodes see them within this.
pub(crate) const METADATA_TTL: Duration = Duration::from_secs(5);

/// An API key as a token names it: its tenant and its id.
pub(crate) type KeyRef = (TenantId, String);

/// How long a key id the database does not have is remembered as unknown. Short: a key
/// created on another node of the region is found within it.
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(2);

/// Key ids remembered as unknown at most.
const UNKNOWN_KEY_CAPACITY: u64 = 10_000;

/// How long a key that verified is exempt from the unverified bucket on a cache miss.
const VERIFIED_KEY_MEMORY: Duration = Duration::from_secs(600);

/// Tenants the recorder of denials looks up at most per pass (one pass every 5 s).
pub(crate) const TENANT_LOOKUPS_PER_PASS: usize = 64;

/// The `request_id` of an event that stands for many requests.
pub const AGGREGATE_REQUEST_ID: &str = "aggregated";

impl RegionService {
    /// # Panics
    /// When a part belongs to another region.
    pub fn new(parts: ServiceParts) -> Self {
        let region = parts.database.region().clone();
        assert_eq!(parts.keyring.region(), &region, "keyring of another region");
        assert_eq!(parts.audit.region(), &region, "audit log of another region");
        let write_slots = crate::write_slots::TenantWriteSlots::new(
            parts.settings.tenant_write_slots,
            parts.settings.write_slot_wait,
        );
        Self {
            inner: Arc::new(Inner {
                region,
                database: parts.database,
                keyring: parts.keyring,
                objects: parts.objects,
                audit_objects: parts.audit_objects,
                audit: parts.audit,
                regions: parts.regions,
                operator: parts.operator,
                settings: parts.settings,
                registry: parts.registry,
                tenants: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(METADATA_TTL)
                    .build(),
                keys: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(access::KEY_CACHE_TTL)
                    .build(),
                unknown_keys: moka::sync::Cache::builder()
                    .max_capacity(UNKNOWN_KEY_CAPACITY)
                    .time_to_live(UNKNOWN_KEY_TTL)
                    .build(),
                verified_keys: moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(VERIFIED_KEY_MEMORY)
                    .build(),
                rate_limiter: RateLimiter::new(parts.rate_limit),
                denials: DenialWindows::new(DENIAL_WINDOW, MAX_OPEN_WINDOWS),
                denial_recorder: std::sync::Once::new(),
                collections: moka::future::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(METADATA_TTL)
                    .build(),
                seal_counts: crate::key_policy::SealCounts::default(),
                write_slots,
            }),
        }
    }

    pub fn region(&self) -> &RegionId {
        &self.inner.region
    }

    pub fn settings(&self) -> &ServiceSettings {
        &self.inner.settings
    }

    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }

    /// Runs a tenant-scoped read on the primary, or on a replica when the primary is down
    /// (metadata reads must see the latest writes, but reads go on without a primary).
    pub(crate) async fn read_primary_first<T, F>(
        &self,
        tenant: &TenantId,
        read: F,
    ) -> Result<T, ServiceError>
    where
        F: for<'c> Fn(
            &'c tokio_postgres::Transaction<'c>,
        ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>,
    {
        let read = &read;
        let (value, _) = self
            .inner
            .database
            .read(ReadConsistency::PrimaryFirst, |mut reader| async move {
                let value = async {
                    let tx = reader.begin_tenant(tenant).await?;
                    let value = read(tx.client()).await?;
                    tx.finish().await?;
                    Ok(value)
                }
                .await;
                (reader, value)
            })
            .await?;
        Ok(value)
    }

    // ---- tenants -----------------------------------------------------------------

    /// Creates a tenant homed in this region with its keys and first admin key, all in
    /// one transaction with its `tenant.create` event.
    pub async fn create_tenant(
        &self,
        operator: &OperatorGrant,
        new: NewTenant,
        context: &RequestContext,
    ) -> Result<CreatedTenant, ServiceError> {
        self.create_tenant_keyed(operator, new, context, None).await
    }

    /// [`RegionService::create_tenant`]; with `keyed`, the creation's answer (its admin
    /// key sealed under the new tenant's first data key) is recorded in the same
    /// transaction (`idempotency.rs`).
    pub(crate) async fn create_tenant_keyed(
        &self,
        _operator: &OperatorGrant,
        new: NewTenant,
        context: &RequestContext,
        keyed: Option<&KeyedCreate<'_>>,
    ) -> Result<CreatedTenant, ServiceError> {
        let NewTenant {
            name,
            policy,
            analytics_export,
        } = new;
        if *policy.home() != self.inner.region {
            return Err(ServiceError::Misdirected {
                home: policy.home().clone(),
            });
        }
        let id = TenantId::from_random_bytes(random_bytes());
        let tenant = Tenant {
            id,
            name,
            policy,
            analytics_export,
            created_at: SystemTime::now(),
        };
        let admin_key = access::issue_key(&id);
        if let Some(registry) = &self.inner.registry {
            // Before the tenant exists: an entry without a tenant answers 404 at home,
            // a tenant without an entry could not be reached from other regions.
            registry
                .register(&id, &tenant.policy)
                .await
                .map_err(|err| {
                    tracing::error!(tenant = %id, "failed to register the tenant in the directory: {err}");
                    ServiceError::unavailable("tenant directory")
                })?;
        }
        let operator = Actor {
            kind: ActorKind::Operator,
            id: "operator".to_owned(),
        };

        let events = [
            self.event(
                &id,
                operator.clone(),
                Action::TenantCreate,
                &format!("tenants/{id}"),
                Outcome::Success,
                context,
            ),
            self.event(
                &id,
                operator,
                Action::ApiKeyCreate,
                &format!("apikeys/{}", admin_key.key_id),
                Outcome::Success,
                context,
            ),
        ];
        let row = store::tenants::TenantRow {
            id,
            name: tenant.name.clone(),
            home_region: tenant.policy.home().to_string(),
            allowed_regions: region_names(tenant.policy.allowed()),
            transit: tenant.policy.transit().as_str().to_owned(),
            analytics_export: tenant.analytics_export,
            status: "active".to_owned(),
            created_at: tenant.created_at,
        };
        self.write(&id, EventTiming::AfterChange, events, async |tx| {
            store::tenants::insert(tx, &row).await?;
            let data_key = match keyed {
                None => {
                    self.inner.keyring.provision(tx, &id).await?;
                    None
                }
                Some(_) => Some(self.inner.keyring.provision_with_data_key(tx, &id).await?),
            };
            store::api_keys::insert(
                tx,
                &crate::api_keys::key_row(&id, &admin_key, "admin", Role::Admin),
            )
            .await?;
            if let (Some(keyed), Some(data_key)) = (keyed, data_key) {
                let answer = idempotency::tenant_answer(keyed, &data_key, &admin_key, &tenant);
                keyed.record(tx, &id, 201, &answer).await?;
            }
            Ok(())
        })
        .await?;
        self.inner.tenants.invalidate(&id).await;
        self.key_issued(&id, &admin_key.key_id);
        Ok(CreatedTenant { tenant, admin_key })
    }

    /// The tenant, for the operator.
    pub async fn get_tenant(
        &self,
        _operator: &OperatorGrant,
        tenant: &TenantId,
    ) -> Result<Arc<Tenant>, ServiceError> {
        self.local_tenant(tenant)
            .await?
            .ok_or(ServiceError::NotFound { what: "tenant" })
    }

    /// The active tenants homed in this region, by id, a page at a time (the operator's
    /// listing). A region lists only what its own database holds: another region's
    /// tenants are listed by that region (the router forwards `?home_region=`).
    pub async fn list_tenants(
        &self,
        _operator: &OperatorGrant,
        paging: crate::records::Paging,
    ) -> Result<TenantPage, ServiceError> {
        let limit = self.page_limit(paging.limit)?;
        let after = paging
            .cursor
            .as_deref()
            .map(|cursor| {
                TenantId::parse(cursor)
                    .map_err(|_| ServiceError::BadRequest("malformed cursor".to_owned()))
            })
            .transpose()?;
        // One row more than the page tells whether another page follows.
        let fetch = i64::from(limit) + 1;
        let after = after.as_ref();
        let (rows, _) = self
            .inner
            .database
            .read(ReadConsistency::PrimaryFirst, |reader| async move {
                let rows = store::tenants::list_active(reader.client(), after, fetch).await;
                (reader, rows)
            })
            .await?;
        let more = rows.len() > limit as usize;
        let tenants = rows
            .into_iter()
            .take(limit as usize)
            .map(tenant_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = more
            .then(|| tenants.last().map(|tenant| tenant.id.to_string()))
            .flatten();
        Ok(TenantPage {
            tenants,
            next_cursor,
        })
    }

    /// Whether `region` is in the catalogue this node was started with: a tenant may be
    /// homed in, or allowed, only such a region.
    pub fn knows_region(&self, region: &RegionId) -> bool {
        self.inner.regions.contains(region)
    }

    pub(crate) fn token(&self, lsn: Lsn) -> Written {
        Written {
            token: self.inner.database.consistency_token(lsn),
        }
    }

    /// The read consistency a client's token asks for (see
    /// `RegionDatabase::read_consistency`: a token that no node of this deployment issued
    /// is refused before anything waits on it; an old unsigned one reads the primary).
    pub fn consistency(&self, token: Option<&str>) -> Result<ReadConsistency, ServiceError> {
        self.inner
            .database
            .read_consistency(token)
            .map_err(|refused| {
                ServiceError::BadRequest(match refused {
                    TokenRefused::Unreadable(TokenError::UnsupportedVersion) => {
                        "X-Consistency-Token: unsupported token version".to_owned()
                    }
                    TokenRefused::Unreadable(TokenError::Malformed) => {
                        "X-Consistency-Token: malformed consistency token".to_owned()
                    }
                    TokenRefused::NotIssued => {
                        "X-Consistency-Token: not a token this deployment issued".to_owned()
                    }
                })
            })
    }
}

/// What a caller tried, for the audit event of a denial.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    pub action: Action,
    pub resource: &'a str,
}

pub(crate) fn access_name(access: Access) -> &'static str {
    match access {
        Access::ReadData => "read data",
        Access::WriteData => "write data",
        Access::Administer => "administer the tenant",
        Access::Audit => "read the audit log",
    }
}

pub(crate) fn tenant_from_row(row: store::tenants::TenantRow) -> Result<Tenant, ServiceError> {
    let corrupt = |what: &str| ServiceError::internal(format!("tenant {}: bad {what}", row.id));
    let home = RegionId::parse(&row.home_region).map_err(|_| corrupt("home region"))?;
    let allowed = row
        .allowed_regions
        .iter()
        .map(|raw| RegionId::parse(raw))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| corrupt("allowed regions"))?;
    let transit = Transit::parse(&row.transit).map_err(|_| corrupt("transit"))?;
    let policy = ResidencyPolicy::new(home, allowed, transit).map_err(|_| corrupt("policy"))?;
    Ok(Tenant {
        id: row.id,
        name: row.name,
        policy,
        analytics_export: row.analytics_export,
        created_at: row.created_at,
    })
}

/// Region ids as the database and the API write them.
pub(crate) fn region_names(regions: &[RegionId]) -> Vec<String> {
    regions.iter().map(ToString::to_string).collect()
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system CSPRNG does not fail");
    bytes
}
