//! A node started with an operations listener, over real TCP: the API listener's
//! `/readyz` is the public form and its `/metrics` wants the operator token (the default);
//! the operations listener serves both in detail and nothing of the tenant API; the node
//! serves only once its first health round is done, with the replica in rotation.

use devstack::testing::TestDatabase;
use model::RegionId;
use node::{ApiSettings, NodeListeners, Platform};

use crate::support::{local_kms, node_config};

const OPERATOR: &str = "rso.operations-listener-test-operator-token-01234";

async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|err| panic!("GET {url}: {err}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn the_operations_listener_has_the_detail_and_the_api_listener_the_public_form() {
    let state = tempfile::tempdir().expect("state dir");
    let id = RegionId::parse("eu-west-1").expect("region");
    let database = TestDatabase::create(None).await;
    let node = node::start_on(
        node_config(
            &id,
            &database,
            local_kms(state.path(), &id),
            state.path(),
            Platform {
                regions: vec![id.clone()],
                operator: service::access::OperatorToken::new(OPERATOR),
                api: ApiSettings::default(),
                routing: None,
            },
        ),
        NodeListeners {
            api: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            operations: Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind"),
            ),
        },
    )
    .await
    .expect("start the node");
    let api = format!("http://{}", node.address);
    let operations = format!(
        "http://{}",
        node.operations_address.expect("an operations listener")
    );
    let primary_port = database.primary.get_ports()[0].to_string();

    // Ready from the first request: the first round ran before the node served.
    let (status, public) = get(&format!("{api}/readyz"), None).await;
    assert_eq!(status, 200, "{public}");
    let public: serde_json::Value = serde_json::from_str(&public).expect("json");
    assert_eq!(public["status"], "ready", "{public}");
    assert_eq!(public["checks"]["replicas"][0]["status"], "up", "{public}");
    assert!(
        public["checks"]["primary"].get("address").is_none(),
        "{public}"
    );

    let (status, detailed) = get(&format!("{operations}/readyz"), None).await;
    assert_eq!(status, 200, "{detailed}");
    let detailed: wire::Readiness = serde_json::from_str(&detailed).expect("json");
    assert!(
        detailed
            .checks
            .primary
            .address
            .as_deref()
            .is_some_and(|address| address.contains(&primary_port)),
        "{detailed:?}"
    );
    let (status, as_operator) = get(&format!("{api}/readyz"), Some(OPERATOR)).await;
    assert_eq!(status, 200);
    assert!(as_operator.contains(&primary_port), "{as_operator}");

    let (status, denied) = get(&format!("{api}/metrics"), None).await;
    assert_eq!(status, 401, "{denied}");
    for (url, token) in [
        (format!("{api}/metrics"), Some(OPERATOR)),
        (format!("{operations}/metrics"), None),
    ] {
        let (status, text) = get(&url, token).await;
        assert_eq!(status, 200, "{url}");
        assert!(
            text.contains(r#"residency_db_replica_up{region="eu-west-1",endpoint="replica-1"} 1"#),
            "{url}: {text}"
        );
    }
    let (status, _) = get(
        &format!("{operations}/v1/tenants/2f1c6a0e-8d4b-4f7e-9a51-0c3d2b1e4f60"),
        Some(OPERATOR),
    )
    .await;
    assert_eq!(status, 404, "no tenant API on the operations listener");

    node.stop().await.expect("stop the node");
    assert!(
        reqwest::get(format!("{operations}/healthz")).await.is_err(),
        "the operations listener stops with the node"
    );
}
