//! The anonymization engine: a [`Table`] of one collection, its schema (with an
//! `analytics` policy) and the tenant's pseudonym key in; the released rows as one Arrow
//! [`RecordBatch`] and the privacy [`Report`] out. Pure: no IO, no logging of values.
//!
//! Per field class:
//! - `identifier`: dropped, or, if listed in `pseudonymize`, replaced by its pseudonym
//!   (see [`crate::pseudonym`]); a null stays null.
//! - `quasi_identifier`: generalized to the row's equivalence class found by strict
//!   Mondrian ([`crate::mondrian`]). Integers, numbers and timestamps become ranges in two
//!   columns `<field>_lo`, `<field>_hi` of the field's type (the least and greatest value in
//!   the class); strings follow [`STRING_GENERALIZATION`]; booleans become `true`, `false` or
//!   `*` (a `Utf8` column). Rows with any quasi-identifier absent are suppressed.
//! - `sensitive`: released as is only when `l` is set, and then only from classes holding at
//!   least `l` distinct (non-null) values of every sensitive field: l-diversity is a
//!   condition of every Mondrian cut, so only a table that is not l-diverse as a whole loses
//!   rows to it (all of them). Without `l`, sensitive fields are dropped.
//! - `public`: released as is.
//!
//! Released rows are grouped by class (classes in Mondrian order), never in input order.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray, UInt32Array,
};
use arrow_schema::{Field, Schema, SchemaRef};
use foldhash::fast::RandomState;
use model::{CollectionSchema, FieldClass, FieldType};

use crate::mondrian::{MISSING, Mondrian, Outcome, Records, Scale};
use crate::pseudonym::{PseudonymKey, PseudonymValue};
use crate::report::{FieldReport, Report, Treatment};
use crate::table::{Table, arrow_type};

/// How string quasi-identifiers are generalized, for reports and manifests.
pub const STRING_GENERALIZATION: &str = "a class's strings are released as: the value, when \
it holds one; else the longest common prefix of its least and greatest value (byte order) \
followed by `*`, when that prefix is not empty; else the set `{a,b,...}` of its values \
(sorted), when it holds at most 8; else `*`";

/// Most values a string class is released as a set of.
const MAX_SET_VALUES: usize = 8;

/// Why the engine refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("the collection's schema has no analytics section (k, l, pseudonymize)")]
    NoAnalytics,
    #[error("the table does not match the schema: {0}")]
    TableMismatch(String),
    #[error(
        "output column `{column}` would be produced twice (a field's name clashes with a range column)"
    )]
    ColumnClash { column: String },
    #[error("too many rows: at most {max}")]
    TooManyRows { max: usize },
    #[error("building the output failed: {0}")]
    Arrow(String),
}

/// Where the engine spent its time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Encoding quasi-identifiers (and sensitive values) into codes.
    pub encode: Duration,
    /// Mondrian partitioning.
    pub partition: Duration,
    /// Generalizing classes and building the output columns.
    pub build: Duration,
}

/// The released rows and the report.
#[derive(Debug, Clone)]
pub struct Anonymized {
    /// Every released row, grouped by class. Its schema is [`Anonymized::schema`].
    pub batch: RecordBatch,
    pub report: Report,
    pub timings: Timings,
}

impl Anonymized {
    pub fn schema(&self) -> SchemaRef {
        self.batch.schema()
    }

    /// The released rows as batches of at most `rows` rows each (zero-copy slices).
    pub fn batches(&self, rows: usize) -> Vec<RecordBatch> {
        let rows = rows.max(1);
        let total = self.batch.num_rows();
        (0..total.div_ceil(rows))
            .map(|i| {
                let start = i * rows;
                self.batch.slice(start, rows.min(total - start))
            })
            .collect()
    }
}

