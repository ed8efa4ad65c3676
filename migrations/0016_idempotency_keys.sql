-- Idempotent creates (issue 30): a create sent with an `Idempotency-Key` header records
-- the key and what is needed to answer it again, in the create's own transaction, so a
-- retry whose first answer was lost gets that answer instead of a second row
-- (docs/operations.md, "Idempotent creates").
--
-- Nothing here is text a caller chose: `key_hash` is a SHA-256 of the key, `request_hash`
-- a SHA-256 of the operation, its target and its body (the body itself is never kept),
-- and `response` holds only ids, versions, sizes, digests and times (never field values
-- or file names: a replay rebuilds those from the retried request, whose hash proves it
-- is the same), and for a tenant's creation its admin key sealed under the new tenant's
-- data key (shredded with it). Rows older than 24 hours are ignored and deleted in
-- bounded batches by the creates that follow; a tenant holds a bounded number of live keys.
--
-- A tenant's creation (`tenant.create`) is the operator's: its row belongs to the tenant
-- it created, and its key hash (scoped to the operator) is unique across tenants, so two
-- creations with one key cannot both commit.
create table idempotency_keys (
    tenant_id text not null references tenants (tenant_id) on delete cascade,
    key_hash bytea not null check (length(key_hash) = 32),
    operation text not null check (operation in ('record.create', 'file.put', 'tenant.create')),
    request_hash bytea not null check (length(request_hash) = 32),
    status smallint not null check (status between 200 and 299),
    response jsonb not null,
    created_at timestamptz not null default now(),
    primary key (tenant_id, key_hash)
);
create index idempotency_keys_by_time on idempotency_keys (tenant_id, created_at);
create unique index idempotency_keys_tenant_creations on idempotency_keys (key_hash)
    where operation = 'tenant.create';

-- Row-level security as every tenant table has it (the pattern of 0015).
grant select, insert, update, delete on idempotency_keys to residency_app;
alter table idempotency_keys enable row level security;
alter table idempotency_keys force row level security;
create policy tenant_scope on idempotency_keys to residency_app
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
-- A tenant's creation is looked up and its expired row forgotten before the tenant
-- exists to be scoped to (`store::idempotency::find_tenant_creation`,
-- `forget_expired_tenant_creation`): the node's own role, tenant creations only.
grant select, delete on idempotency_keys to residency_node;
create policy node_tenant_creations on idempotency_keys for select to residency_node
    using (operation = 'tenant.create');
create policy node_forgets_tenant_creations on idempotency_keys for delete to residency_node
    using (operation = 'tenant.create');
