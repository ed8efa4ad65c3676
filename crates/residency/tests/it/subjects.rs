//! `residency subjects export|erase` as a compliance officer runs them. `export` against
//! `residency dev`: every signed page of one person's export written to a file that
//! `subjects verify-export` checks offline (and rejects with a page missing or edited),
//! nothing of another person in it, the subject's value in no output line. `erase`
//! against a small server answering API.md's documented bodies: the subject goes
//! percent-encoded into the path, `200` and `202` are printed, a `401` and a `404` are
//! clear errors that never name the subject.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::dev::{Dev, api_endpoint};
use crate::operator::{cli, create_acme};

/// The subject as the records hold it, and as the officer types it (the index normalizes
/// case and surrounding spaces); a `/`, a `+` and a space must survive the path.
const STORED: &str = "Ada Lovelace/Byron+dsar@Example.org";
const ASKED: &str = "ada lovelace/byron+dsar@example.org";
const OTHER: &str = "charles.babbage@example.org";

async fn create_person(http: &reqwest::Client, collection: &str, admin: &str, data: Value) {
    let created = http
        .post(format!("{collection}/records"))
        .bearer_auth(admin)
        .json(&json!({ "data": data }))
        .send()
        .await
        .expect("create record");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
}

#[tokio::test]
async fn an_officer_exports_a_subject_to_a_file_that_verifies_offline() {
    let state = tempfile::tempdir().expect("state dir");
    let cwd = tempfile::tempdir().expect("working dir");
    let dir = cwd.path();
    let mut dev = Dev::spawn(state.path(), "eu-central-1");
    let endpoints = dev.endpoints().await;
    let eu_api = api_endpoint(&endpoints, "eu-central-1");
    let state_dir = state.path().to_str().expect("utf-8 path");
    let eu = ["--state-dir", state_dir, "--region", "eu-central-1"];
    let acme = create_acme(cwd.path(), &eu).await;
    let admin = acme.admin_key.as_str();

    // Five records of the subject (three pages of two), three of another person.
    let http = reqwest::Client::new();
    let collection = format!("{eu_api}/v1/tenants/{}/collections/people", acme.id);
    let put = http
        .put(&collection)
        .bearer_auth(admin)
        .json(&wire::examples::collection_schema())
        .send()
        .await
        .expect("put schema");
    assert_eq!(put.status(), reqwest::StatusCode::CREATED);
    for (email, visits) in [(STORED, 5), (OTHER, 3)] {
        for visit in 0..visits {
            let person = json!({"email": email, "name": format!("visit {visit}"), "age": 30 + visit,
                                "zip": "10115", "diagnosis": "flu", "plan": "pro"});
            create_person(&http, &collection, admin, person).await;
        }
    }

    let out = cwd.path().join("ada.dsar");
    let out_arg = out.to_str().expect("utf-8 path");
    let export = |out: &str, tenant: &str, key: &str| {
        [
            &["subjects", "export", "--tenant", tenant, "--subject", ASKED],
            &["--out", out, "--limit", "2", "--key", key][..],
            &eu[..],
        ]
        .concat()
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<String>>()
    };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(dir, &args).await
    };
    let written = run(export(out_arg, &acme.id, admin)).await;
    let summary = written.ok();
    assert!(
        summary.contains("wrote 5 records in 3 signed pages"),
        "{summary}"
    );
    assert!(!summary.to_lowercase().contains("lovelace"), "{summary}");

    // One signed page per line, each the subject's, nothing of the other person; the file
    // is its owner's only.
    let text = std::fs::read_to_string(&out).expect("read the export");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let mut records = 0;
    for line in &lines {
        let page: wire::api::SubjectExport = serde_json::from_str(line).expect("a signed page");
        assert_eq!(page.tenant, acme.id);
        for record in &page.records {
            assert_eq!(record.data["email"], STORED);
            records += 1;
        }
    }
    assert_eq!(records, 5);
    assert!(!text.contains(OTHER));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the export is its owner's only");
    }

    // Offline, against the region's published keys: intact; a page removed or edited is
    // rejected.
    let keys_url = format!("{eu_api}/v1/audit/keys");
    let verify = |file: &Path| {
        let file = file.to_str().expect("utf-8 path").to_owned();
        let keys_url = keys_url.clone();
        async move {
            cli(
                dir,
                &[
                    "subjects",
                    "verify-export",
                    "--file",
                    &file,
                    "--keys-url",
                    &keys_url,
                ],
            )
            .await
        }
    };
    let verified = verify(&out).await;
    let verified = verified.ok();
    assert!(
        verified.contains("export intact") && verified.contains("5 records in 3 pages"),
        "{verified}"
    );
    assert!(!verified.contains("more pages follow"), "{verified}");
    assert!(!verified.to_lowercase().contains("lovelace"), "{verified}");
    let missing = cwd.path().join("missing.dsar");
    std::fs::write(&missing, format!("{}\n{}\n", lines[0], lines[2])).expect("write");
    let rejected = verify(&missing).await;
    assert!(
        rejected.failed().contains("page 2 does not follow page 1"),
        "{rejected:?}"
    );
    let edited = cwd.path().join("edited.dsar");
    std::fs::write(&edited, text.replacen("visit 1", "visit 9", 1)).expect("write");
    assert_ne!(std::fs::read_to_string(&edited).expect("read"), text);
    let rejected = verify(&edited).await;
    assert!(
        rejected.failed().contains("the signature does not verify"),
        "{rejected:?}"
    );

    // An existing file is never written over; an unknown tenant and a refused key are clear
    // errors; none names the subject, and none leaves a file.
    let again = run(export(out_arg, &acme.id, admin)).await;
    assert!(again.failed().contains("exists"), "{again:?}");
    let unknown_out = cwd.path().join("unknown.dsar");
    let unknown_out = unknown_out.to_str().expect("utf-8 path");
    let unknown = run(export(
        unknown_out,
        "00000000-0000-4000-8000-000000000000",
        admin,
    ))
    .await;
    let unknown = unknown.failed();
    assert!(unknown.contains("404"), "{unknown}");
    let refused = run(export(unknown_out, &acme.id, "rsk.not-a-key")).await;
    let refused = refused.failed();
    assert!(refused.contains("refused the API key (401)"), "{refused}");
    for stderr in [unknown, refused] {
        assert!(!stderr.to_lowercase().contains("lovelace"), "{stderr}");
    }
    assert!(!Path::new(unknown_out).exists());
    assert!(!cwd.path().join("unknown.dsar.partial").exists());
    drop(dev);
}

