//! `GET /v1/tenants`: the operator lists the tenants homed in the region that answers, a
//! page at a time, and every bad parameter is a problem that names it.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use store::testing::region_database;
use wire::api::{TenantPage, TenantView};

use crate::OPERATOR_TOKEN;
use crate::tenant_api::{Answer, Served, serve};

async fn list(api: &Served, query: &str, token: Option<&str>) -> Answer {
    api.call(
        Method::GET,
        &format!("/v1/tenants{query}"),
        token,
        None,
        &[],
    )
    .await
}

fn page(answer: &Answer) -> TenantPage {
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    serde_json::from_slice(&answer.bytes).expect("a tenant page")
}

fn assert_problem_naming(answer: &Answer, status: StatusCode, named: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert!(answer.body["request_id"].is_string(), "{:?}", answer.body);
    let detail = answer.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(named), "{detail:?} names {named}");
}

#[tokio::test]
async fn the_operator_pages_through_the_regions_tenants() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let mut created = BTreeSet::new();
    for _ in 0..3 {
        created.insert(api.tenant().await.0);
    }

    let first = list(&api, "?limit=2", Some(OPERATOR_TOKEN)).await;
    assert_eq!(first.header("x-residency-region"), Some("eu-central-1"));
    let first = page(&first);
    assert_eq!(first.tenants.len(), 2);
    let cursor = first.next_cursor.clone().expect("a second page follows");
    let second = page(
        &list(
            &api,
            &format!("?limit=2&cursor={cursor}"),
            Some(OPERATOR_TOKEN),
        )
        .await,
    );
    assert_eq!(second.tenants.len(), 1);
    assert_eq!(second.next_cursor, None, "the last page says so");

    let listed: Vec<&TenantView> = first.tenants.iter().chain(&second.tenants).collect();
    let ids: Vec<String> = listed.iter().map(|tenant| tenant.id.clone()).collect();
    assert_eq!(
        ids,
        created.iter().cloned().collect::<Vec<_>>(),
        "every tenant once, by id"
    );
    for tenant in listed {
        let fetched = api
            .call(
                Method::GET,
                &format!("/v1/tenants/{}", tenant.id),
                Some(OPERATOR_TOKEN),
                None,
                &[],
            )
            .await;
        let fetched: TenantView = serde_json::from_slice(&fetched.bytes).expect("a tenant");
        assert_eq!(*tenant, fetched, "the listing shows what GET shows");
    }

    let named_here = page(&list(&api, "?home_region=eu-central-1", Some(OPERATOR_TOKEN)).await);
    assert_eq!(
        named_here.tenants.len(),
        3,
        "the default page holds all three"
    );
    assert_eq!(named_here.next_cursor, None);
}

#[tokio::test]
async fn only_the_operator_lists_tenants_and_bad_parameters_are_named() {
    let (_db, database) = region_database("eu-central-1").await;
    let api = serve(database).await;
    let (_, admin) = api.tenant().await;

    let anonymous = list(&api, "", None).await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        anonymous.body
    );
    let wrong = list(&api, "", Some("rso.not-the-operator-token")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{:?}", wrong.body);
    let tenant_admin = list(&api, "", Some(&admin)).await;
    assert_eq!(
        tenant_admin.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        tenant_admin.body
    );

    for (query, status, named) in [
        ("?limit=0", StatusCode::UNPROCESSABLE_ENTITY, "limit"),
        ("?limit=501", StatusCode::UNPROCESSABLE_ENTITY, "limit"),
        ("?limit=ten", StatusCode::UNPROCESSABLE_ENTITY, "limit"),
        ("?cursor=not-a-tenant", StatusCode::BAD_REQUEST, "cursor"),
        ("?colour=red", StatusCode::UNPROCESSABLE_ENTITY, "colour"),
        (
            "?home_region=mars-north-1",
            StatusCode::UNPROCESSABLE_ENTITY,
            "home_region",
        ),
        // No router in front of this node: the region that lists them is named.
        (
            "?home_region=us-east-1",
            StatusCode::MISDIRECTED_REQUEST,
            "us-east-1",
        ),
    ] {
        let answer = list(&api, query, Some(OPERATOR_TOKEN)).await;
        assert_problem_naming(&answer, status, named);
        assert!(
            !answer
                .bytes
                .windows(4)
                .any(|w| w == b"mars" || w == b"ten\"" || w == b"red\""),
            "a problem never echoes the value: {query}"
        );
    }
}
