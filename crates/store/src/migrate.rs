//! Schema migrations: the SQL files of `migrations/`, embedded at build time, applied in
//! version order, each in its own transaction, recorded with a SHA-256 checksum.
//!
//! A migration that was applied and has since changed, or an applied migration this build
//! does not know, stops the node: the schema and the code would disagree.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

/// One migration file, `NNNN_name.sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The migrations built into this binary, in version order.
pub fn embedded_migrations() -> &'static [Migration] {
    EMBEDDED
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationReport {
    /// Versions applied by this run, in order.
    pub applied: Vec<u32>,
    /// Versions that were already applied and verified.
    pub already_applied: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "migration {version} ({name}) was changed after it was applied to this database (checksum {applied} in the database, {built} in this build); restore the original file and add a new migration instead"
    )]
    Changed {
        version: u32,
        name: String,
        applied: String,
        built: String,
    },
    #[error(
        "this database has migration {version} ({name}) applied, which this build does not know: it was migrated by a newer release"
    )]
    Unknown { version: u32, name: String },
    #[error("apply migration {version} ({name}): {}", database_message(.source))]
    Apply {
        version: u32,
        name: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("create database role {name}: {}", database_message(.source))]
    Role {
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("read migration history: {}", database_message(.0))]
    History(#[source] tokio_postgres::Error),
}

/// The server's own message ("role ... does not exist"), which `tokio_postgres::Error`'s
/// `Display` leaves out ("db error").
fn database_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// Any two nodes of a region may start at once; they take turns on this advisory lock.
const MIGRATION_LOCK: i64 = 0x5245_5349_4445_4e43; // "RESIDENC"

/// A database role that migrations grant to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterRole {
    /// A plain lowercase identifier (it is written into SQL unquoted).
    pub name: &'static str,
    /// `login`, `nologin`, or `login noinherit`.
    pub attributes: &'static str,
}

/// Every role the embedded migrations create. A migration that creates a role must list
/// it here too (a unit test checks).
///
/// Roles belong to the whole PostgreSQL cluster, but the migration lock is per database
/// (advisory locks are). When two databases of one cluster migrate at once, one session
/// can create a role while the other's transaction is already running, and PostgreSQL's
/// role cache in that other session may then miss the role for the rest of its
/// transaction ("role does not exist" at the next grant). So the runner creates these
/// roles first, each in a transaction of its own: a migration's transaction starts after
/// they are committed, and every session sees them.
pub const CLUSTER_ROLES: &[ClusterRole] = &[
    ClusterRole {
        name: "residency_app",
        attributes: "nologin",
    },
    ClusterRole {
        name: "residency_export",
        attributes: "login",
    },
    // The node's login role (0015): inherits nothing of the roles it is a member of.
    ClusterRole {
        name: "residency_node",
        attributes: "login noinherit",
    },
];

