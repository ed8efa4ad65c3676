//! The engine's input: a column-oriented table of typed values, one Arrow array per schema
//! field, in the schema's field order. Values that are absent are nulls. Errors name the
//! row and the column, never the value (the value may be personal data).

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use model::{CollectionSchema, FieldSpec, FieldType};
use serde_json::{Map, Value};

/// The Arrow type the engine holds a field of `field_type` in: strings as `Utf8`, integers
/// as `Int64`, numbers as `Float64`, booleans as `Boolean`, timestamps as microseconds since
/// the Unix epoch in UTC (finer digits are truncated).
pub fn arrow_type(field_type: FieldType) -> DataType {
    match field_type {
        FieldType::String => DataType::Utf8,
        FieldType::Integer => DataType::Int64,
        FieldType::Number => DataType::Float64,
        FieldType::Boolean => DataType::Boolean,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// One value for [`TableBuilder::set`]. Timestamps are microseconds since the epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    String(&'a str),
    Integer(i64),
    Number(f64),
    Boolean(bool),
    Timestamp(i64),
}

/// A value or a table that does not fit the schema. Never carries the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("column `{column}` is not in the collection's schema")]
    UnknownColumn { column: String },
    #[error("row {row}, column `{column}`: {reason}")]
    BadValue {
        /// 0-based row of the table.
        row: usize,
        column: String,
        reason: String,
    },
    #[error("column `{column}`: {reason}")]
    BadColumn { column: String, reason: String },
}

/// A table of records of one collection: one array per schema field, schema order.
#[derive(Debug, Clone)]
pub struct Table {
    names: Vec<String>,
    specs: Vec<FieldSpec>,
    columns: Vec<ArrayRef>,
    rows: usize,
}

