//! Shared AWS connection settings for the region's KMS and S3 clients: region, optional
//! endpoint override (moto, LocalStack, VPC endpoints), credentials, timeouts and retries.
//!
//! Constructors stay synchronous: the default credential chain is resolved lazily on the
//! first request, so building a client never blocks or touches the network.

use std::fmt;
use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
// The KMS and S3 crates re-export the same smithy response and error types.
use aws_sdk_kms::config::http::HttpResponse;
use model::RegionId;

/// How long establishing a connection may take before the attempt fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one operation may take, retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per operation (the first one included): enough to ride out a throttle or a
/// dropped connection, few enough that a dead endpoint fails `/readyz` quickly.
pub const MAX_ATTEMPTS: u32 = 3;

/// Where and as whom to reach AWS (or an emulator) for one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// The AWS region; a node's clients only ever talk to its own region.
    pub region: RegionId,
    /// Overrides the service endpoint, e.g. `http://127.0.0.1:5000` for moto.
    pub endpoint_url: Option<String>,
    pub credentials: AwsCredentials,
}

/// Where credentials come from.
#[derive(Clone, PartialEq, Eq)]
pub enum AwsCredentials {
    /// aws-config's default chain: environment, profile, web identity, ECS, IMDS.
    DefaultChain,
    /// Fixed keys (emulators and tests).
    Static {
        access_key_id: String,
        secret_access_key: String,
    },
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DefaultChain => f.write_str("DefaultChain"),
            Self::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish(),
        }
    }
}

/// The shared SDK configuration for `settings`: latest behaviour version, region, endpoint
/// override, credentials, [`CONNECT_TIMEOUT`], [`OPERATION_TIMEOUT`] and standard retries
/// with [`MAX_ATTEMPTS`].
pub fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let region = Region::new(settings.region.as_str().to_owned());
    let credentials = match &settings.credentials {
        AwsCredentials::DefaultChain => SharedCredentialsProvider::new(LazyDefaultChain {
            region: region.clone(),
            chain: tokio::sync::OnceCell::new(),
        }),
        AwsCredentials::Static {
            access_key_id,
            secret_access_key,
        } => SharedCredentialsProvider::new(Credentials::new(
            access_key_id.clone(),
            secret_access_key.clone(),
            None,
            None,
            "residency-static",
        )),
    };
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region)
        .credentials_provider(credentials)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
    if let Some(url) = &settings.endpoint_url {
        builder = builder.endpoint_url(url.clone());
    }
    builder.build()
}

/// A KMS client for `settings`.
pub fn kms_client(settings: &AwsSettings) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&sdk_config(settings))
}

/// An S3 client for `settings`; `force_path_style` puts the bucket in the path
/// (`endpoint/bucket/key`), which emulators need.
pub fn s3_client(settings: &AwsSettings, force_path_style: bool) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&sdk_config(settings))
        .force_path_style(force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The default credential chain, built on first use: its builder is async, while client
/// construction is not.
#[derive(Debug)]
struct LazyDefaultChain {
    region: Region,
    chain: tokio::sync::OnceCell<DefaultCredentialsChain>,
}

impl ProvideCredentials for LazyDefaultChain {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let chain = self
                .chain
                .get_or_init(|| {
                    DefaultCredentialsChain::builder()
                        .region(self.region.clone())
                        .build()
                })
                .await;
            chain.provide_credentials().await
        })
    }
}

/// What went wrong with an SDK call, reduced to what the KMS and S3 adapters map on.
#[derive(Debug)]
pub(crate) struct SdkFailure {
    /// The service's error code (`InvalidCiphertextException`, `NoSuchKey`, …).
    pub code: Option<String>,
    /// Worth retrying later: timeouts, connection failures, throttling, 5xx.
    pub transient: bool,
    /// The error and its causes, for logs. AWS errors never echo request payloads, so no
    /// plaintext or key bytes can appear here.
    pub message: String,
}

impl SdkFailure {
    pub(crate) fn code_is(&self, candidates: &[&str]) -> bool {
        self.code
            .as_deref()
            .is_some_and(|code| candidates.contains(&code))
    }
}

/// Error codes that mean "slow down" or "try again", across KMS and S3.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "SlowDown",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "DependencyTimeoutException",
    "KMSInternalException",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

pub(crate) fn describe<E>(err: &SdkError<E, HttpResponse>) -> SdkFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = DisplayErrorContext(err).to_string();
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            SdkFailure {
                code: None,
                transient: true,
                message,
            }
        }
        SdkError::ServiceError(context) => {
            let code = context.err().code().map(str::to_owned);
            let server_error = context.raw().status().is_server_error();
            let retryable = code
                .as_deref()
                .is_some_and(|c| TRANSIENT_CODES.contains(&c));
            SdkFailure {
                code,
                transient: server_error || retryable,
                message,
            }
        }
        _ => SdkFailure {
            code: None,
            transient: false,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_credentials_never_print_the_secret() {
        let credentials = AwsCredentials::Static {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI".into(),
        };
        let printed = format!("{credentials:?}");
        assert!(printed.contains("AKIDEXAMPLE"), "{printed}");
        assert!(!printed.contains("wJalrXUtnFEMI"), "{printed}");
    }
}
