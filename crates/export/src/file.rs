//! The offline anonymizer behind `residency anonymize`: a schema file (the API's collection
//! schema JSON), a CSV (with a header row) or NDJSON input, one Parquet output, and the
//! privacy report. Pseudonyms are made under a fresh random key unless one is given, so an
//! offline trial never produces pseudonyms that match a real release.
//!
//! Input rules: CSV columns and NDJSON keys must be schema fields (an unknown one is refused
//! by name); an empty CSV cell and an absent NDJSON key are absent values; a JSON `null` is
//! refused, as the API refuses it. Errors name the line, the row and the column, never the
//! value.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use model::{AnalyticsSpec, CollectionSchema, FieldType, SchemaError};
use serde_json::Value;

use crate::table::{Cell, TableBuilder, TableError, timestamp_micros, type_reason};
use crate::{EngineError, OutputError, PseudonymKey, Report, anonymize, write_parquet};

/// Why an offline anonymization failed.
#[derive(Debug, thiserror::Error)]
pub enum AnonymizeError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("schema {path}: not a collection schema document: {reason}")]
    SchemaSyntax { path: PathBuf, reason: String },
    #[error("schema: {0}")]
    Schema(#[from] SchemaError),
    #[error("the schema has no analytics section: give k (--k)")]
    NoPolicy,
    #[error("input {path}: unknown format: expected a .csv, .ndjson or .jsonl file")]
    UnknownFormat { path: PathBuf },
    #[error("input: column `{column}` is not in the collection's schema")]
    UnknownColumn { column: String },
    #[error("input: column `{column}` appears twice in the header")]
    DuplicateColumn { column: String },
    #[error("input line {line} (row {row}), column `{column}`: {reason}")]
    BadValue {
        /// 1-based line of the file.
        line: u64,
        /// 1-based data row (the CSV header is not a row).
        row: u64,
        column: String,
        reason: String,
    },
    #[error("input line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("anonymize: {0}")]
    Engine(#[from] EngineError),
    #[error("output: {0}")]
    Output(#[from] OutputError),
}

/// An offline anonymization: what to read and write, and the policy overrides.
#[derive(Debug)]
pub struct AnonymizeFile {
    pub schema: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    /// Overrides the schema's `analytics.k` (required when the schema has none).
    pub k: Option<u32>,
    /// Overrides the schema's `analytics.l`.
    pub l: Option<u32>,
    /// Where to write the report as JSON.
    pub report: Option<PathBuf>,
    /// The pseudonym key; a fresh random one when `None`.
    pub key: Option<PseudonymKey>,
}

/// `residency anonymize --schema S.json --input F.csv|F.ndjson --output OUT.parquet
/// [--k N] [--l N] [--report R.json]`, with a random pseudonym key. Print the result with
/// [`crate::render_report`].
pub fn anonymize_file(
    schema_path: &Path,
    input_path: &Path,
    output_path: &Path,
    k_override: Option<u32>,
    l_override: Option<u32>,
    report_path: Option<&Path>,
) -> Result<Report, AnonymizeError> {
    AnonymizeFile {
        schema: schema_path.to_owned(),
        input: input_path.to_owned(),
        output: output_path.to_owned(),
        k: k_override,
        l: l_override,
        report: report_path.map(Path::to_owned),
        key: None,
    }
    .run()
}

impl AnonymizeFile {
    pub fn run(&self) -> Result<Report, AnonymizeError> {
        let schema = read_schema(&self.schema, self.k, self.l)?;
        let table = read_table(&schema, &self.input)?;
        let key = match &self.key {
            Some(key) => key,
            None => &PseudonymKey::random(),
        };
        let anonymized = anonymize(&table, &schema, key)?;

        // Write beside the target and rename, so a failure never leaves a partial file
        // under the output's name.
        let mut partial = self.output.clone().into_os_string();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let write_err = |source| AnonymizeError::Write {
            path: self.output.clone(),
            source,
        };
        let written = (|| {
            let file = File::create(&partial).map_err(write_err)?;
            let (writer, _summary) = write_parquet(BufWriter::new(file), &anonymized)?;
            let file = writer.into_inner().map_err(|e| write_err(e.into_error()))?;
            file.sync_all().map_err(write_err)
        })();
        if let Err(e) = written {
            // Best effort: the error at hand matters more than a failed clean-up.
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &self.output).map_err(write_err)?;

        if let Some(path) = &self.report {
            let mut json =
                serde_json::to_vec_pretty(&anonymized.report).map_err(OutputError::from)?;
            json.push(b'\n');
            std::fs::write(path, json).map_err(|source| AnonymizeError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(anonymized.report)
    }
}

/// Reads a schema document (as the API takes it) and applies the k / l overrides, checking
/// the result by the schema rules (`k` ≥ 2, `l` ≤ `k`, …).
pub fn read_schema(
    path: &Path,
    k: Option<u32>,
    l: Option<u32>,
) -> Result<CollectionSchema, AnonymizeError> {
    let bytes = std::fs::read(path).map_err(|source| AnonymizeError::Read {
        path: path.to_owned(),
        source,
    })?;
    let doc: wire::api::SchemaDoc =
        serde_json::from_slice(&bytes).map_err(|e| AnonymizeError::SchemaSyntax {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let schema = doc.into_model()?;
    if k.is_none() && l.is_none() && schema.analytics().is_some() {
        return Ok(schema);
    }
    let analytics = match (schema.analytics(), k) {
        (Some(a), _) => AnalyticsSpec {
            k: k.unwrap_or(a.k),
            l: l.or(a.l),
            pseudonymize: a.pseudonymize.clone(),
        },
        (None, Some(k)) => AnalyticsSpec {
            k,
            l,
            pseudonymize: Vec::new(),
        },
        (None, None) => return Err(AnonymizeError::NoPolicy),
    };
    Ok(CollectionSchema::new(
        schema.fields().clone(),
        schema.required().to_vec(),
        schema.subject_field().map(str::to_owned),
        Some(analytics),
    )?)
}

/// Reads a CSV (`.csv`) or NDJSON (`.ndjson`, `.jsonl`) file into a table of `schema`.
pub fn read_table(schema: &CollectionSchema, path: &Path) -> Result<crate::Table, AnonymizeError> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let file = File::open(path).map_err(|source| AnonymizeError::Read {
        path: path.to_owned(),
        source,
    })?;
    let reader = BufReader::new(file);
    match extension.as_deref() {
        Some("csv") => read_csv(schema, reader, path),
        Some("ndjson" | "jsonl") => read_ndjson(schema, reader, path),
        _ => Err(AnonymizeError::UnknownFormat {
            path: path.to_owned(),
        }),
    }
}

fn bad_value(line: u64, row: u64, err: TableError) -> AnonymizeError {
    match err {
        TableError::UnknownColumn { column } => AnonymizeError::UnknownColumn { column },
        TableError::BadValue { column, reason, .. } => AnonymizeError::BadValue {
            line,
            row,
            column,
            reason,
        },
        TableError::BadColumn { column, reason } => AnonymizeError::BadValue {
            line,
            row,
            column,
            reason,
        },
    }
}

fn parse_cell(field_type: FieldType, raw: &str) -> Option<Cell<'_>> {
    match field_type {
        FieldType::String => Some(Cell::String(raw)),
        FieldType::Integer => raw.parse().ok().map(Cell::Integer),
        FieldType::Number => raw
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Cell::Number),
        FieldType::Boolean => match raw {
            "true" => Some(Cell::Boolean(true)),
            "false" => Some(Cell::Boolean(false)),
            _ => None,
        },
        FieldType::Timestamp => timestamp_micros(raw).map(Cell::Timestamp),
    }
}

fn read_csv(
    schema: &CollectionSchema,
    input: impl std::io::Read,
    path: &Path,
) -> Result<crate::Table, AnonymizeError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(input);
    let mut builder = TableBuilder::new(schema);
    let header = reader
        .byte_headers()
        .map_err(|e| csv_error(&e, path))?
        .clone();
    let mut columns = Vec::with_capacity(header.len());
    for raw in header.iter() {
        let name = std::str::from_utf8(raw).map_err(|_| AnonymizeError::Malformed {
            line: 1,
            reason: "the header is not UTF-8".into(),
        })?;
        let name = name.trim();
        let column = builder
            .column_index(name)
            .ok_or_else(|| AnonymizeError::UnknownColumn {
                column: name.to_owned(),
            })?;
        if columns.contains(&column) {
            return Err(AnonymizeError::DuplicateColumn {
                column: name.to_owned(),
            });
        }
        columns.push(column);
    }
    let types: Vec<FieldType> = columns
        .iter()
        .map(|&c| builder.field_type(c).expect("a schema column"))
        .collect();
    let names: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_owned())
        .collect();
    let mut record = csv::ByteRecord::new();
    let mut row = 0u64;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(&e, path)),
        }
        row += 1;
        let line = record.position().map_or(row + 1, |p| p.line());
        for (i, raw) in record.iter().enumerate() {
            if raw.is_empty() {
                continue;
            }
            let bad = |reason: &str| AnonymizeError::BadValue {
                line,
                row,
                column: names[i].clone(),
                reason: reason.to_owned(),
            };
            let text = std::str::from_utf8(raw).map_err(|_| bad("is not UTF-8"))?;
            let cell = parse_cell(types[i], text).ok_or_else(|| bad(type_reason(types[i])))?;
            builder
                .set(columns[i], cell)
                .map_err(|e| bad_value(line, row, e))?;
        }
        builder.end_row().map_err(|e| bad_value(line, row, e))?;
    }
    Ok(builder.finish())
}

