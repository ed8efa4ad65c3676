//! The operator commands (`residency tenants|keys|jobs`) as an operator runs them: against
//! `residency dev` through its state directory, and, for the endpoints other parts of the
//! platform answer (offboarding, key rotation, jobs), against a small HTTP server in the
//! test that answers the bodies API.md documents and records what it was sent.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wire::api::{KeyStatus, TenantCreated, TenantPage, TenantView};
use wire::jobs::{JobPage, JobView};

use crate::dev::{Dev, api_endpoint};
use crate::residency;

/// A finished CLI run.
#[derive(Debug)]
pub(crate) struct Run {
    success: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    pub(crate) fn ok(&self) -> &str {
        assert!(self.success, "the command failed:\n{}", self.stderr);
        &self.stdout
    }

    pub(crate) fn failed(&self) -> &str {
        assert!(!self.success, "the command succeeded:\n{}", self.stdout);
        assert_eq!(self.code, Some(1), "failures exit 1:\n{}", self.stderr);
        &self.stderr
    }

    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|err| panic!("--json prints the wire type ({err}):\n{}", self.stdout))
    }
}

/// Runs `residency ARGS` in `cwd` with none of the operator variables set, without
/// blocking the runtime (the test's own server may have to answer it).
pub(crate) async fn cli(cwd: &Path, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::from(residency());
    let output = command
        .args(args)
        .current_dir(cwd)
        .env_remove("RESIDENCY_ENDPOINT")
        .env_remove("RESIDENCY_TOKEN")
        .env_remove("RESIDENCY_API_KEY")
        .output()
        .await
        .expect("run residency");
    Run {
        success: output.status.success(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `residency tenants create --json` of Acme GmbH, homed in eu-central-1, through `eu`'s
/// flags.
pub(crate) async fn create_acme(cwd: &Path, eu: &[&str]) -> TenantCreated {
    cli(
        cwd,
        &[
            &["tenants", "create", "--json"],
            eu,
            &["--name", "Acme GmbH", "--home-region", "eu-central-1"],
        ]
        .concat(),
    )
    .await
    .json()
}

#[tokio::test]
async fn an_operator_manages_tenants_of_residency_dev_through_its_state_directory() {
    let state = tempfile::tempdir().expect("state dir");
    let cwd = tempfile::tempdir().expect("working dir");
    let mut dev = Dev::spawn(state.path(), "eu-central-1,us-east-1");
    let endpoints = dev.endpoints().await;
    let state_dir = state.path().to_str().expect("utf-8 path");
    let on = |region: &'static str| ["--state-dir", state_dir, "--region", region];
    let eu = on("eu-central-1");

    // Created through the EU endpoint, one homed there and one in the US.
    let acme = create_acme(cwd.path(), &eu).await;
    assert_eq!(acme.home_region, "eu-central-1");
    assert!(!acme.admin_key.is_empty());
    let globex = cli(
        cwd.path(),
        &[
            &["tenants", "create"],
            &eu[..],
            &[
                "--name",
                "Globex Inc",
                "--home-region",
                "us-east-1",
                "--allowed-region",
                "eu-central-1",
                "--transit",
                "redirect",
            ],
        ]
        .concat(),
    )
    .await;
    let globex_text = globex.ok();
    assert!(globex_text.contains("admin key:"), "{globex_text}");
    assert!(
        globex_text.contains("shown only this once"),
        "{globex_text}"
    );
    let globex_id = globex_text
        .lines()
        .find_map(|line| line.strip_prefix("id:"))
        .map(str::trim)
        .expect("the id line")
        .to_owned();

    let fetched: TenantView = cli(
        cwd.path(),
        &[&["tenants", "get", "--json", &acme.id], &eu[..]].concat(),
    )
    .await
    .json();
    assert_eq!(
        (
            fetched.id.as_str(),
            fetched.name.as_str(),
            fetched.allowed_regions.clone()
        ),
        (
            acme.id.as_str(),
            "Acme GmbH",
            vec!["eu-central-1".to_owned()]
        )
    );

    // Each region lists its own tenants; `--home-region` lists another's through the
    // endpoint at hand.
    let listed = |page: TenantPage| -> BTreeSet<String> {
        page.tenants.into_iter().map(|tenant| tenant.id).collect()
    };
    let eu_list: TenantPage = cli(
        cwd.path(),
        &[&["tenants", "list", "--json"], &eu[..]].concat(),
    )
    .await
    .json();
    assert_eq!(listed(eu_list), BTreeSet::from([acme.id.clone()]));
    let us_through_eu: TenantPage = cli(
        cwd.path(),
        &[
            &["tenants", "list", "--json", "--home-region", "us-east-1"],
            &eu[..],
        ]
        .concat(),
    )
    .await
    .json();
    let us_tenant = us_through_eu
        .tenants
        .first()
        .expect("the US tenant")
        .clone();
    assert_eq!(listed(us_through_eu), BTreeSet::from([globex_id.clone()]));
    assert_eq!(us_tenant.transit, "redirect");
    assert_eq!(
        us_tenant.allowed_regions.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"eu-central-1".to_owned(), &"us-east-1".to_owned()])
    );

    // People get a table.
    let table = cli(
        cwd.path(),
        &[&["tenants", "list"], &on("us-east-1")[..]].concat(),
    )
    .await;
    let table = table.ok();
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains(&globex_id) && table.contains("Globex Inc"),
        "{table}"
    );
    assert!(!table.contains(&acme.id), "{table}");

    // A redirecting tenant read through another region names where to ask.
    let redirected = cli(
        cwd.path(),
        &[&["tenants", "get", &globex_id], &eu[..]].concat(),
    )
    .await;
    let us = api_endpoint(&endpoints, "us-east-1");
    assert!(
        redirected.failed().contains(&format!("--endpoint {us}")),
        "{}",
        redirected.stderr
    );

    // The node's problems reach the operator with their request id.
    let unknown = cli(
        cwd.path(),
        &[
            &["tenants", "get", "5b0c4e4a-93a4-4d8e-8f55-1f4c0e9a2b7d"],
            &eu[..],
        ]
        .concat(),
    )
    .await;
    let unknown = unknown.failed();
    assert!(unknown.contains("answered 404"), "{unknown}");
    assert!(unknown.contains("request id"), "{unknown}");
    let mars = cli(
        cwd.path(),
        &[
            &[
                "tenants",
                "create",
                "--name",
                "X",
                "--home-region",
                "mars-north-1",
            ],
            &eu[..],
        ]
        .concat(),
    )
    .await;
    let mars = mars.failed();
    assert!(
        mars.contains("422") && mars.contains("home_region"),
        "{mars}"
    );

    // A wrong token: a clear error, and the token never printed.
    let wrong_token = "rso.a-wrong-token-that-must-never-be-printed";
    let refused = cli(
        cwd.path(),
        &[&["tenants", "list", "--token", wrong_token], &eu[..]].concat(),
    )
    .await;
    let refused_text = refused.failed();
    assert!(
        refused_text.contains("refused the operator token (401)"),
        "{refused_text}"
    );
    assert!(!refused.stdout.contains(wrong_token) && !refused_text.contains(wrong_token));

    // The endpoint flag wins over the state directory; a node that is not there is named.
    let closed = closed_port();
    let endpoint = format!("http://{closed}");
    let unreachable = cli(
        cwd.path(),
        &[&["tenants", "list", "--endpoint", &endpoint], &eu[..]].concat(),
    )
    .await;
    let unreachable = unreachable.failed();
    assert!(
        unreachable.contains(&format!("cannot reach the node at {endpoint}")),
        "{unreachable}"
    );

    // Offboarding: the tenant is gone at once; once purged, its certificate verifies
    // offline with the region's published keys, and an edited one does not.
    let offboarded = cli(
        cwd.path(),
        &[&["tenants", "offboard", &acme.id, "--yes"], &eu[..]].concat(),
    )
    .await;
    assert_eq!(
        offboarded.ok(),
        format!("tenant {}: offboarding\n", acme.id)
    );
    let gone = cli(
        cwd.path(),
        &[&["tenants", "get", &acme.id], &on("us-east-1")[..]].concat(),
    )
    .await;
    assert!(gone.failed().contains("answered 404"), "{}", gone.stderr);
    let eu_api = api_endpoint(&endpoints, "eu-central-1");
    let token = crate::dev::operator_token(&endpoints);
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let certificate = loop {
        let answer = http
            .get(format!("{eu_api}/v1/tenants/{}/offboarding", acme.id))
            .bearer_auth(&token)
            .send()
            .await
            .expect("ask for the certificate");
        let status = answer.status().as_u16();
        let text = answer.text().await.expect("body");
        if status == 200 {
            break text;
        }
        assert_eq!(status, 202, "{text}");
        assert!(
            std::time::Instant::now() < deadline,
            "the purge did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let file = cwd.path().join("certificate.json");
    std::fs::write(&file, &certificate).expect("save the certificate");
    let keys_url = format!("{eu_api}/v1/audit/keys");
    let file_arg = file.to_str().expect("utf-8 path");
    let verified = verify_certificate(cwd.path(), file_arg, &keys_url).await;
    let verified = verified.ok();
    assert!(
        verified.starts_with(&format!("certificate valid: tenant {}", acme.id)),
        "{verified}"
    );
    let mut edited: Value = serde_json::from_str(&certificate).expect("json");
    edited["purged"]["records"] = json!(1_000);
    std::fs::write(&file, edited.to_string()).expect("save the edited certificate");
    let rejected = verify_certificate(cwd.path(), file_arg, &keys_url).await;
    let rejected = rejected.failed();
    assert!(
        rejected.contains("certificate rejected: signature: does not verify"),
        "{rejected}"
    );
    drop(dev);
}

/// `residency audit verify-certificate` of `certificate` with the keys at `keys_url`.
async fn verify_certificate(cwd: &Path, certificate: &str, keys_url: &str) -> Run {
    cli(
        cwd,
        &[
            "audit",
            "verify-certificate",
            "--certificate",
            certificate,
            "--keys-url",
            keys_url,
        ],
    )
    .await
}

#[tokio::test]
async fn nothing_configured_names_what_is_missing() {
    let cwd = tempfile::tempdir().expect("working dir");
    let no_endpoint = cli(cwd.path(), &["tenants", "list"]).await;
    let text = no_endpoint.failed();
    assert!(
        text.contains("--endpoint")
            && text.contains("RESIDENCY_ENDPOINT")
            && text.contains(".residency/dev/endpoints.json"),
        "{text}"
    );
    let no_token = cli(
        cwd.path(),
        &["tenants", "list", "--endpoint", "http://127.0.0.1:9"],
    )
    .await;
    let text = no_token.failed();
    assert!(
        text.contains("no operator token") && text.contains("RESIDENCY_TOKEN"),
        "{text}"
    );
    let no_key = cli(
        cwd.path(),
        &["keys", "status", "t", "--endpoint", "http://127.0.0.1:9"],
    )
    .await;
    let text = no_key.failed();
    assert!(
        text.contains("--key") && text.contains("RESIDENCY_API_KEY"),
        "{text}"
    );
    let not_a_url = cli(
        cwd.path(),
        &["tenants", "list", "--endpoint", "ftp://x", "--token", "t"],
    )
    .await;
    assert!(
        not_a_url
            .failed()
            .contains("not an http:// or https:// URL")
    );
}

/// A loopback port that nothing listens on while the test runs.
fn closed_port() -> SocketAddr {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = socket.local_addr().expect("address");
    drop(socket);
    address
}

// ---------------------------------------------------------------------------------------
// The endpoints other parts of the platform answer, against a test server that answers
// API.md's documented bodies.

/// What the test server was sent: method, path and query, and the bearer credential.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

struct Contract {
    address: SocketAddr,
    seen: Seen,
}

const TENANT: &str = "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60";
const JOB: &str = "4d1e5a7c-2b3f-4c6d-9e8f-0a1b2c3d4e5f";

fn job_json(state: &str) -> Value {
    json!({
        "id": JOB, "kind": "reencrypt", "tenant": TENANT, "state": state,
        "progress": {"done": 40, "total": 100, "failed": 1}, "attempts": 2,
        "last_error": null, "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:05:00Z", "finished_at": null
    })
}

/// The documented answer to each request, or a problem.
async fn answer(State(seen): State<Seen>, request: Request) -> Response {
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(String::new, ToString::to_string);
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_owned);
    seen.lock()
        .expect("seen")
        .push((method.clone(), target.clone(), bearer));
    let path = target.split('?').next().unwrap_or_default();
    let keys = format!("/v1/tenants/{TENANT}/keys");
    let (status, body) = match (method.as_str(), path) {
        ("DELETE", p) if p == format!("/v1/tenants/{TENANT}") => {
            (StatusCode::ACCEPTED, json!({"status": "offboarding"}))
        }
        ("POST", p) if p == format!("{keys}/rotate") => (
            StatusCode::ACCEPTED,
            json!({"key_version": 3, "reencryption": {"status": "queued", "done": 0, "total": 1200}}),
        ),
        ("GET", p) if p == keys => (
            StatusCode::OK,
            json!({
                "versions": [
                    {"version": 2, "created_at": "2026-02-01T00:00:00Z", "state": "retired"},
                    {"version": 3, "created_at": "2026-03-01T00:00:00Z", "state": "active"}
                ],
                "reencryption": {"status": "running", "done": 600, "total": 1200}
            }),
        ),
        ("GET", "/v1/jobs") => (
            StatusCode::OK,
            json!({"jobs": [job_json("running")], "next_cursor": "c2"}),
        ),
        ("GET", p) if p == format!("/v1/jobs/{JOB}") => (StatusCode::OK, job_json("running")),
        ("GET", "/v1/jobs/busy") => {
            let problem = json!({
                "type": "https://residency.dev/problems/unavailable", "title": "Service Unavailable",
                "status": 503, "detail": "the region's primary is down", "request_id": "req-test-2"
            });
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [
                    ("content-type", "application/problem+json"),
                    ("retry-after", "5"),
                ],
                problem.to_string(),
            )
                .into_response();
        }
        _ => {
            let problem = json!({
                "type": "https://residency.dev/problems/not-found", "title": "Not Found",
                "status": 404, "detail": "no such job", "request_id": "req-test-1"
            });
            return (
                StatusCode::NOT_FOUND,
                [("content-type", "application/problem+json")],
                problem.to_string(),
            )
                .into_response();
        }
    };
    (status, axum::Json(body)).into_response()
}

