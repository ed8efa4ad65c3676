//! The tenant API under abuse by someone who knows only a tenant id (and, at most, a key's
//! public id): junk tokens and long path segments leave one counted event per reason in
//! the tenant's chain and none of their text; unverified tokens share one bucket that
//! bounds their database lookups; a wrong secret cannot lock a key out; a flood of
//! denials cannot make a read fail; bodies are read only for authorized callers, within
//! a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use audit::{Action, Outcome};
use axum::body::Body;
use axum::http::{Request, StatusCode as HttpStatus, header};
use model::TenantId;
use reqwest::{Method, StatusCode};
use serde_json::json;
use service::denials::Denial;
use service::{AuditSettings, ReadAudit};
use store::audit::EventFilter;
use store::testing::region_database;
use tower::ServiceExt;

use crate::tenant_api::{person, serve, serve_node};
use crate::{Node, node_parts, node_with};

/// What the attacker writes wherever it can; it must appear nowhere in the chain.
const MARKER: &str = "ATTACKER-TEXT";

/// A node whose buckets refill by `per_second` and hold `burst`, serving.
async fn serve_limited(
    database: store::RegionDatabase,
    per_second: f64,
    burst: f64,
) -> crate::tenant_api::Served {
    serve_node(node_with(
        database,
        api::rate_limit::RateLimit { per_second, burst },
    ))
    .await
}

/// A made-up key id of the right shape.
fn random_key_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// A token of the right shape for `tenant` and `key_id`, with a made-up secret.
fn forged_token(tenant: &str, key_id: &str) -> String {
    use base64::Engine as _;
    let secret =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    format!("rsk.{tenant}.{key_id}.{secret}")
}

fn tenant_id(raw: &str) -> TenantId {
    TenantId::parse(raw).expect("tenant id")
}

async fn chain(node: &Node, tenant: &TenantId) -> Vec<audit::Event> {
    node.state
        .service()
        .flush_denials()
        .await
        .expect("denials recorded");
    node.state.audit().flush().await.expect("queue written");
    node.state
        .audit()
        .events(
            tenant,
            &EventFilter {
                from: None,
                to: None,
                action: None,
                after_seq: 0,
                limit: 100_000,
            },
        )
        .await
        .expect("events")
}

/// The count an `auth.failed` event stands for.
fn count_of(event: &audit::Event, reason: Denial) -> Option<u64> {
    let prefix = format!("denials/{}?count=", reason.as_str());
    event.resource.strip_prefix(&prefix)?.parse().ok()
}

