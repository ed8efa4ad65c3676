//! The engine called directly, as the export pipeline will: records pushed as JSON, the
//! released batch written through the part writer, the manifest built from it.

use std::collections::BTreeMap;

use export::{Manifest, ManifestPart, PseudonymKey, TableBuilder, anonymize, write_parquet};
use model::{AnalyticsSpec, CollectionSchema, FieldClass, FieldSpec, FieldType};
use sha2::Digest;

use crate::checker::{check, read_parquet};

fn schema() -> CollectionSchema {
    let spec = FieldSpec::unindexed;
    let fields = BTreeMap::from([
        (
            "patient".to_owned(),
            spec(FieldType::Integer, FieldClass::Identifier),
        ),
        (
            "age".to_owned(),
            spec(FieldType::Integer, FieldClass::QuasiIdentifier),
        ),
        (
            "city".to_owned(),
            spec(FieldType::String, FieldClass::QuasiIdentifier),
        ),
        (
            "result".to_owned(),
            spec(FieldType::Number, FieldClass::Sensitive),
        ),
    ]);
    let analytics = AnalyticsSpec {
        k: 4,
        l: Some(2),
        pseudonymize: vec!["patient".into()],
    };
    CollectionSchema::new(fields, vec![], None, Some(analytics)).expect("valid schema")
}

fn table(schema: &CollectionSchema, n: usize) -> export::Table {
    const CITIES: [&str; 6] = ["Berlin", "Bern", "Bonn", "Paris", "Porto", "Prague"];
    let mut b = TableBuilder::new(schema);
    for i in 0..n {
        let record = serde_json::json!({
            "patient": 1_000_000 + i as i64,
            "age": 20 + (i * 7) % 60,
            "city": CITIES[(i * 5) % CITIES.len()],
            "result": ((i * 13) % 9) as f64 / 2.0,
        });
        let serde_json::Value::Object(record) = record else {
            unreachable!()
        };
        b.push_json(schema, &record).expect("a valid record");
    }
    b.finish()
}

#[test]
fn released_parquet_checks_out_and_the_manifest_matches_it() {
    let schema = schema();
    let table = table(&schema, 1_000);
    let key = PseudonymKey::new(&[3; 32]);
    let anonymized = anonymize(&table, &schema, &key).expect("anonymize");
    let (bytes, summary) = write_parquet(Vec::new(), &anonymized).expect("write");
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    assert_eq!(summary.rows, anonymized.report.rows_released);

    let batches = read_parquet(&bytes);
    let checked = check(&batches, &["age_lo", "age_hi", "city"], &["result"], 4, 2);
    assert_eq!(checked.rows, 1_000);
    // Patient numbers are pseudonymized: no released value parses as one.
    for b in &batches {
        let col = b.column_by_name("patient").expect("patient");
        let col = arrow_array::cast::AsArray::as_string::<i32>(col.as_ref());
        assert!(
            col.iter()
                .flatten()
                .all(|p| p.len() == 64 && p.parse::<i64>().is_err())
        );
    }

    let part = ManifestPart {
        path: "part-00000.parquet".into(),
        rows: summary.rows,
        bytes: summary.bytes,
        sha256: summary.sha256.clone(),
    };
    let manifest = Manifest::new(
        &anonymized.report,
        &anonymized.schema(),
        "lsn/0/16B3748",
        vec![part],
    );
    assert_eq!(manifest.version, export::MANIFEST_VERSION);
    assert_eq!(manifest.rows, 1_000);
    assert_eq!(manifest.k_achieved, anonymized.report.k_achieved);
    let names: Vec<&str> = manifest.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["age_lo", "age_hi", "city", "patient", "result"]);
    assert!(
        manifest
            .columns
            .iter()
            .all(|c| !c.generalization.is_empty())
    );
    let json = manifest.to_json().expect("json");
    assert_eq!(Manifest::from_json(&json).expect("parse"), manifest);
    // The Parquet file keeps each column's source field and treatment.
    let schema = batches[0].schema();
    let age_lo = schema.field_with_name("age_lo").expect("age_lo");
    assert_eq!(
        age_lo
            .metadata()
            .get(export::output::META_FIELD)
            .map(String::as_str),
        Some("age")
    );
    assert_eq!(
        age_lo
            .metadata()
            .get(export::output::META_TREATMENT)
            .map(String::as_str),
        Some("range")
    );
}

#[test]
fn tenants_get_different_pseudonyms_for_one_value() {
    let schema = schema();
    let table = table(&schema, 40);
    let a = anonymize(&table, &schema, &PseudonymKey::new(&[1; 32])).expect("tenant a");
    let a2 = anonymize(&table, &schema, &PseudonymKey::new(&[1; 32])).expect("tenant a again");
    let b = anonymize(&table, &schema, &PseudonymKey::new(&[2; 32])).expect("tenant b");
    let col = |x: &export::Anonymized| {
        let c = x.batch.column_by_name("patient").expect("patient").clone();
        arrow_array::cast::AsArray::as_string::<i32>(c.as_ref())
            .iter()
            .map(|v| v.map(str::to_owned))
            .collect::<Vec<_>>()
    };
    assert_eq!(col(&a), col(&a2));
    let theirs: std::collections::BTreeSet<_> = col(&b).into_iter().collect();
    assert!(col(&a).iter().all(|p| !theirs.contains(p)));
}

#[test]
fn a_table_that_is_not_l_diverse_releases_nothing() {
    let schema = schema();
    let mut b = TableBuilder::new(&schema);
    for i in 0..30 {
        let serde_json::Value::Object(record) =
            serde_json::json!({"patient": i, "age": 30 + i, "city": "Bern", "result": 1.0})
        else {
            unreachable!()
        };
        b.push_json(&schema, &record).expect("record");
    }
    let anonymized = anonymize(&b.finish(), &schema, &PseudonymKey::new(&[1; 32])).expect("run");
    let r = &anonymized.report;
    assert_eq!((r.rows_released, r.suppressed_not_l_diverse), (0, 30));
    assert_eq!(anonymized.batch.num_rows(), 0);
    assert_eq!(r.discernibility, 30 * 30);
    assert_eq!(r.ncp_with_suppression, 1.0);
}