// ---------------------------------------------------------------------------------------
// `subjects erase` against a server answering API.md's bodies (the endpoint's own tests
// are the api crate's).

const TENANT: &str = "2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60";
const GOOD_KEY: &str = "rsk.2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60.k1.secret";
/// The subject's path segment as the CLI must send it.
const ENCODED: &str = "ada%20lovelace%2Fbyron+dsar@example.org";

/// The paths the server was asked, and how it answers: `large` subjects take a job.
async fn erase_answer(State(seen): State<Arc<Mutex<Vec<String>>>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    seen.lock().expect("seen").push(path.clone());
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok());
    let problem = |status: StatusCode, detail: &str| {
        let body = json!({"type": "about:blank", "title": status.canonical_reason(),
                          "status": status.as_u16(), "detail": detail, "request_id": "req-erase"});
        (
            status,
            [("content-type", "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    };
    if bearer != Some(&format!("Bearer {GOOD_KEY}")) {
        return problem(StatusCode::UNAUTHORIZED, "the API key is not valid");
    }
    let Some(subject) = path
        .strip_prefix(&format!("/v1/tenants/{TENANT}/subjects/"))
        .and_then(|rest| rest.strip_suffix("/erase"))
    else {
        return problem(StatusCode::NOT_FOUND, "no such tenant");
    };
    if subject == "large" {
        let job = json!({"id": "4d1e5a7c-2b3f-4c6d-9e8f-0a1b2c3d4e5f", "kind": "subject_erase",
                         "state": "running", "progress": {"done": 1000, "total": 25000, "failed": 0}});
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({"subject": "large", "job": job})),
        )
            .into_response();
    }
    let body = json!({"subject": ASKED, "records_erased": 5, "files_erased": 2, "audit_seq": 42});
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn erase_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .fallback(erase_answer)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (address, seen)
}

#[tokio::test]
async fn erase_sends_the_subject_encoded_and_prints_the_answer_or_a_clear_error() {
    let cwd = tempfile::tempdir().expect("working dir");
    let (address, seen) = erase_server().await;
    let endpoint = format!("http://{address}");
    let erase = |tenant: &'static str, subject: &'static str, key: &'static str, json: bool| {
        let endpoint = endpoint.clone();
        let cwd = cwd.path().to_owned();
        async move {
            let mut args = vec![
                "subjects",
                "erase",
                "--tenant",
                tenant,
                "--subject",
                subject,
                "--key",
                key,
                "--endpoint",
                &endpoint,
            ];
            if json {
                args.push("--json");
            }
            cli(&cwd, &args).await
        }
    };

    let done = erase(TENANT, ASKED, GOOD_KEY, false).await;
    let done = done.ok();
    assert_eq!(done, "erased: 5 records, 2 files; audit seq 42\n");
    assert_eq!(
        seen.lock().expect("seen").last().cloned(),
        Some(format!("/v1/tenants/{TENANT}/subjects/{ENCODED}/erase")),
        "the subject is one percent-encoded path segment"
    );
    let as_json: Value =
        serde_json::from_str(erase(TENANT, ASKED, GOOD_KEY, true).await.ok()).expect("json");
    assert_eq!(as_json["records_erased"], 5);

    let job = erase(TENANT, "large", GOOD_KEY, false).await;
    let job = job.ok();
    assert!(
        job.contains("job 4d1e5a7c-2b3f-4c6d-9e8f-0a1b2c3d4e5f")
            && job.contains("running, 1000 of 25000 done"),
        "{job}"
    );

    let refused = erase(TENANT, ASKED, "rsk.wrong", false).await;
    let refused = refused.failed();
    assert!(
        refused.contains("refused the API key (401): check --key or RESIDENCY_API_KEY"),
        "{refused}"
    );
    let unknown = erase(
        "7e57e57e-0000-4000-8000-000000000000",
        ASKED,
        GOOD_KEY,
        false,
    )
    .await;
    let unknown = unknown.failed();
    assert!(
        unknown.contains("erase the subject of tenant 7e57e57e-0000-4000-8000-000000000000")
            && unknown.contains("404")
            && unknown.contains("no such tenant"),
        "{unknown}"
    );
    for stderr in [refused, unknown] {
        assert!(
            !stderr.contains("lovelace") && !stderr.contains("byron"),
            "{stderr}"
        );
    }
    let blank = erase(TENANT, "  ", GOOD_KEY, false).await;
    assert!(blank.failed().contains("the subject is empty"), "{blank:?}");
}