/// Applies `migrations` that are not applied yet, after verifying the ones that are.
pub async fn migrate(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrationError> {
    migrate_with_roles(client, CLUSTER_ROLES, migrations).await
}

/// [`migrate`], creating `roles` (instead of [`CLUSTER_ROLES`]) first. Public for tests
/// that need roles of their own.
pub async fn migrate_with_roles(
    client: &mut Client,
    roles: &[ClusterRole],
    migrations: &[Migration],
) -> Result<MigrationReport, MigrationError> {
    for role in roles {
        ensure_role(client, role).await?;
    }
    // Lock first: even `create table if not exists` races with a concurrent creator.
    client
        .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(MigrationError::History)?;
    let result = migrate_locked(client, migrations).await;
    // The lock is also released when the session ends, so a failed unlock is harmless.
    let _ = client
        .execute("select pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

/// Whether every one of `migrations` is applied to the database behind `client`, with
/// the checksum this build has, and nothing else is: what a node that logs in as a role
/// owning nothing checks instead of migrating (it may not create or alter anything; the
/// owner runs `residency migrate`). `Ok(false)` when something is left to apply (or the
/// history table is missing); a changed or unknown migration is an error, as in [`migrate`].
pub async fn all_applied(
    client: &Client,
    migrations: &[Migration],
) -> Result<bool, MigrationError> {
    let exists: bool = client
        .query_one("select to_regclass('schema_migrations') is not null", &[])
        .await
        .map_err(MigrationError::History)?
        .get(0);
    if !exists {
        return Ok(false);
    }
    let applied = verify_history(client, migrations).await?;
    Ok(migrations
        .iter()
        .all(|migration| applied.contains(&migration.version)))
}

/// The versions recorded in `schema_migrations`, each checked against `migrations`.
async fn verify_history(
    client: &Client,
    migrations: &[Migration],
) -> Result<Vec<u32>, MigrationError> {
    let rows = client
        .query(
            "select version, name, checksum from schema_migrations order by version",
            &[],
        )
        .await
        .map_err(MigrationError::History)?;
    let mut verified = Vec::with_capacity(rows.len());
    for row in rows {
        let version = u32::try_from(row.get::<_, i32>(0)).unwrap_or(u32::MAX);
        let name: String = row.get(1);
        let applied: String = row.get(2);
        let Some(known) = migrations.iter().find(|m| m.version == version) else {
            return Err(MigrationError::Unknown { version, name });
        };
        let built = known.checksum();
        if built != applied {
            return Err(MigrationError::Changed {
                version,
                name,
                applied,
                built,
            });
        }
        verified.push(version);
    }
    Ok(verified)
}

/// Creates `role` unless it exists, in a transaction of its own. A concurrent creator in
/// another database wins quietly. The check comes first so that a deployment whose
/// migration user may not create roles works once the roles exist.
async fn ensure_role(client: &Client, role: &ClusterRole) -> Result<(), MigrationError> {
    let ClusterRole { name, attributes } = role;
    client
        .batch_execute(&format!(
            "do $$
            begin
                if not exists (select from pg_roles where rolname = '{name}') then
                    create role {name} {attributes};
                end if;
            exception
                when duplicate_object or unique_violation then null;
            end
            $$"
        ))
        .await
        .map_err(|source| MigrationError::Role { name, source })
}

async fn migrate_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrationError> {
    client
        .batch_execute(
            "create table if not exists schema_migrations (
                version integer primary key,
                name text not null,
                checksum text not null,
                applied_at timestamptz not null default now()
            )",
        )
        .await
        .map_err(MigrationError::History)?;
    let mut report = MigrationReport {
        applied: Vec::new(),
        already_applied: verify_history(client, migrations).await?,
    };
    for migration in migrations {
        if report.already_applied.contains(&migration.version) {
            continue;
        }
        let apply_err = |source| MigrationError::Apply {
            version: migration.version,
            name: migration.name.to_owned(),
            source,
        };
        let version = i32::try_from(migration.version).expect("migration versions are small");
        let transaction = client.transaction().await.map_err(apply_err)?;
        // A migration may rewrite or index big tables: the pooled session's statement
        // and idle bounds are for requests, not for it.
        transaction
            .batch_execute(
                "set local statement_timeout = 0; set local idle_in_transaction_session_timeout = 0",
            )
            .await
            .map_err(apply_err)?;
        transaction
            .batch_execute(migration.sql)
            .await
            .map_err(apply_err)?;
        transaction
            .execute(
                "insert into schema_migrations (version, name, checksum) values ($1, $2, $3)",
                &[&version, &migration.name, &migration.checksum()],
            )
            .await
            .map_err(apply_err)?;
        transaction.commit().await.map_err(apply_err)?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        report.applied.push(migration.version);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_ordered_and_named() {
        let migrations = embedded_migrations();
        assert!(!migrations.is_empty(), "migrations/ must not be empty");
        assert_eq!(migrations[0].version, 1);
        assert!(migrations.windows(2).all(|w| w[0].version < w[1].version));
        assert!(
            migrations
                .iter()
                .all(|m| !m.name.is_empty() && !m.sql.trim().is_empty())
        );
    }

    #[test]
    fn every_role_a_migration_creates_is_created_before_the_migrations() {
        for migration in embedded_migrations() {
            let sql = migration.sql.to_lowercase();
            for (at, _) in sql.match_indices("create role ") {
                let name: String = sql[at + "create role ".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    CLUSTER_ROLES.iter().any(|role| role.name == name),
                    "migration {} creates role {name}: add it to CLUSTER_ROLES",
                    migration.version
                );
            }
        }
        for role in CLUSTER_ROLES {
            assert!(
                role.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is written into SQL unquoted",
                role.name
            );
            assert!(matches!(
                role.attributes,
                "login" | "nologin" | "login noinherit"
            ));
        }
    }

    #[test]
    fn checksum_changes_with_the_text() {
        let a = Migration {
            version: 1,
            name: "a",
            sql: "create table a (x int);",
        };
        let b = Migration {
            sql: "create table a (x bigint);",
            ..a
        };
        assert_ne!(a.checksum(), b.checksum());
        assert_eq!(a.checksum().len(), 64);
    }
}
