//! Integration tests of tenant key management on a real primary + replica and a real
//! (local, file-backed) KMS, wrapped to count calls and inject failures.

mod audit;
mod failing_backends;
mod jobs;
mod key_changes;
mod keys;
mod object_deletions;
