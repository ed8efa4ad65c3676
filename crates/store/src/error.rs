//! Database errors as the rest of the system sees them. SQLSTATEs are mapped here and
//! nowhere else.

use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had (server down, pool timeout): retry later, 503. The
    /// message shows the cause with its own causes (why a certificate was refused).
    #[error("database unavailable: {}", with_causes(.0.as_ref()))]
    Unavailable(#[source] BoxError),
    /// A write reached a server that is in recovery (a replica, or a demoted primary).
    #[error("database is read-only")]
    ReadOnly,
    /// A unique or exclusion constraint refused the change.
    #[error("conflicting row")]
    Conflict,
    /// A foreign key refused the change: the row refers to a row that does not exist, or
    /// a row that is still referred to was deleted.
    #[error("foreign key {constraint} refused the change")]
    ForeignKey { constraint: String },
    /// A check constraint refused a value: the caller passed something the schema forbids.
    #[error("check constraint {constraint} refused a value")]
    Check { constraint: String },
    /// A record's unencrypted part named a field that its collection's schema, as
    /// committed, does not class as public (migration 0007): the writer sealed by an older
    /// copy of the schema. Reload it and write again.
    #[error("field {field} is not public in the collection's current schema")]
    SchemaMoved { field: String },
    /// Row-level security or a missing privilege refused the statement, e.g. a
    /// tenant-scoped transaction touching another tenant's row: always a bug.
    #[error("the database refused access (row-level security or privileges)")]
    Forbidden,
    /// Concurrent transactions could not be serialized; the caller may retry.
    #[error("transaction could not be serialized")]
    SerializationFailure,
    /// The server cancelled a statement at the session's bound: it waited longer than
    /// `lock_timeout` for a row lock, or ran longer than `statement_timeout`. Nothing of
    /// the transaction stays; the caller may retry later.
    #[error("the database cancelled a statement at its {bound} bound")]
    TimedOut { bound: &'static str },
    /// This database belongs to another region.
    #[error("database is stamped for region {stamped}, not {configured}")]
    WrongRegion { stamped: String, configured: String },
    #[error(transparent)]
    Migration(#[from] crate::MigrationError),
    /// The tenant's audit chain is closed (offboarding ended it with `tenant.delete`): no
    /// event may be appended to it (migration 0014).
    #[error("the tenant's audit chain is closed")]
    AuditChainClosed,
    /// The row the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// A stored value violates what the code expects (a bug or manual edit).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Other(#[source] tokio_postgres::Error),
}

/// What made the database unavailable: a driver, pool or IO error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure and what was being done when it happened (`build pool primary`).
#[derive(Debug, thiserror::Error)]
#[error("{doing}")]
pub(crate) struct Failed {
    pub(crate) doing: String,
    #[source]
    pub(crate) cause: BoxError,
}

impl StoreError {
    /// The database is unavailable because of `cause`.
    pub fn unavailable(cause: impl Into<BoxError>) -> Self {
        Self::Unavailable(cause.into())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        match err.code() {
            Some(code) if *code == SqlState::READ_ONLY_SQL_TRANSACTION => Self::ReadOnly,
            Some(code)
                if *code == SqlState::UNIQUE_VIOLATION
                    || *code == SqlState::EXCLUSION_VIOLATION =>
            {
                Self::Conflict
            }
            Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => Self::ForeignKey {
                constraint: constraint_name(&err),
            },
            Some(code) if *code == SqlState::CHECK_VIOLATION => {
                let constraint = constraint_name(&err);
                if constraint == PUBLIC_FIELDS_TRIGGER {
                    // The column is a schema field name, never a value.
                    let field = err.as_db_error().and_then(|db| db.column()).unwrap_or("");
                    Self::SchemaMoved {
                        field: field.to_owned(),
                    }
                } else {
                    Self::Check { constraint }
                }
            }
            Some(code) if *code == SqlState::INSUFFICIENT_PRIVILEGE => Self::Forbidden,
            Some(code)
                if *code == SqlState::T_R_SERIALIZATION_FAILURE
                    || *code == SqlState::T_R_DEADLOCK_DETECTED =>
            {
                Self::SerializationFailure
            }
            Some(code) if *code == SqlState::LOCK_NOT_AVAILABLE => Self::TimedOut { bound: "lock" },
            Some(code) if *code == SqlState::QUERY_CANCELED => {
                Self::TimedOut { bound: "statement" }
            }
            Some(code)
                if *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW =>
            {
                Self::unavailable(err)
            }
            None if err.is_closed() => Self::unavailable(err),
            // A socket error mid-query: the server went away or the network failed.
            None if is_io(&err) => Self::unavailable(err),
            _ => Self::Other(err),
        }
    }
}

/// The trigger of migration 0007 that keeps non-public fields out of `records.public`.
const PUBLIC_FIELDS_TRIGGER: &str = "records_public_fields_are_public";

/// The constraint a violation names (schema names only: no values, no personal data).
fn constraint_name(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .and_then(|db| db.constraint())
        .unwrap_or("unnamed")
        .to_owned()
}

/// An error and what caused it, for a log line (tokio-postgres shows only its own part,
/// e.g. "error performing TLS handshake", and keeps why the certificate was refused in
/// its source); a cause whose text the error already shows is not repeated. Never for a
/// client: the causes are internal.
pub fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn is_io(err: &tokio_postgres::Error) -> bool {
    std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        match err {
            deadpool_postgres::PoolError::Backend(err) => match Self::from(err) {
                // A backend error while opening a connection means the server is unreachable.
                Self::Other(err) => Self::unavailable(err),
                other => other,
            },
            other => Self::unavailable(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn unavailability_keeps_its_cause_and_shows_the_causes_below_it() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = StoreError::unavailable(Failed {
            doing: "connect to primary".to_owned(),
            cause: refused.into(),
        });
        assert_eq!(
            err.to_string(),
            "database unavailable: connect to primary: refused"
        );
        let cause = err.source().expect("the cause");
        assert!(cause.is::<Failed>(), "{cause:?}");
        assert_eq!(
            cause.source().map(ToString::to_string).as_deref(),
            Some("refused")
        );
    }
}