async fn contract() -> Contract {
    let seen = Seen::default();
    let app = Router::new().fallback(answer).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    Contract { address, seen }
}

impl Contract {
    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn last(&self) -> (String, String, Option<String>) {
        self.seen
            .lock()
            .expect("seen")
            .last()
            .cloned()
            .expect("a request")
    }
}

#[tokio::test]
async fn offboard_keys_and_jobs_send_the_documented_requests_and_print_their_answers() {
    let cwd = tempfile::tempdir().expect("working dir");
    let api = contract().await;
    let endpoint = api.endpoint();
    let operator = ["--endpoint", &endpoint, "--token", "op-token"];
    let admin = ["--endpoint", &endpoint, "--key", "admin-key"];
    let bearer = |token: &str| Some(token.to_owned());

    // Offboarding asks for confirmation before anything is sent.
    let unconfirmed = cli(
        cwd.path(),
        &[&["tenants", "offboard", TENANT], &operator[..]].concat(),
    )
    .await;
    assert!(unconfirmed.failed().contains("--yes"));
    assert!(
        api.seen.lock().expect("seen").is_empty(),
        "nothing was sent"
    );
    let offboarded = cli(
        cwd.path(),
        &[&["tenants", "offboard", TENANT, "--yes"], &operator[..]].concat(),
    )
    .await;
    assert_eq!(offboarded.ok(), format!("tenant {TENANT}: offboarding\n"));
    assert_eq!(
        api.last(),
        (
            "DELETE".into(),
            format!("/v1/tenants/{TENANT}"),
            bearer("op-token")
        )
    );

    let rotated = cli(
        cwd.path(),
        &[&["keys", "rotate", TENANT], &admin[..]].concat(),
    )
    .await;
    let rotated = rotated.ok();
    assert!(rotated.contains("key version:   3"), "{rotated}");
    assert!(rotated.contains("queued (0/1200)"), "{rotated}");
    assert_eq!(
        api.last(),
        (
            "POST".into(),
            format!("/v1/tenants/{TENANT}/keys/rotate"),
            bearer("admin-key")
        )
    );

    let status: KeyStatus = cli(
        cwd.path(),
        &[&["keys", "status", TENANT, "--json"], &admin[..]].concat(),
    )
    .await
    .json();
    assert_eq!(status.versions.len(), 2);
    let table = cli(
        cwd.path(),
        &[&["keys", "status", TENANT], &admin[..]].concat(),
    )
    .await;
    assert_eq!(
        table.ok(),
        "VERSION  STATE    CREATED\n\
         2        retired  2026-02-01T00:00:00Z\n\
         3        active   2026-03-01T00:00:00Z\n\
         re-encryption: running (600/1200)\n"
    );
    assert_eq!(
        api.last(),
        (
            "GET".into(),
            format!("/v1/tenants/{TENANT}/keys"),
            bearer("admin-key")
        )
    );

    let page: JobPage = cli(
        cwd.path(),
        &[
            &[
                "jobs",
                "list",
                "--json",
                "--kind",
                "reencrypt",
                "--state",
                "running",
            ][..],
            &["--tenant", TENANT, "--limit", "5", "--cursor", "c1"],
            &operator[..],
        ]
        .concat(),
    )
    .await
    .json();
    assert_eq!(page.next_cursor.as_deref(), Some("c2"));
    assert_eq!(
        api.last(),
        (
            "GET".into(),
            format!("/v1/jobs?kind=reencrypt&state=running&tenant={TENANT}&limit=5&cursor=c1"),
            bearer("op-token")
        )
    );
    let jobs = cli(cwd.path(), &[&["jobs", "list"], &operator[..]].concat()).await;
    let jobs = jobs.ok();
    assert!(jobs.starts_with("ID "), "{jobs}");
    assert!(
        jobs.contains("reencrypt") && jobs.contains("40/100"),
        "{jobs}"
    );
    assert!(jobs.ends_with("(more: add --cursor c2)\n"), "{jobs}");
    assert_eq!(api.last().1, "/v1/jobs", "no empty parameters are sent");

    let job: JobView = cli(
        cwd.path(),
        &[&["jobs", "get", JOB, "--json"], &operator[..]].concat(),
    )
    .await
    .json();
    assert_eq!(job.progress.failed, 1);
    let shown = cli(cwd.path(), &[&["jobs", "get", JOB], &operator[..]].concat()).await;
    let shown = shown.ok();
    assert!(
        shown.contains("progress:    40/100 done, 1 failed"),
        "{shown}"
    );
    assert!(shown.contains("finished at: -"), "{shown}");

    let busy = cli(
        cwd.path(),
        &[&["jobs", "get", "busy"], &operator[..]].concat(),
    )
    .await;
    let busy = busy.failed();
    assert!(
        busy.contains("answered 503: Service Unavailable: the region's primary is down (request id req-test-2); try again in 5 s"),
        "{busy}"
    );

    // https is spoken (and fails cleanly against a server that speaks plain HTTP).
    let https = format!("https://{}", api.address);
    let tls = cli(
        cwd.path(),
        &["jobs", "list", "--endpoint", &https, "--token", "op-token"],
    )
    .await;
    let tls = tls.failed();
    assert!(
        tls.contains(&format!("cannot reach the node at {https}")),
        "{tls}"
    );

    // An id is one path segment, never more of the path.
    let dots = cli(
        cwd.path(),
        &[&["jobs", "get", ".."], &operator[..]].concat(),
    )
    .await;
    assert!(dots.failed().contains("cannot be empty, `.` or `..`"));
    let missing = cli(
        cwd.path(),
        &[&["jobs", "get", "../tenants"], &operator[..]].concat(),
    )
    .await;
    let missing = missing.failed();
    assert_eq!(api.last().1, "/v1/jobs/..%2Ftenants");
    assert!(
        missing.contains("answered 404: Not Found: no such job (request id req-test-1)"),
        "{missing}"
    );
}

