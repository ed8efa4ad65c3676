-- Offboarding: a tenant has at most one purge job that is not failed. Two offboardings
-- of one tenant at once queue one purge (the second insert conflicts and takes the
-- first); a failed purge may be followed by another (`DELETE` again). The done purge's
-- row, with its certificate in its last checkpoint, stays as the evidence of the
-- offboarding (see `docs/operations.md`, "Offboarding a tenant").
create unique index jobs_one_purge_per_tenant on jobs (tenant_id)
    where kind = 'purge' and state in ('queued', 'running', 'done');
