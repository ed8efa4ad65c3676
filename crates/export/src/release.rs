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
//!
//! **Erasures.** Pseudonyms remain personal data, and the engine cannot tell which
//! pseudonym was an erased subject's. So a release records the source's erasures of data
//! subjects ([`SourcePosition::erasures`], opaque) in its manifest, a run that holds
//! pseudonyms is never "up to date" while the source has applied erasures it had not, and
//! once a release that saw them exists, [`withdraw_before_erasures`] withdraws every
//! earlier run that holds pseudonyms and saw fewer: its manifest, then its parts, are
//! deleted, and the collection's `_withdrawn.json` (no subject data: run ids, reason,
//! time, the run that supersedes them) tells analysts which runs they must discard:
//!
//! ```text
//! <tenant pseudonym>/<collection>/_withdrawn.json
//! ```
//!
//! The record names the runs before anything is deleted and the erasures it has applied
//! after, so a crash anywhere (before the withdrawal, during it) is finished by the next
//! pass, and a pass with nothing new changes nothing.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::engine::Anonymized;
use crate::output::{Manifest, ManifestPart, OutputError, PartWriter};

/// Name of the manifest object in a run.
pub const MANIFEST_NAME: &str = "_manifest.json";

/// Name of a collection's record of withdrawn runs.
pub const WITHDRAWN_NAME: &str = "_withdrawn.json";

/// The withdrawal record's format version.
pub const WITHDRAWN_VERSION: u32 = 1;

/// Why a run is withdrawn after a data subject's erasure.
pub const REASON_SUBJECT_ERASURE: &str = "subject erasure";

