-- The outbox of object deletions (issue 30, item 5): a row per object (every version of
-- it, on a versioned bucket) that no row references any more and that must go. The row is
-- written in the same transaction as the change that stopped referencing the object (a
-- file deleted or replaced, a record deleted, a subject erased), so a node that dies
-- between the commit and the object store's answer leaves the row, and a sweeper (every
-- node runs one, `crates/service/src/object_deletions.rs`) deletes the object later. A row
-- is removed only once every version of its object is gone (a missing object counts).
--
-- A row holds the object's key (a random id under `tenants/{tenant}/`), never a name or a
-- value; `reason` and `last_error` are fixed texts chosen by the code, never an object
-- store's message (which may echo what a caller sent).
--
-- `tenant_id` references the tenant without a cascade: an offboarding purge deletes the
-- tenant's objects and these rows before it deletes the tenant row, and the database
-- refuses to delete a tenant while a deletion of its objects is still pending.
create table object_deletions (
    deletion_id bigint generated always as identity primary key,
    tenant_id text not null references tenants (tenant_id),
    object_key text not null check (length(object_key) between 1 and 1024),
    -- Every version and delete marker of the object; the only scope so far.
    scope text not null default 'all_versions' check (scope in ('all_versions')),
    reason text not null check (reason in (
        'file_deleted', 'file_replaced', 'record_deleted', 'subject_erased',
        'upload_abandoned', 'reencryption_orphan')),
    created_at timestamptz not null default now(),
    -- Times a sweeper took the row (the fast path right after the commit is not counted).
    attempts integer not null default 0 check (attempts >= 0),
    -- When a sweeper may take the row next: now for a new row, later while a sweeper holds
    -- it (a lease) or after a failure (exponential backoff with a cap).
    next_attempt_at timestamptz not null default now(),
    last_error text check (last_error in ('unavailable', 'store_error', 'malformed_key'))
);

-- Sweepers take due rows, soonest first.
create index object_deletions_due on object_deletions (next_attempt_at);
-- The purge finds a tenant's rows; the tenant-row foreign key checks them.
create index object_deletions_by_tenant on object_deletions (tenant_id);

-- Row-level security as every tenant table has it (the pattern of 0015).
grant select, insert, delete on object_deletions to residency_app;
alter table object_deletions enable row level security;
alter table object_deletions force row level security;
create policy tenant_scope on object_deletions to residency_app
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
-- Every node's sweeper claims, retries and removes due rows of any tenant, and counts
-- them for its metrics; offboarding's purge reads and removes a tenant's rows (the
-- node's own role, outside any tenant scope). It never adds one: rows are added only in
-- the tenant-scoped transaction of the change.
grant select, update (attempts, next_attempt_at, last_error), delete on object_deletions
    to residency_node;
create policy node_sweeps on object_deletions for select to residency_node using (true);
create policy node_sweeps_update on object_deletions for update to residency_node
    using (true) with check (true);
create policy node_sweeps_delete on object_deletions for delete to residency_node
    using (true);
