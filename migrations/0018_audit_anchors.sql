-- Anchors (issue 30): every signed checkpoint is also written, after its commit, to the
-- region's audit bucket (S3 with Object Lock in AWS, a directory in `residency dev`) as
-- `checkpoints/<tenant>/<seq>.json`, where whoever can write this database cannot rewrite
-- it (`docs/audit.md`, "Anchors").
--
-- `anchored_at` says that the checkpoint is in the bucket (null: waiting). A node's
-- anchoring round finds the waiting checkpoints through the partial index, so a round
-- costs what changed since the last one, never a scan of every tenant.
alter table audit_checkpoints add column anchored_at timestamptz;

-- Checkpoints signed before anchoring existed: each tenant's newest is anchored by the
-- first round; the older ones are superseded by it and never written ('-infinity').
update audit_checkpoints c set anchored_at = '-infinity'
where exists (
    select 1 from audit_checkpoints newer
    where newer.tenant_id = c.tenant_id and newer.seq > c.seq);

create index audit_checkpoints_unanchored on audit_checkpoints (signed_at)
    where anchored_at is null;

-- The node's anchoring round (its own role, across tenants, like the checkpoint task of
-- 0015) marks a checkpoint anchored; it still cannot change what was signed.
grant update (anchored_at) on audit_checkpoints to residency_node;
create policy node_anchors on audit_checkpoints for update to residency_node
    using (true) with check (true);
