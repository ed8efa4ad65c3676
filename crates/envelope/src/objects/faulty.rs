//! A failure-injecting object store for tests: wraps a real one, counts calls, fails the
//! next calls on demand, and can break the byte stream of the next read part-way. Never
//! used outside tests and drills.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::StreamExt;

use super::{ByteStream, ObjectKey, ObjectStore, ObjectStoreError, ObjectStoreKind};

/// Delegates to `inner`, except where told to fail.
#[derive(Debug)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<Faults>,
    calls: AtomicU64,
    put_calls: AtomicU64,
    get_calls: AtomicU64,
    delete_calls: AtomicU64,
    list_calls: AtomicU64,
    check_calls: AtomicU64,
}

#[derive(Debug, Default)]
struct Faults {
    /// How many of the next calls fail, and with what.
    failing: u32,
    error: Option<ObjectStoreError>,
    /// The next successful read yields this many bytes, then this error.
    broken_read: Option<(u64, ObjectStoreError)>,
}

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
            faults: Mutex::new(Faults::default()),
            calls: AtomicU64::new(0),
            put_calls: AtomicU64::new(0),
            get_calls: AtomicU64::new(0),
            delete_calls: AtomicU64::new(0),
            list_calls: AtomicU64::new(0),
            check_calls: AtomicU64::new(0),
        }
    }

    /// The next `n` calls (of any operation) fail with `error`; replaces an earlier order.
    pub fn fail_next(&self, n: u32, error: ObjectStoreError) {
        let mut faults = self.faults();
        faults.failing = n;
        faults.error = Some(error);
    }

    /// The next read that is not failed outright streams `after` bytes of the object,
    /// then ends with `error` (a connection lost part-way through a download).
    pub fn break_next_read(&self, after: u64, error: ObjectStoreError) {
        self.faults().broken_read = Some((after, error));
    }

    /// Calls of every operation so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn put_calls(&self) -> u64 {
        self.put_calls.load(Ordering::SeqCst)
    }

    pub fn get_calls(&self) -> u64 {
        self.get_calls.load(Ordering::SeqCst)
    }

    pub fn delete_calls(&self) -> u64 {
        self.delete_calls.load(Ordering::SeqCst)
    }

    pub fn list_calls(&self) -> u64 {
        self.list_calls.load(Ordering::SeqCst)
    }

    pub fn check_calls(&self) -> u64 {
        self.check_calls.load(Ordering::SeqCst)
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        // Plain counters and values: a panic while holding the lock leaves nothing torn.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the call and returns the injected error if this call is to fail.
    fn enter(&self, operation: Operation) -> Result<(), ObjectStoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let counter = match operation {
            Operation::Put => &self.put_calls,
            Operation::Get => &self.get_calls,
            Operation::Delete => &self.delete_calls,
            Operation::List => &self.list_calls,
            Operation::Check => &self.check_calls,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let mut faults = self.faults();
        if faults.failing == 0 {
            return Ok(());
        }
        faults.failing -= 1;
        match faults.error.clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
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
        self.enter(Operation::Put)?;
        self.inner.put(key, body).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<ByteStream, ObjectStoreError> {
        self.enter(Operation::Get)?;
        let stream = self.inner.get(key).await?;
        match self.faults().broken_read.take() {
            Some((after, error)) => Ok(broken(stream, after, error)),
            None => Ok(stream),
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectStoreError> {
        self.enter(Operation::Delete)?;
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectKey>, ObjectStoreError> {
        self.enter(Operation::List)?;
        self.inner.list(prefix).await
    }

    async fn check(&self) -> Result<(), ObjectStoreError> {
        self.enter(Operation::Check)?;
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
