//! Release layout in the analytics bucket, and writing a release so that runs are
//! idempotent and incremental:
//!
//! ```text
//! <tenant pseudonym>/<collection>/run=<id>/part-00000.parquet
//! <tenant pseudonym>/<collection>/run=<id>/part-00001.parquet
//! <tenant pseudonym>/<collection>/run=<id>/_manifest.json      (written last)
//! ```
//!
//! Run ids are 8-digit sequence numbers (`run=00000001`), so they sort by age. A run with a
//! manifest is complete, and consumers read only those. A run without one is the remains of
//! a run that was stopped; the next release resumes it (same id: parts are overwritten, stray
//! parts of the earlier attempt deleted, then the manifest written), so a crash at any point
//! followed by a rerun leaves exactly one complete release. A collection whose watermark
//! equals the latest complete manifest's is skipped.
//!
//! The object store is reached through [`ReleaseStore`], a small trait the binary adapts
//! the region's object store to.

use async_trait::async_trait;

use crate::engine::Anonymized;
use crate::output::{Manifest, ManifestPart, OutputError, PartWriter};

/// Name of the manifest object in a run.
pub const MANIFEST_NAME: &str = "_manifest.json";

/// An object store failure, as the adapter reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("object store: {0}")]
pub struct StoreError(pub String);

/// The object operations a release needs. Keys are `/`-separated paths in one bucket.
#[async_trait]
pub trait ReleaseStore: Send + Sync {
    /// Stores `bytes` under `key`, replacing any object there; a failed put leaves no
    /// partial object visible.
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError>;
    /// The object's bytes, or `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every key that starts with `prefix`, in any order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Deletes the object; deleting an absent object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("invalid release location: {0}")]
    Location(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("manifest {key} is unreadable: {reason}")]
    BadManifest { key: String, reason: String },
}

/// Where a collection's releases go: `<tenant pseudonym>/<collection>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseLocation {
    prefix: String,
}

fn is_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl ReleaseLocation {
    /// `tenant_pseudonym` (never the tenant id itself) and `collection` must be path
    /// segments of `[a-z0-9_-]`.
    pub fn new(tenant_pseudonym: &str, collection: &str) -> Result<Self, ReleaseError> {
        if !is_segment(tenant_pseudonym) || !is_segment(collection) {
            return Err(ReleaseError::Location(
                "tenant pseudonym and collection must be 1 to 128 of [a-z0-9_-]".into(),
            ));
        }
        Ok(Self {
            prefix: format!("{tenant_pseudonym}/{collection}/"),
        })
    }

    /// `<tenant pseudonym>/<collection>/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>run=<run>/`.
    pub fn run_prefix(&self, run: &str) -> String {
        format!("{}run={run}/", self.prefix)
    }

    pub fn part_key(&self, run: &str, index: usize) -> String {
        format!("{}{}", self.run_prefix(run), part_name(index))
    }

    pub fn manifest_key(&self, run: &str) -> String {
        format!("{}{MANIFEST_NAME}", self.run_prefix(run))
    }
}

/// `part-00000.parquet`.
pub fn part_name(index: usize) -> String {
    format!("part-{index:05}.parquet")
}

/// What a release of a collection should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The latest complete run already holds this watermark: nothing to do.
    UpToDate { run: String },
    /// Write run `run`; `resumed` when it completes a run that was stopped.
    Write { run: String, resumed: bool },
}

#[derive(Debug, Default)]
struct Runs {
    /// Run ids with a manifest, and runs without.
    complete: Vec<String>,
    incomplete: Vec<String>,
}

async fn runs(store: &dyn ReleaseStore, location: &ReleaseLocation) -> Result<Runs, ReleaseError> {
    let mut all = std::collections::BTreeMap::<String, bool>::new();
    for key in store.list(location.prefix()).await? {
        let Some(rest) = key.strip_prefix(location.prefix()) else {
            continue;
        };
        let Some((run, object)) = rest.strip_prefix("run=").and_then(|r| r.split_once('/')) else {
            continue;
        };
        if run.len() != 8 || !run.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let complete = all.entry(run.to_owned()).or_insert(false);
        *complete |= object == MANIFEST_NAME;
    }
    let mut runs = Runs::default();
    for (run, complete) in all {
        if complete {
            runs.complete.push(run);
        } else {
            runs.incomplete.push(run);
        }
    }
    Ok(runs)
}

/// The latest complete run's manifest, if any.
pub async fn latest_manifest(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
) -> Result<Option<(String, Manifest)>, ReleaseError> {
    let runs = runs(store, location).await?;
    let Some(run) = runs.complete.last() else {
        return Ok(None);
    };
    let key = location.manifest_key(run);
    let bytes = store
        .get(&key)
        .await?
        .ok_or_else(|| ReleaseError::BadManifest {
            key: key.clone(),
            reason: "listed but not found".into(),
        })?;
    let manifest = Manifest::from_json(&bytes).map_err(|e| ReleaseError::BadManifest {
        key,
        reason: e.to_string(),
    })?;
    Ok(Some((run.clone(), manifest)))
}

