//! Integration tests of the audit crate: bundles written with `BundleWriter` and checked
//! with `verify_bundle`, the tamper matrix, and the exact round trips of the formats.

mod anchors;
mod formats;
mod support;
mod tamper;
