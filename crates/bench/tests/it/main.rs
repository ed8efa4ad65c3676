//! `residency-bench envelope`, `audit`, `api` and `router` as commands: each measures
//! its cases against a baseline of the same run, prints a table and writes JSON; a cold
//! keyring unwraps each tenant's key exactly once however many values it seals; `bench
//! api` leaves no PostgreSQL process behind.

/// The benchmark binary, as a child process.
fn bench() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_residency-bench"))
}

#[test]
fn bench_envelope_writes_ratios_and_counts_one_kms_call_per_tenant() {
    let dir = tempfile::tempdir().expect("dir");
    let (stdout, report) = run_bench(
        dir.path(),
        &[
            "envelope",
            "--seconds-per-round",
            "0.02",
            "--rounds",
            "1",
            "--seals",
            "600",
            "--tenants",
            "6",
        ],
        "--output",
        "",
    );
    assert!(
        stdout.contains("ratio") && stdout.contains("16 KiB"),
        "a table is printed: {stdout}"
    );
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
    let (_, report) = run_bench(
        dir.path(),
        &[
            "audit",
            "--seconds-per-round",
            "0.2",
            "--rounds",
            "1",
            "--writers",
            "2",
            "--verify-events",
            "3000",
            "--read-events",
            "600",
        ],
        "--output",
        "",
    );
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
    for rate in ["batched_queue_per_sec", "multi_row_prototype_per_sec"] {
        assert!(
            report["read_events"][rate].as_f64().expect("event rate") > 0.0,
            "{report}"
        );
    }
}

#[test]
fn bench_api_prints_the_table_and_writes_both_ratios_as_json() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("dir");
    // The region's clusters go here too (TMPDIR), so that the processes left over, if
    // any, can be found by path; PostgreSQL runs as another user when we are root.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open the directory to the postgres user");
    let (stdout, report) = run_bench(
        dir.path(),
        &[
            "api",
            "--seconds",
            "0.3",
            "--clients",
            "4",
            "--tenants",
            "2",
        ],
        "--json",
        "",
    );
    for expected in ["ops/s", "p50 ms", "p99 ms", "baseline (SQL)", "API (HTTP)"] {
        assert!(
            stdout.contains(expected),
            "the table shows {expected}: {stdout}"
        );
    }
    assert!(
        stdout.contains("create    ratio") && stdout.contains("read      ratio"),
        "{stdout}"
    );
    assert_eq!(report["clients"], 4);
    assert_eq!(report["tenants"], 2);
    let results = report["results"].as_array().expect("results");
    let operations: Vec<&str> = results
        .iter()
        .map(|r| r["operation"].as_str().expect("operation"))
        .collect();
    assert_eq!(operations, ["create", "read"]);
    for result in results {
        let (api, baseline) = (
            result["api_per_sec"].as_f64().expect("api rate"),
            result["baseline_per_sec"].as_f64().expect("baseline rate"),
        );
        assert!(api > 0.0 && baseline > 0.0, "{result}");
        let ratio = result["ratio"].as_f64().expect("ratio");
        assert!((ratio - api / baseline).abs() < 1e-9, "{result}");
        for latency in [
            "api_p50_ms",
            "api_p99_ms",
            "baseline_p50_ms",
            "baseline_p99_ms",
        ] {
            assert!(result[latency].as_f64().expect("latency") > 0.0, "{result}");
        }
        assert!(
            result["api_p50_ms"].as_f64() <= result["api_p99_ms"].as_f64(),
            "{result}"
        );
    }
    let cases = report["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 6, "three paths for each operation");
    for case in cases {
        assert_eq!(case["errors"], 0, "every operation succeeds: {case}");
    }
    assert!(
        report["sealed_bytes"].as_u64().expect("sealed size") > 0,
        "the baseline writes a sealed column of the API's size"
    );
    assert_eq!(report["reads_served_by"], "replica");
    assert_eq!(
        devstack::testing::processes_mentioning(dir.path()),
        Vec::<u32>::new(),
        "the region's PostgreSQL processes are stopped when the command ends"
    );
}

