//! The migrations against `store::TENANT_TABLES`: every table with a `tenant_id` column
//! is listed (or is the platform's tenant directory), and every listed table confines
//! tenant-scoped transactions to their tenant by row-level security.

use std::collections::BTreeSet;

use store::TENANT_TABLES;
use store::testing::region_database;

/// Tables that name tenants but belong to the platform, not to a tenant: the directory
/// of every tenant's home region, readable from every region.
const PLATFORM_TABLES: &[&str] = &["tenant_directory"];

#[tokio::test]
async fn every_table_with_a_tenant_id_is_a_tenant_table_under_row_level_security() {
    let (_database, db) = region_database("eu-central-1").await;
    let primary = db.as_owner().primary().get().await.expect("primary");
    let with_tenant_id: BTreeSet<String> = primary
        .client()
        .query(
            "select table_name::text from information_schema.columns
             where table_schema = current_schema() and column_name = 'tenant_id'",
            &[],
        )
        .await
        .expect("tables with a tenant_id column")
        .iter()
        .map(|row| row.get(0))
        .filter(|table: &String| !PLATFORM_TABLES.contains(&table.as_str()))
        .collect();
    let listed: BTreeSet<String> = TENANT_TABLES.iter().map(|t| (*t).to_owned()).collect();
    assert_eq!(
        with_tenant_id, listed,
        "store::TENANT_TABLES must list every table holding tenant data"
    );

    for table in TENANT_TABLES {
        let row = primary
            .client()
            .query_one(
                "select c.relrowsecurity,
                        exists (select from pg_policies p
                                where p.schemaname = current_schema()
                                  and p.tablename = c.relname
                                  and p.policyname = 'tenant_scope')
                 from pg_class c
                 where c.relname = $1 and c.relnamespace = current_schema()::regnamespace",
                &[table],
            )
            .await
            .unwrap_or_else(|err| panic!("row-level security of {table}: {err}"));
        assert!(row.get::<_, bool>(0), "{table}: row-level security is off");
        assert!(row.get::<_, bool>(1), "{table}: no tenant_scope policy");
        // The pattern of migration 0015: forced, so the owner is held too, and every
        // policy names the roles it is for (none for PUBLIC, which would include the
        // export's role).
        let row = primary
            .client()
            .query_one(
                "select c.relforcerowsecurity,
                        coalesce((select array_agg(p.policyname::text) from pg_policies p
                                  where p.schemaname = current_schema() and p.tablename = c.relname
                                    and 'public' = any(p.roles)), '{}'),
                        coalesce((select array_agg(distinct r)::text[] from pg_policies p, unnest(p.roles) r
                                  where p.schemaname = current_schema() and p.tablename = c.relname
                                    and p.policyname = 'tenant_scope'), '{}')
                 from pg_class c
                 where c.relname = $1 and c.relnamespace = current_schema()::regnamespace",
                &[table],
            )
            .await
            .unwrap_or_else(|err| panic!("policies of {table}: {err}"));
        assert!(
            row.get::<_, bool>(0),
            "{table}: row-level security is not forced"
        );
        assert_eq!(
            row.get::<_, Vec<String>>(1),
            Vec::<String>::new(),
            "{table}: policies for PUBLIC"
        );
        assert_eq!(
            row.get::<_, Vec<String>>(2),
            [store::APP_ROLE],
            "{table}: tenant_scope is the application role's"
        );
    }
}
