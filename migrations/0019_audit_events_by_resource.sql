-- The audit events about a record, found by index (issue 29): a data subject's export
-- lists, for each of its records, the events about the record and its files (resource
-- `collections/C/records/R` or `collections/C/records/R/files/F`;
-- `store::subjects::events_about`). Without an index that query reads every event of the
-- tenant: about 400 ms for a tenant with a million events (`residency-bench subjects`,
-- docs/benchmarks.md).
--
-- Why this shape: under row-level security PostgreSQL uses an index only for conditions
-- built from leakproof operators on the table's columns. `split_part` is not leakproof, so
-- an index on the record part of the resource would never serve the application role.
-- Text comparison is: the query asks, per record, for the resources in
-- [R, R || '/files0') in byte order (collation "C"), which holds R itself and every
-- `R/files/…` (a record id is of fixed length, so no other record's resource falls in).
--
-- On a large existing region, build it first by hand with `create index concurrently`
-- under this name (the migration then finds it and does nothing).
create index if not exists audit_events_by_resource
    on audit_events (tenant_id, resource collate "C");
