//! The offline anonymizer end to end: schema file + CSV/NDJSON in, Parquet + report out,
//! checked by the independent checker; planted identifiers never in the output; bad input
//! refused with errors that name the column and never the value.

use std::collections::BTreeSet;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use export::{AnonymizeError, AnonymizeFile, PseudonymKey, Report, anonymize_file, render_report};

use crate::checker::{check, read_parquet};
use crate::data::{self, PLANTED, QI_COLUMNS};

struct Run {
    report: Report,
    bytes: Vec<u8>,
}

/// The CSV of `rows` anonymized under the test schema with `k` and `l`, no overrides.
fn anonymize_csv(rows: &[data::Row], k: u32, l: Option<u32>) -> Run {
    run_file(
        "in.csv",
        &data::csv(rows),
        &data::schema_json(k, l),
        None,
        None,
        None,
    )
    .expect("anonymize")
}

fn run_file(
    input_name: &str,
    contents: &str,
    schema: &str,
    k: Option<u32>,
    l: Option<u32>,
    key: Option<[u8; 32]>,
) -> Result<Run, AnonymizeError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = data::write(dir.path(), "schema.json", schema);
    let input = data::write(dir.path(), input_name, contents);
    let output = dir.path().join("out.parquet");
    let report_path = dir.path().join("report.json");
    let report = AnonymizeFile {
        schema,
        input,
        output: output.clone(),
        k,
        l,
        report: Some(report_path.clone()),
        key: key.map(|k| PseudonymKey::new(&k)),
    }
    .run()?;
    // Compared as parsed JSON: serde_json's float parsing may differ in the last bit.
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report file"))
            .expect("report json");
    let expected: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).expect("json")).expect("json");
    assert_eq!(written, expected);
    assert!(!dir.path().join("out.parquet.partial").exists());
    Ok(Run {
        report,
        bytes: std::fs::read(&output).expect("output file"),
    })
}

fn assert_consistent(report: &Report, rows_in: usize) {
    assert_eq!(report.rows_in, rows_in as u64);
    assert_eq!(
        report.rows_released + report.rows_suppressed,
        report.rows_in
    );
    assert_eq!(
        report.suppressed_missing_quasi_identifier
            + report.suppressed_too_few_rows
            + report.suppressed_not_l_diverse,
        report.rows_suppressed
    );
    assert!((0.0..=1.0).contains(&report.ncp), "{}", report.ncp);
    assert!(report.ncp_with_suppression >= report.ncp || report.rows_released == 0);
    let sizes_squared_at_least = report.rows_released; // every class holds ≥ 1 row
    assert!(report.discernibility >= sizes_squared_at_least);
}

fn assert_no_planted_bytes(bytes: &[u8]) {
    let needle = PLANTED.as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "a planted identifier reached the output"
    );
    for needle in [&b"mail.example"[..], b"Person "] {
        assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    }
}

#[test]
fn csv_input_is_k_anonymous_and_leaks_no_identifier() {
    let rows = data::rows(3_000);
    let run = anonymize_csv(&rows, 10, None);
    let r = &run.report;
    assert_consistent(r, rows.len());
    let missing = rows.iter().filter(|r| r.age.is_none()).count() as u64;
    assert_eq!(r.suppressed_missing_quasi_identifier, missing);
    assert_eq!(r.rows_suppressed, missing);
    assert!(r.k_achieved.is_some_and(|k| k >= 10));
    assert_eq!(r.l_achieved, None);

    let batches = read_parquet(&run.bytes);
    let checked = check(&batches, &QI_COLUMNS, &[], 10, 0);
    assert_eq!(checked.rows as u64, r.rows_released);
    assert!(checked.smallest >= 10);
    assert!(checked.groups as u64 <= r.classes);
    assert_no_planted_bytes(&run.bytes);

    // Without l, the sensitive field is not released; identifiers not pseudonymized are
    // dropped; public fields are.
    let schema = batches[0].schema();
    let names: BTreeSet<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert!(!names.contains("diagnosis") && !names.contains("name"));
    assert!(names.contains("plan") && names.contains("email"));
    let text = render_report(r);
    assert!(text.contains("rows suppressed"), "{text}");
}

#[test]
fn ndjson_input_with_l_diversity_passes_the_independent_checker() {
    let rows = data::rows(2_000);
    let run = run_file(
        "in.ndjson",
        &data::ndjson(&rows),
        &data::schema_json(5, Some(3)),
        None,
        None,
        None,
    )
    .expect("anonymize");
    let r = &run.report;
    assert_consistent(r, rows.len());
    assert_eq!(r.l_requested, Some(3));
    assert!(r.l_achieved.is_some_and(|l| l >= 3), "{r:?}");
    let batches = read_parquet(&run.bytes);
    let checked = check(&batches, &QI_COLUMNS, &["diagnosis"], 5, 3);
    assert_eq!(checked.rows as u64, r.rows_released);
    assert!(checked.least_diverse.is_some_and(|l| l >= 3));
    assert_no_planted_bytes(&run.bytes);
}

