//! The analytics commands as a user runs them: `residency anonymize` on a local file,
//! `residency export run --dev-state` against `residency dev` (releasing into the dev
//! analytics directory, and refusing a primary), and `residency terraform-vars`.

use std::io::Write as _;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::dev::{Dev, api_endpoint, operator_token};
use crate::{repo_path, residency};

fn schema() -> Value {
    json!({
        "fields": {
            "email": {"type": "string", "class": "identifier"},
            "age": {"type": "integer", "class": "quasi_identifier"},
            "zip": {"type": "string", "class": "quasi_identifier"},
            "plan": {"type": "string", "class": "public"}
        },
        "analytics": {"k": 5, "pseudonymize": ["email"]}
    })
}

#[test]
fn anonymize_prints_the_privacy_report_and_writes_parquet_without_the_identifiers() {
    let dir = tempfile::tempdir().expect("dir");
    let schema_path = dir.path().join("schema.json");
    std::fs::write(&schema_path, schema().to_string()).expect("schema");
    let input = dir.path().join("people.csv");
    let mut csv = std::fs::File::create(&input).expect("csv");
    writeln!(csv, "email,age,zip,plan").expect("header");
    for i in 0..40 {
        writeln!(
            csv,
            "PLANTED{i}@example.com,{},{},pro",
            20 + i,
            10_100 + i % 7
        )
        .expect("row");
    }
    drop(csv);
    let output = dir.path().join("out.parquet");
    let report = dir.path().join("report.json");
    let run = residency()
        .arg("anonymize")
        .arg("--schema")
        .arg(&schema_path)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run anonymize");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for line in ["privacy report", "rows in", "k requested / achieved", "NCP"] {
        assert!(stdout.contains(line), "the report shows {line}: {stdout}");
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(report["rows_in"], 40);
    assert!(
        report["k_achieved"].as_u64().expect("k achieved") >= 5,
        "{report}"
    );
    let bytes = std::fs::read(&output).expect("parquet written");
    assert!(bytes.starts_with(b"PAR1"), "a Parquet file");
    assert!(
        !bytes.windows(7).any(|w| w == b"PLANTED"),
        "no identifier in the output"
    );

    // A column the schema does not know is named, and nothing is written.
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "email,age,zip,plan,shoe_size\nx@example.com,30,10100,pro,44\n",
    )
    .expect("bad csv");
    let refused = dir.path().join("refused.parquet");
    let run = residency()
        .arg("anonymize")
        .arg("--schema")
        .arg(&schema_path)
        .arg("--input")
        .arg(&bad)
        .arg("--output")
        .arg(&refused)
        .output()
        .expect("run anonymize");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("shoe_size"), "{stderr}");
    assert!(!refused.exists());
}

#[test]
fn terraform_vars_match_the_catalogue_and_check_catches_a_drift() {
    let run = residency()
        .current_dir(repo_path(""))
        .args(["terraform-vars", "--check"])
        .output()
        .expect("run terraform-vars");
    assert!(
        run.status.success(),
        "the committed tfvars match regions/: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let dir = tempfile::tempdir().expect("dir");
    let output = dir.path().join("regions.auto.tfvars.json");
    std::fs::write(&output, "{}\n").expect("stale file");
    let run = residency()
        .current_dir(repo_path(""))
        .arg("terraform-vars")
        .arg("--check")
        .arg("--output")
        .arg(&output)
        .output()
        .expect("run terraform-vars");
    assert!(!run.status.success());
    assert!(
        String::from_utf8_lossy(&run.stderr).contains("terraform-vars"),
        "names the command to run"
    );
    let run = residency()
        .current_dir(repo_path(""))
        .arg("terraform-vars")
        .arg("--output")
        .arg(&output)
        .output()
        .expect("run terraform-vars");
    assert!(run.status.success());
    assert_eq!(
        std::fs::read_to_string(&output).expect("written"),
        std::fs::read_to_string(repo_path(catalog_path())).expect("committed")
    );
}

fn catalog_path() -> &'static str {
    "terraform/envs/example/regions.auto.tfvars.json"
}

