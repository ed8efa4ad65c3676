//! A failure-injecting object store for tests: wraps a real one, counts calls, fails the
//! next calls on demand, and can break the byte stream of the next read part-way. Never
//! used outside tests and drills.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use crate::fault_plan::FaultPlan;

use super::{ByteStream, ObjectKey, ObjectStore, ObjectStoreError, ObjectStoreKind};

/// Delegates to `inner`, except where told to fail or to be slow.
#[derive(Debug)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    plan: FaultPlan<ObjectStoreError, 5>,
    /// The next successful read yields this many bytes, then this error.
    broken_read: Mutex<Option<(u64, ObjectStoreError)>>,
}

/// Indexes of [`FaultyObjectStore`]'s per-operation counters.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Put,
    Get,
    Delete,
    List,
    Check,
}

impl FaultyObjectStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultyObjectStore {
        FaultyObjectStore {
            inner,
            plan: FaultPlan::new(),
            broken_read: Mutex::new(None),
        }
    }

    /// The next `n` calls (of any operation) fail with `error`; replaces an earlier order.
    pub fn fail_next(&self, n: u32, error: ObjectStoreError) {
        self.plan.fail_next(n, error);
    }

    /// Every later call sleeps this long first (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.plan.set_latency(latency);
    }

    /// The next read that is not failed outright streams `after` bytes of the object,
    /// then ends with `error` (a connection lost part-way through a download).
    pub fn break_next_read(&self, after: u64, error: ObjectStoreError) {
        *self.broken_read() = Some((after, error));
    }

    /// Calls of every operation so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.plan.calls()
    }

    pub fn put_calls(&self) -> u64 {
        self.plan.calls_of(Operation::Put as usize)
    }

    pub fn get_calls(&self) -> u64 {
        self.plan.calls_of(Operation::Get as usize)
    }

    pub fn delete_calls(&self) -> u64 {
        self.plan.calls_of(Operation::Delete as usize)
    }

    pub fn list_calls(&self) -> u64 {
        self.plan.calls_of(Operation::List as usize)
    }

    pub fn check_calls(&self) -> u64 {
        self.plan.calls_of(Operation::Check as usize)
    }

    async fn enter(&self, operation: Operation) -> Result<(), ObjectStoreError> {
        self.plan.enter(operation as usize).await
    }

    fn broken_read(&self) -> MutexGuard<'_, Option<(u64, ObjectStoreError)>> {
        // A plain value: a panic while holding the lock leaves nothing torn.
        self.broken_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `stream` cut after `after` bytes, then `error`.
fn broken(stream: ByteStream, after: u64, error: ObjectStoreError) -> ByteStream {
    let mut left = after;
    let mut error = Some(error);
    let cut = stream
        .map(move |item| {
            let chunk = match item {
                Ok(chunk) => chunk,
                Err(err) => return Some(Err(err)),
            };
            let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            if len <= left {
                left -= len;
                return Some(Ok(chunk));
            }
            if left > 0 {
                let keep = usize::try_from(left).expect("less than a chunk's length");
                left = 0;
                return Some(Ok(chunk.slice(..keep)));
            }
            error.take().map(Err)
        })
        .take_while(|item| std::future::ready(item.is_some()))
        .filter_map(std::future::ready);
    Box::pin(cut)
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    fn kind(&self) -> ObjectStoreKind {
        self.inner.kind()
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &ObjectKey, body: ByteStream) -> Result<u64, ObjectStoreError> {
        self.enter(Operation::Put).await?;
        self.inner.put(key, body).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, ObjectStoreError> {
        self.enter(Operation::Get).await?;
        let stream = self.inner.get(key).await?;
        match self.broken_read().take() {
            Some((after, error)) => Ok(broken(stream, after, error)),
            None => Ok(stream),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError> {
        self.enter(Operation::Delete).await?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectStoreError> {
        self.enter(Operation::List).await?;
        self.inner.list(prefix).await
    }

    async fn purge(&self, prefix: &str, limit: usize) -> Result<u64, ObjectStoreError> {
        self.enter(Operation::Delete).await?;
        self.inner.purge(prefix, limit).await
    }

    async fn check(&self) -> Result<(), ObjectStoreError> {
        self.enter(Operation::Check).await?;
        self.inner.check().await
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::stream;

    use super::*;

    #[tokio::test]
    async fn a_broken_stream_yields_its_bytes_then_the_error_and_ends() {
        let chunks: Vec<Result<Bytes, ObjectStoreError>> = vec![
            Ok(Bytes::from_static(b"abcd")),
            Ok(Bytes::from_static(b"efgh")),
            Ok(Bytes::from_static(b"ijkl")),
        ];
        let cut = broken(
            Box::pin(stream::iter(chunks)),
            6,
            ObjectStoreError::Unavailable("lost".to_owned()),
        );
        let items: Vec<_> = cut.collect().await;
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(
            items[0].as_ref().expect("first"),
            &Bytes::from_static(b"abcd")
        );
        assert_eq!(
            items[1].as_ref().expect("second"),
            &Bytes::from_static(b"ef")
        );
        assert!(matches!(
            &items[2],
            Err(ObjectStoreError::Unavailable(message)) if message == "lost"
        ));
    }
}
