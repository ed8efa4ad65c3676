-- Offboarding: a tenant has at most one purge job, whatever its state. Two offboardings
-- of one tenant at once queue one purge (the second insert conflicts and takes the
-- first), and the purge's row, with its certificate in its last checkpoint, stays as the
-- evidence of the offboarding (see `docs/operations.md`, "Offboarding a tenant").
create unique index jobs_one_purge_per_tenant on jobs (tenant_id) where kind = 'purge';
