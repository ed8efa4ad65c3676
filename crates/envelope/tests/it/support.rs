//! Shared helpers: regions, moto settings, keys and buckets created for one test.

use envelope::aws::{AwsCredentials, AwsSettings, kms_client, s3_client};
use model::{RegionId, TenantId};

/// The region under test, and another one whose keys must be refused.
pub const HOME: &str = "eu-central-1";
pub const FOREIGN: &str = "us-east-1";

pub fn region(name: &str) -> RegionId {
    RegionId::parse(name).expect("test regions are valid")
}

pub fn tenant() -> TenantId {
    TenantId::from_random_bytes(rand::random())
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 6]>()))
}

/// Settings for the shared moto server, in `region`, with fixed test credentials.
/// Panics (failing the test) when moto is not installed, naming what to install.
pub fn moto_settings(region_name: &str) -> AwsSettings {
    let moto = devstack::testing::shared_moto();
    AwsSettings {
        region: region(region_name),
        endpoint_url: Some(moto.endpoint_url()),
        credentials: AwsCredentials::Static {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
        },
    }
}

/// A new symmetric KMS key in moto's `region_name`, with an alias; returns (ARN, alias).
pub async fn create_kms_key(region_name: &str) -> (String, String) {
    let client = kms_client(&moto_settings(region_name));
    let created = client
        .create_key()
        .description("envelope test key")
        .send()
        .await
        .expect("create KMS key");
    let metadata = created.key_metadata().expect("key metadata");
    let arn = metadata.arn().expect("key ARN").to_owned();
    let alias = format!("alias/{}", unique("residency-test"));
    client
        .create_alias()
        .alias_name(&alias)
        .target_key_id(metadata.key_id())
        .send()
        .await
        .expect("create KMS alias");
    (arn, alias)
}

/// A new bucket in moto's `region_name`.
pub async fn create_bucket(region_name: &str) -> String {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    let bucket = unique("residency-test");
    let mut request = s3_client(&moto_settings(region_name), true)
        .create_bucket()
        .bucket(&bucket);
    // us-east-1 is the one region that must not be named as a location constraint.
    if region_name != "us-east-1" {
        request = request.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(region_name))
                .build(),
        );
    }
    request.send().await.expect("create bucket");
    bucket
}
