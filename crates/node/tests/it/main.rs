//! Integration tests of the `node` library: whole regional nodes started in this process
//! against real PostgreSQL primaries and replicas.

mod abuse;
mod audit_keys;
mod directory;
mod erasure_ledger;
mod jobs;
mod object_deletions;
mod offboarding;
mod operations;
mod shutdown;
mod support;
mod three_regions;
