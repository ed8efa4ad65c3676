-- Tenant data: tenants, their API keys, collection schemas, records (public fields as
-- jsonb, everything else sealed), blind-index tokens and file metadata. Every table
-- leads its key with tenant_id; values arrive sealed, so this schema never sees tenant
-- plaintext outside `records.public`.
--
-- Row-level security is defense in depth: every query also filters by tenant_id. The
-- application switches to the NOLOGIN role `residency_app` for each tenant-scoped
-- transaction (`set local role`) and names its tenant in `residency.tenant`; table owners
-- and superusers bypass RLS, so unscoped system work (migrations, checkpoints, KMS
-- rewrapping) still sees every tenant. A later migration that adds a tenant table must
-- grant it to residency_app and give it the same policy.

create table tenants (
    tenant_id text primary key,
    name text not null,
    home_region text not null,
    allowed_regions text[] not null,
    transit text not null check (transit in ('proxy', 'redirect')),
    analytics_export boolean not null default false,
    status text not null default 'active' check (status in ('active', 'offboarded')),
    created_at timestamptz not null default now()
);

-- key_id is the public lookup prefix of a key: unique across tenants, so a presented key
-- names one tenant at most. Only a hash of the secret is stored.
create table api_keys (
    tenant_id text not null references tenants (tenant_id) on delete cascade,
    key_id text not null unique,
    name text not null,
    role text not null check (role in ('admin', 'writer', 'reader', 'auditor')),
    secret_hash bytea not null check (length(secret_hash) = 32),
    created_at timestamptz not null default now(),
    revoked_at timestamptz,
    primary key (tenant_id, key_id)
);

create table collections (
    tenant_id text not null references tenants (tenant_id) on delete cascade,
    name text not null,
    schema jsonb not null,
    version integer not null default 1 check (version > 0),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, name)
);

create table records (
    tenant_id text not null,
    collection text not null,
    record_id text not null,
    version bigint not null default 1 check (version >= 1),
    public jsonb not null,
    sealed bytea not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    primary key (tenant_id, collection, record_id),
    foreign key (tenant_id, collection) references collections (tenant_id, name) on delete cascade,
    check (jsonb_typeof(public) = 'object')
);

-- Exact-match search tokens of a record: the blind-index (HMAC) tokens of its searchable
-- sealed fields, sent by the service, and the SHA-256 of each public field's canonical
-- JSON text under the field `public:<name>`, derived from `records.public` by the same
-- statement that writes the record (field names match ^[a-z][a-z0-9_]*$, so the two never
-- collide). Replaced with their record on update, deleted with it.
--
-- Why not a GIN index on `public`: under row-level security PostgreSQL only uses
-- leakproof operators as index conditions, and no jsonb operator is leakproof, so such an
-- index would never serve the application role. text and bytea equality are leakproof.
create table record_index (
    tenant_id text not null,
    collection text not null,
    field text not null,
    token bytea not null check (length(token) = 32),
    record_id text not null,
    primary key (tenant_id, collection, field, token, record_id),
    foreign key (tenant_id, collection, record_id)
        references records (tenant_id, collection, record_id) on delete cascade
);
-- The cascade and the replacement on update find a record's tokens through this.
create index record_index_by_record on record_index (tenant_id, collection, record_id);

-- Metadata of a record's files; the bytes live sealed in the region's object store under
-- object_key. The row goes with its record.
create table files (
    tenant_id text not null,
    collection text not null,
    record_id text not null,
    name text not null,
    object_key text not null,
    size bigint not null check (size >= 0),
    sha256 bytea not null check (length(sha256) = 32),
    content_type text not null,
    key_version integer not null check (key_version > 0),
    created_at timestamptz not null default now(),
    primary key (tenant_id, collection, record_id, name),
    foreign key (tenant_id, collection, record_id)
        references records (tenant_id, collection, record_id) on delete cascade
);

-- The application role. Roles are cluster-wide and several databases of one cluster may
-- migrate at once (tests, several regions on one dev cluster): create it only if missing,
-- and take a concurrent creator's success as ours.
do $$
begin
    if not exists (select from pg_roles where rolname = 'residency_app') then
        create role residency_app nologin;
    end if;
exception
    when duplicate_object or unique_violation then null;
end
$$;

do $$
begin
    execute format('grant residency_app to %I', current_user);
exception
    when duplicate_object or unique_violation then null;
end
$$;

do $$
begin
    execute format('grant usage on schema %I to residency_app', current_schema());
end
$$;

grant select, insert, update, delete
    on tenants, api_keys, collections, records, record_index, files
    to residency_app;
grant select, insert, update, delete on audit_heads to residency_app;
-- Events are appended, and purged with their tenant; never rewritten.
grant select, insert, delete on audit_events to residency_app;
grant select, insert, update on tenant_keys to residency_app;
grant select on audit_checkpoints to residency_app;

alter table tenants enable row level security;
alter table api_keys enable row level security;
alter table collections enable row level security;
alter table records enable row level security;
alter table record_index enable row level security;
alter table files enable row level security;
alter table audit_heads enable row level security;
alter table audit_events enable row level security;
alter table audit_checkpoints enable row level security;
alter table tenant_keys enable row level security;

create policy tenant_scope on tenants
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on api_keys
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on collections
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on records
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on record_index
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on files
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on audit_heads
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on audit_events
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on audit_checkpoints
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy tenant_scope on tenant_keys
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