/// What a release is taken from: the source's watermark (a release at the same watermark
/// is up to date) and the erasures of data subjects it had applied (empty when none).
/// Both are opaque to the engine and compared for equality only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePosition {
    pub watermark: String,
    pub erasures: String,
}

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
    #[error("withdrawal record {key} is unreadable: {reason}")]
    BadWithdrawals { key: String, reason: String },
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

    /// `<prefix>_withdrawn.json`.
    pub fn withdrawn_key(&self) -> String {
        format!("{}{WITHDRAWN_NAME}", self.prefix)
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

/// The manifest of complete run `run`.
async fn read_manifest(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
    run: &str,
) -> Result<Manifest, ReleaseError> {
    let key = location.manifest_key(run);
    let bytes = store
        .get(&key)
        .await?
        .ok_or_else(|| ReleaseError::BadManifest {
            key: key.clone(),
            reason: "listed but not found".into(),
        })?;
    Manifest::from_json(&bytes).map_err(|e| ReleaseError::BadManifest {
        key,
        reason: e.to_string(),
    })
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
    let manifest = read_manifest(store, location, run).await?;
    Ok(Some((run.clone(), manifest)))
}

/// Whether a run released with `manifest` may hold the pseudonym of a subject erased since:
/// it holds pseudonyms, and the source has applied erasures it had not.
fn predates_erasures(manifest: &Manifest, source: &SourcePosition) -> bool {
    manifest.holds_pseudonyms() && manifest.source_erasures != source.erasures
}

/// Decides what releasing the collection at `source` takes, before any data is read: up to
/// date when the latest complete run has the same watermark and does not predate an
/// erasure the source has applied.
pub async fn plan_release(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
    source: &SourcePosition,
) -> Result<Plan, ReleaseError> {
    if let Some((run, manifest)) = latest_manifest(store, location).await?
        && manifest.source_watermark == source.watermark
        && !predates_erasures(&manifest, source)
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
/// the manifest (which records `source`). Returns the manifest written.
pub async fn write_release(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
    run: &str,
    anonymized: &Anonymized,
    source: &SourcePosition,
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
    let mut manifest = Manifest::new(
        &anonymized.report,
        &anonymized.schema(),
        &source.watermark,
        parts,
    );
    manifest.source_erasures = source.erasures.clone();
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
    source: &SourcePosition,
    rows_per_part: usize,
    anonymize: impl FnOnce() -> Result<Anonymized, E>,
) -> Result<Result<Released, E>, ReleaseError> {
    match plan_release(store, location, source).await? {
        Plan::UpToDate { run } => Ok(Ok(Released::UpToDate { run })),
        Plan::Write { run, resumed } => {
            let anonymized = match anonymize() {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            let manifest =
                write_release(store, location, &run, &anonymized, source, rows_per_part).await?;
            Ok(Ok(Released::Written {
                run,
                resumed,
                manifest: Box::new(manifest),
            }))
        }
    }
}

/// A collection's `_withdrawn.json`: the runs withdrawn, and the source erasures every
/// run still published has seen. It holds no subject data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawals {
    pub version: u32,
    /// The source's erasures (opaque, as in the manifests) that every run still published
    /// has seen or holds no pseudonyms for.
    pub erasures_applied: String,
    /// Withdrawn runs, oldest withdrawal first.
    pub runs: Vec<WithdrawnRun>,
}

/// One withdrawn run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WithdrawnRun {
    /// The run id (`00000001`); its objects are deleted.
    pub run: String,
    /// Why ([`REASON_SUBJECT_ERASURE`]).
    pub reason: String,
    /// When it was withdrawn (RFC 3339, as the caller gave it).
    pub withdrawn_at: String,
    /// The run to read instead, when one had been released.
    pub superseded_by: Option<String>,
}

impl Withdrawals {
    pub fn to_json(&self) -> Result<Vec<u8>, OutputError> {
        let mut out = serde_json::to_vec_pretty(self).map_err(OutputError::from)?;
        out.push(b'\n');
        Ok(out)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The collection's withdrawal record, or an empty one (`erasures_applied` empty) when it
/// has none.
pub async fn withdrawals(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
) -> Result<Withdrawals, ReleaseError> {
    let key = location.withdrawn_key();
    match store.get(&key).await? {
        None => Ok(Withdrawals {
            version: WITHDRAWN_VERSION,
            ..Withdrawals::default()
        }),
        Some(bytes) => Withdrawals::from_json(&bytes).map_err(|e| ReleaseError::BadWithdrawals {
            key,
            reason: e.to_string(),
        }),
    }
}

async fn delete_run(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
    run: &str,
) -> Result<(), ReleaseError> {
    // The manifest first: consumers read only runs that have one, so the run stops being
    // published before its parts go.
    store.delete(&location.manifest_key(run)).await?;
    for key in store.list(&location.run_prefix(run)).await? {
        store.delete(&key).await?;
    }
    Ok(())
}

/// After an erasure of data subjects (the source's erasures differ from those the
/// withdrawal record has applied): withdraws every complete run that holds pseudonyms and
/// predates the source's erasures, naming them in `_withdrawn.json` first (reason
/// [`REASON_SUBJECT_ERASURE`], `withdrawn_at`, the latest run that supersedes them), then
/// deleting their manifests and parts and the remains of stopped runs older than the
/// latest complete one; last, the record notes the erasures as applied. Call it after the
/// release at `source` was written, so the withdrawn runs are superseded; a run that
/// predates the erasures is withdrawn even if it is the latest. Returns the runs withdrawn
/// by this call, oldest first. Nothing to do (no erasures, or applied already): one read.
pub async fn withdraw_before_erasures(
    store: &dyn ReleaseStore,
    location: &ReleaseLocation,
    source: &SourcePosition,
    withdrawn_at: &str,
) -> Result<Vec<String>, ReleaseError> {
    if source.erasures.is_empty() {
        return Ok(Vec::new());
    }
    let mut record = withdrawals(store, location).await?;
    if record.erasures_applied == source.erasures {
        return Ok(Vec::new());
    }
    let runs = runs(store, location).await?;
    if runs.complete.is_empty() && runs.incomplete.is_empty() && record.runs.is_empty() {
        // Nothing was ever released here: no record to write either.
        return Ok(Vec::new());
    }
    let mut stale = Vec::new();
    let mut current = None;
    for run in &runs.complete {
        if predates_erasures(&read_manifest(store, location, run).await?, source) {
            stale.push(run.clone());
        } else {
            current = Some(run.clone());
        }
    }
    // Stopped runs older than the latest complete one are never resumed, and a run the
    // record names lost its manifest to a withdrawal that stopped: their remains may hold
    // pseudonyms too.
    let remains: Vec<String> = runs
        .incomplete
        .iter()
        .filter(|run| {
            runs.complete.last().is_some_and(|latest| *run < latest)
                || record.runs.iter().any(|w| &w.run == *run)
        })
        .cloned()
        .collect();
    let newly: Vec<String> = stale
        .iter()
        .filter(|run| !record.runs.iter().any(|w| &w.run == *run))
        .cloned()
        .collect();
    if !newly.is_empty() {
        record.runs.extend(newly.iter().map(|run| WithdrawnRun {
            run: run.clone(),
            reason: REASON_SUBJECT_ERASURE.to_owned(),
            withdrawn_at: withdrawn_at.to_owned(),
            superseded_by: current.clone(),
        }));
        store
            .put(&location.withdrawn_key(), record.to_json()?)
            .await?;
    }
    for run in stale.iter().chain(&remains) {
        delete_run(store, location, run).await?;
    }
    record.erasures_applied = source.erasures.clone();
    store
        .put(&location.withdrawn_key(), record.to_json()?)
        .await?;
    Ok(stale)
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
        let source = SourcePosition {
            watermark: watermark.to_owned(),
            erasures: String::new(),
        };
        block_on(release(store, location, &source, 300, || {
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

    fn at(watermark: &str, erasures: &str) -> SourcePosition {
        SourcePosition {
            watermark: watermark.to_owned(),
            erasures: erasures.to_owned(),
        }
    }

    fn release_at(
        store: &Memory,
        location: &ReleaseLocation,
        source: &SourcePosition,
        data: &Anonymized,
    ) -> Released {
        block_on(release(store, location, source, 300, || {
            Ok::<_, std::convert::Infallible>(data.clone())
        }))
        .expect("release")
        .unwrap_or_else(|never| match never {})
    }

    fn withdraw(
        store: &Memory,
        location: &ReleaseLocation,
        source: &SourcePosition,
    ) -> Result<Vec<String>, ReleaseError> {
        block_on(withdraw_before_erasures(
            store,
            location,
            source,
            "2026-12-08T01:00:00.000000Z",
        ))
    }

    fn written(released: &Released) -> &str {
        match released {
            Released::Written { run, .. } => run,
            Released::UpToDate { .. } => panic!("expected a write: {released:?}"),
        }
    }

    fn runs_stored(store: &Memory, location: &ReleaseLocation) -> Vec<String> {
        let mut runs: Vec<String> = store
            .keys()
            .iter()
            .filter_map(|k| k.strip_prefix(location.prefix()))
            .filter_map(|k| k.strip_prefix("run="))
            .filter_map(|k| k.split_once('/').map(|(run, _)| run.to_owned()))
            .collect();
        runs.dedup();
        runs
    }

    #[test]
    fn runs_with_pseudonyms_that_predate_an_erasure_are_withdrawn_after_a_fresh_release() {
        let store = Memory::default();
        let location = ReleaseLocation::new("t2", "patients").expect("location");
        let data = anonymized(500);
        assert_eq!(
            written(&release_at(&store, &location, &at("wm-1", ""), &data)),
            "00000001"
        );
        assert_eq!(
            written(&release_at(&store, &location, &at("wm-2", ""), &data)),
            "00000002"
        );
        let first = block_on(latest_manifest(&store, &location))
            .expect("read")
            .expect("a run")
            .1;
        assert!(first.holds_pseudonyms());
        // No erasure: nothing to withdraw, nothing written.
        assert!(
            withdraw(&store, &location, &at("wm-2", ""))
                .expect("withdraw")
                .is_empty()
        );
        assert!(!store.keys().iter().any(|k| k.ends_with(WITHDRAWN_NAME)));

        // An erasure the runs did not see: the same watermark is released afresh, and the
        // runs before it are withdrawn, parts and manifests.
        let erased = at("wm-2", "e1.t100");
        assert_eq!(
            written(&release_at(&store, &location, &erased, &data)),
            "00000003"
        );
        assert_eq!(
            withdraw(&store, &location, &erased).expect("withdraw"),
            ["00000001", "00000002"]
        );
        assert_eq!(runs_stored(&store, &location), ["00000003"]);
        let record = block_on(withdrawals(&store, &location)).expect("record");
        assert_eq!(record.erasures_applied, "e1.t100");
        assert_eq!(
            record
                .runs
                .iter()
                .map(|w| (
                    w.run.as_str(),
                    w.reason.as_str(),
                    w.superseded_by.as_deref()
                ))
                .collect::<Vec<_>>(),
            [
                ("00000001", REASON_SUBJECT_ERASURE, Some("00000003")),
                ("00000002", REASON_SUBJECT_ERASURE, Some("00000003"))
            ]
        );
        let fresh = block_on(latest_manifest(&store, &location))
            .expect("read")
            .expect("a run")
            .1;
        assert_eq!(fresh.source_erasures, "e1.t100");

        // A second pass changes nothing: up to date, nothing withdrawn, the same objects.
        let before = store.objects.lock().expect("lock").clone();
        assert_eq!(
            release_at(&store, &location, &erased, &data),
            Released::UpToDate {
                run: "00000003".into()
            }
        );
        assert!(
            withdraw(&store, &location, &erased)
                .expect("withdraw")
                .is_empty()
        );
        assert_eq!(*store.objects.lock().expect("lock"), before);
    }

    #[test]
    fn a_crash_before_or_during_a_withdrawal_is_finished_by_the_next_pass() {
        let store = Memory::default();
        let location = ReleaseLocation::new("t3", "patients").expect("location");
        let data = anonymized(300);
        release_at(&store, &location, &at("wm-1", ""), &data);
        // The fresh release is written, then the pass stops before withdrawing.
        let erased = at("wm-1", "e1.t7");
        assert_eq!(
            written(&release_at(&store, &location, &erased, &data)),
            "00000002"
        );
        // The next pass: up to date, and the withdrawal happens, though the record cannot
        // be finished (a crash after the record names the run and its objects are deleted).
        assert!(matches!(
            release_at(&store, &location, &erased, &data),
            Released::UpToDate { .. }
        ));
        store.crash_after(1);
        assert!(withdraw(&store, &location, &erased).is_err());
        assert_eq!(runs_stored(&store, &location), ["00000002"]);
        store.heal();
        // The pass after finishes: the record still names run 1 and notes the erasure.
        assert!(
            withdraw(&store, &location, &erased)
                .expect("withdraw")
                .is_empty()
        );
        let record = block_on(withdrawals(&store, &location)).expect("record");
        assert_eq!(record.erasures_applied, "e1.t7");
        assert_eq!(record.runs.len(), 1);
        assert_eq!(record.runs[0].run, "00000001");

        // A crash before the record is written deletes nothing; the rerun withdraws.
        let again = at("wm-1", "e2.t9");
        assert_eq!(
            written(&release_at(&store, &location, &again, &data)),
            "00000003"
        );
        store.crash_after(0);
        assert!(withdraw(&store, &location, &again).is_err());
        assert_eq!(runs_stored(&store, &location), ["00000002", "00000003"]);
        store.heal();
        assert_eq!(
            withdraw(&store, &location, &again).expect("withdraw"),
            ["00000002"]
        );
        assert_eq!(runs_stored(&store, &location), ["00000003"]);
        let record = block_on(withdrawals(&store, &location)).expect("record");
        assert_eq!(
            record
                .runs
                .iter()
                .map(|w| w.run.as_str())
                .collect::<Vec<_>>(),
            ["00000001", "00000002"]
        );
    }

    #[test]
    fn the_remains_of_a_withdrawal_stopped_after_a_manifest_are_deleted() {
        let store = Memory::default();
        let location = ReleaseLocation::new("t6", "notes").expect("location");
        release_at(&store, &location, &at("wm-1", ""), &anonymized(300));
        // A withdrawal named run 1 and deleted its manifest, then stopped: no complete run
        // is left, only run 1's parts.
        let record = Withdrawals {
            version: WITHDRAWN_VERSION,
            erasures_applied: String::new(),
            runs: vec![WithdrawnRun {
                run: "00000001".into(),
                reason: REASON_SUBJECT_ERASURE.into(),
                withdrawn_at: "2026-12-08T01:00:00.000000Z".into(),
                superseded_by: None,
            }],
        };
        block_on(store.put(&location.withdrawn_key(), record.to_json().expect("json")))
            .expect("put");
        block_on(store.delete(&location.manifest_key("00000001"))).expect("delete");
        assert_eq!(runs_stored(&store, &location), ["00000001"]);
        assert!(
            withdraw(&store, &location, &at("", "e1.t1"))
                .expect("withdraw")
                .is_empty()
        );
        assert!(runs_stored(&store, &location).is_empty());
        let record = block_on(withdrawals(&store, &location)).expect("record");
        assert_eq!(
            (record.erasures_applied.as_str(), record.runs.len()),
            ("e1.t1", 1)
        );
    }

    #[test]
    fn a_collection_never_released_gets_no_withdrawal_record() {
        let store = Memory::default();
        let location = ReleaseLocation::new("t5", "notes").expect("location");
        assert!(
            withdraw(&store, &location, &at("", "e1.t1"))
                .expect("withdraw")
                .is_empty()
        );
        assert!(store.keys().is_empty());
    }

    #[test]
    fn runs_without_pseudonyms_stay_published_after_an_erasure() {
        let store = Memory::default();
        let location = ReleaseLocation::new("t4", "visits").expect("location");
        let schema = crate::synthetic::schema_pseudonymizing(&[]);
        let data = crate::anonymize(
            &crate::synthetic::table(300),
            &schema,
            &PseudonymKey::new(&[5; 32]),
        )
        .expect("anonymize");
        release_at(&store, &location, &at("wm-1", ""), &data);
        let erased = at("wm-1", "e1.t3");
        // Same watermark, no pseudonyms: nothing to release again, nothing to withdraw.
        assert!(matches!(
            release_at(&store, &location, &erased, &data),
            Released::UpToDate { .. }
        ));
        assert!(
            withdraw(&store, &location, &erased)
                .expect("withdraw")
                .is_empty()
        );
        assert_eq!(runs_stored(&store, &location), ["00000001"]);
        let record = block_on(withdrawals(&store, &location)).expect("record");
        assert_eq!(
            (record.erasures_applied.as_str(), record.runs.len()),
            ("e1.t3", 0)
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
