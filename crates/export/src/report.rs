//! The privacy report of one anonymization: what went in, what was released, the
//! guarantee achieved (k, l), the information lost (NCP, discernibility), and what became
//! of every field. Serializable to JSON and printable as a plain-text table. Holds no
//! values of the data, only counts, measures and field names.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// What the engine did with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Treatment {
    /// Not released: identifiers not listed in `pseudonymize`, and sensitive fields when
    /// `l` is not set.
    Dropped,
    /// Released as HMAC-SHA256 under the tenant's export key, 64 lowercase hex digits.
    Pseudonymized,
    /// A quasi-identifier released as its class's range, columns `<field>_lo` and
    /// `<field>_hi` (integers, numbers, timestamps).
    Range,
    /// A string quasi-identifier released as its class's value, common prefix + `*`, value
    /// set `{a,b}` or `*` (see [`crate::STRING_GENERALIZATION`]).
    PrefixOrSet,
    /// A boolean quasi-identifier released as `true`, `false` or `*`.
    ValueOrStar,
    /// Released as it is (public fields; sensitive fields from l-diverse classes).
    AsIs,
}

impl Treatment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dropped => "dropped",
            Self::Pseudonymized => "pseudonymized",
            Self::Range => "range",
            Self::PrefixOrSet => "prefix_or_set",
            Self::ValueOrStar => "value_or_star",
            Self::AsIs => "as_is",
        }
    }
}

/// What became of one schema field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldReport {
    pub field: String,
    /// `identifier`, `quasi_identifier`, `sensitive` or `public`.
    pub class: String,
    /// `string`, `integer`, `number`, `boolean` or `timestamp`.
    pub field_type: String,
    pub treatment: Treatment,
    /// Output columns holding it (none when dropped).
    pub columns: Vec<String>,
    /// A quasi-identifier's information loss over the released rows, in `[0, 1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ncp: Option<f64>,
}

/// The privacy report. Row counts are `u64`; measures are `f64`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub rows_in: u64,
    pub rows_released: u64,
    /// Always `rows_in - rows_released`; the three counts below add up to it.
    pub rows_suppressed: u64,
    /// Rows with a quasi-identifier absent (null): never released.
    pub suppressed_missing_quasi_identifier: u64,
    /// Rows not released because fewer than `k` rows were left to release.
    pub suppressed_too_few_rows: u64,
    /// Rows not released because no l-diverse class could hold them.
    pub suppressed_not_l_diverse: u64,
    /// Equivalence classes released.
    pub classes: u64,
    pub k_requested: u32,
    /// The smallest released class; `None` when nothing is released.
    pub k_achieved: Option<u64>,
    pub l_requested: Option<u32>,
    /// The fewest distinct values of a sensitive field in a released class; `None` when
    /// `l` is not asked or nothing is released.
    pub l_achieved: Option<u64>,
    /// Normalized certainty penalty over the released rows: the mean, over released rows
    /// and quasi-identifiers, of the generalized value's share of the field's whole range
    /// (0 = exact, 1 = fully generalized). 1 when nothing is released.
    pub ncp: f64,
    /// The same with every suppressed row counted as fully generalized (1).
    pub ncp_with_suppression: f64,
    /// Discernibility metric: the sum over classes of size², plus rows_in for each
    /// suppressed row.
    pub discernibility: u64,
    pub quasi_identifiers: Vec<String>,
    pub fields: Vec<FieldReport>,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn optional<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The report as a plain-text table, as `residency anonymize` prints it.
pub fn render_report(report: &Report) -> String {
    let mut out = String::new();
    let r = report;
    let rows: Vec<(&str, String)> = vec![
        ("rows in", r.rows_in.to_string()),
        (
            "rows released",
            format!(
                "{} ({:.2}%)",
                r.rows_released,
                percent(r.rows_released, r.rows_in)
            ),
        ),
        (
            "rows suppressed",
            format!(
                "{} ({:.2}%)",
                r.rows_suppressed,
                percent(r.rows_suppressed, r.rows_in)
            ),
        ),
        (
            "  missing quasi-identifier",
            r.suppressed_missing_quasi_identifier.to_string(),
        ),
        (
            "  too few rows for k",
            r.suppressed_too_few_rows.to_string(),
        ),
        ("  not l-diverse", r.suppressed_not_l_diverse.to_string()),
        ("classes", r.classes.to_string()),
        (
            "k requested / achieved",
            format!("{} / {}", r.k_requested, optional(r.k_achieved)),
        ),
        (
            "l requested / achieved",
            format!("{} / {}", optional(r.l_requested), optional(r.l_achieved)),
        ),
        ("NCP (released rows)", format!("{:.4}", r.ncp)),
        (
            "NCP (suppressed as 1)",
            format!("{:.4}", r.ncp_with_suppression),
        ),
        ("discernibility", r.discernibility.to_string()),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    out.push_str("privacy report\n");
    for (label, value) in &rows {
        let _ = writeln!(out, "  {label:<width$}  {value}");
    }
    out.push('\n');

    let header = ["field", "class", "type", "treatment", "columns", "NCP"];
    let table: Vec<[String; 6]> = r
        .fields
        .iter()
        .map(|f| {
            [
                f.field.clone(),
                f.class.clone(),
                f.field_type.clone(),
                f.treatment.as_str().to_owned(),
                if f.columns.is_empty() {
                    "-".to_owned()
                } else {
                    f.columns.join(", ")
                },
                f.ncp.map_or_else(|| "-".to_owned(), |v| format!("{v:.4}")),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::from(" ");
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(s, " {cell:<w$} ");
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&header));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let rule: Vec<&str> = rule.iter().map(String::as_str).collect();
    let _ = writeln!(out, "{}", line(&rule));
    for row in &table {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", line(&cells));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_fields() {
        let report = Report {
            rows_in: 100,
            rows_released: 90,
            rows_suppressed: 10,
            suppressed_missing_quasi_identifier: 4,
            suppressed_too_few_rows: 0,
            suppressed_not_l_diverse: 6,
            classes: 8,
            k_requested: 10,
            k_achieved: Some(10),
            l_requested: None,
            l_achieved: None,
            ncp: 0.25,
            ncp_with_suppression: 0.325,
            discernibility: 2000,
            quasi_identifiers: vec!["age".into()],
            fields: vec![FieldReport {
                field: "age".into(),
                class: "quasi_identifier".into(),
                field_type: "integer".into(),
                treatment: Treatment::Range,
                columns: vec!["age_lo".into(), "age_hi".into()],
                ncp: Some(0.25),
            }],
        };
        let text = render_report(&report);
        assert!(text.contains("rows released"), "{text}");
        assert!(text.contains("90 (90.00%)"), "{text}");
        assert!(text.contains("10 / 10"), "{text}");
        assert!(text.contains("age_lo, age_hi"), "{text}");
        let json = serde_json::to_string(&report).expect("json");
        let back: Report = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, report);
    }
}
