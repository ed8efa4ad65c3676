-- Durable jobs: the region's long-running work (KMS rewrap; next: re-encryption, purge,
-- erasure, relocation), in the region's primary so that any node of the region can lease
-- a job, and another can resume it once the lease expires. A row holds ids, counts,
-- states and an opaque checkpoint of ids, never a value; `last_error` is a short fixed
-- text chosen by the code, never an error's message.
--
-- `tenant_id` is null for region-wide work (a KMS rewrap). The table is a tenant table
-- (`store::TENANT_TABLES`, row-level security with the usual `tenant_scope` policy): a
-- tenant's jobs rest in its home region only, and a tenant-scoped transaction sees only
-- its own tenant's jobs, never region-wide ones, so the tenant API can show its
-- re-encryption's progress. The runner leases and checkpoints as the table owner
-- (unscoped system work, like migrations and rewrapping). A tenant's job rows are
-- evidence of work done on it (ids and counts, like its audit chain): an offboarding
-- purge keeps its own job row.
create table jobs (
    job_id bigint generated always as identity primary key,
    kind text not null check (kind ~ '^[a-z][a-z0-9_]{0,31}$'),
    tenant_id text,
    state text not null default 'queued'
        check (state in ('queued', 'running', 'done', 'failed', 'cancelled')),
    done bigint not null default 0 check (done >= 0),
    total bigint not null default 0 check (total >= 0),
    failed bigint not null default 0 check (failed >= 0),
    -- Where the next batch starts (opaque to the database, e.g. the last key processed).
    checkpoint jsonb,
    lease_holder text check (length(lease_holder) <= 100),
    lease_expires_at timestamptz,
    -- Times a node leased the job (a takeover after an expired lease counts again).
    attempts integer not null default 0 check (attempts >= 0),
    -- Batches that failed in a row since the last checkpoint: bounded by the runner.
    failures integer not null default 0 check (failures >= 0),
    last_error text check (length(last_error) <= 200),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    finished_at timestamptz,
    -- Only a running job has a holder; a holder always has an expiry.
    check ((state = 'running') = (lease_holder is not null)),
    check ((lease_holder is null) = (lease_expires_at is null)),
    check ((state in ('done', 'failed', 'cancelled')) = (finished_at is not null))
);

-- Leasing looks only at unfinished jobs, oldest first.
create index jobs_unfinished on jobs (job_id) where state in ('queued', 'running');
-- One region-wide job of a kind at a time: starting a rewrap while one is queued or
-- running gives the running one.
create unique index jobs_one_active_region_job on jobs (kind)
    where tenant_id is null and state in ('queued', 'running');
-- The operator's listing filters by tenant (newest first).
create index jobs_by_tenant on jobs (tenant_id, job_id) where tenant_id is not null;

grant select on jobs to residency_app;
alter table jobs enable row level security;
create policy tenant_scope on jobs
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));
