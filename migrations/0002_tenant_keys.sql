-- Tenant data keys, stored only wrapped by the region's KMS. One row per tenant, purpose
-- ('data' seals values and objects, 'index' derives blind-index keys) and version.
-- Crypto-shredding erases the wrapped key and the KMS key id: the row stays as evidence
-- that the version existed, but nothing can ever unwrap it again.
create table tenant_keys (
    tenant_id text not null,
    purpose text not null check (purpose in ('data', 'index')),
    version integer not null check (version > 0),
    state text not null check (state in ('active', 'retired', 'destroyed')),
    kms_key_id text,
    wrapped_key bytea,
    kms_context jsonb not null,
    created_at timestamptz not null default now(),
    retired_at timestamptz,
    destroyed_at timestamptz,
    primary key (tenant_id, purpose, version),
    check ((state = 'destroyed') = (wrapped_key is null)),
    check ((state = 'destroyed') = (kms_key_id is null)),
    check ((state = 'destroyed') = (destroyed_at is not null))
);

-- At most one version per tenant and purpose takes new writes.
create unique index tenant_keys_one_active on tenant_keys (tenant_id, purpose) where state = 'active';
-- KMS key rotation looks for keys still wrapped under an older KMS key.
create index tenant_keys_by_kms_key on tenant_keys (kms_key_id) where state <> 'destroyed';
