//! What the node tests share: the configuration of one region's node on a test database
//! (its primary and one streaming replica), a KMS and a local object store under a
//! directory, and a fresh audit signing key.

use std::path::Path;
use std::sync::Arc;

use devstack::testing::TestDatabase;
use envelope::kms::Kms;
use envelope::kms::local::LocalKms;
use envelope::objects::local::LocalObjectStore;
use model::RegionId;
use node::{ApiSettings, Backends, NodeAudit, NodeConfig, NodeListeners, Platform, RunningNode};
use service::{AuditKeys, AuditSettings};
use store::{DatabaseSettings, PgEndpoint};

/// The local KMS of region `id`, its key material under `root/kms`.
pub fn local_kms(root: &Path, id: &RegionId) -> Arc<LocalKms> {
    Arc::new(LocalKms::open_or_create(&root.join("kms"), id.clone()).expect("kms"))
}

/// A node of region `id` on `database`, with `kms`, objects under `root/objects`, a fresh
/// audit signing key and `platform`.
pub fn node_config(
    id: &RegionId,
    database: &TestDatabase,
    kms: Arc<dyn Kms>,
    root: &Path,
    platform: Platform,
) -> NodeConfig {
    NodeConfig {
        region: id.clone(),
        database: DatabaseSettings::new(
            PgEndpoint::new("primary", database.node_primary.clone()),
            vec![PgEndpoint::new("replica-1", database.node_replica.clone())],
        )
        .with_owner(PgEndpoint::new("owner", database.primary.clone())),
        backends: Backends {
            kms,
            objects: Arc::new(LocalObjectStore::new(root.join("objects")).expect("object store")),
            audit_objects: Arc::new(
                LocalObjectStore::new(root.join("audit-bucket")).expect("audit bucket"),
            ),
        },
        audit: NodeAudit {
            keys: AuditKeys::generate(id.clone()),
            settings: AuditSettings::default(),
        },
        platform,
    }
}

/// What a single-region test node knows of the deployment: region `id` only, the
/// `operator` token and `api`.
pub fn single_region(id: &RegionId, operator: &str, api: ApiSettings) -> Platform {
    Platform {
        regions: vec![id.clone()],
        operator: service::access::OperatorToken::new(operator),
        api,
        routing: None,
    }
}

/// Starts the node `config` describes on a loopback port (no operations listener).
pub async fn start_on_loopback(config: NodeConfig) -> RunningNode {
    node::start_on(
        config,
        NodeListeners {
            api: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            operations: None,
        },
    )
    .await
    .expect("start the node")
}
