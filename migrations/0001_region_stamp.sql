-- The region this database belongs to, stamped by the first node that migrates it.
-- A node configured for another region refuses to start on this database, so a
-- misconfigured connection string can never make one region write into another's data.
create table residency_region (
    singleton boolean primary key default true check (singleton),
    region_id text not null,
    stamped_at timestamptz not null default now()
);
