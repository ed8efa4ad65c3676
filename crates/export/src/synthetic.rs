//! A deterministic synthetic data set (a fixed-seed generator, so runs compare): a
//! collection with 8 quasi-identifiers of every type and rows of it. The export's tests
//! and the export benchmark (`residency-bench export`) anonymize it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use model::{AnalyticsSpec, CollectionSchema, FieldClass, FieldSpec, FieldType};

use crate::Table;

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The synthetic collection: 8 quasi-identifiers of every type, a pseudonymized and a
/// dropped identifier, a sensitive and a public field.
pub fn schema() -> CollectionSchema {
    schema_pseudonymizing(&["email"])
}

/// The synthetic collection releasing pseudonyms of `pseudonymize` only (its other
/// identifiers dropped).
pub fn schema_pseudonymizing(pseudonymize: &[&str]) -> CollectionSchema {
    let spec = FieldSpec::unindexed;
    use FieldClass::*;
    use FieldType::*;
    let fields = BTreeMap::from([
        ("email".to_owned(), spec(String, Identifier)),
        ("name".to_owned(), spec(String, Identifier)),
        ("age".to_owned(), spec(Integer, QuasiIdentifier)),
        ("zip".to_owned(), spec(String, QuasiIdentifier)),
        ("birth".to_owned(), spec(Timestamp, QuasiIdentifier)),
        ("income".to_owned(), spec(Number, QuasiIdentifier)),
        ("sex".to_owned(), spec(String, QuasiIdentifier)),
        ("height".to_owned(), spec(Integer, QuasiIdentifier)),
        ("smoker".to_owned(), spec(Boolean, QuasiIdentifier)),
        ("country".to_owned(), spec(String, QuasiIdentifier)),
        ("diagnosis".to_owned(), spec(String, Sensitive)),
        ("plan".to_owned(), spec(String, Public)),
    ]);
    let analytics = AnalyticsSpec {
        k: 10,
        l: None,
        pseudonymize: pseudonymize.iter().map(|&f| f.to_owned()).collect(),
    };
    CollectionSchema::new(fields, vec![], None, Some(analytics))
        .expect("the synthetic schema is valid")
}

/// `rows` synthetic rows of [`schema`], the same for every call.
pub fn table(rows: usize) -> Table {
    const COUNTRIES: [&str; 12] = [
        "AT", "BE", "CH", "DE", "DK", "ES", "FI", "FR", "IE", "IT", "NL", "SE",
    ];
    const DIAGNOSES: [&str; 6] = ["none", "flu", "asthma", "diabetes", "migraine", "other"];
    const PLANS: [&str; 3] = ["free", "pro", "team"];
    const SEXES: [&str; 3] = ["f", "m", "x"];
    let mut rng = Rng(0x5eed);
    let mut age = Vec::with_capacity(rows);
    let mut birth = Vec::with_capacity(rows);
    let mut country = Vec::with_capacity(rows);
    let mut diagnosis = Vec::with_capacity(rows);
    let mut email = Vec::with_capacity(rows);
    let mut height = Vec::with_capacity(rows);
    let mut income = Vec::with_capacity(rows);
    let mut name = Vec::with_capacity(rows);
    let mut plan = Vec::with_capacity(rows);
    let mut sex = Vec::with_capacity(rows);
    let mut smoker = Vec::with_capacity(rows);
    let mut zip = Vec::with_capacity(rows);
    // 1950-01-01 .. 2008-01-01, whole days, in microseconds.
    let day = 86_400_000_000i64;
    let first_day = -7_305i64;
    for i in 0..rows {
        let a = 18 + rng.below(73) as i64;
        age.push(a);
        birth.push((first_day + rng.below(21_184) as i64) * day);
        country.push(COUNTRIES[rng.below(COUNTRIES.len() as u64) as usize]);
        diagnosis.push(DIAGNOSES[rng.below(DIAGNOSES.len() as u64) as usize]);
        email.push(format!("user{i}@example.com"));
        height.push(150 + rng.below(50) as i64);
        income.push((15_000 + rng.below(185_000)) as f64 + rng.below(100) as f64 / 100.0);
        name.push(format!("Person {i}"));
        plan.push(PLANS[rng.below(PLANS.len() as u64) as usize]);
        sex.push(SEXES[rng.below(SEXES.len() as u64) as usize]);
        smoker.push(rng.below(4) == 0);
        zip.push(format!("{:05}", 10_000 + rng.below(4_000)));
    }
    // Schema field order (sorted names): age, birth, country, diagnosis, email, height,
    // income, name, plan, sex, smoker, zip.
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(age)),
        Arc::new(TimestampMicrosecondArray::from(birth).with_timezone("UTC")),
        Arc::new(StringArray::from(country)),
        Arc::new(StringArray::from(diagnosis)),
        Arc::new(StringArray::from(email)),
        Arc::new(Int64Array::from(height)),
        Arc::new(Float64Array::from(income)),
        Arc::new(StringArray::from(name)),
        Arc::new(StringArray::from(plan)),
        Arc::new(StringArray::from(sex)),
        Arc::new(BooleanArray::from(smoker)),
        Arc::new(StringArray::from(zip)),
    ];
    Table::from_columns(&schema(), columns).expect("the synthetic table fits its schema")
}
