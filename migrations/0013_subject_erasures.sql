-- The erasure ledger's table (issue 29): one row per erasure of a data subject, written in
-- the erasure's own transaction with its `subject.erase` audit event. The same entry is
-- also written, after the commit, to the region's audit bucket (write-once in AWS, a
-- directory in `residency dev`): a database restored from a backup lacks the rows of the
-- erasures made since, and a node re-applies the bucket's entries it does not find here
-- (`docs/privacy.md`, "The erasure ledger").
--
-- A row holds the subject's keyed token (under the tenant's subject-index key), never its
-- value; counts; the collections that held the subject's records (the analytics export
-- withdraws and re-releases those that publish pseudonyms); and the audit seq of the
-- `subject.erase` event in this database. `entry_id` names the ledger entry in the bucket
-- and survives a re-application, so an entry is applied at most once per database.
create table subject_erasures (
    tenant_id text not null references tenants (tenant_id) on delete cascade,
    entry_id text not null check (entry_id ~ '^[0-9a-z][0-9a-z-]{0,63}$'),
    subject_token bytea not null check (length(subject_token) = 32),
    erased_at timestamptz not null default now(),
    records_erased bigint not null check (records_erased >= 0),
    files_erased bigint not null check (files_erased >= 0),
    collections text[] not null,
    audit_seq bigint not null check (audit_seq >= 1),
    -- Set when this row came from the bucket's ledger after a restore, not from a request.
    reapplied boolean not null default false,
    primary key (tenant_id, entry_id)
);
create index subject_erasures_by_time on subject_erasures (tenant_id, erased_at);

grant select, insert on subject_erasures to residency_app;
alter table subject_erasures enable row level security;
create policy tenant_scope on subject_erasures
    using (tenant_id = current_setting('residency.tenant', true))
    with check (tenant_id = current_setting('residency.tenant', true));

-- The analytics export reads a tenant's erasures (under the tenant setting, like its
-- records) to withdraw runs that may hold an erased subject's pseudonym.
grant select on subject_erasures to residency_export;
