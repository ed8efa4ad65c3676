-- Key rotation (issue 28): a rotation queues its tenant's re-encryption job in the same
-- tenant-scoped transaction that makes the new data key version active and appends the
-- `key.rotate` event, so the application role may insert its own tenant's jobs (the
-- `tenant_scope` policy of 0008 checks the tenant). The runner still leases and
-- checkpoints as the table owner.
grant insert on jobs to residency_app;

-- One re-encryption of a tenant at a time: a rotation locks the tenant's active data key
-- row, then refuses (409) while a re-encryption is queued or running; two rotations
-- racing serialize on that lock, and the second sees the first's job.

-- Automatic rotation (`service::key_policy`): seals counted per data key version (nodes
-- count in memory and add their counts here every few seconds: approximate, never
-- reset), and a tenant's own bounds, `null` for the region's defaults (`docs/envelope.md`
-- has the arithmetic). A rotation starts once the active version's age or seals reach
-- a bound.
alter table tenant_keys add column seals bigint not null default 0 check (seals >= 0);
alter table tenants
    add column key_max_age_seconds bigint check (key_max_age_seconds > 0),
    add column key_max_seals bigint check (key_max_seals > 0);
