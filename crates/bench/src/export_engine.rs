//! `residency-bench export`: synthetic rows (`export::synthetic`) with 8 quasi-identifiers anonymized at k = 10
//! on one thread, then the released batches written to Parquet through [`PartWriter`] and
//! through a bare arrow-rs `ArrowWriter` (default properties) in the same run, best of a few
//! rounds each, into memory. Deterministic data (a fixed-seed generator), so runs compare.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use export::{PartWriter, PseudonymKey, anonymize, synthetic};
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

/// The goal for anonymizing 1M rows × 8 quasi-identifiers at k = 10.
pub const GOAL_ANONYMIZE_SECONDS: f64 = 2.0;
/// The goal for our writer's throughput relative to a bare `ArrowWriter`.
pub const GOAL_WRITER_RATIO: f64 = 0.8;

const ROUNDS: usize = 3;
const BATCH_ROWS: usize = 65_536;

/// The benchmark's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub rows: u64,
    pub quasi_identifiers: u32,
    pub k: u32,
    /// Encoding quasi-identifiers into codes.
    pub encode_seconds: f64,
    /// Mondrian partitioning proper.
    pub partition_seconds: f64,
    /// Generalizing classes and building the output batch (pseudonyms included).
    pub build_seconds: f64,
    /// The whole engine call: encode + partition + build; the figure held to the goal.
    pub anonymize_seconds: f64,
    pub rows_released: u64,
    pub classes: u64,
    pub k_achieved: Option<u64>,
    pub ncp: f64,
    /// Best of the rounds, writing every released batch.
    pub writer_seconds: f64,
    pub bare_writer_seconds: f64,
    pub writer_bytes: u64,
    pub bare_writer_bytes: u64,
    /// `bare_writer_seconds / writer_seconds`: our throughput relative to bare (≥ 0.8 goal).
    pub writer_ratio: f64,
    pub anonymize_goal_seconds: f64,
    pub anonymize_goal_met: bool,
    pub writer_goal_ratio: f64,
    pub writer_goal_met: bool,
}

impl BenchReport {
    /// The figures as a plain-text table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rows: Vec<(&str, String)> = vec![
            (
                "workload",
                format!(
                    "{} rows x {} quasi-identifiers, k = {}, 1 thread",
                    self.rows, self.quasi_identifiers, self.k
                ),
            ),
            ("encode", format!("{:.3} s", self.encode_seconds)),
            (
                "mondrian partition",
                format!("{:.3} s", self.partition_seconds),
            ),
            ("generalize + build", format!("{:.3} s", self.build_seconds)),
            (
                "anonymize total",
                format!(
                    "{:.3} s (goal < {:.1} s: {})",
                    self.anonymize_seconds,
                    self.anonymize_goal_seconds,
                    if self.anonymize_goal_met {
                        "met"
                    } else {
                        "MISSED"
                    }
                ),
            ),
            ("rows released", self.rows_released.to_string()),
            ("classes", self.classes.to_string()),
            (
                "k achieved",
                self.k_achieved
                    .map_or_else(|| "-".to_owned(), |k| k.to_string()),
            ),
            ("NCP", format!("{:.4}", self.ncp)),
            (
                "parquet: our writer",
                format!("{:.3} s, {} bytes", self.writer_seconds, self.writer_bytes),
            ),
            (
                "parquet: bare ArrowWriter",
                format!(
                    "{:.3} s, {} bytes",
                    self.bare_writer_seconds, self.bare_writer_bytes
                ),
            ),
            (
                "writer throughput ratio",
                format!(
                    "{:.2}x of bare (goal >= {:.1}x: {})",
                    self.writer_ratio,
                    self.writer_goal_ratio,
                    if self.writer_goal_met {
                        "met"
                    } else {
                        "MISSED"
                    }
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (label, value) in rows {
            let _ = writeln!(out, "{label:<width$}  {value}");
        }
        out
    }
}

fn write_ours(batches: &[RecordBatch]) -> (Duration, u64) {
    let started = Instant::now();
    let schema = batches.first().expect("a batch").schema();
    let mut writer = PartWriter::try_new(Vec::new(), schema).expect("open our writer");
    for batch in batches {
        writer.write(batch).expect("write a batch");
    }
    let (bytes, summary) = writer.finish().expect("close our writer");
    let elapsed = started.elapsed();
    debug_assert_eq!(bytes.len() as u64, summary.bytes);
    (elapsed, summary.bytes)
}

fn write_bare(batches: &[RecordBatch]) -> (Duration, u64) {
    let started = Instant::now();
    let schema = batches.first().expect("a batch").schema();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).expect("open ArrowWriter");
    for batch in batches {
        writer.write(batch).expect("write a batch");
    }
    let bytes = writer.into_inner().expect("close ArrowWriter");
    (started.elapsed(), bytes.len() as u64)
}

/// Runs the benchmark on `rows` synthetic rows (1,000,000 for the stated goals).
pub fn bench_export(rows: usize) -> BenchReport {
    let schema = synthetic::schema();
    let table = synthetic::table(rows);
    let key = PseudonymKey::new(&[7; 32]);
    let started = Instant::now();
    let anonymized = anonymize(&table, &schema, &key).expect("the benchmark anonymizes");
    let anonymize_seconds = started.elapsed().as_secs_f64();
    let t = anonymized.timings;
    let mut batches = anonymized.batches(BATCH_ROWS);
    if batches.is_empty() {
        batches.push(anonymized.batch.clone());
    }
    // Alternate so neither side gets a warmer cache or allocator.
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..ROUNDS {
        bare.push(write_bare(&batches));
        ours.push(write_ours(&batches));
    }
    let (ours_time, ours_bytes) = ours.into_iter().min_by_key(|r| r.0).expect("rounds");
    let (bare_time, bare_bytes) = bare.into_iter().min_by_key(|r| r.0).expect("rounds");
    let writer_ratio = bare_time.as_secs_f64() / ours_time.as_secs_f64().max(1e-9);
    let report = &anonymized.report;
    BenchReport {
        rows: rows as u64,
        quasi_identifiers: report.quasi_identifiers.len() as u32,
        k: report.k_requested,
        encode_seconds: t.encode.as_secs_f64(),
        partition_seconds: t.partition.as_secs_f64(),
        build_seconds: t.build.as_secs_f64(),
        anonymize_seconds,
        rows_released: report.rows_released,
        classes: report.classes,
        k_achieved: report.k_achieved,
        ncp: report.ncp,
        writer_seconds: ours_time.as_secs_f64(),
        bare_writer_seconds: bare_time.as_secs_f64(),
        writer_bytes: ours_bytes,
        bare_writer_bytes: bare_bytes,
        writer_ratio,
        anonymize_goal_seconds: GOAL_ANONYMIZE_SECONDS,
        anonymize_goal_met: anonymize_seconds < GOAL_ANONYMIZE_SECONDS,
        writer_goal_ratio: GOAL_WRITER_RATIO,
        writer_goal_met: writer_ratio >= GOAL_WRITER_RATIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_consistent_figures() {
        let report = bench_export(5_000);
        assert_eq!(report.rows, 5_000);
        assert_eq!(report.quasi_identifiers, 8);
        assert_eq!(report.rows_released, 5_000);
        assert!(report.k_achieved.is_some_and(|k| k >= 10), "{report:?}");
        assert!(report.writer_bytes > 0 && report.bare_writer_bytes > 0);
        let text = report.render();
        assert!(text.contains("writer throughput ratio"), "{text}");
        let json = serde_json::to_string(&report).expect("json");
        assert!(json.contains("\"writer_ratio\""));
    }
}