#[test]
fn csv_and_ndjson_of_the_same_rows_release_the_same_table() {
    let rows = data::rows(500);
    let key = Some([9; 32]);
    let schema = data::schema_json(4, None);
    let a = run_file("in.csv", &data::csv(&rows), &schema, None, None, key).expect("csv");
    let b = run_file("in.jsonl", &data::ndjson(&rows), &schema, None, None, key).expect("ndjson");
    assert_eq!(a.report, b.report);
    assert_eq!(read_parquet(&a.bytes), read_parquet(&b.bytes));
}

fn pseudonyms(bytes: &[u8]) -> Vec<String> {
    read_parquet(bytes)
        .iter()
        .flat_map(|b| {
            let col = b
                .column_by_name("email")
                .expect("email column")
                .as_string::<i32>()
                .clone();
            (0..col.len()).map(move |i| col.value(i).to_owned())
        })
        .collect()
}

#[test]
fn pseudonyms_are_stable_per_key_and_differ_across_keys() {
    let rows = data::rows(300);
    let csv = data::csv(&rows);
    let schema = data::schema_json(3, None);
    let first = run_file("in.csv", &csv, &schema, None, None, Some([1; 32])).expect("run 1");
    let again = run_file("in.csv", &csv, &schema, None, None, Some([1; 32])).expect("run 2");
    let other = run_file("in.csv", &csv, &schema, None, None, Some([2; 32])).expect("run 3");
    let p1 = pseudonyms(&first.bytes);
    assert_eq!(p1, pseudonyms(&again.bytes));
    let mine: BTreeSet<_> = p1.iter().collect();
    let theirs: BTreeSet<_> = pseudonyms(&other.bytes).into_iter().collect();
    assert!(mine.iter().all(|p| !theirs.contains(*p)));

    // Independently: HMAC-SHA256(key, 0x01 || email), hex.
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &[1; 32]);
    let expected: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.age.is_some())
        .map(|r| {
            let mut msg = vec![0x01];
            msg.extend_from_slice(r.email.as_bytes());
            hex::encode(aws_lc_rs::hmac::sign(&key, &msg).as_ref())
        })
        .collect();
    let got: BTreeSet<String> = p1.into_iter().collect();
    assert_eq!(got, expected);
}

#[test]
fn fewer_rows_than_k_are_all_suppressed() {
    let rows = data::rows(8);
    let run = anonymize_csv(&rows, 10, None);
    assert_eq!(run.report.rows_released, 0);
    assert_eq!(run.report.k_achieved, None);
    assert_eq!(
        run.report.suppressed_too_few_rows + run.report.suppressed_missing_quasi_identifier,
        8
    );
    assert_consistent(&run.report, 8);
    assert!(read_parquet(&run.bytes).iter().all(|b| b.num_rows() == 0));
    assert_no_planted_bytes(&run.bytes);
}

#[test]
fn overrides_change_the_policy_and_are_checked() {
    let rows = data::rows(400);
    let csv = data::csv(&rows);
    let run = run_file(
        "in.csv",
        &csv,
        &data::schema_json(2, None),
        Some(25),
        Some(2),
        None,
    )
    .expect("anonymize");
    assert_eq!(run.report.k_requested, 25);
    assert_eq!(run.report.l_requested, Some(2));
    check(
        &read_parquet(&run.bytes),
        &QI_COLUMNS,
        &["diagnosis"],
        25,
        2,
    );

    let err = run_file(
        "in.csv",
        &csv,
        &data::schema_json(2, None),
        Some(1),
        None,
        None,
    )
    .err()
    .expect("k = 1 refused");
    assert!(
        matches!(&err, AnonymizeError::Schema(e) if e.field == "analytics.k"),
        "{err}"
    );
    let err = run_file(
        "in.csv",
        &csv,
        &data::schema_json(5, None),
        None,
        Some(6),
        None,
    )
    .err()
    .expect("l > k refused");
    assert!(
        matches!(&err, AnonymizeError::Schema(e) if e.field == "analytics.l"),
        "{err}"
    );

    // A schema without analytics needs --k.
    let plain = data::schema_json(2, None).replace(
        r#",
  "analytics": {"k": 2, "pseudonymize": ["email"]}"#,
        "",
    );
    assert!(!plain.contains("analytics"));
    let err = run_file("in.csv", &csv, &plain, None, None, None)
        .err()
        .expect("no policy");
    assert!(matches!(err, AnonymizeError::NoPolicy), "{err}");
    let run = run_file("in.csv", &csv, &plain, Some(5), None, None).expect("k given");
    assert_eq!(run.report.k_requested, 5);
    // Without `pseudonymize`, the email is dropped too.
    assert!(
        read_parquet(&run.bytes)[0]
            .column_by_name("email")
            .is_none()
    );
}