#[test]
fn bench_router_prints_the_table_and_writes_every_case_against_its_baseline_as_json() {
    let _alone = NGINX
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let nginx_before = nginx_processes();
    let (stdout, report) = run_bench_router(&["--rounds", "3"]);
    for expected in [
        "(a) bare regional handler",
        "(a) local tenant through the node",
        "(b) direct to the home node",
        "(b) forwarded by the entry node",
        "(b) reference: nginx proxy_pass",
        "reference, nginx in front of the same home node",
        "(c) nginx proxy_pass",
        "(c) our forwarding hop",
        "added p50",
        "our hop / nginx",
        "CPU per request (load generator + hop + home)",
    ] {
        assert!(
            stdout.contains(expected),
            "the table shows {expected}: {stdout}"
        );
    }

    assert_eq!(report["errors"], 0, "{report}");
    // By default the load generator is kept off the servers' CPU, and the report says so.
    let layout = report["cpu_layout"]
        .as_str()
        .expect("the CPU layout is reported");
    assert!(
        layout.starts_with("load generator and the handler's timer thread on CPU "),
        "{layout}"
    );
    assert!(
        stdout.contains(&format!(
            "CPU layout: {layout}; hop between entry and home: http1-then-http2 (16 HTTP/1.1 connections, then HTTP/2)"
        )),
        "{stdout}"
    );
    assert_eq!(report["hop_protocol"], "http1-then-http2", "{report}");
    assert_eq!(report["hop_http1_connections"], 16, "{report}");
    let cases = &report["cases"];
    for case in [
        "bare_handler",
        "local_through_router",
        "direct",
        "forwarded",
        "nginx_at_forwarding_load",
        "nginx",
        "forwarded_saturated",
    ] {
        let case = &cases[case];
        assert!(case["per_sec"].as_f64().expect("rate") > 0.0, "{report}");
        assert!(case["requests"].as_u64().expect("requests") > 0, "{report}");
        assert!(
            case["p50_us"].as_f64().expect("p50") <= case["p99_us"].as_f64().expect("p99"),
            "{report}"
        );
    }
    // The handler behind (b) and (c) waits about a millisecond: no request through it can
    // be faster, so a bench that skipped the hop or the work would show here.
    for case in [
        "direct",
        "forwarded",
        "nginx_at_forwarding_load",
        "nginx",
        "forwarded_saturated",
    ] {
        assert!(
            cases[case]["p50_us"].as_f64().expect("p50") >= 1000.0,
            "{case}: {report}"
        );
    }
    let forwarding = &report["forwarding"];
    let ratio = forwarding["throughput_ratio"].as_f64().expect("ratio");
    let expected = cases["forwarded"]["per_sec"].as_f64().expect("rate")
        / cases["direct"]["per_sec"].as_f64().expect("rate");
    assert!((ratio - expected).abs() < 1e-9, "{report}");
    // (c) pairs each round of our hop with nginx's, measured in turns within the round,
    // and reports the median of the three ratios.
    let rates = |case: &str| -> Vec<f64> {
        cases[case]["round_per_sec"]
            .as_array()
            .expect("each round's rate")
            .iter()
            .map(|rate| rate.as_f64().expect("rate"))
            .collect()
    };
    let (ours, theirs) = (rates("forwarded_saturated"), rates("nginx"));
    assert_eq!((ours.len(), theirs.len()), (3, 3), "{report}");
    let mut expected: Vec<f64> = ours.iter().zip(&theirs).map(|(o, n)| o / n).collect();
    let reported: Vec<f64> = report["nginx"]["round_ratios"]
        .as_array()
        .expect("round ratios")
        .iter()
        .map(|ratio| ratio.as_f64().expect("ratio"))
        .collect();
    assert_eq!(reported.len(), 3, "{report}");
    for (reported, expected) in reported.iter().zip(&expected) {
        assert!((reported - expected).abs() < 1e-9, "{report}");
    }
    expected.sort_by(f64::total_cmp);
    let nginx = report["nginx"]["ratio"].as_f64().expect("nginx ratio");
    assert!((nginx - expected[1]).abs() < 1e-9, "{report}");
    assert!(
        stdout.contains("median of 3 rounds") && stdout.contains("in turns, 4 slices each, ABBA"),
        "{stdout}"
    );
    // The CPU of every party per request, summed from the cases' own figures.
    let spent = |case: &str, hop: &str| -> f64 {
        let cpu = &cases[case]["cpu_us_per_request"];
        ["load_generator", hop, "home_node"]
            .iter()
            .map(|party| cpu[party].as_f64().expect("cpu"))
            .sum()
    };
    let cpu = &report["nginx"]["cpu_us_per_request"];
    for (ours, case, hop) in [
        ("ours", "forwarded_saturated", "entry_node"),
        ("nginx", "nginx", "nginx"),
    ] {
        let total = cpu[ours].as_f64().expect("cpu total");
        assert!(total > 0.0, "{report}");
        assert!((total - spent(case, hop)).abs() < 1e-6, "{ours}: {report}");
    }
    assert_eq!(
        nginx_processes(),
        nginx_before,
        "the bench stops the nginx it started"
    );
}