#[tokio::test]
async fn junk_tokens_and_long_path_segments_leave_one_counted_event_per_reason_and_no_attacker_text()
 {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let reader = api.key(&tenant, &admin, "reader").await;
    let tenant_key = tenant_id(&tenant);
    let before = chain(&api.node, &tenant_key).await.len();
    let (admin_public, _) = admin.rsplit_once('.').expect("a key token");

    let long = format!("{MARKER}{}", "A".repeat(4096));
    let paths = [
        (
            Method::GET,
            format!("/v1/tenants/{tenant}/collections/{long}"),
        ),
        (
            Method::GET,
            format!("/v1/tenants/{tenant}/collections/people/records/{long}"),
        ),
        (
            Method::GET,
            format!("/v1/tenants/{tenant}/collections/{long}/records/{long}/files/{long}"),
        ),
        (
            Method::DELETE,
            format!("/v1/tenants/{tenant}/api-keys/{long}"),
        ),
    ];
    let mut sent = std::collections::BTreeMap::<&str, u64>::new();
    let request_id = format!("{MARKER}-request");
    for i in 0..2000usize {
        let (method, path) = &paths[i % paths.len()];
        let (token, reason) = match i % 4 {
            0 => (None, Denial::NoToken),
            1 => (Some(format!("{MARKER}.{i}")), Denial::MalformedToken),
            2 => (
                Some(forged_token(&tenant, &random_key_id())),
                Denial::UnknownKey,
            ),
            _ => (
                Some(format!("{admin_public}.{}", "A".repeat(43))),
                Denial::WrongSecret,
            ),
        };
        let answer = api
            .call(
                method.clone(),
                path,
                token.as_deref(),
                None,
                &[
                    ("x-request-id", request_id.as_str()),
                    ("user-agent", MARKER),
                ],
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{i}: {:?}",
            answer.body
        );
        *sent.entry(reason.as_str()).or_default() += 1;
    }
    // A verified key whose role may not do it: one event per request, as before, but
    // naming the invalid ids by a marker, never by the text sent.
    let refused = api
        .call(
            Method::PUT,
            &paths[0].1,
            Some(&reader),
            Some(json!({"fields": {}})),
            &[("x-request-id", "req-verified-denial")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);

    let events = chain(&api.node, &tenant_key).await;
    let new = &events[before..];
    let failed: Vec<&audit::Event> = new
        .iter()
        .filter(|event| event.action == Action::AuthFailed)
        .collect();
    for (reason, count) in &sent {
        let reason = Denial::ALL
            .into_iter()
            .find(|denial| denial.as_str() == *reason)
            .expect("a reason");
        let windows: Vec<u64> = failed
            .iter()
            .filter_map(|event| count_of(event, reason))
            .collect();
        assert_eq!(
            windows,
            vec![*count],
            "one event for {reason:?}, counting every request: {failed:#?}"
        );
    }
    assert_eq!(failed.len(), sent.len(), "{failed:#?}");
    for event in &failed {
        assert_eq!(event.outcome, Outcome::Denied);
        assert_eq!(event.request_id, service::tenancy::AGGREGATE_REQUEST_ID);
    }
    let verified_denial: Vec<&audit::Event> = new
        .iter()
        .filter(|event| event.action == Action::CollectionPut)
        .collect();
    assert_eq!(verified_denial.len(), 1, "{new:#?}");
    assert_eq!(verified_denial[0].resource, "collections/(invalid)");
    assert_eq!(
        new.len(),
        failed.len() + 1,
        "no event per unauthenticated request: {new:#?}"
    );
    for event in &events {
        let text = format!("{event:?}");
        assert!(!text.contains(MARKER), "attacker text in the chain: {text}");
        assert!(!text.contains("AAAA"), "attacker text in the chain: {text}");
    }

    // The bundle still verifies, and holds none of the attacker's text either.
    let auditor = api.key(&tenant, &admin, "auditor").await;
    let (export, _) = api.verified_export(&tenant, &auditor).await;
    assert!(!String::from_utf8_lossy(&export.bytes).contains(MARKER));

    // Counted in the metrics by reason, from a fixed set of labels.
    let metrics = api.node.state.metrics().encode();
    for reason in sent.keys() {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} counted"
        );
    }
    assert!(!metrics.contains(MARKER));
}

#[tokio::test]
async fn random_well_formed_keys_cost_database_queries_only_up_to_the_shared_budget() {
    let (_db, database) = region_database("eu-central-1").await;
    // Less the 6 requests of the first part.
    let budget = 46.0;
    let api = serve_limited(database, 0.01, budget).await;
    let (tenant, admin) = api.tenant().await;
    let path = format!("/v1/tenants/{tenant}/collections/people");
    let service = api.node.state.service().clone();
    // A key id the database does not have is remembered, briefly: asking again costs
    // no query.
    let unknown = forged_token(&tenant, &random_key_id());
    let first_lookups = service.api_key_lookups();
    for _ in 0..5 {
        let answer = api
            .call(Method::GET, &path, Some(&unknown), None, &[])
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(service.api_key_lookups() - first_lookups, 1);
    tokio::time::sleep(service::tenancy::UNKNOWN_KEY_TTL + Duration::from_millis(500)).await;
    let answer = api
        .call(Method::GET, &path, Some(&unknown), None, &[])
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        service.api_key_lookups() - first_lookups,
        2,
        "only briefly: a key created on another node is found"
    );

    let lookups_before = service.api_key_lookups();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for _ in 0..600 {
        // Random tenants too: a key of another tenant costs the same lookup.
        let key_tenant = if rand::random::<bool>() {
            tenant.clone()
        } else {
            TenantId::from_random_bytes(rand::random()).to_string()
        };
        let token = forged_token(&key_tenant, &random_key_id());
        let answer = api.call(Method::GET, &path, Some(&token), None, &[]).await;
        *statuses.entry(answer.status.as_u16()).or_default() += 1;
    }
    let lookups = service.api_key_lookups() - lookups_before;
    assert!(
        lookups <= budget as u64 - 5,
        "{lookups} database lookups for 600 junk keys: {statuses:?}"
    );
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 500,
        "past the shared budget, junk is limited: {statuses:?}"
    );
    // The admin key has a bucket of its own, untouched by the junk.
    let answer = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}"),
            Some(crate::OPERATOR_TOKEN),
            None,
            &[],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let people = api
        .call(
            Method::PUT,
            &path,
            Some(&admin),
            Some(crate::tenant_api::people_schema()),
            &[],
        )
        .await;
    assert_eq!(people.status, StatusCode::CREATED, "{:?}", people.body);
}

