-- Row-level security that holds for every role (issue 30).
--
-- THE PATTERN EVERY TENANT TABLE FOLLOWS (a new table with a `tenant_id` column copies it,
-- and is listed in `store::TENANT_TABLES`):
--
--     alter table t enable row level security;
--     alter table t force row level security;
--     create policy tenant_scope on t to residency_app
--         using (tenant_id = current_setting('residency.tenant', true))
--         with check (tenant_id = current_setting('residency.tenant', true));
--     grant select, insert, ... on t to residency_app;   -- only the commands it needs
--
-- and, only if system work (not tenant-scoped) must reach the table, a policy and grant
-- `to residency_node` naming the command and saying why, as below. No policy without a
-- `to` clause (that would be PUBLIC: every role, the export's included); no grant of
-- UPDATE or DELETE on audit tables.
--
-- The roles:
-- - the owner: the role that runs these migrations (`current_user` here) owns every table
--   and function. In AWS a dedicated `residency_owner`; locally the cluster's superuser.
--   Only `residency migrate` / a node's prepare step log in as it.
-- - `residency_node` (LOGIN, NOINHERIT): what a node's pools log in as. It owns nothing,
--   is no superuser, has no BYPASSRLS and is not a member of the owner. As itself it
--   reaches only the system rows granted below; for tenant data it switches to
--   `residency_app` (`set local role`), of which it is a member.
-- - `residency_app` (NOLOGIN): tenant-scoped transactions, one tenant at a time
--   (`residency.tenant`).
-- - `residency_export` (LOGIN): the analytics export, replicas only, read only, the
--   tenants with `analytics_export` on and nothing else.

do $$
begin
    if not exists (select from pg_roles where rolname = 'residency_node') then
        create role residency_node login noinherit;
    end if;
exception
    when duplicate_object or unique_violation then null;
end
$$;

do $$
begin
    execute format('grant usage on schema %I to residency_node', current_schema());
    -- Membership lets the node `set local role residency_app`; NOINHERIT keeps the app
    -- role's grants away from the node's own, unscoped, statements.
    execute 'grant residency_app to residency_node';
exception
    when duplicate_object or unique_violation then null;
end
$$;

-- Every tenant table: forced (the owner too is subject to it) and policies naming roles.
alter table tenants force row level security;
alter table api_keys force row level security;
alter table collections force row level security;
alter table records force row level security;
alter table record_index force row level security;
alter table files force row level security;
alter table audit_heads force row level security;
alter table audit_events force row level security;
alter table audit_checkpoints force row level security;
alter table tenant_keys force row level security;
alter table jobs force row level security;
alter table subject_erasures force row level security;

-- The application's scope, now for residency_app alone (0004, 0008 and 0013 created it
-- for PUBLIC, which let the export role widen its reach by setting the tenant). The owner
-- reads every tenant row (forced RLS applies to it too) and deletes only rows of
-- offboarded tenants: what the purge function, which runs as the owner, may do.
do $$
declare
    t text;
