//! Test data: a schema document as the API takes it, and generated rows written as CSV or
//! NDJSON, with planted identifier values that must never reach an output.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Every planted identifier contains this; no output byte may.
pub const PLANTED: &str = "PLANTEDxq";

pub fn schema_json(k: u32, l: Option<u32>) -> String {
    let l = l.map_or(String::new(), |l| format!(r#", "l": {l}"#));
    format!(
        r#"{{
  "fields": {{
    "email": {{"type": "string", "class": "identifier", "searchable": true}},
    "name": {{"type": "string", "class": "identifier"}},
    "age": {{"type": "integer", "class": "quasi_identifier"}},
    "zip": {{"type": "string", "class": "quasi_identifier"}},
    "born": {{"type": "timestamp", "class": "quasi_identifier"}},
    "income": {{"type": "number", "class": "quasi_identifier"}},
    "smoker": {{"type": "boolean", "class": "quasi_identifier"}},
    "diagnosis": {{"type": "string", "class": "sensitive"}},
    "plan": {{"type": "string", "class": "public"}}
  }},
  "required": ["email"],
  "subject_field": "email",
  "analytics": {{"k": {k}{l}, "pseudonymize": ["email"]}}
}}"#
    )
}

/// One generated row; `age` is absent on every 97th row.
pub struct Row {
    pub email: String,
    pub name: String,
    pub age: Option<i64>,
    pub zip: String,
    pub born: String,
    pub income: f64,
    pub smoker: bool,
    pub diagnosis: &'static str,
    pub plan: &'static str,
}

pub fn rows(n: usize) -> Vec<Row> {
    const DIAGNOSES: [&str; 5] = ["none", "flu", "asthma", "diabetes", "migraine"];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    (0..n)
        .map(|i| Row {
            email: format!("{PLANTED}.user{i}@mail.example"),
            name: format!("{PLANTED} Person {i}"),
            age: (i % 97 != 5).then(|| 18 + next(70) as i64),
            zip: format!("{:05}", 10_000 + next(300) * 7),
            born: format!(
                "19{:02}-{:02}-{:02}T{:02}:00:00Z",
                50 + next(50),
                1 + next(12),
                1 + next(28),
                next(24)
            ),
            income: 20_000.0 + next(80_000) as f64 + 0.25,
            smoker: next(3) == 0,
            diagnosis: DIAGNOSES[next(5) as usize],
            plan: if i % 2 == 0 { "free" } else { "pro" },
        })
        .collect()
}

pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from("email,name,age,zip,born,income,smoker,diagnosis,plan\n");
    for r in rows {
        let age = r.age.map_or(String::new(), |a| a.to_string());
        let _ = writeln!(
            out,
            "{},\"{}\",{age},{},{},{},{},{},{}",
            r.email, r.name, r.zip, r.born, r.income, r.smoker, r.diagnosis, r.plan
        );
    }
    out
}

pub fn ndjson(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let mut v = serde_json::json!({
            "email": r.email, "name": r.name, "zip": r.zip, "born": r.born,
            "income": r.income, "smoker": r.smoker, "diagnosis": r.diagnosis, "plan": r.plan,
        });
        if let Some(age) = r.age {
            v["age"] = age.into();
        }
        let _ = writeln!(out, "{v}");
    }
    out
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write test file");
    path
}

/// The generalized quasi-identifier columns of the schema above.
pub const QI_COLUMNS: [&str; 8] = [
    "age_lo",
    "age_hi",
    "born_lo",
    "born_hi",
    "income_lo",
    "income_hi",
    "smoker",
    "zip",
];