#[tokio::test]
async fn a_known_key_id_with_a_wrong_secret_cannot_lock_the_key_out() {
    let (_db, database) = region_database("eu-central-1").await;
    // A small shared budget, so that the flood of wrong secrets (about 40 a second)
    // exhausts it; the real key (about 4 a second) stays within its own.
    let api = serve_limited(database, 10.0, 5.0).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let writer = api.key(&tenant, &admin, "writer").await;
    let created = api
        .create_person(&tenant, &writer, person("a@example.com"))
        .await;
    let record = created.body["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/tenants/{tenant}/collections/people/records/{record}");
    let reader = api.key(&tenant, &admin, "reader").await;
    let (reader_public, _) = reader.rsplit_once('.').expect("a key token");
    let reader_id = reader_public.rsplit('.').next().expect("key id");
    let (_, own_tenant_public) = reader_public.split_once('.').expect("tenant");
    let own_tenant = own_tenant_public.split('.').next().expect("tenant");
    let other_tenant = TenantId::from_random_bytes(rand::random()).to_string();

    // The reader key's id, under its own tenant and under another, before its first use
    // (nothing of it is cached yet) and all along, while the key's cached entry expires.
    let attacks = [
        forged_token(own_tenant, reader_id),
        forged_token(&other_tenant, reader_id),
    ];
    for attack in &attacks {
        let answer = api.call(Method::GET, &path, Some(attack), None, &[]).await;
        assert_ne!(answer.status, StatusCode::OK);
    }
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < service::access::KEY_CACHE_TTL + Duration::from_secs(2) {
        for attack in &attacks {
            for _ in 0..5 {
                let answer = api.call(Method::GET, &path, Some(attack), None, &[]).await;
                assert!(
                    [
                        StatusCode::UNAUTHORIZED,
                        StatusCode::NOT_FOUND,
                        StatusCode::TOO_MANY_REQUESTS
                    ]
                    .contains(&answer.status),
                    "{:?}",
                    answer.status
                );
            }
        }
        let real = api.call(Method::GET, &path, Some(&reader), None, &[]).await;
        assert_eq!(
            real.status,
            StatusCode::OK,
            "round {rounds}: the real key still answers: {:?}",
            real.body
        );
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rounds > 20, "{rounds}");
}

#[tokio::test]
async fn a_flood_of_denials_never_makes_a_read_fail() {
    let (_db, database) = region_database("eu-central-1").await;
    let dir = tempfile::tempdir().expect("dir");
    let mut parts = node_parts(database, dir.path(), api::rate_limit::RateLimit::default());
    let metrics = parts.metrics.clone();
    // Nothing is written while the test runs: what is recorded stays queued.
    parts.audit = service::AuditLog::with_settings(
        parts.database.clone(),
        service::AuditKeys::generate(parts.database.region().clone()),
        AuditSettings {
            reads: ReadAudit::Batched {
                capacity: 100,
                max_batch: 100_000,
                flush_interval: Duration::from_secs(3600),
            },
            ..AuditSettings::default()
        },
        metrics,
    );
    let api = serve_node(Node {
        state: api::NodeState::new(parts),
        dir,
    })
    .await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let created = api
        .create_person(&tenant, &admin, person("a@example.com"))
        .await;
    let record = created.body["id"].as_str().expect("id").to_owned();
    let reader = api.key(&tenant, &admin, "reader").await;

    // A verified key denied 150 times (each one an event), more than the whole queue.
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for _ in 0..150 {
        let answer = api
            .create_person(&tenant, &reader, person("b@example.com"))
            .await;
        *statuses.entry(answer.status.as_u16()).or_default() += 1;
    }
    assert_eq!(
        statuses.get(&403).copied(),
        Some(25),
        "the denials' budget is a quarter of the queue: {statuses:?}"
    );
    assert_eq!(statuses.get(&503).copied(), Some(125), "{statuses:?}");
    // And junk: counted, never queued per request.
    for _ in 0..500 {
        let token = forged_token(&tenant, &random_key_id());
        api.call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/collections/people/records/{record}"),
            Some(&token),
            None,
            &[],
        )
        .await;
    }
    for _ in 0..50 {
        let read = api
            .call(
                Method::GET,
                &format!("/v1/tenants/{tenant}/collections/people/records/{record}"),
                Some(&reader),
                None,
                &[],
            )
            .await;
        assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    }
}

