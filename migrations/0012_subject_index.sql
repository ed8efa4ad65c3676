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
