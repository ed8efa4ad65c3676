//! `residency bench envelope` as a command: it measures both sizes and operations against
//! the raw baseline and writes them as JSON, and a cold keyring unwraps each tenant's key
//! exactly once however many values it seals.

use crate::residency;

#[test]
fn bench_envelope_writes_ratios_and_counts_one_kms_call_per_tenant() {
    let dir = tempfile::tempdir().expect("dir");
    let output = dir.path().join("envelope.json");
    let run = residency()
        .args([
            "bench",
            "envelope",
            "--seconds-per-round",
            "0.02",
            "--rounds",
            "1",
            "--seals",
            "600",
            "--tenants",
            "6",
            "--output",
        ])
        .arg(&output)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("ratio") && stdout.contains("16 KiB"),
        "a table is printed: {stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&output).expect("json written")).expect("json");
    let results = report["results"].as_array().expect("results");
    let cases: Vec<(String, u64)> = results
        .iter()
        .map(|r| {
            (
                r["operation"].as_str().expect("op").to_owned(),
                r["size_bytes"].as_u64().expect("size"),
            )
        })
        .collect();
    assert_eq!(
        cases,
        [
            ("seal".into(), 1024),
            ("open".into(), 1024),
            ("seal".into(), 16384),
            ("open".into(), 16384)
        ]
    );
    for result in results {
        let ratio = result["ratio"].as_f64().expect("ratio");
        let expected = result["residency_ops_per_sec"].as_f64().expect("ours")
            / result["raw_ops_per_sec"].as_f64().expect("raw");
        assert!(ratio > 0.0 && (ratio - expected).abs() < 1e-9, "{result}");
    }
    assert_eq!(
        report["kms"]["kms_calls"], 6,
        "one unwrap per tenant for 600 seals"
    );
    assert_eq!(report["kms"]["met"], true);
}

#[test]
fn bench_audit_writes_both_write_rates_and_the_verify_rate() {
    let dir = tempfile::tempdir().expect("dir");
    let output = dir.path().join("audit.json");
    let run = residency()
        .args([
            "bench",
            "audit",
            "--seconds-per-round",
            "0.2",
            "--rounds",
            "1",
            "--writers",
            "2",
            "--verify-events",
            "3000",
            "--output",
        ])
        .arg(&output)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&output).expect("json written")).expect("json");
    let plain = report["insert_row_per_sec"]
        .as_f64()
        .expect("baseline rate");
    let audited = report["insert_row_and_event_per_sec"]
        .as_f64()
        .expect("audited rate");
    assert!(plain > 0.0 && audited > 0.0, "{report}");
    let ratio = report["write_ratio"].as_f64().expect("ratio");
    assert!((ratio - audited / plain).abs() < 1e-9, "{report}");
    assert!(
        report["verify_events_per_sec"]
            .as_f64()
            .expect("verify rate")
            > 0.0
    );
    assert_eq!(report["verify_events"], 3000);
}
