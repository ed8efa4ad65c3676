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

/// The home answers a forwarded request with its request id marked sensitive: over HTTP/2
/// to the entry node it is then a literal never indexed, as the request's was, instead
/// of an entry pushed through both ends' HPACK tables on every request.
#[tokio::test]
async fn the_answer_to_a_forwarded_request_carries_its_request_id_never_indexed() -> Result<()> {
    use std::collections::HashMap;
    use std::sync::Arc;

    use router::{CachedDirectory, Directory as _, DirectoryEntry, MemoryDirectory, RouterConfig};
    use tower::{Layer as _, ServiceExt as _};

    let home = region(US);
    let directory = Arc::new(MemoryDirectory::new());
    let tenant = model::TenantId::from_random_bytes([7; 16]);
    directory
        .upsert(&DirectoryEntry {
            tenant,
            home: home.clone(),
            allowed: vec![home.clone()],
            transit: Transit::Proxy,
            version: 1,
        })
        .await?;
    let config = RouterConfig::new(
        home.clone(),
        HashMap::new(),
        CachedDirectory::new(directory, Duration::from_secs(60), 100),
        signer(KEY),
    );
    // An app that echoes the request id, as the regional app does.
    let app = tower::service_fn(|request: Request<Body>| async move {
        let mut response = http::Response::new(Body::empty());
        if let Some(id) = request.headers().get(headers::REQUEST_ID) {
            response
                .headers_mut()
                .insert(headers::REQUEST_ID, id.clone());
        }
        Ok::<_, std::convert::Infallible>(response)
    });
    let node = router::layer(config).layer(app);
    let uri: http::Uri = format!("/v1/tenants/{tenant}/collections/c").parse()?;

    // As it arrives from the wire, where no sensitivity travels.
    let mut request = signed_get(uri.clone(), US, KEY, SystemTime::now())?;
    for value in request.headers_mut().values_mut() {
        value.set_sensitive(false);
    }
    let forwarded = node.clone().oneshot(request).await?;
    let id = &forwarded.headers()[headers::REQUEST_ID];
    assert_eq!(id, "req-7");
    assert!(id.is_sensitive(), "answer to a forwarded request");

    // A client's own request is answered as the app answered it.
    let direct = node
        .oneshot(
            Request::get(uri)
                .header(headers::REQUEST_ID, "req-8")
                .body(Body::empty())?,
        )
        .await?;
    let id = &direct.headers()[headers::REQUEST_ID];
    assert_eq!(id, "req-8");
    assert!(!id.is_sensitive(), "answer to a client");
    Ok(())
}
