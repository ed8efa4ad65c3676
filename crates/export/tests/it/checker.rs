//! An independent checker: reads a Parquet file with the parquet crate's reader, groups its
//! rows by the generalized quasi-identifier columns it is told about, and checks every
//! group's size and sensitive diversity. It uses nothing of the engine.

use std::collections::{BTreeMap, BTreeSet};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Reads every batch of a Parquet file held in memory.
pub fn read_parquet(bytes: &[u8]) -> Vec<RecordBatch> {
    let bytes = bytes::Bytes::copy_from_slice(bytes);
    ParquetRecordBatchReaderBuilder::try_new(bytes)
        .expect("a parquet file")
        .build()
        .expect("a reader")
        .map(|b| b.expect("a batch"))
        .collect()
}

/// A cell as a comparable string, for any type the output uses.
pub fn cell(array: &dyn Array, row: usize) -> Option<String> {
    if array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => format!("{:?}", array.as_primitive::<Float64Type>().value(row)),
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Timestamp(_, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .to_string(),
        other => panic!("unexpected column type {other}"),
    })
}

/// A group's size and the distinct values of each sensitive column in it.
type Group = (usize, Vec<BTreeSet<String>>);

/// What the checker found.
#[derive(Debug)]
pub struct Checked {
    pub rows: usize,
    pub groups: usize,
    pub smallest: usize,
    /// Fewest distinct values of a sensitive column in a group.
    pub least_diverse: Option<usize>,
}

/// Groups rows by `qi_columns` and checks every group has at least `k` rows and at least
/// `l` distinct non-null values in each of `sensitive_columns`. Panics naming the failure.
pub fn check(
    batches: &[RecordBatch],
    qi_columns: &[&str],
    sensitive_columns: &[&str],
    k: usize,
    l: usize,
) -> Checked {
    let mut groups: BTreeMap<Vec<Option<String>>, Group> = BTreeMap::new();
    let mut rows = 0;
    for batch in batches {
        let columns = |names: &[&str]| -> Vec<_> {
            names
                .iter()
                .map(|c| {
                    batch
                        .column_by_name(c)
                        .unwrap_or_else(|| panic!("no column {c}"))
                })
                .collect()
        };
        let qis = columns(qi_columns);
        let sensitive = columns(sensitive_columns);
        for row in 0..batch.num_rows() {
            rows += 1;
            let key: Vec<Option<String>> = qis.iter().map(|a| cell(a.as_ref(), row)).collect();
            assert!(key.iter().all(Option::is_some), "a null quasi-identifier");
            let entry = groups
                .entry(key)
                .or_insert_with(|| (0, vec![BTreeSet::new(); sensitive.len()]));
            entry.0 += 1;
            for (set, array) in entry.1.iter_mut().zip(&sensitive) {
                if let Some(v) = cell(array.as_ref(), row) {
                    set.insert(v);
                }
            }
        }
    }
    for (key, (size, sets)) in &groups {
        assert!(*size >= k, "group {key:?} has {size} rows < k = {k}");
        for (set, name) in sets.iter().zip(sensitive_columns) {
            assert!(
                set.len() >= l,
                "group {key:?} has {} distinct {name} < l = {l}",
                set.len()
            );
        }
    }
    Checked {
        rows,
        groups: groups.len(),
        smallest: groups.values().map(|g| g.0).min().unwrap_or(0),
        least_diverse: groups
            .values()
            .flat_map(|g| g.1.iter().map(BTreeSet::len))
            .min(),
    }
}
