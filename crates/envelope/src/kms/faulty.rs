//! A failure-injecting KMS for tests: wraps a real one, counts calls, adds latency and
//! fails the next calls on demand. Never used outside tests and `residency dev` drills.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use model::RegionId;

use super::{EncryptionContext, GeneratedKey, Kms, KmsError, KmsKind, WrappedKey};
use crate::KeyMaterial;
use crate::fault_plan::FaultPlan;

/// Delegates to `inner`, except where told to fail or to be slow.
#[derive(Debug)]
pub struct FaultyKms {
    inner: Arc<dyn Kms>,
    plan: FaultPlan<KmsError, 4>,
}

/// Indexes of [`FaultyKms`]'s per-operation counters.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Generate,
    Decrypt,
    ReEncrypt,
    Check,
}

impl FaultyKms {
    pub fn new(inner: Arc<dyn Kms>) -> FaultyKms {
        FaultyKms {
            inner,
            plan: FaultPlan::new(),
        }
    }

    /// The next `n` calls (of any operation) fail with `error`; replaces an earlier order.
    pub fn fail_next(&self, n: u32, error: KmsError) {
        self.plan.fail_next(n, error);
    }

    /// Every later call sleeps this long first (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.plan.set_latency(latency);
    }

    /// Calls of every operation so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.plan.calls()
    }

    pub fn generate_calls(&self) -> u64 {
        self.plan.calls_of(Operation::Generate as usize)
    }

    pub fn decrypt_calls(&self) -> u64 {
        self.plan.calls_of(Operation::Decrypt as usize)
    }

    pub fn re_encrypt_calls(&self) -> u64 {
        self.plan.calls_of(Operation::ReEncrypt as usize)
    }

    pub fn check_calls(&self) -> u64 {
        self.plan.calls_of(Operation::Check as usize)
    }

    async fn enter(&self, operation: Operation) -> Result<(), KmsError> {
        self.plan.enter(operation as usize).await
    }
}

#[async_trait]
impl Kms for FaultyKms {
    fn kind(&self) -> KmsKind {
        self.inner.kind()
    }

    fn region(&self) -> &RegionId {
        self.inner.region()
    }

    fn key_id(&self) -> String {
        self.inner.key_id()
    }

    async fn generate_data_key(
        &self,
        context: &EncryptionContext,
    ) -> Result<GeneratedKey, KmsError> {
        self.enter(Operation::Generate).await?;
        self.inner.generate_data_key(context).await
    }

    async fn decrypt(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<KeyMaterial, KmsError> {
        self.enter(Operation::Decrypt).await?;
        self.inner.decrypt(wrapped, context).await
    }

    async fn re_encrypt(
        &self,
        wrapped: &WrappedKey,
        context: &EncryptionContext,
    ) -> Result<WrappedKey, KmsError> {
        self.enter(Operation::ReEncrypt).await?;
        self.inner.re_encrypt(wrapped, context).await
    }

    async fn check(&self) -> Result<(), KmsError> {
        self.enter(Operation::Check).await?;
        self.inner.check().await
    }
}