impl Table {
    /// A table from whole columns, given in the schema's field order, each of the field's
    /// [`arrow_type`] and all of one length.
    pub fn from_columns(
        schema: &CollectionSchema,
        columns: Vec<ArrayRef>,
    ) -> Result<Self, TableError> {
        let fields = schema.fields();
        if columns.len() != fields.len() {
            return Err(TableError::BadColumn {
                column: String::new(),
                reason: format!(
                    "expected {} columns (one per schema field), got {}",
                    fields.len(),
                    columns.len()
                ),
            });
        }
        let rows = columns.first().map_or(0, |c| c.len());
        for ((name, spec), column) in fields.iter().zip(&columns) {
            let expected = arrow_type(spec.field_type);
            if column.data_type() != &expected {
                return Err(TableError::BadColumn {
                    column: name.clone(),
                    reason: format!("must be {expected}, not {}", column.data_type()),
                });
            }
            if column.len() != rows {
                return Err(TableError::BadColumn {
                    column: name.clone(),
                    reason: format!("has {} rows, the first column {rows}", column.len()),
                });
            }
            if spec.field_type == FieldType::Number {
                let values = column
                    .as_any()
                    .downcast_ref::<arrow_array::Float64Array>()
                    .expect("checked type");
                if let Some(row) =
                    (0..rows).find(|&i| values.is_valid(i) && !values.value(i).is_finite())
                {
                    return Err(TableError::BadValue {
                        row,
                        column: name.clone(),
                        reason: "must be a finite number".into(),
                    });
                }
            }
        }
        Ok(Self {
            names: fields.keys().cloned().collect(),
            specs: fields.values().cloned().collect(),
            columns,
            rows,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Field names, in schema order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn specs(&self) -> &[FieldSpec] {
        &self.specs
    }

    pub fn columns(&self) -> &[ArrayRef] {
        &self.columns
    }

    /// The column of field `name`.
    pub fn column(&self, name: &str) -> Option<&ArrayRef> {
        let i = self.names.iter().position(|n| n == name)?;
        self.columns.get(i)
    }
}

enum ColumnBuilder {
    String(StringBuilder),
    Integer(Int64Builder),
    Number(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl ColumnBuilder {
    fn new(field_type: FieldType) -> Self {
        match field_type {
            FieldType::String => Self::String(StringBuilder::new()),
            FieldType::Integer => Self::Integer(Int64Builder::new()),
            FieldType::Number => Self::Number(Float64Builder::new()),
            FieldType::Boolean => Self::Boolean(BooleanBuilder::new()),
            FieldType::Timestamp => Self::Timestamp(TimestampMicrosecondBuilder::new()),
        }
    }

    fn append_null(&mut self) {
        match self {
            Self::String(b) => b.append_null(),
            Self::Integer(b) => b.append_null(),
            Self::Number(b) => b.append_null(),
            Self::Boolean(b) => b.append_null(),
            Self::Timestamp(b) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::String(mut b) => Arc::new(b.finish()),
            Self::Integer(mut b) => Arc::new(b.finish()),
            Self::Number(mut b) => Arc::new(b.finish()),
            Self::Boolean(mut b) => Arc::new(b.finish()),
            Self::Timestamp(mut b) => Arc::new(b.finish().with_timezone(Arc::<str>::from("UTC"))),
        }
    }
}

/// Builds a [`Table`] row by row: [`set`](Self::set) the present values of a row, then
/// [`end_row`](Self::end_row); values not set are null.
pub struct TableBuilder {
    names: Vec<String>,
    specs: Vec<FieldSpec>,
    required: Vec<usize>,
    builders: Vec<ColumnBuilder>,
    filled: Vec<bool>,
    rows: usize,
}

impl std::fmt::Debug for TableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBuilder")
            .field("names", &self.names)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl TableBuilder {
    pub fn new(schema: &CollectionSchema) -> Self {
        let names: Vec<String> = schema.fields().keys().cloned().collect();
        let specs: Vec<FieldSpec> = schema.fields().values().cloned().collect();
        let required = schema
            .required()
            .iter()
            .filter_map(|r| names.iter().position(|n| n == r))
            .collect();
        let builders = specs
            .iter()
            .map(|s| ColumnBuilder::new(s.field_type))
            .collect();
        Self {
            filled: vec![false; names.len()],
            names,
            specs,
            required,
            builders,
            rows: 0,
        }
    }

    /// The index of field `name`, for [`set`](Self::set).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn field_type(&self, column: usize) -> Option<FieldType> {
        self.specs.get(column).map(|s| s.field_type)
    }

    /// Rows finished so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn bad(&self, column: usize, reason: impl Into<String>) -> TableError {
        TableError::BadValue {
            row: self.rows,
            column: self.names.get(column).cloned().unwrap_or_default(),
            reason: reason.into(),
        }
    }

    /// Sets a value of the current row. A value of the wrong type, a non-finite number, or
    /// a column set twice in one row is refused and leaves the row as it was.
    pub fn set(&mut self, column: usize, cell: Cell<'_>) -> Result<(), TableError> {
        let Some(spec) = self.specs.get(column) else {
            return Err(TableError::UnknownColumn {
                column: format!("#{column}"),
            });
        };
        if self.filled[column] {
            return Err(self.bad(column, "is given twice"));
        }
        let expected = spec.field_type;
        match (&mut self.builders[column], cell) {
            (ColumnBuilder::String(b), Cell::String(s)) => b.append_value(s),
            (ColumnBuilder::Integer(b), Cell::Integer(v)) => b.append_value(v),
            (ColumnBuilder::Number(b), Cell::Number(v)) if v.is_finite() => b.append_value(v),
            (ColumnBuilder::Number(b), Cell::Integer(v)) => b.append_value(v as f64),
            (ColumnBuilder::Boolean(b), Cell::Boolean(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Cell::Timestamp(v)) => b.append_value(v),
            _ => return Err(self.bad(column, type_reason(expected))),
        }
        self.filled[column] = true;
        Ok(())
    }

    /// Ends the current row: columns not set are null. A required field left unset is
    /// refused; the row is then discarded.
    pub fn end_row(&mut self) -> Result<(), TableError> {
        let missing = self.required.iter().copied().find(|&c| !self.filled[c]);
        for (c, filled) in self.filled.iter_mut().enumerate() {
            if !*filled {
                self.builders[c].append_null();
            }
            *filled = false;
        }
        if let Some(c) = missing {
            // Roll the row back so the table stays rectangular and holds only good rows.
            self.rollback_last();
            return Err(self.bad(c, "is required"));
        }
        self.rows += 1;
        Ok(())
    }

    /// Drops the values set so far in the current row (after a refused value).
    pub fn discard_row(&mut self) {
        if self.filled.iter().any(|f| *f) {
            self.rollback_last();
        }
        self.filled.iter_mut().for_each(|f| *f = false);
    }

    /// Cuts every builder back to the rows finished so far. Arrow builders cannot pop, so
    /// this rebuilds; it only runs on a refused row, after which callers stop.
    fn rollback_last(&mut self) {
        let keep = self.rows;
        for (builder, spec) in self.builders.iter_mut().zip(&self.specs) {
            let old = std::mem::replace(builder, ColumnBuilder::new(spec.field_type)).finish();
            let kept = old.slice(0, keep);
            append_array(builder, kept.as_ref());
        }
    }

    /// Appends a JSON record (`data` of a record, as the API carries it): checked against
    /// the schema first, so errors name the field and never the value.
    pub fn push_json(
        &mut self,
        schema: &CollectionSchema,
        record: &Map<String, Value>,
    ) -> Result<(), TableError> {
        schema.validate_record(record).map_err(|e| {
            if schema.field(&e.field).is_none() {
                TableError::UnknownColumn { column: e.field }
            } else {
                TableError::BadValue {
                    row: self.rows,
                    column: e.field,
                    reason: e.reason,
                }
            }
        })?;
        for (name, value) in record {
            let column = self
                .column_index(name)
                .ok_or_else(|| TableError::UnknownColumn {
                    column: name.clone(),
                })?;
            let cell = match (self.specs[column].field_type, value) {
                (FieldType::String, Value::String(s)) => Cell::String(s),
                (FieldType::Integer, Value::Number(n)) => match n.as_i64() {
                    Some(v) => Cell::Integer(v),
                    None => {
                        self.discard_row();
                        return Err(self.bad(column, type_reason(FieldType::Integer)));
                    }
                },
                (FieldType::Number, Value::Number(n)) => match n.as_f64() {
                    Some(v) => Cell::Number(v),
                    None => {
                        self.discard_row();
                        return Err(self.bad(column, type_reason(FieldType::Number)));
                    }
                },
                (FieldType::Boolean, Value::Bool(b)) => Cell::Boolean(*b),
                (FieldType::Timestamp, Value::String(s)) => match timestamp_micros(s) {
                    Some(v) => Cell::Timestamp(v),
                    None => {
                        self.discard_row();
                        return Err(self.bad(column, type_reason(FieldType::Timestamp)));
                    }
                },
                (t, _) => {
                    self.discard_row();
                    return Err(self.bad(column, type_reason(t)));
                }
            };
            if let Err(e) = self.set(column, cell) {
                self.discard_row();
                return Err(e);
            }
        }
        self.end_row()
    }

    pub fn finish(self) -> Table {
        Table {
            names: self.names,
            specs: self.specs,
            columns: self
                .builders
                .into_iter()
                .map(ColumnBuilder::finish)
                .collect(),
            rows: self.rows,
        }
    }
}

fn append_array(builder: &mut ColumnBuilder, array: &dyn Array) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    match builder {
        ColumnBuilder::String(b) => b.extend(array.as_string::<i32>().iter()),
        ColumnBuilder::Integer(b) => b.extend(array.as_primitive::<Int64Type>().iter()),
        ColumnBuilder::Number(b) => b.extend(array.as_primitive::<Float64Type>().iter()),
        ColumnBuilder::Boolean(b) => b.extend(array.as_boolean().iter()),
        ColumnBuilder::Timestamp(b) => {
            b.extend(array.as_primitive::<TimestampMicrosecondType>().iter())
        }
    }
}

/// Why a value is not of `field_type`; never contains the value.
pub(crate) fn type_reason(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::String => "must be a string",
        FieldType::Integer => "must be an integer within i64",
        FieldType::Number => "must be a finite number",
        FieldType::Boolean => "must be a boolean (true or false)",
        FieldType::Timestamp => "must be an RFC 3339 timestamp",
    }
}

/// An RFC 3339 timestamp as microseconds since the epoch (UTC), finer digits truncated.
pub fn timestamp_micros(raw: &str) -> Option<i64> {
    let (seconds, nanos) = model::parse_timestamp(raw)?;
    seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(nanos / 1_000))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use model::{FieldClass, FieldSpec};
    use serde_json::json;

    use super::*;

    fn schema() -> CollectionSchema {
        let spec = FieldSpec::unindexed;
        let fields = BTreeMap::from([
            (
                "age".to_owned(),
                spec(FieldType::Integer, FieldClass::QuasiIdentifier),
            ),
            (
                "email".to_owned(),
                spec(FieldType::String, FieldClass::Identifier),
            ),
            (
                "seen".to_owned(),
                spec(FieldType::Timestamp, FieldClass::Public),
            ),
        ]);
        CollectionSchema::new(fields, vec!["email".into()], None, None).expect("valid")
    }

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn json_records_fill_columns_and_absent_values_are_null() {
        let schema = schema();
        let mut b = TableBuilder::new(&schema);
        b.push_json(&schema, &object(json!({"email": "a@x", "age": 30})))
            .expect("row 0");
        b.push_json(
            &schema,
            &object(json!({"email": "b@x", "seen": "1970-01-01T00:00:01.5Z"})),
        )
        .expect("row 1");
        let t = b.finish();
        assert_eq!(t.rows(), 2);
        let age = t.column("age").expect("age").as_primitive::<Int64Type>();
        assert_eq!(age.value(0), 30);
        assert!(age.is_null(1));
        let seen = t.column("seen").expect("seen");
        assert_eq!(seen.data_type(), &arrow_type(FieldType::Timestamp));
        assert_eq!(
            seen.as_primitive::<arrow_array::types::TimestampMicrosecondType>()
                .value(1),
            1_500_000
        );
    }

    #[test]
    fn refused_rows_leave_the_table_rectangular_and_never_echo_values() {
        let schema = schema();
        let mut b = TableBuilder::new(&schema);
        b.push_json(&schema, &object(json!({"email": "a@x"})))
            .expect("row 0");
        let secret = "secret-value-123";
        let err = b
            .push_json(&schema, &object(json!({"email": "b@x", "age": secret})))
            .expect_err("wrong type");
        assert!(!err.to_string().contains(secret), "{err}");
        assert_eq!(
            err,
            TableError::BadValue {
                row: 1,
                column: "age".into(),
                reason: "must be an integer".into()
            }
        );
        let err = b
            .push_json(&schema, &object(json!({"email": "b@x", "phone": secret})))
            .expect_err("unknown");
        assert_eq!(
            err,
            TableError::UnknownColumn {
                column: "phone".into()
            }
        );
        let err = b
            .push_json(&schema, &object(json!({"age": 3})))
            .expect_err("required");
        assert!(err.to_string().contains("email"), "{err}");

        // The same with cells set by hand: a wrong type, then a required field missing.
        let age = b.column_index("age").expect("age");
        let email = b.column_index("email").expect("email");
        b.set(email, Cell::String("c@x")).expect("email");
        assert!(b.set(age, Cell::String(secret)).is_err());
        b.discard_row();
        b.set(age, Cell::Integer(4)).expect("age");
        assert!(b.end_row().is_err());
        let t = b.finish();
        assert_eq!(t.rows(), 1);
        assert!(t.columns().iter().all(|c| c.len() == 1));
    }

    #[test]
    fn from_columns_checks_types_and_lengths() {
        let schema = schema();
        let ok: Vec<ArrayRef> = vec![
            Arc::new(arrow_array::Int64Array::from(vec![1, 2])),
            Arc::new(arrow_array::StringArray::from(vec!["a", "b"])),
            Arc::new(arrow_array::TimestampMicrosecondArray::from(vec![1, 2]).with_timezone("UTC")),
        ];
        assert_eq!(
            Table::from_columns(&schema, ok.clone()).expect("ok").rows(),
            2
        );
        let mut bad = ok.clone();
        bad[2] =
            Arc::new(arrow_array::TimestampMicrosecondArray::from(vec![1]).with_timezone("UTC"));
        assert!(matches!(
            Table::from_columns(&schema, bad),
            Err(TableError::BadColumn { column, .. }) if column == "seen"
        ));
        let mut bad = ok;
        bad[1] = Arc::new(arrow_array::Int64Array::from(vec![1, 2]));
        assert!(Table::from_columns(&schema, bad).is_err());
    }
}