#[test]
fn bench_router_forwards_over_http2_between_real_node_servers_when_asked() {
    let _alone = NGINX
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (stdout, report) = run_bench_router(&["--rounds", "1", "--hop", "http2"]);
    assert!(
        stdout.contains("hop between entry and home: http2\n"),
        "{stdout}"
    );
    // Every forwarded request answered, by the handler behind the home node's router.
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["hop_protocol"], "http2", "{report}");
    assert!(report["hop_http1_connections"].is_null(), "{report}");
    for case in ["forwarded", "forwarded_saturated"] {
        let case = &report["cases"][case];
        assert!(case["requests"].as_u64().expect("requests") > 0, "{report}");
        assert!(case["p50_us"].as_f64().expect("p50") >= 1000.0, "{report}");
    }
}

/// Held by each test that runs `bench router`: each starts an nginx, and one test counts
/// nginx processes before and after its run.
static NGINX: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `residency-bench router`, short, with `args`: its table and its JSON report.
fn run_bench_router(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().expect("dir");
    let mut all = vec!["router", "--seconds-per-round", "0.3"];
    all.extend(["--clients", "2", "--saturating-clients", "8"]);
    all.extend(args);
    run_bench(
        dir.path(),
        &all,
        "--output",
        " (bench router needs Debian's nginx: apt-get install nginx)",
    )
}

/// Runs `residency-bench` with `args`, then `output_flag <dir>/report.json` (with `TMPDIR`
/// set to `dir`, so that what it starts can be found by path); fails, adding `hint`, unless
/// it succeeds; returns the table it printed and the JSON report it wrote.
fn run_bench(
    dir: &std::path::Path,
    args: &[&str],
    output_flag: &str,
    hint: &str,
) -> (String, serde_json::Value) {
    let output = dir.join("report.json");
    let run = bench()
        .env("TMPDIR", dir)
        .args(args)
        .arg(output_flag)
        .arg(&output)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}{hint}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report =
        serde_json::from_slice(&std::fs::read(&output).expect("json written")).expect("json");
    (stdout, report)
}

