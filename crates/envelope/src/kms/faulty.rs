//! A failure-injecting KMS for tests: wraps a real one, counts calls, adds latency and
//! fails the next calls on demand. Never used outside tests and `residency dev` drills.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use model::RegionId;

use super::{EncryptionContext, GeneratedKey, Kms, KmsError, KmsKind, WrappedKey};
use crate::KeyMaterial;

/// Delegates to `inner`, except where told to fail or to be slow.
#[derive(Debug)]
pub struct FaultyKms {
    inner: Arc<dyn Kms>,
    faults: Mutex<Faults>,
    calls: AtomicU64,
    generate_calls: AtomicU64,
    decrypt_calls: AtomicU64,
    re_encrypt_calls: AtomicU64,
    check_calls: AtomicU64,
}

#[derive(Debug, Default)]
struct Faults {
    /// How many of the next calls fail, and with what.
    failing: u32,
    error: Option<KmsError>,
    latency: Duration,
}

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
            faults: Mutex::new(Faults::default()),
            calls: AtomicU64::new(0),
            generate_calls: AtomicU64::new(0),
            decrypt_calls: AtomicU64::new(0),
            re_encrypt_calls: AtomicU64::new(0),
            check_calls: AtomicU64::new(0),
        }
    }

    /// The next `n` calls (of any operation) fail with `error`; replaces an earlier order.
    pub fn fail_next(&self, n: u32, error: KmsError) {
        let mut faults = self.faults();
        faults.failing = n;
        faults.error = Some(error);
    }

    /// Every later call sleeps this long first (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.faults().latency = latency;
    }

    /// Calls of every operation so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn generate_calls(&self) -> u64 {
        self.generate_calls.load(Ordering::SeqCst)
    }

    pub fn decrypt_calls(&self) -> u64 {
        self.decrypt_calls.load(Ordering::SeqCst)
    }

    pub fn re_encrypt_calls(&self) -> u64 {
        self.re_encrypt_calls.load(Ordering::SeqCst)
    }

    pub fn check_calls(&self) -> u64 {
        self.check_calls.load(Ordering::SeqCst)
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        // Plain counters and values: a panic while holding the lock leaves nothing torn.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the call, sleeps the configured latency, and returns the injected error if
    /// this call is to fail.
    async fn enter(&self, operation: Operation) -> Result<(), KmsError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let counter = match operation {
            Operation::Generate => &self.generate_calls,
            Operation::Decrypt => &self.decrypt_calls,
            Operation::ReEncrypt => &self.re_encrypt_calls,
            Operation::Check => &self.check_calls,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let (latency, injected) = {
            let mut faults = self.faults();
            let injected = if faults.failing > 0 {
                faults.failing -= 1;
                faults.error.clone()
            } else {
                None
            };
            (faults.latency, injected)
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match injected {
            Some(error) => Err(error),
            None => Ok(()),
        }
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