#[tokio::test]
async fn an_admin_rotates_a_tenants_key_on_residency_dev_and_watches_the_reencryption() {
    let state = tempfile::tempdir().expect("state dir");
    let cwd = tempfile::tempdir().expect("working dir");
    let mut dev = Dev::spawn(state.path(), "eu-central-1");
    let endpoints = dev.endpoints().await;
    let eu_api = api_endpoint(&endpoints, "eu-central-1");
    let state_dir = state.path().to_str().expect("utf-8 path");
    let eu = ["--state-dir", state_dir, "--region", "eu-central-1"];
    let acme = create_acme(cwd.path(), &eu).await;
    let admin = acme.admin_key.as_str();

    // Some sealed data to re-encrypt.
    let http = reqwest::Client::new();
    let collection = format!("{eu_api}/v1/tenants/{}/collections/people", acme.id);
    let records = people(&eu_api, &acme.id, admin, 20).await;

    let keys = |command: &'static str, json: bool| {
        let mut args = vec!["keys", command, acme.id.as_str(), "--key", admin];
        if json {
            args.push("--json");
        }
        args.extend_from_slice(&eu);
        args
    };
    let started: wire::api::KeyRotationStarted =
        cli(cwd.path(), &keys("rotate", true)).await.json();
    assert_eq!(started.key_version, 2);
    assert_eq!(started.reencryption.status, "queued");

    // The region's job runner re-encrypts in the background; status shows how far it is.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let status: KeyStatus = cli(cwd.path(), &keys("status", true)).await.json();
        let reencryption = status.reencryption.clone().expect("a re-encryption");
        if reencryption.status == "done" {
            break status;
        }
        assert_ne!(reencryption.status, "failed", "{}", dev.output());
        assert!(tokio::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let reencryption = status.reencryption.as_ref().expect("a re-encryption");
    assert_eq!((reencryption.done, reencryption.total), (20, 20));
    let states: Vec<(u32, &str)> = status
        .versions
        .iter()
        .map(|version| (version.version, version.state.as_str()))
        .collect();
    assert_eq!(states, [(1, "retired"), (2, "active")]);
    let table = cli(cwd.path(), &keys("status", false)).await;
    let table = table.ok();
    assert!(table.starts_with("VERSION "), "{table}");
    assert!(table.contains("re-encryption: done (20/20)"), "{table}");

    // Every record reads as it was written.
    for (id, email) in &records {
        let read: Value = http
            .get(format!("{collection}/records/{id}"))
            .bearer_auth(admin)
            .send()
            .await
            .expect("read record")
            .json()
            .await
            .expect("record");
        assert_eq!(read["data"]["email"], email.as_str());
    }

    // Another key than the admin's is refused, clearly.
    let refused = cli(
        cwd.path(),
        &[
            &["keys", "rotate", acme.id.as_str(), "--key", "rsk.not-a-key"],
            &eu[..],
        ]
        .concat(),
    )
    .await;
    let refused = refused.failed();
    assert!(refused.contains("401"), "{refused}");
    drop(dev);
}

