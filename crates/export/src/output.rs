//! Parquet output and the release manifest. Released rows are written as Arrow record
//! batches into any `std::io::Write` (the pipeline hands it a buffer it uploads; the
//! offline anonymizer a file), while the bytes are counted and hashed (SHA-256) on the way,
//! so the manifest can name every part's checksum without reading it back.
//!
//! Column layout (see [`crate::engine`]): generalized integers, numbers and timestamps as
//! two typed columns `<field>_lo` / `<field>_hi`; generalized strings and booleans as one
//! `Utf8` column; pseudonyms as `Utf8` hex; sensitive and public fields in their own type.
//! Every Arrow field carries metadata `residency:field` (the schema field) and
//! `residency:treatment`, which the Parquet file keeps in its embedded Arrow schema.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use aws_lc_rs::digest;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::engine::{Anonymized, STRING_GENERALIZATION};
use crate::report::{FieldReport, Report, Treatment};

/// The manifest format's version.
pub const MANIFEST_VERSION: u32 = 1;

/// Arrow field metadata key naming the schema field a column comes from.
pub const META_FIELD: &str = "residency:field";
/// Arrow field metadata key naming the column's [`Treatment`] (snake case).
pub const META_TREATMENT: &str = "residency:treatment";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("write parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("write output: {0}")]
    Io(#[from] std::io::Error),
    #[error("encode manifest: {0}")]
    Json(#[from] serde_json::Error),
}

/// Counts and hashes what passes through to `inner`.
struct HashingWriter<W> {
    inner: W,
    digest: digest::Context,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A written part: rows, bytes and the SHA-256 of its bytes (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartSummary {
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The writer properties for released columns: arrow-rs defaults (dictionary and RLE
/// encoding, no page compression), except that pseudonyms get no dictionary: they are
/// distinct-looking 64-digit hex, so a dictionary only costs time before it falls back.
/// No Snappy: released rows are grouped by class, so generalized columns are long runs that
/// RLE already shrinks; measured on the benchmark, Snappy saved about 3% of the bytes for a
/// third more writing time.
pub fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut builder = WriterProperties::builder().set_compression(Compression::UNCOMPRESSED);
    for field in schema.fields() {
        if field.metadata().get(META_TREATMENT).map(String::as_str)
            == Some(Treatment::Pseudonymized.as_str())
        {
            let path = ColumnPath::from(field.name().as_str());
            builder = builder.set_column_dictionary_enabled(path, false);
        }
    }
    builder.build()
}

/// Writes one Parquet part of released rows into `out`, hashing it on the way.
pub struct PartWriter<W: Write + Send> {
    writer: ArrowWriter<HashingWriter<W>>,
    rows: u64,
}

impl<W: Write + Send> std::fmt::Debug for PartWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> PartWriter<W> {
    pub fn try_new(out: W, schema: SchemaRef) -> Result<Self, OutputError> {
        let properties = writer_properties(&schema);
        let sink = HashingWriter {
            inner: out,
            digest: digest::Context::new(&digest::SHA256),
            bytes: 0,
        };
        Ok(Self {
            writer: ArrowWriter::try_new(sink, schema, Some(properties))?,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), OutputError> {
        self.writer.write(batch)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the file (footer) and gives back the writer and what was written.
    pub fn finish(self) -> Result<(W, PartSummary), OutputError> {
        let mut sink = self.writer.into_inner()?;
        sink.flush()?;
        let summary = PartSummary {
            rows: self.rows,
            bytes: sink.bytes,
            sha256: hex::encode(sink.digest.finish().as_ref()),
        };
        Ok((sink.inner, summary))
    }
}

/// Writes all of `anonymized`'s released rows as one Parquet file into `out`.
pub fn write_parquet<W: Write + Send>(
    out: W,
    anonymized: &Anonymized,
) -> Result<(W, PartSummary), OutputError> {
    let mut writer = PartWriter::try_new(out, anonymized.schema())?;
    writer.write(&anonymized.batch)?;
    writer.finish()
}

/// One output column in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestColumn {
    pub name: String,
    /// The Arrow type, as Arrow prints it (`Utf8`, `Int64`, `Timestamp(µs, "UTC")`…).
    pub data_type: String,
    pub field: String,
    pub treatment: Treatment,
    /// What a value of the column means.
    pub generalization: String,
}

/// One part file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPart {
    /// The part's name within the run (`part-00000.parquet`).
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the part's bytes, lowercase hex.
    pub sha256: String,
}

/// `_manifest.json`: what a release holds and what it guarantees. Written last; consumers
/// read only runs that have one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The source position the release was taken at (opaque to the engine).
    pub source_watermark: String,
    /// The erasures of data subjects the source had applied when the release was taken
    /// (opaque to the engine; absent when there were none). A run that holds pseudonyms and
    /// saw fewer erasures than the source has now may hold an erased subject's pseudonym,
    /// and is withdrawn (`release::withdraw_before_erasures`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source_erasures: String,
    pub rows_in: u64,
    pub rows: u64,
    pub suppressed_rows: u64,
    pub classes: u64,
    pub k_requested: u32,
    pub k_achieved: Option<u64>,
    pub l_requested: Option<u32>,
    pub l_achieved: Option<u64>,
    pub ncp: f64,
    pub ncp_with_suppression: f64,
    pub discernibility: u64,
    pub columns: Vec<ManifestColumn>,
    pub fields: Vec<FieldReport>,
    pub parts: Vec<ManifestPart>,
}

fn generalization(treatment: Treatment, column: &str, field: &str) -> String {
    match treatment {
        Treatment::Dropped => "not released".to_owned(),
        Treatment::Pseudonymized => "HMAC-SHA256 under the tenant's export key of the value's \
            canonical encoding (strings in NFC), lowercase hex"
            .to_owned(),
        Treatment::Range if column.ends_with("_lo") && column.len() == field.len() + 3 => {
            "least value in the row's equivalence class (inclusive)".to_owned()
        }
        Treatment::Range => "greatest value in the row's equivalence class (inclusive)".to_owned(),
        Treatment::PrefixOrSet => STRING_GENERALIZATION.to_owned(),
        Treatment::ValueOrStar => {
            "`true` or `false` when the class holds one value, else `*`".to_owned()
        }
        Treatment::AsIs => "as stored".to_owned(),
    }
}

impl Manifest {
    pub fn new(
        report: &Report,
        schema: &Schema,
        source_watermark: impl Into<String>,
        parts: Vec<ManifestPart>,
    ) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let field = f.metadata().get(META_FIELD).cloned().unwrap_or_default();
                let treatment = report
                    .fields
                    .iter()
                    .find(|r| r.field == field)
                    .map_or(Treatment::AsIs, |r| r.treatment);
                ManifestColumn {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    generalization: generalization(treatment, f.name(), &field),
                    field,
                    treatment,
                }
            })
            .collect();
        Self {
            version: MANIFEST_VERSION,
            source_watermark: source_watermark.into(),
            source_erasures: String::new(),
            rows_in: report.rows_in,
            rows: report.rows_released,
            suppressed_rows: report.rows_suppressed,
            classes: report.classes,
            k_requested: report.k_requested,
            k_achieved: report.k_achieved,
            l_requested: report.l_requested,
            l_achieved: report.l_achieved,
            ncp: report.ncp,
            ncp_with_suppression: report.ncp_with_suppression,
            discernibility: report.discernibility,
            columns,
            fields: report.fields.clone(),
            parts,
        }
    }

    /// Whether a column of the release holds pseudonyms (which remain personal data).
    pub fn holds_pseudonyms(&self) -> bool {
        self.columns
            .iter()
            .any(|c| c.treatment == Treatment::Pseudonymized)
    }

    pub fn to_json(&self) -> Result<Vec<u8>, OutputError> {
        let mut out = serde_json::to_vec_pretty(self)?;
        out.push(b'\n');
        Ok(out)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, OutputError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}
