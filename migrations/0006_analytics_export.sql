-- The analytics export's own role: it connects to replicas only and may read exactly what
-- the export needs (tenants that turned export on, their collection schemas, records and
-- wrapped keys), nothing else, and write nothing. It logs in (the deployment gives it a
-- password or a certificate; local clusters trust loopback) and is not a member of the
-- application role.
do $$
begin
    if not exists (select from pg_roles where rolname = 'residency_export') then
        create role residency_export login;
    end if;
exception
    when duplicate_object or unique_violation then null;
end
$$;

do $$
begin
    execute format('grant usage on schema %I to residency_export', current_schema());
end
$$;

grant select on tenants, collections, records, tenant_keys to residency_export;

-- Row-level security stays on for the export too: it lists the tenants that turned
-- export on, and reads one tenant's collections, records and keys at a time under the
-- tenant setting, like the application.
create policy export_listing on tenants for select to residency_export
    using (analytics_export);