/// Gives the tenant a `people` collection and `count` records (an email each, sealed)
/// through `api`; returns each record's id and email.
async fn people(api: &str, tenant: &str, admin: &str, count: usize) -> Vec<(String, String)> {
    let http = reqwest::Client::new();
    let schema =
        json!({"fields": {"email": {"type": "string", "class": "identifier", "searchable": true}}});
    let collection = format!("{api}/v1/tenants/{tenant}/collections/people");
    let put = http
        .put(&collection)
        .bearer_auth(admin)
        .json(&schema)
        .send()
        .await
        .expect("put schema");
    assert_eq!(put.status(), reqwest::StatusCode::CREATED);
    let mut records = Vec::new();
    for n in 0..count {
        let email = format!("person{n}@example.com");
        let created: Value = http
            .post(format!("{collection}/records"))
            .bearer_auth(admin)
            .json(&json!({"data": {"email": email}}))
            .send()
            .await
            .expect("create record")
            .json()
            .await
            .expect("record");
        records.push((created["id"].as_str().expect("id").to_owned(), email));
    }
    records
}

/// Runs `residency jobs get JOB --json` until the job is `done` (60 s at most).
async fn job_done(cwd: &Path, job: &str, on: &[&str], dev: &mut Dev) -> JobView {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let shown: JobView = cli(cwd, &[&["jobs", "get", job, "--json"], on].concat())
            .await
            .json();
        assert_ne!(shown.state, "failed", "{shown:?}\n{}", dev.output());
        if shown.state == "done" {
            return shown;
        }
        assert!(tokio::time::Instant::now() < deadline, "{shown:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn key_policy_destruction_rewrap_and_audit_key_rotation_from_the_cli_on_residency_dev() {
    let state = tempfile::tempdir().expect("state dir");
    let cwd = tempfile::tempdir().expect("working dir");
    let mut dev = Dev::spawn(state.path(), "eu-central-1");
    let endpoints = dev.endpoints().await;
    let eu_api = api_endpoint(&endpoints, "eu-central-1");
    let state_dir = state.path().to_str().expect("utf-8 path");
    let eu = ["--state-dir", state_dir, "--region", "eu-central-1"];
    let acme = create_acme(cwd.path(), &eu).await;
    let (tenant, admin) = (acme.id.as_str(), acme.admin_key.as_str());
    let as_admin = [&["--tenant", tenant, "--key", admin][..], &eu[..]].concat();

    let http = reqwest::Client::new();
    people(&eu_api, tenant, admin, 5).await;

    // The rotation bounds: the region's until set; a flag not given keeps its bound.
    let policy = async |flags: &[&str]| -> Run {
        cli(
            cwd.path(),
            &[&["keys", "policy"], flags, &as_admin[..]].concat(),
        )
        .await
    };
    let shown = policy(&[]).await;
    let shown = shown.ok();
    assert!(
        shown.contains("max seals:") && shown.contains("region default (1073741824)"),
        "{shown}"
    );
    let set: wire::api::KeyPolicyView = policy(&["--max-seals", "1000", "--json"]).await.json();
    assert_eq!((set.max_seals, set.max_age_seconds), (Some(1000), None));
    let set: wire::api::KeyPolicyView = policy(&["--max-age", "86400", "--json"]).await.json();
    assert_eq!(
        (set.max_seals, set.max_age_seconds),
        (Some(1000), Some(86_400))
    );
    let set: wire::api::KeyPolicyView = policy(&["--max-seals", "default", "--json"]).await.json();
    assert_eq!((set.max_seals, set.max_age_seconds), (None, Some(86_400)));
    let refused = policy(&["--max-age", "60"]).await;
    let refused = refused.failed();
    assert!(
        refused.contains("422") && refused.contains("max_age_seconds"),
        "{refused}"
    );
    let unparsed = policy(&["--max-seals", "many"]).await;
    assert_eq!(unparsed.code, Some(2), "{}", unparsed.stderr);

    // A rotation's re-encryption is a real job: listed, shown, followed to `done`.
    let started: wire::api::KeyRotationStarted = cli(
        cwd.path(),
        &[
            &["keys", "rotate", tenant, "--key", admin, "--json"],
            &eu[..],
        ]
        .concat(),
    )
    .await
    .json();
    assert_eq!(started.key_version, 2);
    let page: JobPage = cli(
        cwd.path(),
        &[
            &[
                "jobs",
                "list",
                "--json",
                "--kind",
                "reencrypt",
                "--tenant",
                tenant,
            ][..],
            &eu[..],
        ]
        .concat(),
    )
    .await
    .json();
    assert_eq!(page.jobs.len(), 1, "{page:?}");
    let job = page.jobs[0].id.clone();
    assert_eq!(page.jobs[0].tenant.as_deref(), Some(tenant));
    let done = job_done(cwd.path(), &job, &eu, &mut dev).await;
    assert_eq!((done.kind.as_str(), done.progress.done), ("reencrypt", 5));
    let shown = cli(
        cwd.path(),
        &[&["jobs", "get", job.as_str()], &eu[..]].concat(),
    )
    .await;
    let shown = shown.ok();
    assert!(
        shown.contains("kind:") && shown.contains("reencrypt") && shown.contains("5/5 done"),
        "{shown}"
    );
    let listed = cli(
        cwd.path(),
        &[&["jobs", "list", "--kind", "reencrypt"], &eu[..]].concat(),
    )
    .await;
    let listed = listed.ok();
    assert!(
        listed.starts_with("ID ") && listed.contains(&job),
        "{listed}"
    );

    // The retired version goes; the active one cannot.
    let destroy = async |version: &str, json: bool| -> Run {
        let mut flags = vec!["keys", "destroy", "--version", version];
        if json {
            flags.push("--json");
        }
        cli(cwd.path(), &[&flags[..], &as_admin[..]].concat()).await
    };
    let active = destroy("2", false).await;
    let active = active.failed();
    assert!(active.contains("409"), "{active}");
    let destroyed: KeyStatus = destroy("1", true).await.json();
    let states: Vec<(u32, &str)> = destroyed
        .versions
        .iter()
        .map(|v| (v.version, v.state.as_str()))
        .collect();
    assert_eq!(states, [(1, "destroyed"), (2, "active")]);
    let again = destroy("1", false).await;
    let again = again.ok();
    assert!(
        again.starts_with("version 1 destroyed\nVERSION "),
        "{again}"
    );

    // The operator's region-wide commands: a rewrap job, a new audit signing key.
    let rewrap: JobView = cli(
        cwd.path(),
        &[&["keys", "rewrap", "--json"], &eu[..]].concat(),
    )
    .await
    .json();
    assert_eq!(
        (rewrap.kind.as_str(), rewrap.tenant.as_deref()),
        ("rewrap", None)
    );
    let rewrapped = job_done(cwd.path(), &rewrap.id, &eu, &mut dev).await;
    assert_eq!(rewrapped.progress.failed, 0, "{rewrapped:?}");
    let keys_before: wire::api::AuditKeys = http
        .get(format!("{eu_api}/v1/audit/keys"))
        .send()
        .await
        .expect("audit keys")
        .json()
        .await
        .expect("keys");
    let rotated: wire::api::AuditKeyRotated = cli(
        cwd.path(),
        &[&["keys", "rotate-audit", "--json"], &eu[..]].concat(),
    )
    .await
    .json();
    assert!(
        keys_before
            .keys
            .iter()
            .any(|k| k.key_id == rotated.previous_key_id),
        "{keys_before:?} {rotated:?}"
    );
    assert_ne!(rotated.key_id, rotated.previous_key_id);
    let previous = rotated
        .keys
        .iter()
        .find(|k| k.key_id == rotated.previous_key_id)
        .expect("the previous key stays published");
    assert!(previous.valid_until.is_some(), "{previous:?}");
    let table = cli(cwd.path(), &[&["keys", "rotate-audit"], &eu[..]].concat()).await;
    let table = table.ok();
    assert!(
        table.contains(&format!("previous key: {}", rotated.key_id)) && table.contains("KEY ID"),
        "{table}"
    );

    // The region's commands want the operator token, not a tenant's key.
    let refused = cli(
        cwd.path(),
        &[&["keys", "rewrap", "--token", admin][..], &eu[..]].concat(),
    )
    .await;
    let refused = refused.failed();
    assert!(
        refused.contains("401") || refused.contains("403"),
        "{refused}"
    );
    assert!(!refused.contains(admin), "the key is never printed");
    drop(dev);
}