/// Decides what releasing the collection at `watermark` takes, before any data is read.
pub async fn plan_release(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
    watermark: &str,
) -> Result<Plan, ReleaseError> {
    if let Some((run, manifest)) = latest_manifest(store, location).await?
        && manifest.source_watermark == watermark
    {
        return Ok(Plan::UpToDate { run });
    }
    let runs = runs(store, location).await?;
    let latest_complete = runs.complete.last();
    // A stopped run newer than every complete one is resumed rather than left behind.
    if let Some(stopped) = runs.incomplete.last()
        && latest_complete.is_none_or(|c| stopped > c)
    {
        return Ok(Plan::Write {
            run: stopped.clone(),
            resumed: true,
        });
    }
    let next = runs
        .complete
        .iter()
        .chain(&runs.incomplete)
        .filter_map(|r| r.parse::<u64>().ok())
        .max()
        .map_or(1, |n| n + 1);
    Ok(Plan::Write {
        run: format!("{next:08}"),
        resumed: false,
    })
}

/// Writes `anonymized` as run `run`: parts of at most `rows_per_part` rows (at least one
/// part, possibly empty), stray objects of an earlier attempt at the same run deleted, then
/// the manifest. Returns the manifest written.
pub async fn write_release(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
    run: &str,
    anonymized: &Anonymized,
    watermark: &str,
    rows_per_part: usize,
) -> Result<Manifest, ReleaseError> {
    let mut batches = anonymized.batches(rows_per_part);
    if batches.is_empty() {
        batches.push(anonymized.batch.clone());
    }
    let mut parts = Vec::with_capacity(batches.len());
    for (index, batch) in batches.iter().enumerate() {
        let mut writer = PartWriter::try_new(Vec::new(), anonymized.schema())?;
        writer.write(batch)?;
        let (bytes, summary) = writer.finish()?;
        store.put(&location.part_key(run, index), bytes).await?;
        parts.push(ManifestPart {
            path: part_name(index),
            rows: summary.rows,
            bytes: summary.bytes,
            sha256: summary.sha256,
        });
    }
    let run_prefix = location.run_prefix(run);
    for key in store.list(&run_prefix).await? {
        let name = key.strip_prefix(&run_prefix).unwrap_or(&key);
        if !parts.iter().any(|p| p.path == name) {
            store.delete(&key).await?;
        }
    }
    let manifest = Manifest::new(&anonymized.report, &anonymized.schema(), watermark, parts);
    store
        .put(&location.manifest_key(run), manifest.to_json()?)
        .await?;
    Ok(manifest)
}

/// What [`release`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Released {
    UpToDate {
        run: String,
    },
    Written {
        run: String,
        resumed: bool,
        manifest: Box<Manifest>,
    },
}