fn nginx_processes() -> usize {
    let out = std::process::Command::new("pgrep")
        .args(["-x", "nginx"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn bench_abuse_reads_alone_then_during_a_flood_from_another_address_and_counts_its_cost() {
    let dir = tempfile::tempdir().expect("dir");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("open the directory to the postgres user");
    }
    let (stdout, report) = run_bench(
        dir.path(),
        &[
            "abuse",
            "--seconds",
            "0.5",
            "--clients",
            "2",
            "--flood-rate",
            "300",
        ],
        "--output",
        "",
    );
    for expected in [
        "legitimate reads",
        "during the flood",
        "throughput during / quiet",
        "p99 during / quiet",
        "database transactions per junk request",
        "denied events added to the tenant's audit chain",
    ] {
        assert!(
            stdout.contains(expected),
            "the table shows {expected}: {stdout}"
        );
    }
    for phase in ["quiet", "flooded"] {
        let reads = &report[phase];
        assert!(reads["ok"].as_u64().expect("ok") > 0, "{report}");
        assert_eq!(reads["failed"], 0, "legitimate reads never fail: {report}");
    }
    let ratio = report["throughput_ratio"].as_f64().expect("ratio");
    let expected = report["flooded"]["per_sec"].as_f64().expect("rate")
        / report["quiet"]["per_sec"].as_f64().expect("rate");
    assert!((ratio - expected).abs() < 1e-9, "{report}");
    let flood = &report["flood"];
    assert_eq!(flood["from"], "127.0.0.2", "{report}");
    let sent = flood["sent"].as_u64().expect("sent");
    assert!(sent > 0, "{report}");
    let answered: u64 = flood["statuses"]
        .as_object()
        .expect("statuses")
        .values()
        .map(|count| count.as_u64().expect("count"))
        .sum();
    assert_eq!(
        answered, sent,
        "every junk request is accounted for: {report}"
    );
    assert!(
        report["database"]["transactions_per_junk_request"].is_f64(),
        "{report}"
    );
    assert_eq!(
        devstack::testing::processes_mentioning(dir.path()),
        Vec::<u32>::new(),
        "the region's PostgreSQL processes are stopped when the command ends"
    );
}

#[test]
fn bench_keys_times_the_reencryption_writes_during_it_and_the_other_nodes_key_drop() {
    let dir = tempfile::tempdir().expect("dir");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("open the directory to the postgres user");
    }
    let (stdout, report) = run_bench(
        dir.path(),
        &[
            "keys",
            "--records",
            "120",
            "--files",
            "2",
            "--file-kib",
            "64",
            "--batch-size",
            "50",
            "--writers",
            "2",
            "--write-seconds",
            "0.5",
            "--offboard-tenants",
            "2",
        ],
        "--json",
        "",
    );
    for expected in [
        "re-encrypt records",
        "re-encrypt files",
        "API writes during / without job",
        "offboarding, other node stops opening the tenant",
    ] {
        assert!(
            stdout.contains(expected),
            "the table shows {expected}: {stdout}"
        );
    }
    let reencryption = &report["reencryption"];
    assert_eq!(
        reencryption["job_progress"],
        serde_json::json!({"done": 122, "total": 122, "failed": 0}),
        "every record and file re-sealed: {report}"
    );
    let ratio = reencryption["records_ratio"].as_f64().expect("ratio");
    let expected = reencryption["records_per_sec"].as_f64().expect("rate")
        / reencryption["baseline_records_per_sec"]
            .as_f64()
            .expect("rate");
    assert!((ratio - expected).abs() < 1e-9, "{report}");
    assert!(
        reencryption["baseline_object_bytes"]
            .as_u64()
            .expect("bytes")
            >= 2 * 64 * 1024,
        "the files' baseline copied every byte: {report}"
    );
    for case in ["before", "during", "after"] {
        assert!(
            report["writes"][case]["records"].as_u64().expect("records") > 0,
            "{report}"
        );
        assert_eq!(report["writes"][case]["errors"], 0, "{report}");
    }
    let offboarding = &report["offboarding"];
    assert_eq!(offboarding["tenants"], 2, "{report}");
    assert_eq!(
        offboarding["other_node_statuses"],
        serde_json::json!({"404": 2}),
        "the other node answers 404 once it forgot the tenant: {report}"
    );
    for drop in offboarding["drops_ms"].as_array().expect("drops") {
        assert!(drop.as_f64().expect("ms") < 1_000.0, "{report}");
    }
}