/// A quasi-identifier's dictionary: how codes map back to values.
#[derive(Debug)]
enum Dim {
    /// Integers and timestamps: `min + code`.
    Offset {
        min: i64,
        span: u64,
    },
    /// Integers and timestamps with a range too wide for `u32`: `values[code]`.
    Ints(Vec<i64>),
    Numbers(Vec<f64>),
    /// Sorted distinct strings.
    Strings(Vec<String>),
    /// `false` = 0, `true` = 1.
    Booleans,
}

impl Dim {
    fn scale(&self) -> Scale {
        match self {
            Self::Offset { span, .. } => Scale::Linear { span: *span as f64 },
            Self::Ints(values) => {
                let values: Vec<f64> = values.iter().map(|&v| v as f64).collect();
                let span = values.last().unwrap_or(&0.0) - values.first().unwrap_or(&0.0);
                Scale::Values { values, span }
            }
            Self::Numbers(values) => {
                let span = values.last().unwrap_or(&0.0) - values.first().unwrap_or(&0.0);
                Scale::Values {
                    values: values.clone(),
                    span,
                }
            }
            Self::Strings(values) => Scale::Linear {
                span: values.len().saturating_sub(1) as f64,
            },
            Self::Booleans => Scale::Linear { span: 1.0 },
        }
    }

    fn int(&self, code: u32) -> i64 {
        match self {
            Self::Offset { min, .. } => min.wrapping_add(i64::from(code)),
            Self::Ints(values) => values[code as usize],
            _ => 0,
        }
    }
}