/// A body that records whether anyone polled it.
fn watched_body(polled: Arc<AtomicBool>) -> Body {
    let chunk = bytes::Bytes::from(vec![b' '; 1024 * 1024]);
    let stream = futures::stream::once(async move {
        polled.store(true, Ordering::SeqCst);
        Ok::<_, std::io::Error>(chunk)
    });
    Body::from_stream(stream)
}

#[tokio::test]
async fn an_unauthorized_request_is_refused_without_its_body_being_read() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let reader = api.key(&tenant, &admin, "reader").await;
    let records = format!("/v1/tenants/{tenant}/collections/people/records");
    let file = format!("{records}/00000000-0000-4000-8000-000000000000/files/scan.pdf");
    let cases: [(&str, Option<String>, HttpStatus); 8] = [
        (file.as_str(), None, HttpStatus::UNAUTHORIZED),
        (
            file.as_str(),
            Some(format!("Bearer {reader}")),
            HttpStatus::FORBIDDEN,
        ),
        (records.as_str(), None, HttpStatus::UNAUTHORIZED),
        (
            records.as_str(),
            Some(format!("Bearer {MARKER}")),
            HttpStatus::UNAUTHORIZED,
        ),
        (
            records.as_str(),
            Some(format!(
                "Bearer {}",
                forged_token(&tenant, &random_key_id())
            )),
            HttpStatus::UNAUTHORIZED,
        ),
        // Verified, but the role may not write.
        (
            records.as_str(),
            Some(format!("Bearer {reader}")),
            HttpStatus::FORBIDDEN,
        ),
        ("/v1/tenants", None, HttpStatus::UNAUTHORIZED),
        (
            "/v1/tenants",
            Some(format!("Bearer {reader}")),
            HttpStatus::FORBIDDEN,
        ),
    ];
    for (path, authorization, status) in cases {
        let polled = Arc::new(AtomicBool::new(false));
        let method = if path == file { "PUT" } else { "POST" };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, 1024 * 1024);
        if let Some(authorization) = &authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let response = crate::app(api.node.state.clone())
            .oneshot(request.body(watched_body(polled.clone())).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), status, "{path} {authorization:?}");
        assert!(
            !polled.load(Ordering::SeqCst),
            "{path} {authorization:?}: the body was read before the caller was authorized"
        );
    }
    // An authorized caller's body is read (and this one is not JSON).
    let polled = Arc::new(AtomicBool::new(false));
    let request = Request::post(&records)
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(watched_body(polled.clone()))
        .expect("request");
    let response = crate::app(api.node.state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), HttpStatus::BAD_REQUEST);
    assert!(polled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn an_authorized_callers_slow_body_times_out_with_a_problem() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (tenant, admin) = api.tenant().await;
    api.people(&tenant, &admin).await;
    let records = format!("/v1/tenants/{tenant}/collections/people/records");
    // The key and tenant are cached now: the slow request needs no database.
    let warm = api
        .call(
            Method::GET,
            &format!("/v1/tenants/{tenant}/collections/people"),
            Some(&admin),
            None,
            &[],
        )
        .await;
    assert_eq!(warm.status, StatusCode::OK);

    tokio::time::pause();
    let first = futures::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"data\": "))
    });
    let stalled = Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()));
    let request = Request::post(&records)
        .header(header::AUTHORIZATION, format!("Bearer {admin}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(stalled)
        .expect("request");
    let started = tokio::time::Instant::now();
    let response = crate::app(api.node.state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), HttpStatus::REQUEST_TIMEOUT);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert!(started.elapsed() >= api::BODY_READ_DEADLINE);
    tokio::time::resume();
}

#[tokio::test]
async fn a_tokens_spelling_does_not_give_it_another_bucket() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve_limited(database, 0.001, 4.0).await;
    let (tenant, admin) = api.tenant().await;
    let path = format!("/v1/tenants/{tenant}/collections/people");
    let spellings = [
        format!("Bearer {admin}"),
        format!("bearer {admin}"),
        format!("  BEARER\t{admin}  "),
        format!("Bearer    {admin}"),
    ];
    // First in every spelling, then once more in every spelling.
    for (round, spelling) in spellings.iter().chain(&spellings).enumerate() {
        let answer = api
            .raw(
                api.http
                    .get(format!("{}{path}", api.base))
                    .header("authorization", spelling),
            )
            .await;
        // No collection yet: authenticated and authorized, nothing found; then over the
        // one bucket of the one key.
        let expected = if round < spellings.len() {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(answer.status, expected, "{spelling:?}: {:?}", answer.body);
    }
}
