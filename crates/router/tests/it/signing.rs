//! Forwarding headers at the receiving node: a client's forged copies are stripped, a
//! valid signature is trusted, an expired or foreign-keyed one is not, and a validly
//! forwarded request is never forwarded again.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use axum::body::Body;
use http::{Request, StatusCode};
use model::Transit;
use router::{ForwardSigner, Forwarded, ForwardingKey, headers};

use crate::harness::{AP, Cluster, EU, KEY, US, header, json, region};

fn signer(key: &[u8]) -> ForwardSigner {
    ForwardSigner::new(
        ForwardingKey::new(key).expect("key"),
        Duration::from_secs(30),
    )
}

fn forwarded_from(entry: &str) -> Forwarded {
    Forwarded {
        entry_region: region(entry),
        client_address: "198.51.100.7".to_owned(),
        request_id: "req-7".to_owned(),
    }
}

/// A GET signed as if `AP` forwarded it to `target`, stamped at `at`.
fn signed_get(uri: http::Uri, target: &str, key: &[u8], at: SystemTime) -> Result<Request<Body>> {
    let (mut parts, body) = Request::get(uri).body(Body::empty())?.into_parts();
    signer(key).sign_at(&mut parts, &forwarded_from(AP), &region(target), at);
    Ok(Request::from_parts(parts, body))
}

#[tokio::test]
async fn forged_forwarding_headers_from_a_client_are_stripped() -> Result<()> {
    let cluster = Cluster::start().await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs()
        .to_string();
    let forge = |uri| {
        Request::get(uri)
            .header(headers::ENTRY_REGION, AP)
            .header(
                headers::FORWARDED,
                format!("v2;at={now};entry={AP};for=6.6.6.6;sig={}", "00".repeat(32)),
            )
            .header("x-residency-forwarded-region", AP)
            .header("x-residency-forwarded-extra", "1")
            .header(headers::REQUEST_ID, "req-forged")
            .body(Body::empty())
    };
    let path = format!("/v1/tenants/{tenant}/collections/c");

    // Through a forwarding node: the home sees what the entry node vouches for.
    let response = cluster.send(forge(cluster.url(EU, &path))?).await?;
    assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(EU));
    let body = json(response).await?;
    assert_eq!(body["region"], US);
    assert_eq!(body["entry_region"], EU);
    assert_eq!(body["forwarded_for"], "127.0.0.1");

    // Straight at the home: nothing forwarded survives.
    let response = cluster.send(forge(cluster.url(US, &path))?).await?;
    assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(US));
    let body = json(response).await?;
    assert!(body["entry_region"].is_null(), "{body}");
    assert!(body["forwarded_for"].is_null(), "{body}");
    assert!(body["forwarding_header"].is_null(), "{body}");
    let metrics = cluster.metrics(US);
    assert!(
        metrics.contains(r#"router_refused_forwarding_headers_total{reason="bad_signature"} 1"#),
        "{metrics}"
    );
    // An entry-region header alone (no signature) is removed too.
    let response = cluster
        .send(
            Request::get(cluster.url(US, &path))
                .header(headers::ENTRY_REGION, AP)
                .body(Body::empty())?,
        )
        .await?;
    assert!(json(response).await?["entry_region"].is_null());
    Ok(())
}

#[tokio::test]
async fn a_valid_signature_is_trusted_and_an_expired_or_foreign_one_is_not() -> Result<()> {
    let cluster = Cluster::start().await?;
    let tenant = cluster.tenant(US, Transit::Proxy).await?;
    let uri = || cluster.url(US, &format!("/v1/tenants/{tenant}/residency?full=1"));

    let response = cluster
        .send(signed_get(uri(), US, KEY, SystemTime::now())?)
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(US)
    );
    assert_eq!(header(response.headers(), headers::RESIDENCY_VIA), Some(AP));
    let body = json(response).await?;
    assert_eq!(body["entry_region"], AP);
    assert_eq!(body["forwarded_for"], "198.51.100.7");
    assert_eq!(body["request_id"], "req-7");

    let expired = SystemTime::now() - Duration::from_secs(120);
    let response = cluster.send(signed_get(uri(), US, KEY, expired)?).await?;
    let body = json(response).await?;
    assert!(body["entry_region"].is_null(), "expired: {body}");
    assert!(body["forwarded_for"].is_null(), "expired: {body}");

    let other_key = [0x42u8; 32];
    let response = cluster
        .send(signed_get(uri(), US, &other_key, SystemTime::now())?)
        .await?;
    assert!(json(response).await?["entry_region"].is_null());

    // Signed for another region: replayed here, it is not trusted.
    let response = cluster
        .send(signed_get(uri(), EU, KEY, SystemTime::now())?)
        .await?;
    let body = json(response).await?;
    assert!(body["entry_region"].is_null(), "signed for EU: {body}");
    assert!(body["forwarded_for"].is_null(), "signed for EU: {body}");

    let metrics = cluster.metrics(US);
    assert!(metrics.contains(r#"reason="stale"} 1"#), "{metrics}");
    assert!(
        metrics.contains(r#"reason="bad_signature"} 2"#),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_forwarded_request_for_a_tenant_homed_elsewhere_gets_421_not_another_hop() -> Result<()> {
    let cluster = Cluster::start().await?;
    let tenant = cluster.tenant(EU, Transit::Proxy).await?;
    let uri = cluster.url(US, &format!("/v1/tenants/{tenant}/collections/c"));
    let response = cluster
        .send(signed_get(uri, US, KEY, SystemTime::now())?)
        .await?;
    assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(
        header(response.headers(), headers::RESIDENCY_REGION),
        Some(EU)
    );
    assert_eq!(
        header(response.headers(), http::header::CONTENT_TYPE.as_str()),
        Some(wire::PROBLEM_JSON)
    );
    let hits = cluster.hits();
    assert_eq!((hits[EU], hits[US], hits[AP]), (0, 0, 0));
    Ok(())
}
