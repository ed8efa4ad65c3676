-- A tenant's audit chain can be closed: offboarding appends `tenant.delete` and closes the
-- chain in the same transaction, and from then on every append (a conditional move of the
-- head, `crates/store/src/audit.rs`) matches nothing, so `tenant.delete` stays the last
-- event. Events refused this way are counted and logged by the writer (`docs/audit.md`,
-- "A closed chain"). A closed chain is never reopened.
alter table audit_heads add column closed_at timestamptz;
alter table audit_heads add constraint audit_heads_closed_after_an_event
    check (closed_at is null or seq > 0);
