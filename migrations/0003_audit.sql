-- The tamper-evident audit log: one hash chain per tenant, appended inside the same
-- transaction as the change it records. Events carry ids, never field values.

-- The head of each tenant's chain. Writers of one tenant serialize on this row
-- (SELECT … FOR UPDATE); different tenants never wait for each other. seq 0 / NULL hash
-- means the chain is empty and the next event links to the tenant's genesis value.
create table audit_heads (
    tenant_id text primary key,
    seq bigint not null check (seq >= 0),
    hash bytea check (hash is null or length(hash) = 32),
    check ((seq = 0) = (hash is null))
);

create table audit_events (
    tenant_id text not null,
    seq bigint not null check (seq > 0),
    time timestamptz not null,
    region text not null,
    actor_kind text not null,
    actor_id text not null,
    action text not null,
    resource text not null,
    outcome text not null,
    request_id text not null,
    via_region text not null,
    prev_hash bytea not null check (length(prev_hash) = 32),
    hash bytea not null check (length(hash) = 32),
    primary key (tenant_id, seq)
);
create index audit_events_by_time on audit_events (tenant_id, time, seq);

-- Signed checkpoints of chain heads (Ed25519 over the tenant, region, seq and hash).
create table audit_checkpoints (
    tenant_id text not null,
    seq bigint not null check (seq > 0),
    hash bytea not null check (length(hash) = 32),
    signed_at timestamptz not null,
    key_id text not null,
    signature bytea not null,
    primary key (tenant_id, seq)
);
