//! `residency dev` end to end: three regions up, health and readiness, a replica in
//! recovery, SIGTERM and SIGKILL leave nothing running, restart keeps data and audit
//! signing keys, bad catalogues are named; `residency serve` refuses a region without an
//! audit signing key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use devstack::testing::processes_mentioning;

use crate::{repo_path, residency};

const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `residency dev` child with its output captured in files.
pub(crate) struct Dev {
    pub(crate) child: Child,
    state_dir: PathBuf,
    log_dir: tempfile::TempDir,
}

impl Dev {
    pub(crate) fn spawn(state_dir: &Path, regions: &str) -> Self {
        Self::spawn_with_env(state_dir, regions, &[])
    }

    /// [`Dev::spawn`] with environment variables set (the nodes' settings).
    pub(crate) fn spawn_with_env(state_dir: &Path, regions: &str, env: &[(&str, &str)]) -> Self {
        let log_dir = tempfile::tempdir().expect("log dir");
        let stdout = std::fs::File::create(log_dir.path().join("stdout")).expect("stdout file");
        let stderr = std::fs::File::create(log_dir.path().join("stderr")).expect("stderr file");
        let child = residency()
            .args(["dev", "--regions", regions, "--catalog"])
            .arg(repo_path("regions"))
            .arg("--state-dir")
            .arg(state_dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("spawn residency dev");
        Self {
            child,
            state_dir: state_dir.to_path_buf(),
            log_dir,
        }
    }

    pub(crate) fn output(&self) -> String {
        let read = |name: &str| {
            std::fs::read_to_string(self.log_dir.path().join(name)).unwrap_or_default()
        };
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            read("stdout"),
            read("stderr")
        )
    }