begin
    foreach t in array array['tenants', 'api_keys', 'collections', 'records', 'record_index',
                             'files', 'audit_heads', 'audit_events', 'audit_checkpoints',
                             'tenant_keys', 'jobs', 'subject_erasures'] loop
        execute format('drop policy tenant_scope on %I', t);
        execute format(
            'create policy tenant_scope on %I to residency_app
                 using (tenant_id = current_setting(''residency.tenant'', true))
                 with check (tenant_id = current_setting(''residency.tenant'', true))', t);
        execute format('create policy owner_reads on %I for select to current_user using (true)', t);
    end loop;
    foreach t in array array['api_keys', 'collections', 'records', 'record_index', 'files'] loop
        execute format(
            'create policy owner_purges on %I for delete to current_user
                 using (tenant_id in (select o.tenant_id from tenants o where o.status = ''offboarded''))', t);
    end loop;
end
$$;

-- Audit events are append-only for the application, and a tenant is deleted only by the
-- purge function below.
revoke delete on audit_events from residency_app;
revoke delete on audit_heads from residency_app;
revoke delete on tenants from residency_app;

create policy owner_purges on tenant_keys for delete to current_user
    using (state = 'destroyed'
           and tenant_id in (select o.tenant_id from tenants o where o.status = 'offboarded'));
create policy owner_purges on tenants for delete to current_user
    using (status = 'offboarded');

-- The analytics export: exactly the tenants with export on, whatever it sets. The tenant
-- setting only narrows (the export reads one tenant at a time); the bound is
-- `analytics_export`, which this role cannot change (it has no UPDATE anywhere), read
-- through its own policy on tenants (`export_listing`, 0006: only exported tenants).
create policy export_reads on collections for select to residency_export
    using (tenant_id = current_setting('residency.tenant', true)
           and tenant_id in (select e.tenant_id from tenants e where e.analytics_export));
create policy export_reads on records for select to residency_export
    using (tenant_id = current_setting('residency.tenant', true)
           and tenant_id in (select e.tenant_id from tenants e where e.analytics_export));
create policy export_reads on subject_erasures for select to residency_export
    using (tenant_id = current_setting('residency.tenant', true)
           and tenant_id in (select e.tenant_id from tenants e where e.analytics_export));
-- It unwraps the data keys (opening records) and index keys (pseudonym keys) of exported
-- tenants; never a key of any other tenant.
create policy export_reads on tenant_keys for select to residency_export
    using (tenant_id = current_setting('residency.tenant', true)
           and state <> 'destroyed'
           and tenant_id in (select e.tenant_id from tenants e where e.analytics_export));

-- System work of the node's login role (`residency_node`, outside any tenant scope), each
-- grant with its reason. Tenant data (records, files, collections, api keys, erasures,
-- audit events as a tenant reads them) is reached only through `residency_app`.

-- Health probes compare the replica's region stamp (the stamp is written by the owner),
-- and a node checks that every migration it knows is applied (`residency migrate`, as the
-- owner, applies them).
grant select on residency_region to residency_node;
grant select on schema_migrations to residency_node;
-- The tenant directory adapter (no personal data, no RLS: ids and regions).
grant select, insert, update, delete on tenant_directory to residency_node;
-- The region's audit signing keys: load, rotate (insert, retire), KMS rewrap.
grant select, insert, update on audit_signing_keys to residency_node;
-- The job runner leases, heartbeats, checkpoints and finishes every tenant's jobs, and
-- the operator lists them (ids, counts and states only).
grant select, insert, update on jobs to residency_node;
create policy node_runs_jobs on jobs to residency_node using (true) with check (true);
-- Listing active tenants (operator listing, automatic key rotation, erasure ledger
-- re-application) and reading a purged tenant's status.
grant select on tenants to residency_node;
create policy node_lists_tenants on tenants for select to residency_node using (true);
-- The KMS rewrap of every tenant's keys (kms_key_id, wrapped_key), the seal counts of
-- automatic rotation (seals) and the scan for keys due for rotation.
grant select on tenant_keys to residency_node;
grant update (kms_key_id, wrapped_key, seals) on tenant_keys to residency_node;
create policy node_reads_keys on tenant_keys for select to residency_node using (true);
create policy node_rewraps_keys on tenant_keys for update to residency_node
    using (true) with check (true);
-- The batched audit writer appends events of several tenants in one transaction, and the
-- checkpointer signs every chain's head: append (insert; select for the append's
-- RETURNING) and heads (the append moves them, guarded by the triggers below), never an
-- update or delete of an event.
grant select, insert, update on audit_heads to residency_node;
create policy node_appends on audit_heads to residency_node using (true) with check (true);
grant select, insert on audit_events to residency_node;
create policy node_appends on audit_events for select to residency_node using (true);
create policy node_appends_insert on audit_events for insert to residency_node with check (true);
grant select, insert on audit_checkpoints to residency_node;
create policy node_checkpoints on audit_checkpoints for select to residency_node using (true);
create policy node_checkpoints_insert on audit_checkpoints for insert to residency_node
    with check (true);

-- The chain head moves only through an append, for the application's roles: a head is
-- created empty, then moves forward (by one, or by a batch) to an event that exists
-- (checked at commit, after the append's statement inserted it), or is closed once; it
-- never goes back, changes its hash in place, or reopens. Every event inserted lies
-- within its head and links to its predecessor, so the chain stays gapless. The owner (and a superuser) are not held:
-- the audit anchored outside the database catches what they could do.
create function audit_heads_refuse() returns trigger
language plpgsql as $$
begin
    raise exception 'the audit chain head of % moves only by an append', new.tenant_id
        using errcode = 'insufficient_privilege';
end
$$;

create trigger audit_heads_created_empty
    before insert on audit_heads
    for each row
    when (current_user::text in ('residency_app', 'residency_node')
          and (new.seq <> 0 or new.hash is not null or new.closed_at is not null))
    execute function audit_heads_refuse();

create trigger audit_heads_move_forward
    before update on audit_heads
    for each row
    when (current_user::text in ('residency_app', 'residency_node')
          and not (new.tenant_id = old.tenant_id
                   and (old.closed_at is null or new.closed_at is not distinct from old.closed_at)
                   and ((new.seq = old.seq and new.hash is not distinct from old.hash)
                        or (new.seq > old.seq and new.hash is not null
                            and old.closed_at is null and new.closed_at is null))))
    execute function audit_heads_refuse();

-- At commit: a moved head names an event of its chain, and no event lies beyond it.
create function audit_heads_name_an_event() returns trigger
language plpgsql as $$
begin
    if not exists (select 1 from audit_events
                   where tenant_id = new.tenant_id and seq = new.seq and hash = new.hash) then
        raise exception 'the audit chain head of % names no event', new.tenant_id
            using errcode = 'insufficient_privilege';
    end if;
    return null;
end
$$;

create constraint trigger audit_heads_name_an_event
    after update on audit_heads
    deferrable initially deferred
    for each row
    when (new.seq <> old.seq and current_user::text in ('residency_app', 'residency_node'))
    execute function audit_heads_name_an_event();

create function audit_events_within_head() returns trigger
language plpgsql as $$
begin
    if not exists (select 1 from audit_heads
                   where tenant_id = new.tenant_id and seq >= new.seq) then
        raise exception 'an audit event of % lies beyond its chain head', new.tenant_id
            using errcode = 'insufficient_privilege';
    end if;
    if new.seq > 1 and not exists (select 1 from audit_events
                                   where tenant_id = new.tenant_id and seq = new.seq - 1
                                     and hash = new.prev_hash) then
        raise exception 'an audit event of % does not link to its predecessor', new.tenant_id
            using errcode = 'insufficient_privilege';
    end if;
    return null;
end
$$;

create constraint trigger audit_events_within_head
    after insert on audit_events
    deferrable initially deferred
    for each row
    when (current_user::text in ('residency_app', 'residency_node'))
    execute function audit_events_within_head();

-- What an offboarding purge deleted, written only by `residency_purge` (evidence beside
-- the purge job's own row and certificate; ids and counts, like the jobs table).
create table tenant_purges (
    tenant_id text not null,
    step text not null,
    deleted bigint not null check (deleted >= 0),
    purged_at timestamptz not null default now(),
    -- The login role that asked (the function runs as the owner).
    purged_by text not null default session_user
);
create index tenant_purges_by_tenant on tenant_purges (tenant_id, purged_at);
alter table tenant_purges enable row level security;
alter table tenant_purges force row level security;
create policy tenant_scope on tenant_purges to residency_app
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
create policy owner_reads on tenant_purges for select to current_user using (true);
create policy owner_records on tenant_purges for insert to current_user with check (true);
-- The purge job reads what it did (its certificate's counts come from its own job row).
grant select on tenant_purges to residency_node;
create policy node_reads_purges on tenant_purges for select to residency_node using (true);

-- Offboarding's purge: the only way the application deletes a tenant's rows wholesale.
-- One step per call, bounded: `p_step` names a table (children before parents:
-- record_index, files, records, collections, api_keys) or `tenant` (its destroyed key rows
-- and its tenant row). Refuses a tenant that exists and is not offboarded; the owner's
-- delete policies above refuse the same again. Returns the rows deleted (for `tenant`:
-- 1 when the tenant row was there). Audit tables and jobs are never touched.
create function residency_purge(p_tenant text, p_step text, p_limit bigint) returns bigint
language plpgsql security definer as $$
declare
    deleted bigint := 0;
begin
    if exists (select 1 from tenants where tenant_id = p_tenant and status <> 'offboarded') then
        raise exception 'tenant % is not offboarded', p_tenant
            using errcode = 'check_violation',
                  constraint = 'residency_purge_refuses_a_live_tenant';
    end if;
    if p_limit is null or p_limit < 1 then
        raise exception 'purge batch size must be positive' using errcode = 'check_violation',
            constraint = 'residency_purge_batch_size';
    end if;
    case p_step
        when 'record_index', 'files', 'records', 'collections', 'api_keys' then
            execute format(
                'delete from %I where ctid = any(array(
                     select ctid from %I where tenant_id = $1 limit $2))', p_step, p_step)
                using p_tenant, p_limit;
            get diagnostics deleted = row_count;
        when 'tenant' then
            delete from tenant_keys where tenant_id = p_tenant and state = 'destroyed';
            delete from tenants where tenant_id = p_tenant;
            get diagnostics deleted = row_count;
        else
            raise exception 'no purge step %', p_step using errcode = 'check_violation',
                constraint = 'residency_purge_step';
    end case;
    if deleted > 0 then
        insert into tenant_purges (tenant_id, step, deleted) values (p_tenant, p_step, deleted);
    end if;
    return deleted;
end
$$;

do $$
begin
    -- A SECURITY DEFINER function resolves names only in pg_catalog and this schema.
    execute format('alter function residency_purge(text, text, bigint) set search_path = pg_catalog, %I',
                   current_schema());
end
$$;
revoke all on function residency_purge(text, text, bigint) from public;
grant execute on function residency_purge(text, text, bigint) to residency_node;