#[test]
fn bad_input_names_the_column_and_never_the_value() {
    let secret = "s3cr3t-v4lue";
    let schema = data::schema_json(2, None);
    let header = "email,name,age,zip,born,income,smoker,diagnosis,plan\n";
    let good = "a@x,A,30,10115,1980-01-01T00:00:00Z,1.5,true,flu,free\n";

    let unknown = format!("email,phone\na@x,{secret}\n");
    let err = run_file("in.csv", &unknown, &schema, None, None, None)
        .err()
        .expect("unknown column");
    assert!(
        matches!(&err, AnonymizeError::UnknownColumn { column } if column == "phone"),
        "{err}"
    );

    let cases = [
        (
            "age",
            format!("a@x,A,{secret},10115,1980-01-01T00:00:00Z,1.5,true,flu,free\n"),
            "integer",
        ),
        (
            "born",
            format!("a@x,A,30,10115,{secret},1.5,true,flu,free\n"),
            "timestamp",
        ),
        (
            "income",
            format!("a@x,A,30,10115,1980-01-01T00:00:00Z,{secret},true,flu,free\n"),
            "number",
        ),
        (
            "income",
            "a@x,A,30,10115,1980-01-01T00:00:00Z,NaN,true,flu,free\n".to_owned(),
            "number",
        ),
        (
            "smoker",
            format!("a@x,A,30,10115,1980-01-01T00:00:00Z,1.5,{secret},flu,free\n"),
            "boolean",
        ),
        (
            "email",
            ",A,30,10115,1980-01-01T00:00:00Z,1.5,true,flu,free\n".to_owned(),
            "required",
        ),
    ];
    for (column, row, reason) in cases {
        let input = format!("{header}{good}{row}");
        let err = run_file("in.csv", &input, &schema, None, None, None)
            .err()
            .expect("bad value");
        match &err {
            AnonymizeError::BadValue {
                line,
                row,
                column: c,
                reason: why,
            } => {
                assert_eq!((*line, *row, c.as_str()), (3, 2, column), "{err}");
                assert!(why.contains(reason), "{err}");
            }
            other => panic!("{column}: {other}"),
        }
        assert!(!err.to_string().contains(secret), "{err}");
    }

    let ragged = format!("{header}{good}a@x,{secret}\n");
    let err = run_file("in.csv", &ragged, &schema, None, None, None)
        .err()
        .expect("ragged");
    assert!(
        matches!(err, AnonymizeError::Malformed { line: 3, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains(secret));

    // NDJSON: wrong type, unknown key, null, not an object, not JSON.
    let ndjson_cases = [
        (format!(r#"{{"email": "a@x", "age": "{secret}"}}"#), "age"),
        (
            format!(r#"{{"email": "a@x", "phone": "{secret}"}}"#),
            "phone",
        ),
        (r#"{"email": "a@x", "zip": null}"#.to_owned(), "zip"),
    ];
    for (line, column) in ndjson_cases {
        let input = format!("{{\"email\": \"ok@x\"}}\n\n{line}\n");
        let err = run_file("in.ndjson", &input, &schema, None, None, None)
            .err()
            .expect("bad");
        let named = match &err {
            AnonymizeError::BadValue {
                line, row, column, ..
            } => {
                assert_eq!((*line, *row), (3, 2), "{err}");
                column.clone()
            }
            AnonymizeError::UnknownColumn { column } => column.clone(),
            other => panic!("{other}"),
        };
        assert_eq!(named, column);
        assert!(!err.to_string().contains(secret), "{err}");
    }
    for (input, want) in [
        (format!("[\"{secret}\"]\n"), "object"),
        (format!("{{\"email\": {secret}\n"), "JSON"),
    ] {
        let err = run_file("in.ndjson", &input, &schema, None, None, None)
            .err()
            .expect("bad");
        assert!(
            matches!(&err, AnonymizeError::Malformed { line: 1, reason } if reason.contains(want)),
            "{err}"
        );
        assert!(!err.to_string().contains(secret), "{err}");
    }

    let err = run_file("in.txt", good, &schema, None, None, None)
        .err()
        .expect("format");
    assert!(matches!(err, AnonymizeError::UnknownFormat { .. }), "{err}");
    let err = run_file("in.csv", good, "{\"fields\": {}}", None, None, None)
        .err()
        .expect("schema");
    assert!(matches!(err, AnonymizeError::Schema(_)), "{err}");
}

#[test]
fn the_positional_entry_point_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = data::rows(100);
    let schema = data::write(dir.path(), "s.json", &data::schema_json(5, None));
    let input = data::write(dir.path(), "f.csv", &data::csv(&rows));
    let output = dir.path().join("o.parquet");
    let report = anonymize_file(&schema, &input, &output, Some(4), None, None).expect("run");
    assert_eq!(report.k_requested, 4);
    assert!(output.exists());
}