    /// Waits for endpoints.json and returns it.
    pub(crate) async fn endpoints(&mut self) -> Value {
        let path = self.state_dir.join("endpoints.json");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(json) = serde_json::from_str::<Value>(&text)
            {
                return json;
            }
            if let Some(status) = self.child.try_wait().expect("poll child") {
                panic!("residency dev exited early ({status}):\n{}", self.output());
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "endpoints.json never appeared:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, signal: Signal) {
        kill(
            Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits")),
            signal,
        )
        .expect("send signal");
    }

    async fn wait(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "residency dev did not exit:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // A failed assertion must not leave a platform running.
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|err| panic!("connect to a listed database: {err}"));
    tokio::spawn(connection);
    client
}

async fn wait_until_nothing_runs(state_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_mentioning(state_dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes still running on {}: {left:?}",
            state_dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dev_brings_three_regions_up_stops_cleanly_and_keeps_data_across_restarts() {
    let state = tempfile::tempdir().expect("state dir");
    let regions = "eu-central-1,us-east-1,ap-southeast-1";
    let mut dev = Dev::spawn(state.path(), regions);
    let endpoints = dev.endpoints().await;

    let token = endpoints["operator_token"]
        .as_str()
        .expect("operator token")
        .to_owned();
    assert!(token.len() >= 32, "operator token is long and random");
    let listed: Vec<&String> = endpoints["regions"]
        .as_object()
        .expect("regions map")
        .keys()
        .collect();
    assert_eq!(listed, ["ap-southeast-1", "eu-central-1", "us-east-1"]);
    for (id, region) in endpoints["regions"].as_object().expect("regions") {
        let api = region["api"].as_str().expect("api url");
        let (status, health) = get_json(&format!("{api}/healthz")).await;
        assert_eq!(
            (status, health["region"].as_str()),
            (200, Some(id.as_str()))
        );
        let (status, public) = get_json(&format!("{api}/readyz")).await;
        assert_eq!(status, 200, "{id} readyz: {public}");
        assert!(
            !public.to_string().contains("127.0.0.1"),
            "the public readiness names no address: {public}"
        );
        // The detail is on the region's operations listener (loopback).
        let operations = region["operations"].as_str().expect("operations url");
        assert!(operations.starts_with("http://127.0.0.1:"), "{operations}");
        let (status, ready) = get_json(&format!("{operations}/readyz")).await;
        assert_eq!(status, 200, "{id} readyz: {ready}");
        // A tenant nobody created: each region's router asks the directory, in the first
        // region's database, and the node answers without a server error.
        let (status, unknown) = get_json(&format!(
            "{api}/v1/tenants/2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60"
        ))
        .await;
        assert!(matches!(status, 401 | 404), "{id}: {status} {unknown}");
        assert_eq!(
            ready["checks"]["replicas"][0]["status"], "up",
            "{id}: {ready}"
        );
        // Every region's router reads the one directory, in the first region's database.
        let directory = &ready["checks"]["directory"];
        assert_eq!(
            (&directory["status"], &directory["kind"]),
            (&serde_json::json!("up"), &serde_json::json!("postgres")),
            "{id}: {ready}"
        );
        let target = directory["target"].as_str().expect("a target");
        assert!(
            target.starts_with("127.0.0.1:") && !target.contains('@'),
            "host:port/database, never credentials: {target}"
        );
        for key in ["object_store", "kms"] {
            let url = region[key].as_str().expect("local url");
            let path = url.strip_prefix("file://").expect("file url");
            assert!(Path::new(path).exists(), "{id} {key} at {path} exists");
        }
        let audit = &ready["checks"]["audit"];
        assert_eq!(
            (&audit["mode"], &audit["backlog"], &audit["capacity"]),
            (
                &Value::from("batched"),
                &Value::from(0),
                &Value::from(10_000)
            ),
            "{id}: {ready}"
        );
        let key_file = state.path().join(id).join("audit/signing.key");
        let mode = std::fs::metadata(&key_file)
            .unwrap_or_else(|err| panic!("{id}: {}: {err}", key_file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{id}: the signing key is owner-only");
        assert!(
            region["audit_key_id"]
                .as_str()
                .is_some_and(|key_id| key_id.starts_with(&format!("{id}-"))),
            "{id}: {region}"
        );
        let replica = connect(region["replicas"][0].as_str().expect("replica url")).await;
        let in_recovery: bool = replica
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .expect("query")
            .get(0);
        assert!(in_recovery, "{id}: the listed replica is a standby");
    }

    // A second platform on the same state directory is refused, not half-started.
    let second = residency()
        .args(["dev", "--catalog"])
        .arg(repo_path("regions"))
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("run second dev");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("another `residency dev` is using"));

    let eu = &endpoints["regions"]["eu-central-1"];
    connect(eu["primary"].as_str().expect("primary url"))
        .await
        .batch_execute(
            "create table kept (note text); insert into kept values ('written before restart')",
        )
        .await
        .expect("write on the primary");

    dev.signal(Signal::SIGTERM);
    let status = dev.wait().await;
    assert!(
        status.success(),
        "clean exit on SIGTERM ({status}):\n{}",
        dev.output()
    );
    wait_until_nothing_runs(state.path()).await;
    assert!(
        !state.path().join("endpoints.json").exists(),
        "stale endpoints are removed"
    );
    // The unknown tenant above opened the directory's connections, from every region to
    // the first region's database: they are closed before that database stops, not cut
    // by it.
    assert!(
        !dev.output().contains("Connection error"),
        "a database connection was cut by its server's shutdown:\n{}",
        dev.output()
    );

    let mut dev = Dev::spawn(state.path(), regions);
    let endpoints = dev.endpoints().await;
    assert_eq!(
        endpoints["operator_token"].as_str(),
        Some(token.as_str()),
        "the token is kept"
    );
    for key in ["audit_key_id", "audit_public_key"] {
        assert_eq!(
            endpoints["regions"]["eu-central-1"][key], eu[key],
            "the audit signing key is kept, so earlier bundles still verify"
        );
    }
    let replica = connect(
        endpoints["regions"]["eu-central-1"]["replicas"][0]
            .as_str()
            .expect("url"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let note: String = loop {
        match replica.query_one("select note from kept", &[]).await {
            Ok(row) => break row.get(0),
            Err(err) => assert!(Instant::now() < deadline, "row lost across restart: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(note, "written before restart");
    dev.signal(Signal::SIGINT);
    assert!(
        dev.wait().await.success(),
        "clean exit on SIGINT:\n{}",
        dev.output()
    );
    wait_until_nothing_runs(state.path()).await;
}

#[tokio::test]
async fn sigkill_of_dev_still_stops_every_postgres() {
    let state = tempfile::tempdir().expect("state dir");
    let mut dev = Dev::spawn(state.path(), "eu-west-1");
    dev.endpoints().await;
    assert!(
        !processes_mentioning(state.path()).is_empty(),
        "postgres runs under the state dir"
    );
    dev.signal(Signal::SIGKILL);
    dev.wait().await;
    wait_until_nothing_runs(state.path()).await;
}

fn dev_with_catalog(catalog: &Path) -> std::process::Output {
    let state = tempfile::tempdir().expect("state dir");
    residency()
        .args(["dev", "--catalog"])
        .arg(catalog)
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("run residency dev")
}

#[test]
fn a_malformed_region_file_stops_dev_naming_file_and_field() {
    for (fixture, file, field) in [
        (
            "tests/fixtures/regions-bad-replica",
            "eu-west-1.toml",
            "database.replicas[0].region",
        ),
        (
            "tests/fixtures/regions-unknown-key",
            "eu-central-1.toml",
            "storage.data_bukcet",
        ),
    ] {
        let output = dev_with_catalog(&repo_path(fixture));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{fixture}: must fail");
        assert!(
            stderr.contains(file) && stderr.contains(field),
            "{fixture}: {stderr}"
        );
    }
}

#[test]
fn an_unknown_region_is_refused_listing_the_known_ones() {
    let state = tempfile::tempdir().expect("state dir");
    let output = residency()
        .args(["dev", "--regions", "eu-central-1,mars-north-1", "--catalog"])
        .arg(repo_path("regions"))
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .expect("run residency dev");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("mars-north-1 is not in the catalogue"),
        "{stderr}"
    );
    assert!(
        stderr.contains("eu-west-1"),
        "known regions are listed: {stderr}"
    );
    assert!(
        !state.path().join("eu-central-1").exists(),
        "nothing was started"
    );
}

#[test]
fn serve_refuses_a_region_without_an_audit_signing_key_before_connecting() {
    let catalog = catalog_without("audit_signing_key");
    let stderr = refused_serve(
        serve()
            .args([
                "--region",
                "eu-west-1",
                "--listen",
                "127.0.0.1:0",
                "--catalog",
            ])
            .arg(catalog.path())
            .env_remove("RESIDENCY_DB_PASSWORD"),
    );
    assert!(
        stderr.contains("region eu-west-1 has no audit_signing_key"),
        "names the region and the field: {stderr}"
    );

    let stderr =
        refused_serve(serve().args(["--region", "eu-west-1", "--audit-checkpoint-interval", "0"]));
    assert!(stderr.contains("--audit-checkpoint-interval"), "{stderr}");
}

#[test]
fn serve_refuses_a_region_without_a_forwarding_secret_before_connecting() {
    let catalog = catalog_without("forwarding_secret");
    let stderr = refused_serve(
        serve()
            .args([
                "--region",
                "us-east-1",
                "--listen",
                "127.0.0.1:0",
                "--catalog",
            ])
            .arg(catalog.path())
            .env(
                "RESIDENCY_AUDIT_SIGNING_KEY",
                format!("residency-audit-ed25519:{}", "ab".repeat(32)),
            ),
    );
    assert!(
        stderr.contains("region us-east-1 has no forwarding_secret"),
        "names the region and the field: {stderr}"
    );
}

/// A copy of the repository's catalogue whose region files lack the line setting `field`.
fn catalog_without(field: &str) -> tempfile::TempDir {
    let catalog = tempfile::tempdir().expect("catalog dir");
    for entry in std::fs::read_dir(repo_path("regions")).expect("read regions/") {
        let path = entry.expect("list regions/").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            let text = std::fs::read_to_string(&path).expect("read region file");
            let without: String = text
                .lines()
                .filter(|line| !line.starts_with(field))
                .map(|line| format!("{line}\n"))
                .collect();
            let name = path.file_name().expect("file name");
            std::fs::write(catalog.path().join(name), without).expect("write region file");
        }
    }
    catalog
}

/// `residency serve` with an operator token and a directory URL that nothing listens on:
/// everything it needs to get as far as the check a test is after.
fn serve() -> std::process::Command {
    let mut command = residency();
    command
        .arg("serve")
        .env(
            "RESIDENCY_OPERATOR_TOKEN",
            "rso.an-operator-token-long-enough-for-serve",
        )
        .env(
            "RESIDENCY_DIRECTORY_URL",
            "postgres://127.0.0.1:1/directory",
        );
    command
}

/// Runs `command`, which must fail; its stderr.
fn refused_serve(command: &mut std::process::Command) -> String {
    let output = command.output().expect("run residency serve");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    stderr
}

/// The operator token `residency dev` wrote to `endpoints.json`.
pub(crate) fn operator_token(endpoints: &Value) -> String {
    endpoints["operator_token"]
        .as_str()
        .expect("endpoints.json has the operator token")
        .to_owned()
}

/// A region's API endpoint from `endpoints.json`.
pub(crate) fn api_endpoint(endpoints: &Value, region: &str) -> String {
    endpoints["regions"][region]["api"]
        .as_str()
        .unwrap_or_else(|| panic!("endpoints.json has {region}'s api"))
        .to_owned()
}
