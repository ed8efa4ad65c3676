-- The tenant directory: tenant id → home region, allowed regions, transit mode and a
-- version that only grows. It holds no personal data (tenant names stay in the home
-- region). Every region's database has the table; the deployment designates one
-- database as the directory (in `residency dev`, the first region's), and every node
-- reads it through a cache.
create table tenant_directory (
    tenant_id text primary key,
    home_region text not null,
    allowed_regions text[] not null,
    transit text not null check (transit in ('proxy', 'redirect')),
    version bigint not null check (version > 0),
    updated_at timestamptz not null default now()
);
