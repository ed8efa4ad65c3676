-- The audit events about a record, found by index (issue 29): a data subject's export
-- lists, for each of its records, the events about the record and its files
-- (`store::subjects::events_about`, resource `collections/C/records/R` or
-- `collections/C/records/R/files/F`). Without this index that query reads every event of
-- the tenant: about 400 ms for a tenant with a million events (`residency-bench
-- subjects`, docs/benchmarks.md). The expression is the query's own; `=` on text is
-- leakproof, so row-level security leaves the index usable by the application role.
--
-- On a large existing region, build it first by hand with `create index concurrently`
-- under this name (the migration then finds it and does nothing).
create index if not exists audit_events_by_record
    on audit_events (tenant_id, split_part(resource, '/files/', 1));
