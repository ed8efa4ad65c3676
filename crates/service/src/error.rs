//! The errors of the tenant-facing use cases, one variant per answer a client can get.
//! Messages are safe to show: they carry ids, field names and limits, never a value a
//! tenant stored.

use std::time::Duration;

use model::RegionId;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No credentials, or credentials that are not valid here (401).
    #[error("missing or invalid credentials")]
    Unauthenticated,
    /// Valid credentials whose role does not allow the operation (403).
    #[error("the {role} role may not {operation}")]
    Forbidden {
        role: &'static str,
        operation: &'static str,
    },
    /// The thing does not exist, or the caller may not learn that it exists (404).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// Input that does not fit the contract (422), naming the field.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Malformed request outside the body schema (400): a bad cursor, token or query.
    #[error("{0}")]
    BadRequest(String),
    /// `If-Match` named another version (412).
    #[error("the record is at version {current}")]
    VersionMismatch { current: i64 },
    /// The resource already exists (409).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The resource is not in a state that allows the operation (409), e.g. a key version
    /// still active or still sealing stored data; the text says why.
    #[error("{0}")]
    StateConflict(&'static str),
    /// An `Idempotency-Key` already used, within its 24 hours, for another request (422):
    /// nothing was created.
    #[error("the Idempotency-Key was used for another request; use a new key")]
    IdempotencyKeyReused,
    /// A schema change that the collection's stored records could not follow (409),
    /// naming the field.
    #[error("{field}: {reason}")]
    SchemaConflict { field: String, reason: String },
    /// The tenant lives in another region (421): this node serves its own tenants only.
    #[error("tenant is homed in region {home}")]
    Misdirected { home: RegionId },
    /// A body over the configured limit (413).
    #[error("the body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// Over the caller's rate limit, or, for a token that does not verify, over the
    /// limit that all such tokens share (429): retry after the hint.
    #[error("too many requests for this key; retry after the Retry-After delay")]
    RateLimited { retry_after: Duration },
    /// The request body did not arrive within the deadline (408).
    #[error("the request body did not arrive within {limit:?}")]
    BodyTimeout { limit: Duration },
    /// A dependency is down (database primary, KMS, object store) or the audit queue is
    /// full: retry after the hint (503).
    #[error("{what} is unavailable; retry later")]
    Unavailable {
        what: &'static str,
        retry_after: Duration,
    },
    /// The database aborted the transaction to break a deadlock or a serialization
    /// conflict with concurrent ones, and the unit of work's own retries met it again
    /// (503): nothing was changed; send the request again after the hint.
    #[error(
        "the request met concurrent changes and was not applied; retry after the Retry-After delay"
    )]
    TransactionConflict { retry_after: Duration },
    /// Anything else (500). Its cause is for logs, never for clients.
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// The cause an internal error carries: another error, or a message where the failure is
/// ours (a stored value the code cannot read).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An internal failure and what was being done when it happened (`encode schema`).
#[derive(Debug, thiserror::Error)]
#[error("{doing}")]
pub struct Failed {
    doing: &'static str,
    #[source]
    cause: BoxError,
}

impl ServiceError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An identifier refused at the edge (a file name, a key name), as the field it names.
    pub fn invalid_id(err: model::IdError) -> Self {
        Self::invalid(err.field, err.reason)
    }

    /// A new tenant's setting refused at the edge, as the field it names.
    pub fn invalid_tenant(err: model::NewTenantError) -> Self {
        Self::invalid(err.field, err.reason)
    }

    /// An internal error (500) caused by `cause`: an error, or a message (`String`,
    /// `&str`).
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Self::Internal(cause.into())
    }

    /// An internal error (500) caused by `cause` while `doing` something (a verb phrase:
    /// `encode schema`).
    pub fn internal_while(doing: &'static str, cause: impl Into<BoxError>) -> Self {
        Self::Internal(Box::new(Failed {
            doing,
            cause: cause.into(),
        }))
    }

    pub(crate) fn unavailable(what: &'static str) -> Self {
        Self::Unavailable {
            what,
            retry_after: Duration::from_secs(1),
        }
    }
}

impl From<store::StoreError> for ServiceError {
    fn from(err: store::StoreError) -> Self {
        use store::StoreError;
        match err {
            StoreError::Unavailable(_) | StoreError::ReadOnly => Self::unavailable("database"),
            StoreError::NotFound => Self::NotFound { what: "resource" },
            // Only an offboarded tenant's chain is closed.
            StoreError::AuditChainClosed => Self::NotFound { what: "tenant" },
            StoreError::Conflict => Self::Conflict("resource"),
            StoreError::SerializationFailure => Self::TransactionConflict {
                retry_after: Duration::from_secs(1),
            },
            // A lock held past the bound by another transaction, or a statement past
            // its bound: retryable, but not at once (the unit of work does not retry it).
            StoreError::TimedOut { .. } => Self::unavailable("database (a statement timed out)"),
            StoreError::SchemaMoved { field } => Self::SchemaConflict {
                field,
                reason: "the collection's schema changed during the write; send it again"
                    .to_owned(),
            },
            other => Self::internal(other),
        }
    }
}

impl From<crate::KeyError> for ServiceError {
    fn from(err: crate::KeyError) -> Self {
        use crate::KeyError;
        match err {
            KeyError::Shredded { .. } => Self::NotFound { what: "tenant" },
            KeyError::Unavailable(_) => Self::unavailable("database"),
            KeyError::Kms(_) => Self::unavailable("kms"),
            other => Self::internal(other),
        }
    }
}

impl From<crate::AuditError> for ServiceError {
    fn from(err: crate::AuditError) -> Self {
        use crate::AuditError;
        match err {
            AuditError::Store(store) => Self::from(store),
            AuditError::Backlogged { .. }
            | AuditError::Closed
            | AuditError::FlushTimeout { .. }
            | AuditError::Unwritten { .. } => Self::Unavailable {
                what: "audit log",
                retry_after: Duration::from_secs(1),
            },
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_audit_queue_and_a_down_database_are_retryable_unavailability() {
        let backlogged = ServiceError::from(crate::AuditError::Backlogged { capacity: 4 });
        assert!(
            matches!(
                backlogged,
                ServiceError::Unavailable {
                    what: "audit log",
                    ..
                }
            ),
            "{backlogged:?}"
        );
        let down = ServiceError::from(store::StoreError::unavailable("refused"));
        assert!(matches!(
            down,
            ServiceError::Unavailable {
                what: "database",
                ..
            }
        ));
        // The client-facing text never carries the underlying error.
        assert!(!down.to_string().contains("refused"));
    }

    #[test]
    fn an_internal_error_keeps_its_cause_for_the_logs_and_shows_none_of_it() {
        use std::error::Error as _;
        let io = std::io::Error::other("disk on fire");
        let err = ServiceError::internal_while("encode schema", io);
        assert_eq!(err.to_string(), "internal error");
        let failed = err.source().expect("the context");
        assert_eq!(failed.to_string(), "encode schema");
        let cause = failed.source().expect("the cause");
        assert_eq!(cause.to_string(), "disk on fire");

        let from_store =
            ServiceError::from(store::StoreError::Corrupt("audit: hash length".into()));
        assert!(matches!(from_store, ServiceError::Internal(_)));
        assert!(!from_store.to_string().contains("hash"));
        assert!(
            from_store
                .source()
                .is_some_and(|cause| cause.is::<store::StoreError>()),
            "the store error is the cause, not its text"
        );
    }
}