/// Order-preserving `u64` key of an `i64`.
fn int_key(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// Order-preserving `u64` key of a finite `f64` (`-0.0` is `0.0`).
fn number_key(v: f64) -> u64 {
    let v = if v == 0.0 { 0.0 } else { v };
    let bits = v.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Dense ranks of `keys` (equal keys, equal rank; order kept), and the distinct keys' first
/// positions in `keys`.
fn rank(keys: &[u64]) -> (Vec<u32>, Vec<usize>) {
    let mut pairs: Vec<(u64, u32)> = keys
        .iter()
        .enumerate()
        .map(|(i, &k)| (k, i as u32))
        .collect();
    pairs.sort_unstable_by_key(|p| p.0);
    let mut codes = vec![0u32; keys.len()];
    let mut firsts = Vec::new();
    let mut previous = None;
    for (key, i) in pairs {
        if previous != Some(key) {
            previous = Some(key);
            firsts.push(i as usize);
        }
        codes[i as usize] = (firsts.len() - 1) as u32;
    }
    (codes, firsts)
}

/// Encodes a quasi-identifier column over the rows `rows` (all non-null).
fn encode_qi(column: &dyn Array, field_type: FieldType, rows: &Rows) -> (Vec<u32>, Dim) {
    match field_type {
        FieldType::Integer | FieldType::Timestamp => {
            let values: &[i64] = if field_type == FieldType::Integer {
                column.as_primitive::<Int64Type>().values()
            } else {
                column.as_primitive::<TimestampMicrosecondType>().values()
            };
            if rows.is_empty() {
                return (Vec::new(), Dim::Offset { min: 0, span: 0 });
            }
            let (mut min, mut max) = (i64::MAX, i64::MIN);
            rows.for_each(|i| {
                min = min.min(values[i]);
                max = max.max(values[i]);
            });
            let span = max.abs_diff(min);
            if span < u64::from(u32::MAX) {
                let codes = rows.map(|i| values[i].abs_diff(min) as u32);
                (codes, Dim::Offset { min, span })
            } else {
                let keys = rows.map(|i| int_key(values[i]));
                let (codes, firsts) = rank(&keys);
                let dict = firsts.iter().map(|&p| values[rows.get(p)]).collect();
                (codes, Dim::Ints(dict))
            }
        }
        FieldType::Number => {
            let values = column.as_primitive::<Float64Type>().values();
            let keys = rows.map(|i| number_key(values[i]));
            let (codes, firsts) = rank(&keys);
            let dict = firsts
                .iter()
                .map(|&p| {
                    let v = values[rows.get(p)];
                    if v == 0.0 { 0.0 } else { v }
                })
                .collect();
            (codes, Dim::Numbers(dict))
        }
        FieldType::Boolean => {
            let values = column.as_boolean();
            (rows.map(|i| u32::from(values.value(i))), Dim::Booleans)
        }
        FieldType::String => {
            let values = column.as_string::<i32>();
            let mut ids: HashMap<&str, u32, RandomState> = HashMap::default();
            let mut distinct: Vec<&str> = Vec::new();
            let mut codes = rows.map(|i| {
                let v = values.value(i);
                *ids.entry(v).or_insert_with(|| {
                    distinct.push(v);
                    (distinct.len() - 1) as u32
                })
            });
            let mut order: Vec<u32> = (0..distinct.len() as u32).collect();
            order.sort_unstable_by_key(|&id| distinct[id as usize]);
            let mut ranks = vec![0u32; distinct.len()];
            for (r, &id) in order.iter().enumerate() {
                ranks[id as usize] = r as u32;
            }
            for c in &mut codes {
                *c = ranks[*c as usize];
            }
            let dict = order
                .iter()
                .map(|&id| distinct[id as usize].to_owned())
                .collect();
            (codes, Dim::Strings(dict))
        }
    }
}

/// Equality codes of a sensitive column over `rows` (null = [`MISSING`]), and how many
/// distinct values there are.
fn encode_sensitive(column: &dyn Array, field_type: FieldType, rows: &Rows) -> (Vec<u32>, usize) {
    fn dense<K: std::hash::Hash + Eq>(
        rows: &Rows,
        valid: impl Fn(usize) -> bool,
        key: impl Fn(usize) -> K,
    ) -> (Vec<u32>, usize) {
        let mut ids: HashMap<K, u32, RandomState> = HashMap::default();
        let codes = rows.map(|i| {
            if !valid(i) {
                return MISSING;
            }
            let next = ids.len() as u32;
            *ids.entry(key(i)).or_insert(next)
        });
        (codes, ids.len())
    }
    let valid = |i| column.is_valid(i);
    match field_type {
        FieldType::String => {
            let values = column.as_string::<i32>();
            dense(rows, valid, |i| values.value(i))
        }
        FieldType::Integer => {
            let values = column.as_primitive::<Int64Type>();
            dense(rows, valid, |i| values.value(i))
        }
        FieldType::Timestamp => {
            let values = column.as_primitive::<TimestampMicrosecondType>();
            dense(rows, valid, |i| values.value(i))
        }
        FieldType::Number => {
            let values = column.as_primitive::<Float64Type>();
            dense(rows, valid, |i| number_key(values.value(i)))
        }
        FieldType::Boolean => {
            let values = column.as_boolean();
            let codes = rows.map(|i| {
                if valid(i) {
                    u32::from(values.value(i))
                } else {
                    MISSING
                }
            });
            (codes, 2)
        }
    }
}

/// The rows taking part in partitioning: all, or those with every quasi-identifier.
enum Rows {
    All(usize),
    Some(Vec<u32>),
}

impl Rows {
    fn len(&self) -> usize {
        match self {
            Self::All(n) => *n,
            Self::Some(v) => v.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, p: usize) -> usize {
        match self {
            Self::All(_) => p,
            Self::Some(v) => v[p] as usize,
        }
    }

    fn for_each(&self, mut f: impl FnMut(usize)) {
        match self {
            Self::All(n) => (0..*n).for_each(f),
            Self::Some(v) => v.iter().for_each(|&i| f(i as usize)),
        }
    }

    fn map<T>(&self, mut f: impl FnMut(usize) -> T) -> Vec<T> {
        match self {
            Self::All(n) => (0..*n).map(f).collect(),
            Self::Some(v) => v.iter().map(|&i| f(i as usize)).collect(),
        }
    }
}

/// A class's generalized value of one quasi-identifier.
enum Generalized {
    Ints(Vec<(i64, i64)>),
    Numbers(Vec<(f64, f64)>),
    Labels(Vec<String>),
    Flags(Vec<&'static str>),
}

/// A string column of `rows` rows: each class's value repeated as many times as the
/// class has rows (`sizes`, in class order).
fn repeated_strings<'a>(
    values: impl Iterator<Item = &'a str> + Clone,
    sizes: &[usize],
    rows: usize,
) -> ArrayRef {
    let bytes: usize = values.clone().zip(sizes).map(|(v, s)| v.len() * s).sum();
    let mut column = StringBuilder::with_capacity(rows, bytes);
    for (value, &size) in values.zip(sizes) {
        for _ in 0..size {
            column.append_value(value);
        }
    }
    Arc::new(column.finish())
}

/// The longest common prefix of `a` and `b`, cut back to a character boundary.
fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !a.is_char_boundary(n) {
        n -= 1;
    }
    &a[..n]
}

/// A string class's label and how many of the field's distinct values it covers.
fn string_label(dict: &[String], distinct_codes: &[u32]) -> (String, usize) {
    let (Some(&first), Some(&last)) = (distinct_codes.first(), distinct_codes.last()) else {
        return ("*".to_owned(), dict.len());
    };
    if distinct_codes.len() == 1 {
        return (dict[first as usize].clone(), 1);
    }
    let prefix = common_prefix(&dict[first as usize], &dict[last as usize]);
    if !prefix.is_empty() {
        let start = dict.partition_point(|v| v.as_str() < prefix);
        let covered = dict[start..].partition_point(|v| v.starts_with(prefix));
        return (format!("{prefix}*"), covered);
    }
    if distinct_codes.len() <= MAX_SET_VALUES {
        let values: Vec<&str> = distinct_codes
            .iter()
            .map(|&c| dict[c as usize].as_str())
            .collect();
        return (format!("{{{}}}", values.join(",")), distinct_codes.len());
    }
    ("*".to_owned(), dict.len())
}

/// Anonymizes `table` under `schema`'s analytics policy.
pub fn anonymize(
    table: &Table,
    schema: &CollectionSchema,
    key: &PseudonymKey,
) -> Result<Anonymized, EngineError> {
    let policy = schema.analytics().ok_or(EngineError::NoAnalytics)?;
    let fields: Vec<(&String, &model::FieldSpec)> = schema.fields().iter().collect();
    if table.names().len() != fields.len()
        || fields
            .iter()
            .zip(table.names().iter().zip(table.specs()))
            .any(|((name, spec), (tname, tspec))| *name != tname || *spec != tspec)
    {
        return Err(EngineError::TableMismatch(
            "its columns are not the schema's fields".into(),
        ));
    }
    let n = table.rows();
    if n >= u32::MAX as usize {
        return Err(EngineError::TooManyRows {
            max: u32::MAX as usize - 1,
        });
    }
    let k = policy.k.max(1) as usize;
    let l = policy.l.unwrap_or(0) as usize;
    let columns = table.columns();

    let qis: Vec<usize> = (0..fields.len())
        .filter(|&i| fields[i].1.class == FieldClass::QuasiIdentifier)
        .collect();
    let sensitive: Vec<usize> = if l > 0 {
        (0..fields.len())
            .filter(|&i| fields[i].1.class == FieldClass::Sensitive)
            .collect()
    } else {
        Vec::new()
    };

    // Output column names, checked for clashes before any work.
    let mut seen = std::collections::BTreeSet::new();
    for (name, spec) in &fields {
        for column in output_columns(name, spec, policy) {
            if !seen.insert(column.clone()) {
                return Err(EngineError::ColumnClash { column });
            }
        }
    }

    let started = Instant::now();
    let rows = if qis.iter().any(|&q| columns[q].null_count() > 0) {
        Rows::Some(
            (0..n as u32)
                .filter(|&i| qis.iter().all(|&q| columns[q].is_valid(i as usize)))
                .collect(),
        )
    } else {
        Rows::All(n)
    };
    let eligible = rows.len();
    let missing_qi = (n - eligible) as u64;

    let mut dims = Vec::with_capacity(qis.len());
    let mut qi_codes = Vec::with_capacity(qis.len());
    for &q in &qis {
        let (codes, dim) = encode_qi(columns[q].as_ref(), fields[q].1.field_type, &rows);
        qi_codes.push(codes);
        dims.push(dim);
    }
    let mut sensitive_codes = Vec::with_capacity(sensitive.len());
    let mut cardinality = Vec::with_capacity(sensitive.len());
    for &s in &sensitive {
        let (codes, distinct) =
            encode_sensitive(columns[s].as_ref(), fields[s].1.field_type, &rows);
        sensitive_codes.push(codes);
        cardinality.push(distinct);
    }
    let d = qis.len();
    let s = sensitive.len();
    let stride = d + s + 1;
    let mut data = vec![0u32; eligible * stride];
    for (j, codes) in qi_codes.iter().chain(&sensitive_codes).enumerate() {
        for (row, &c) in data.chunks_exact_mut(stride).zip(codes) {
            row[j] = c;
        }
    }
    drop(qi_codes);
    drop(sensitive_codes);
    for (p, row) in data.chunks_exact_mut(stride).enumerate() {
        row[stride - 1] = rows.get(p) as u32;
    }
    let mut records = Records { data, d, s };
    let scales: Vec<Scale> = dims.iter().map(Dim::scale).collect();
    let encoded = Instant::now();

    let outcome = Mondrian {
        k,
        l,
        scales: &scales,
        sensitive_cardinality: &cardinality,
    }
    .run(&mut records);
    let partitioned = Instant::now();

    let (mut classes, mut too_few, mut not_diverse) = match outcome {
        Outcome::Classes(classes) => (classes, 0, 0),
        Outcome::TooFewRows => (Vec::new(), eligible as u64, 0),
        Outcome::NotDiverse => (Vec::new(), 0, eligible as u64),
    };
    // Defence in depth: a class the partitioner got wrong is suppressed, not released.
    let mut stamps: Vec<Vec<u32>> = cardinality.iter().map(|&c| vec![u32::MAX; c]).collect();
    let mut l_achieved: Option<u64> = None;
    classes.retain(|class| {
        if class.len() < k {
            too_few += class.len() as u64;
            return false;
        }
        if l == 0 {
            return true;
        }
        let mut least = u64::MAX;
        for (j, st) in stamps.iter_mut().enumerate() {
            let mut count = 0u64;
            for i in class.clone() {
                let c = records.row(i)[d + j];
                if c != MISSING && st[c as usize] != class.start as u32 {
                    st[c as usize] = class.start as u32;
                    count += 1;
                }
            }
            least = least.min(count);
        }
        if least < l as u64 {
            not_diverse += class.len() as u64;
            return false;
        }
        l_achieved = Some(l_achieved.map_or(least, |a| a.min(least)));
        true
    });

    let released: usize = classes.iter().map(Range::len).sum();
    let (generalized, widths) = generalize(&records, &classes, &dims, &scales);
    let batch = build_batch(
        table,
        &fields,
        policy,
        key,
        &records,
        &classes,
        &qis,
        &generalized,
        released,
    )?;
    let built = Instant::now();

    let mut qi_ncp = vec![0.0f64; d];
    for (dim, w) in widths.iter().enumerate() {
        let total: f64 = classes
            .iter()
            .zip(w)
            .map(|(class, w)| class.len() as f64 * w)
            .sum();
        qi_ncp[dim] = if released > 0 {
            total / released as f64
        } else {
            1.0
        };
    }
    let ncp = if d == 0 {
        0.0
    } else {
        qi_ncp.iter().sum::<f64>() / d as f64
    };
    let suppressed = (n - released) as u64;
    let ncp_with_suppression = if n == 0 {
        0.0
    } else {
        (ncp * released as f64 + suppressed as f64) / n as f64
    };
    let discernibility =
        classes.iter().map(|c| (c.len() as u64).pow(2)).sum::<u64>() + suppressed * n as u64;

    let field_reports = fields
        .iter()
        .map(|(name, spec)| {
            let columns = output_columns(name, spec, policy);
            let treatment = treatment(name, spec, policy);
            let ncp = qis
                .iter()
                .position(|&q| fields[q].0 == *name)
                .map(|dim| qi_ncp[dim]);
            FieldReport {
                field: (*name).clone(),
                class: spec.class.as_str().to_owned(),
                field_type: spec.field_type.as_str().to_owned(),
                treatment,
                columns,
                ncp,
            }
        })
        .collect();
    let report = Report {
        rows_in: n as u64,
        rows_released: released as u64,
        rows_suppressed: suppressed,
        suppressed_missing_quasi_identifier: missing_qi,
        suppressed_too_few_rows: too_few,
        suppressed_not_l_diverse: not_diverse,
        classes: classes.len() as u64,
        k_requested: policy.k,
        k_achieved: classes.iter().map(|c| c.len() as u64).min(),
        l_requested: policy.l,
        l_achieved,
        ncp,
        ncp_with_suppression,
        discernibility,
        quasi_identifiers: qis.iter().map(|&q| fields[q].0.clone()).collect(),
        fields: field_reports,
    };
    Ok(Anonymized {
        batch,
        report,
        timings: Timings {
            encode: encoded - started,
            partition: partitioned - encoded,
            build: built - partitioned,
        },
    })
}

fn treatment(name: &str, spec: &model::FieldSpec, policy: &model::AnalyticsSpec) -> Treatment {
    match spec.class {
        FieldClass::Identifier if policy.pseudonymize.iter().any(|p| p == name) => {
            Treatment::Pseudonymized
        }
        FieldClass::Identifier => Treatment::Dropped,
        FieldClass::QuasiIdentifier => match spec.field_type {
            FieldType::String => Treatment::PrefixOrSet,
            FieldType::Boolean => Treatment::ValueOrStar,
            _ => Treatment::Range,
        },
        FieldClass::Sensitive if policy.l.is_some() => Treatment::AsIs,
        FieldClass::Sensitive => Treatment::Dropped,
        FieldClass::Public => Treatment::AsIs,
    }
}

/// The output columns a field becomes.
fn output_columns(
    name: &str,
    spec: &model::FieldSpec,
    policy: &model::AnalyticsSpec,
) -> Vec<String> {
    match treatment(name, spec, policy) {
        Treatment::Dropped => Vec::new(),
        Treatment::Range => vec![format!("{name}_lo"), format!("{name}_hi")],
        _ => vec![name.to_owned()],
    }
}

/// Each class's generalized value of each quasi-identifier, and its normalized width.
fn generalize(
    records: &Records,
    classes: &[Range<usize>],
    dims: &[Dim],
    scales: &[Scale],
) -> (Vec<Generalized>, Vec<Vec<f64>>) {
    let mut out = Vec::with_capacity(dims.len());
    let mut widths = Vec::with_capacity(dims.len());
    let mut scratch: Vec<u32> = Vec::new();
    for (dim, info) in dims.iter().enumerate() {
        let bounds = classes.iter().map(|class| {
            let (mut lo, mut hi) = (u32::MAX, 0u32);
            for i in class.clone() {
                let c = records.row(i)[dim];
                lo = lo.min(c);
                hi = hi.max(c);
            }
            (lo, hi)
        });
        let mut w = Vec::with_capacity(classes.len());
        let generalized = match info {
            Dim::Offset { .. } | Dim::Ints(_) => Generalized::Ints(
                bounds
                    .map(|(lo, hi)| {
                        w.push(scales[dim].width(lo, hi));
                        (info.int(lo), info.int(hi))
                    })
                    .collect(),
            ),
            Dim::Numbers(values) => Generalized::Numbers(
                bounds
                    .map(|(lo, hi)| {
                        w.push(scales[dim].width(lo, hi));
                        (values[lo as usize], values[hi as usize])
                    })
                    .collect(),
            ),
            Dim::Booleans => Generalized::Flags(
                bounds
                    .map(|(lo, hi)| {
                        w.push(f64::from(hi - lo));
                        match (lo, hi) {
                            (0, 0) => "false",
                            (1, 1) => "true",
                            _ => "*",
                        }
                    })
                    .collect(),
            ),
            Dim::Strings(dict) => {
                let total = dict.len();
                let labels = classes
                    .iter()
                    .map(|class| {
                        scratch.clear();
                        scratch.extend(class.clone().map(|i| records.row(i)[dim]));
                        scratch.sort_unstable();
                        scratch.dedup();
                        let (label, covered) = string_label(dict, &scratch);
                        w.push(if total > 1 {
                            (covered.saturating_sub(1)) as f64 / (total - 1) as f64
                        } else {
                            0.0
                        });
                        label
                    })
                    .collect();
                Generalized::Labels(labels)
            }
        };
        out.push(generalized);
        widths.push(w);
    }
    (out, widths)
}

/// An output field, with metadata naming its source field and treatment.
fn out_field(
    source: &str,
    treatment: Treatment,
    name: impl Into<String>,
    data_type: arrow_schema::DataType,
    nullable: bool,
) -> Field {
    Field::new(name, data_type, nullable).with_metadata(std::collections::HashMap::from([
        (crate::output::META_FIELD.to_owned(), source.to_owned()),
        (
            crate::output::META_TREATMENT.to_owned(),
            treatment.as_str().to_owned(),
        ),
    ]))
}

fn repeat<T: Clone>(out: &mut Vec<T>, value: T, times: usize) {
    out.extend(std::iter::repeat_n(value, times));
}

#[allow(clippy::too_many_arguments)]
fn build_batch(
    table: &Table,
    fields: &[(&String, &model::FieldSpec)],
    policy: &model::AnalyticsSpec,
    key: &PseudonymKey,
    records: &Records,
    classes: &[Range<usize>],
    qis: &[usize],
    generalized: &[Generalized],
    released: usize,
) -> Result<RecordBatch, EngineError> {
    let ids: Vec<u32> = classes
        .iter()
        .flat_map(|class| class.clone().map(|i| records.id(i)))
        .collect();
    let sizes: Vec<usize> = classes.iter().map(Range::len).collect();
    let take_indices = UInt32Array::from(ids.clone());
    let mut schema_fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (f, (name, spec)) in fields.iter().enumerate() {
        let column = &table.columns()[f];
        let treatment = treatment(name, spec, policy);
        match treatment {
            Treatment::Dropped => {}
            Treatment::Pseudonymized => {
                let mut b = StringBuilder::with_capacity(released, released * 64);
                let mut hex = [0u8; 64];
                for &id in &ids {
                    let i = id as usize;
                    if column.is_null(i) {
                        b.append_null();
                        continue;
                    }
                    let value = match spec.field_type {
                        FieldType::String => {
                            PseudonymValue::String(column.as_string::<i32>().value(i))
                        }
                        FieldType::Integer => {
                            PseudonymValue::Integer(column.as_primitive::<Int64Type>().value(i))
                        }
                        FieldType::Number => {
                            PseudonymValue::Number(column.as_primitive::<Float64Type>().value(i))
                        }
                        FieldType::Boolean => PseudonymValue::Boolean(column.as_boolean().value(i)),
                        FieldType::Timestamp => PseudonymValue::TimestampMicros(
                            column.as_primitive::<TimestampMicrosecondType>().value(i),
                        ),
                    };
                    key.pseudonym_hex(value, &mut hex);
                    b.append_value(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
                }
                schema_fields.push(out_field(
                    name,
                    treatment,
                    name.as_str(),
                    arrow_schema::DataType::Utf8,
                    true,
                ));
                arrays.push(Arc::new(b.finish()));
            }
            Treatment::AsIs => {
                let taken = arrow_select::take::take(column.as_ref(), &take_indices, None)
                    .map_err(|e| EngineError::Arrow(e.to_string()))?;
                schema_fields.push(out_field(
                    name,
                    treatment,
                    name.as_str(),
                    arrow_type(spec.field_type),
                    true,
                ));
                arrays.push(taken);
            }
            Treatment::Range | Treatment::PrefixOrSet | Treatment::ValueOrStar => {
                let dim = qis
                    .iter()
                    .position(|&q| q == f)
                    .expect("every quasi-identifier has a dimension");
                match &generalized[dim] {
                    Generalized::Ints(bounds) => {
                        let (mut lo, mut hi) =
                            (Vec::with_capacity(released), Vec::with_capacity(released));
                        for (&(a, b), &size) in bounds.iter().zip(&sizes) {
                            repeat(&mut lo, a, size);
                            repeat(&mut hi, b, size);
                        }
                        let data_type = arrow_type(spec.field_type);
                        let (lo, hi): (ArrayRef, ArrayRef) = if spec.field_type
                            == FieldType::Timestamp
                        {
                            (
                                Arc::new(TimestampMicrosecondArray::from(lo).with_timezone("UTC")),
                                Arc::new(TimestampMicrosecondArray::from(hi).with_timezone("UTC")),
                            )
                        } else {
                            (
                                Arc::new(Int64Array::from(lo)),
                                Arc::new(Int64Array::from(hi)),
                            )
                        };
                        schema_fields.push(out_field(
                            name,
                            treatment,
                            format!("{name}_lo"),
                            data_type.clone(),
                            false,
                        ));
                        schema_fields.push(out_field(
                            name,
                            treatment,
                            format!("{name}_hi"),
                            data_type,
                            false,
                        ));
                        arrays.push(lo);
                        arrays.push(hi);
                    }
                    Generalized::Numbers(bounds) => {
                        let (mut lo, mut hi) =
                            (Vec::with_capacity(released), Vec::with_capacity(released));
                        for (&(a, b), &size) in bounds.iter().zip(&sizes) {
                            repeat(&mut lo, a, size);
                            repeat(&mut hi, b, size);
                        }
                        schema_fields.push(out_field(
                            name,
                            treatment,
                            format!("{name}_lo"),
                            arrow_schema::DataType::Float64,
                            false,
                        ));
                        schema_fields.push(out_field(
                            name,
                            treatment,
                            format!("{name}_hi"),
                            arrow_schema::DataType::Float64,
                            false,
                        ));
                        arrays.push(Arc::new(Float64Array::from(lo)));
                        arrays.push(Arc::new(Float64Array::from(hi)));
                    }
                    Generalized::Labels(labels) => {
                        let labels = labels.iter().map(String::as_str);
                        arrays.push(repeated_strings(labels, &sizes, released));
                        schema_fields.push(out_field(
                            name,
                            treatment,
                            name.as_str(),
                            arrow_schema::DataType::Utf8,
                            false,
                        ));
                    }
                    Generalized::Flags(flags) => {
                        let flags = flags.iter().copied();
                        arrays.push(repeated_strings(flags, &sizes, released));
                        schema_fields.push(out_field(
                            name,
                            treatment,
                            name.as_str(),
                            arrow_schema::DataType::Utf8,
                            false,
                        ));
                    }
                }
            }
        }
    }
    let schema = Arc::new(Schema::new(schema_fields));
    let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(released));
    RecordBatch::try_new_with_options(schema, arrays, &options)
        .map_err(|e| EngineError::Arrow(e.to_string()))
}
