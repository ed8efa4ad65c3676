//! The anonymized analytics export engine and the offline anonymizer: k-anonymity by strict
//! Mondrian partitioning with suppression, l-diversity of sensitive fields, keyed
//! pseudonyms for identifiers, Parquet output with a manifest. The engine is pure (no IO
//! beyond the writers it is handed); it never logs or reports a value of the data.

pub mod engine;
pub mod file;
mod mondrian;
pub mod output;
pub mod pseudonym;
pub mod release;
pub mod report;
pub mod synthetic;
pub mod table;

pub use engine::{Anonymized, EngineError, STRING_GENERALIZATION, Timings, anonymize};
pub use file::{AnonymizeError, AnonymizeFile, anonymize_file, read_schema, read_table};
pub use output::{
    MANIFEST_VERSION, Manifest, ManifestColumn, ManifestPart, OutputError, PartSummary, PartWriter,
    write_parquet, writer_properties,
};
pub use pseudonym::{PseudonymKey, PseudonymValue};
pub use release::{
    MANIFEST_NAME, Plan, REASON_SUBJECT_ERASURE, ReleaseError, ReleaseLocation, ReleaseStore,
    Released, SourcePosition, StoreError, WITHDRAWN_NAME, Withdrawals, WithdrawnRun,
    latest_manifest, plan_release, release, withdraw_before_erasures, withdrawals, write_release,
};
pub use report::{FieldReport, Report, Treatment, render_report};
pub use table::{Cell, Table, TableBuilder, TableError, arrow_type, timestamp_micros};
