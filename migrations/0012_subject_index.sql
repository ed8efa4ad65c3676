-- The subject index (issue 29): a record of a collection with a `subject_field` carries
-- one more row in `record_index`, field `subject:` (no schema field name holds a colon),
-- whose token is the keyed token of its normalized subject value under the tenant's
-- subject-index key (docs/envelope.md). It is written, replaced and deleted with its
-- record, in the record's statement, like the other tokens. This index finds one
-- subject's records across all of a tenant's collections with one equality lookup (bytea
-- and text equality are leakproof, so row-level security lets the application role use
-- it), in (collection, record_id) order for keyset pages.
create index record_index_by_subject
    on record_index (tenant_id, token, collection, record_id)
    where field = 'subject:';

-- A schema change that moves a collection's subject field queues the tenant's
-- `subject_index` backfill in the schema change's own transaction (tenant-scoped), so
-- the change never commits without its job. The `tenant_scope` policy of 0008 lets a
-- tenant's transaction insert jobs of that tenant only.
grant insert on jobs to residency_app;
