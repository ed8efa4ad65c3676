//! AWS KMS through aws-sdk-kms: data keys are generated, unwrapped and rewrapped by the
//! region's KMS key, bound to the encryption context.
//!
//! Residency is enforced here, not trusted to the service: a wrapped key whose key ARN is
//! in another region is refused before any request is sent (emulators such as moto would
//! happily unwrap it). Error messages never carry plaintext or key bytes.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyState};
use model::RegionId;
use zeroize::Zeroizing;

use super::{EncryptionContext, GeneratedKey, Kms, KmsError, KmsKind, WrappedKey};
use crate::KeyMaterial;
use crate::aws::{AwsSettings, SdkFailure, describe, kms_client};

/// Codes meaning "this ciphertext, key or context is not for you".
const DENIED_CODES: &[&str] = &[
    "InvalidCiphertextException",
    "IncorrectKeyException",
    "AccessDeniedException",
    "InvalidGrantTokenException",
];

/// One region's KMS key in AWS KMS.
#[derive(Debug, Clone)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    region: RegionId,
    key_id: String,
}

impl AwsKms {
    /// `key_id` is the region's KMS key: an alias (`alias/…`), key id or ARN.
    pub fn new(settings: &AwsSettings, key_id: String) -> AwsKms {
        AwsKms {
            client: kms_client(settings),
            region: settings.region.clone(),
            key_id,
        }
    }

    /// Refuses a key ARN outside this region. A bare key id or alias cannot be placed in a
    /// region, so it is refused too: AWS KMS always answers with full key ARNs.
    /// The wrapped key of a KMS answer. A misconfigured key id (another region's ARN)
    /// must not produce keys that this region could not unwrap later, so the answering
    /// key must be this region's.
    fn resident_wrapped_key(
        &self,
        key_id: Option<String>,
        blob: Option<Blob>,
    ) -> Result<WrappedKey, KmsError> {
        let key_id =
            key_id.ok_or_else(|| KmsError::Other("the KMS answered without a key id".into()))?;
        self.ensure_resident(&key_id)?;
        let ciphertext = blob
            .ok_or_else(|| KmsError::Other("the KMS answered without a wrapped key".into()))?
            .into_inner();
        Ok(WrappedKey { key_id, ciphertext })
    }

    fn ensure_resident(&self, key_id: &str) -> Result<(), KmsError> {
        if arn_region(key_id) == Some(self.region.as_str()) {
            Ok(())
        } else {
            Err(KmsError::ForeignKey {
                key_id: key_id.to_owned(),
                region: self.region.to_string(),
            })
        }
    }
}

/// The region of a KMS ARN (`arn:<partition>:kms:<region>:<account>:key/<id>`).
fn arn_region(key_id: &str) -> Option<&str> {
    let mut parts = key_id.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (
            Some("arn"),
            Some(partition),
            Some("kms"),
            Some(region),
            Some(_account),
            Some(resource),
        ) if !partition.is_empty() && !region.is_empty() && !resource.is_empty() => Some(region),
        _ => None,
    }
}

fn context_map(context: &EncryptionContext) -> Option<HashMap<String, String>> {
    (!context.is_empty()).then(|| {
        context
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

fn kms_error(failure: SdkFailure, key_id: &str) -> KmsError {
    if failure.code_is(DENIED_CODES) {
        return KmsError::Denied;
    }
    let unusable = match failure.code.as_deref() {
        Some("DisabledException") => Some("disabled"),
        Some("KMSInvalidStateException") => {
            Some("in an invalid state (pending deletion or import)")
        }
        Some("KeyUnavailableException") => Some("unavailable"),
        Some("NotFoundException") => Some("not found"),
        _ => None,
    };
    if let Some(state) = unusable {
        return KmsError::KeyUnusable {
            key_id: key_id.to_owned(),
            state: state.to_owned(),
        };
    }
    if failure.transient {
        KmsError::Unavailable(failure.message)
    } else {
        KmsError::Other(failure.message)
    }
}

fn key_material(plaintext: Option<Blob>) -> Result<KeyMaterial, KmsError> {
    let bytes = Zeroizing::new(
        plaintext
            .ok_or_else(|| KmsError::Other("the KMS answered without a plaintext key".into()))?
            .into_inner(),
    );
    KeyMaterial::from_slice(&bytes)
        .ok_or_else(|| KmsError::Other("the KMS returned a key that is not 256 bits".into()))
}

#[async_trait]
impl Kms for AwsKms {
    fn kind(&self) -> KmsKind {
        KmsKind::Aws
    }

    fn region(&self) -> &RegionId {
        &self.region
    }

    fn key_id(&self) -> String {
        self.key_id.clone()
    }

    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError> {
        let output = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(context_map(context))
            .send()
            .await
            .map_err(|err| kms_error(describe(&err), &self.key_id))?;
        let wrapped = self.resident_wrapped_key(output.key_id, output.ciphertext_blob)?;
        let material = key_material(output.plaintext)?;
        Ok(GeneratedKey { material, wrapped })
    }

    async fn decrypt(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<KeyMaterial, KmsError> {
        self.ensure_resident(&wrapped.key_id)?;
        let output = self
            .client
            .decrypt()
            .key_id(&wrapped.key_id)
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .set_encryption_context(context_map(context))
            .send()
            .await
            .map_err(|err| kms_error(describe(&err), &wrapped.key_id))?;
        key_material(output.plaintext)
    }

    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        self.ensure_resident(&wrapped.key_id)?;
        let output = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped.ciphertext.clone()))
            .source_key_id(&wrapped.key_id)
            .set_source_encryption_context(context_map(context))
            .destination_key_id(&self.key_id)
            .set_destination_encryption_context(context_map(context))
            .send()
            .await
            .map_err(|err| kms_error(describe(&err), &wrapped.key_id))?;
        self.resident_wrapped_key(output.key_id, output.ciphertext_blob)
    }

    async fn check(&self) -> Result<(), KmsError> {
        let output = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|err| kms_error(describe(&err), &self.key_id))?;
        let metadata = output
            .key_metadata
            .ok_or_else(|| KmsError::Other("the KMS described no key".into()))?;
        match metadata.key_state() {
            Some(KeyState::Enabled) => {}
            Some(state) => {
                return Err(KmsError::KeyUnusable {
                    key_id: self.key_id.clone(),
                    state: state.as_str().to_owned(),
                });
            }
            None => {
                return Err(KmsError::KeyUnusable {
                    key_id: self.key_id.clone(),
                    state: "unknown".into(),
                });
            }
        }
        if let Some(arn) = metadata.arn() {
            self.ensure_resident(arn)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arn_regions() {
        assert_eq!(
            arn_region(
                "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            ),
            Some("eu-central-1")
        );
        assert_eq!(
            arn_region("arn:aws-cn:kms:cn-north-1:123456789012:alias/data"),
            Some("cn-north-1")
        );
        assert_eq!(arn_region("alias/data"), None);
        assert_eq!(arn_region("1234abcd-12ab-34cd-56ef-1234567890ab"), None);
        assert_eq!(
            arn_region("arn:aws:s3:eu-central-1:123456789012:key/x"),
            None
        );
        assert_eq!(arn_region("arn:aws:kms::123456789012:key/x"), None);
    }
}