/// Plans, then (unless up to date) calls `anonymize` and writes the release.
pub async fn release<E>(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
    watermark: &str,
    rows_per_part: usize,
    anonymize: impl FnOnce() -> Result<Anonymized, E>,
) -> Result<Result<Released, E>, ReleaseError> {
    match plan_release(store, location, watermark).await? {
        Plan::UpToDate { run } => Ok(Ok(Released::UpToDate { run })),
        Plan::Write { run, resumed } => {
            let anonymized = match anonymize() {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            let manifest =
                write_release(store, location, &run, &anonymized, watermark, rows_per_part).await?;
            Ok(Ok(Released::Written {
                run,
                resumed,
                manifest: Box::new(manifest),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::executor::block_on;

    use super::*;
    use crate::PseudonymKey;

    /// An in-memory bucket that can be told to fail after a number of puts (a crash).
    #[derive(Default)]
    struct Memory {
        objects: Mutex<BTreeMap<String, Vec<u8>>>,
        puts_left: AtomicUsize,
    }

    impl Memory {
        fn crash_after(&self, puts: usize) {
            self.puts_left.store(puts + 1, Ordering::SeqCst);
        }

        fn heal(&self) {
            self.puts_left.store(0, Ordering::SeqCst);
        }

        fn keys(&self) -> Vec<String> {
            self.objects.lock().expect("lock").keys().cloned().collect()
        }
    }

    #[async_trait]
    impl ReleaseStore for Memory {
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
            let left = self.puts_left.load(Ordering::SeqCst);
            if left == 1 {
                return Err(StoreError("crashed".into()));
            }
            if left > 1 {
                self.puts_left.store(left - 1, Ordering::SeqCst);
            }
            self.objects
                .lock()
                .expect("lock")
                .insert(key.to_owned(), bytes);
            Ok(())
        }

        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.objects.lock().expect("lock").get(key).cloned())
        }

        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            Ok(self
                .keys()
                .into_iter()
                .filter(|k| k.starts_with(prefix))
                .collect())
        }

        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.objects.lock().expect("lock").remove(key);
            Ok(())
        }
    }

    fn anonymized(rows: usize) -> Anonymized {
        let schema = crate::synthetic::schema();
        let table = crate::synthetic::table(rows);
        crate::anonymize(&table, &schema, &PseudonymKey::new(&[5; 32])).expect("anonymize")
    }

    fn run(
        store: &Memory,
        location: &ReleaseLocation,
        watermark: &str,
        data: &Anonymized,
    ) -> Result<Released, ReleaseError> {
        block_on(release(store, location, watermark, 300, || {
            Ok::<_, std::convert::Infallible>(data.clone())
        }))
        .map(|r| match r {
            Ok(r) => r,
            Err(never) => match never {},
        })
    }

    #[test]
    fn a_crash_then_a_rerun_gives_exactly_one_release_and_reruns_skip() {
        let store = Memory::default();
        let location = ReleaseLocation::new("t0a1b2c3", "patients").expect("location");
        let data = anonymized(1_000);

        // Crash after two of the four parts.
        store.crash_after(2);
        assert!(run(&store, &location, "wm-1", &data).is_err());
        let keys = store.keys();
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert!(keys.iter().all(|k| !k.ends_with(MANIFEST_NAME)));
        assert!(
            block_on(latest_manifest(&store, &location))
                .expect("list")
                .is_none()
        );

        // The rerun resumes the same run and completes it.
        store.heal();
        let released = run(&store, &location, "wm-1", &data).expect("rerun");
        let Released::Written {
            run: id,
            resumed,
            manifest,
        } = released
        else {
            panic!("expected a write: {released:?}");
        };
        assert_eq!((id.as_str(), resumed), ("00000001", true));
        assert_eq!(manifest.parts.len(), 4);
        assert_eq!(manifest.parts.iter().map(|p| p.rows).sum::<u64>(), 1_000);
        let manifests: Vec<String> = store
            .keys()
            .into_iter()
            .filter(|k| k.ends_with(MANIFEST_NAME))
            .collect();
        assert_eq!(manifests, ["t0a1b2c3/patients/run=00000001/_manifest.json"]);
        assert_eq!(store.keys().len(), 5);
        // Each part's checksum is the SHA-256 of the stored bytes.
        for part in &manifest.parts {
            let bytes =
                block_on(store.get(&format!("t0a1b2c3/patients/run=00000001/{}", part.path)))
                    .expect("get")
                    .expect("part stored");
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
            assert_eq!(part.sha256, hex::encode(digest.as_ref()));
        }

        // Same watermark: skipped. New watermark: a new run, the old one kept.
        let again = run(&store, &location, "wm-1", &data).expect("skip");
        assert_eq!(
            again,
            Released::UpToDate {
                run: "00000001".into()
            }
        );
        let next = run(&store, &location, "wm-2", &data).expect("next");
        assert!(
            matches!(next, Released::Written { ref run, resumed: false, .. } if run == "00000002")
        );
        assert_eq!(store.keys().len(), 10);
    }

    #[test]
    fn a_crash_before_the_manifest_leaves_no_release_and_stray_parts_are_removed() {
        let store = Memory::default();
        let location = ReleaseLocation::new("t1", "visits").expect("location");
        let big = anonymized(1_000);
        // All four parts written, the manifest put fails.
        store.crash_after(4);
        assert!(run(&store, &location, "wm-9", &big).is_err());
        assert_eq!(store.keys().len(), 4);
        // The rerun has fewer rows (2 parts): the two stray parts of the stopped attempt go.
        store.heal();
        let small = anonymized(500);
        let released = run(&store, &location, "wm-9", &small).expect("rerun");
        assert!(matches!(released, Released::Written { resumed: true, .. }));
        assert_eq!(
            store.keys(),
            [
                "t1/visits/run=00000001/_manifest.json",
                "t1/visits/run=00000001/part-00000.parquet",
                "t1/visits/run=00000001/part-00001.parquet",
            ]
        );
    }

    #[test]
    fn locations_are_path_segments() {
        assert!(ReleaseLocation::new("abc", "patients").is_ok());
        for (t, c) in [
            ("", "x"),
            ("a/b", "x"),
            ("a", "../x"),
            ("A", "x"),
            ("a", "x y"),
        ] {
            assert!(ReleaseLocation::new(t, c).is_err(), "{t:?} {c:?}");
        }
        let l = ReleaseLocation::new("abc", "patients").expect("location");
        assert_eq!(
            l.part_key("00000007", 3),
            "abc/patients/run=00000007/part-00003.parquet"
        );
        assert_eq!(
            l.manifest_key("00000007"),
            "abc/patients/run=00000007/_manifest.json"
        );
    }
}