#[tokio::test]
async fn export_run_releases_from_residency_dev_and_refuses_a_primary() {
    let state = tempfile::tempdir().expect("state dir");
    let mut dev = Dev::spawn(state.path(), "eu-central-1");
    let endpoints = dev.endpoints().await;
    let operator = operator_token(&endpoints);
    let api = api_endpoint(&endpoints, "eu-central-1");
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{api}/v1/tenants"))
        .bearer_auth(&operator)
        .json(&json!({"name": "Acme", "home_region": "eu-central-1", "analytics_export": true}))
        .send()
        .await
        .expect("create tenant");
    assert_eq!(created.status(), StatusCode::CREATED, "{}", dev.output());
    let tenant: Value = created.json().await.expect("tenant");
    let (id, key) = (
        tenant["id"].as_str().expect("id"),
        tenant["admin_key"].as_str().expect("key"),
    );
    let put = http
        .put(format!("{api}/v1/tenants/{id}/collections/people"))
        .bearer_auth(key)
        .json(&schema())
        .send()
        .await
        .expect("schema");
    assert_eq!(put.status(), StatusCode::CREATED);
    for i in 0..20 {
        let created = http
            .post(format!("{api}/v1/tenants/{id}/collections/people/records"))
            .bearer_auth(key)
            .json(
                &json!({"data": {"email": format!("PLANTED{i}@example.com"), "age": 30 + i % 4,
                                   "zip": "10115", "plan": "pro"}}),
            )
            .send()
            .await
            .expect("record");
        assert_eq!(created.status(), StatusCode::CREATED);
    }

    // The replica catches up within moments; until it does, a pass may release fewer rows
    // (the watermark then differs and the next pass releases again).
    let export = || {
        residency()
            .arg("export")
            .arg("run")
            .arg("--region")
            .arg("eu-central-1")
            .arg("--once")
            .arg("--dev-state")
            .arg(state.path())
            .output()
            .expect("run export")
    };
    let manifest = {
        let mut found = None;
        for _ in 0..50 {
            let run = export();
            let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
            assert!(
                run.status.success(),
                "{stdout}\n{}",
                String::from_utf8_lossy(&run.stderr)
            );
            let mut files = Vec::new();
            collect(&state.path().join("analytics"), &mut files);
            let manifests: Vec<_> = files
                .into_iter()
                .filter(|f| f.ends_with("_manifest.json"))
                .collect();
            if let Some(latest) = manifests.iter().max() {
                let manifest: Value =
                    serde_json::from_slice(&std::fs::read(latest).expect("manifest"))
                        .expect("json");
                if manifest["rows_in"] == 20 {
                    found = Some(manifest);
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        found.expect("a release of all 20 records")
    };
    assert_eq!(manifest["rows"], 20, "{manifest}");
    assert!(manifest["k_achieved"].as_u64().expect("k") >= 5);
    let mut files = Vec::new();
    collect(&state.path().join("analytics"), &mut files);
    for file in &files {
        let bytes = std::fs::read(file).expect("read");
        assert!(
            !bytes.windows(7).any(|w| w == b"PLANTED"),
            "{}",
            file.display()
        );
        assert!(!bytes.windows(id.len()).any(|w| w == id.as_bytes()));
    }
    // A second pass finds nothing changed.
    let again = export();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 collections released"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // Pointed at the primary, the export refuses before reading anything.
    let url = std::fs::read_to_string(state.path().join("eu-central-1/export_replica_url"))
        .expect("export replica url");
    let primary_port = endpoints["regions"]["eu-central-1"]["primary"]
        .as_str()
        .and_then(|url| url.rsplit(':').next())
        .and_then(|rest| rest.split('/').next())
        .expect("primary port")
        .to_owned();
    let replica_port = url
        .trim()
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .expect("replica port")
        .to_owned();
    let at_primary = url
        .trim()
        .replace(&format!(":{replica_port}/"), &format!(":{primary_port}/"));
    let refused = residency()
        .arg("export")
        .arg("run")
        .arg("--region")
        .arg("eu-central-1")
        .arg("--once")
        .arg("--catalog")
        .arg(repo_path("regions"))
        .env("RESIDENCY_EXPORT_REPLICA_URL", &at_primary)
        .output()
        .expect("run export");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("replicas only"), "{stderr}");
    assert!(
        !stderr.contains("rop_"),
        "the password is never echoed: {stderr}"
    );
}

fn collect(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