/// A CSV error as our own message: the csv crate's may quote input.
fn csv_error(err: &csv::Error, path: &Path) -> AnonymizeError {
    let line = err.position().map_or(0, |p| p.line());
    match err.kind() {
        csv::ErrorKind::Io(e) => AnonymizeError::Read {
            path: path.to_owned(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => AnonymizeError::Malformed {
            line,
            reason: format!("{len} fields, but the header has {expected_len}"),
        },
        csv::ErrorKind::Utf8 { .. } => AnonymizeError::Malformed {
            line,
            reason: "not UTF-8".into(),
        },
        _ => AnonymizeError::Malformed {
            line,
            reason: "not valid CSV".into(),
        },
    }
}

fn read_ndjson(
    schema: &CollectionSchema,
    input: impl BufRead,
    path: &Path,
) -> Result<crate::Table, AnonymizeError> {
    let mut builder = TableBuilder::new(schema);
    let mut row = 0u64;
    for (i, text) in input.lines().enumerate() {
        let line = i as u64 + 1;
        let text = text.map_err(|source| match source.kind() {
            std::io::ErrorKind::InvalidData => AnonymizeError::Malformed {
                line,
                reason: "not UTF-8".into(),
            },
            _ => AnonymizeError::Read {
                path: path.to_owned(),
                source,
            },
        })?;
        if text.trim().is_empty() {
            continue;
        }
        row += 1;
        // serde_json's syntax errors name a position, never the text.
        let value: Value = serde_json::from_str(&text).map_err(|e| AnonymizeError::Malformed {
            line,
            reason: format!("not JSON (column {})", e.column()),
        })?;
        let Value::Object(record) = value else {
            return Err(AnonymizeError::Malformed {
                line,
                reason: "not a JSON object".into(),
            });
        };
        builder
            .push_json(schema, &record)
            .map_err(|e| bad_value(line, row, e))?;
    }
    Ok(builder.finish())
}
