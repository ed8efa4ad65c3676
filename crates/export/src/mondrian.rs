//! Strict Mondrian multidimensional partitioning (LeFevre, DeWitt, Ramakrishnan, 2006) over
//! quasi-identifiers encoded as order-preserving `u32` codes.
//!
//! Rows live in one flat, row-major buffer: `d` quasi-identifier codes, then `s`
//! sensitive-value codes (only when l-diversity is asked), then the row's index in the
//! input. Partitions are contiguous ranges of that buffer and are split in place, so every
//! pass reads memory in order; the hot loop allocates nothing (one scratch vector is
//! reused for medians).
//!
//! A partition is split on the dimension with the widest normalized range that has an
//! allowable cut, at the median code. Strict: equal codes go to the same side, either
//! `x <= median | x > median` or `x < median | x >= median`, whichever is more balanced
//! among those allowed. A cut is allowable when both sides hold at least `k` rows and, when
//! `l` is set, at least `l` distinct values of every sensitive field. A partition with no
//! allowable cut is an equivalence class.

use std::ops::Range;

/// A sensitive value code meaning "no value"; never counted as a distinct value.
pub(crate) const MISSING: u32 = u32::MAX;

/// How a dimension's codes map to a normalized width in `[0, 1]`.
#[derive(Debug, Clone)]
pub(crate) enum Scale {
    /// Codes are evenly spaced: width = (hi - lo) / span.
    Linear { span: f64 },
    /// Code `c` stands for `values[c]`: width = (values[hi] - values[lo]) / span.
    Values { values: Vec<f64>, span: f64 },
}

impl Scale {
    pub(crate) fn width(&self, lo: u32, hi: u32) -> f64 {
        let (delta, span) = match self {
            Self::Linear { span } => (f64::from(hi - lo), *span),
            Self::Values { values, span } => (values[hi as usize] - values[lo as usize], *span),
        };
        if span > 0.0 { delta / span } else { 0.0 }
    }
}

/// The row-major buffer the partitioner works on.
#[derive(Debug, Clone)]
pub(crate) struct Records {
    pub(crate) data: Vec<u32>,
    /// Quasi-identifier columns.
    pub(crate) d: usize,
    /// Sensitive columns.
    pub(crate) s: usize,
}

impl Records {
    pub(crate) fn stride(&self) -> usize {
        self.d + self.s + 1
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len() / self.stride()
    }

    pub(crate) fn row(&self, i: usize) -> &[u32] {
        let stride = self.stride();
        &self.data[i * stride..(i + 1) * stride]
    }

    /// The input row index of buffer row `i`.
    pub(crate) fn id(&self, i: usize) -> u32 {
        self.data[(i + 1) * self.stride() - 1]
    }
}

/// What the partitioner decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Equivalence classes: ranges of buffer rows, covering the whole buffer.
    Classes(Vec<Range<usize>>),
    /// Fewer than `k` rows: nothing can be released.
    TooFewRows,
    /// The whole table is not `l`-diverse: nothing can be released.
    NotDiverse,
}

/// The partitioner's parameters.
#[derive(Debug)]
pub(crate) struct Mondrian<'a> {
    pub(crate) k: usize,
    /// 0 when l-diversity is not asked.
    pub(crate) l: usize,
    pub(crate) scales: &'a [Scale],
    /// Number of distinct codes of each sensitive column (codes are below it, or MISSING).
    pub(crate) sensitive_cardinality: &'a [usize],
}

struct Work {
    scratch: Vec<u32>,
    lo: Vec<u32>,
    hi: Vec<u32>,
    order: Vec<(f64, usize)>,
    /// Per sensitive column, two stamp arrays (left, right) for counting distinct values.
    stamps: Vec<[Vec<u32>; 2]>,
    generation: u32,
}

impl Mondrian<'_> {
    /// Partitions `records` in place.
    pub(crate) fn run(&self, records: &mut Records) -> Outcome {
        let n = records.len();
        let k = self.k.max(1);
        if n < k || n == 0 {
            return Outcome::TooFewRows;
        }
        let mut work = Work {
            scratch: Vec::with_capacity(n),
            lo: vec![0; records.d],
            hi: vec![0; records.d],
            order: Vec::with_capacity(records.d),
            stamps: self
                .sensitive_cardinality
                .iter()
                .map(|&c| [vec![0; c], vec![0; c]])
                .collect(),
            generation: 0,
        };
        if self.l > 0 && !self.diverse_whole(records, 0..n, &mut work) {
            return Outcome::NotDiverse;
        }
        let mut classes = Vec::with_capacity(n / k + 1);
        let mut stack: Vec<Range<usize>> = Vec::with_capacity(64);
        stack.push(0..n);
        while let Some(range) = stack.pop() {
            match self.split(records, range.clone(), &mut work) {
                Some(mid) => {
                    stack.push(mid..range.end);
                    stack.push(range.start..mid);
                }
                None => classes.push(range),
            }
        }
        // Depth-first with the left half on top: classes come out in buffer order.
        Outcome::Classes(classes)
    }

    /// Splits `range` in place and returns where the right side starts, or `None` when it
    /// has no allowable cut.
    fn split(&self, records: &mut Records, range: Range<usize>, work: &mut Work) -> Option<usize> {
        let len = range.len();
        if len < 2 * self.k.max(1) {
            return None;
        }
        let d = records.d;
        let stride = records.stride();
        let rows = &records.data[range.start * stride..range.end * stride];
        work.lo.copy_from_slice(&rows[..d]);
        work.hi.copy_from_slice(&rows[..d]);
        for row in rows.chunks_exact(stride) {
            for ((lo, hi), &c) in work.lo.iter_mut().zip(work.hi.iter_mut()).zip(&row[..d]) {
                *lo = (*lo).min(c);
                *hi = (*hi).max(c);
            }
        }
        work.order.clear();
        for dim in 0..d {
            if work.lo[dim] < work.hi[dim] {
                let width = self.scales[dim].width(work.lo[dim], work.hi[dim]);
                work.order.push((width, dim));
            }
        }
        // Widest first; ties by dimension index so the result is deterministic.
        work.order
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for i in 0..work.order.len() {
            let dim = work.order[i].1;
            if let Some(mid) = self.cut(records, range.clone(), dim, work) {
                return Some(mid);
            }
        }
        None
    }

    /// Tries the two strict median cuts of `range` on `dim`; partitions in place on success.
    fn cut(
        &self,
        records: &mut Records,
        range: Range<usize>,
        dim: usize,
        work: &mut Work,
    ) -> Option<usize> {
        let stride = records.stride();
        let len = range.len();
        let k = self.k.max(1);
        {
            let rows = &records.data[range.start * stride..range.end * stride];
            work.scratch.clear();
            work.scratch
                .extend(rows.chunks_exact(stride).map(|row| row[dim]));
        }
        let mid = (len - 1) / 2;
        let (below, &mut median, above) = work.scratch.select_nth_unstable(mid);
        let equal_above = above.iter().filter(|&&c| c == median).count();
        let equal_below = below.iter().filter(|&&c| c == median).count();
        // `x <= median` keeps the median's ties on the left; `x < median` on the right.
        let left_le = mid + 1 + equal_above;
        let left_lt = mid - equal_below;
        let mut candidates = [(left_le, true), (left_lt, false)];
        let balance = |left: usize| left.abs_diff(len - left);
        if balance(left_lt) < balance(left_le) {
            candidates.swap(0, 1);
        }
        for (left, inclusive) in candidates {
            if left < k || len - left < k {
                continue;
            }
            let goes_left = |c: u32| if inclusive { c <= median } else { c < median };
            if self.l > 0 && !self.diverse_sides(records, range.clone(), dim, &goes_left, work) {
                continue;
            }
            let split = partition_rows(records, range.clone(), dim, goes_left);
            debug_assert_eq!(split, range.start + left);
            return Some(split);
        }
        None
    }

    fn next_generation(&self, work: &mut Work) -> u32 {
        work.generation = work.generation.wrapping_add(1);
        if work.generation == 0 {
            for pair in &mut work.stamps {
                pair[0].fill(0);
                pair[1].fill(0);
            }
            work.generation = 1;
        }
        work.generation
    }

    fn diverse_whole(&self, records: &Records, range: Range<usize>, work: &mut Work) -> bool {
        self.diverse_sides(records, range, 0, &|_| true, work)
    }

    /// Whether both sides of a cut (rows for which `goes_left` holds, and the others) have
    /// at least `l` distinct values of every sensitive column. An empty right side (the
    /// whole-table check) counts as diverse.
    fn diverse_sides(
        &self,
        records: &Records,
        range: Range<usize>,
        dim: usize,
        goes_left: &dyn Fn(u32) -> bool,
        work: &mut Work,
    ) -> bool {
        let stride = records.stride();
        let d = records.d;
        let rows = &records.data[range.start * stride..range.end * stride];
        for s in 0..records.s {
            let generation = self.next_generation(work);
            let [left, right] = &mut work.stamps[s];
            let (mut n_left, mut n_right) = (0usize, 0usize);
            let mut any_right = false;
            for row in rows.chunks_exact(stride) {
                let code = row[d + s];
                let is_left = goes_left(row[dim]);
                any_right |= !is_left;
                if code == MISSING {
                    continue;
                }
                let (stamps, count) = if is_left {
                    (&mut *left, &mut n_left)
                } else {
                    (&mut *right, &mut n_right)
                };
                let slot = &mut stamps[code as usize];
                if *slot != generation {
                    *slot = generation;
                    *count += 1;
                }
                if n_left >= self.l && n_right >= self.l {
                    break;
                }
            }
            if n_left < self.l || (any_right && n_right < self.l) {
                return false;
            }
        }
        true
    }
}

/// Moves the rows of `range` for which `goes_left(row[dim])` holds before the others;
/// returns where the others start.
fn partition_rows(
    records: &mut Records,
    range: Range<usize>,
    dim: usize,
    goes_left: impl Fn(u32) -> bool,
) -> usize {
    let stride = records.stride();
    let data = &mut records.data;
    let (mut i, mut j) = (range.start, range.end);
    loop {
        while i < j && goes_left(data[i * stride + dim]) {
            i += 1;
        }
        while i < j && !goes_left(data[(j - 1) * stride + dim]) {
            j -= 1;
        }
        if i >= j {
            return i;
        }
        let (head, tail) = data.split_at_mut((j - 1) * stride);
        head[i * stride..(i + 1) * stride].swap_with_slice(&mut tail[..stride]);
        i += 1;
        j -= 1;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn records(rows: &[Vec<u32>], d: usize) -> Records {
        let s = rows.first().map_or(0, |r| r.len() - d);
        let mut data = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            data.extend_from_slice(row);
            data.push(i as u32);
        }
        Records { data, d, s }
    }

    fn scales(d: usize, span: f64) -> Vec<Scale> {
        vec![Scale::Linear { span }; d]
    }

    fn classes(outcome: Outcome) -> Vec<Range<usize>> {
        match outcome {
            Outcome::Classes(c) => c,
            other => panic!("no classes: {other:?}"),
        }
    }

    #[test]
    fn one_dimension_splits_at_medians_into_classes_of_k() {
        let rows: Vec<Vec<u32>> = (0..40).rev().map(|v| vec![v]).collect();
        let mut r = records(&rows, 1);
        let m = Mondrian {
            k: 10,
            l: 0,
            scales: &scales(1, 39.0),
            sensitive_cardinality: &[],
        };
        let c = classes(m.run(&mut r));
        assert_eq!(c, vec![0..10, 10..20, 20..30, 30..40]);
        // Each class holds a contiguous run of values.
        for class in &c {
            let values: Vec<u32> = class.clone().map(|i| r.row(i)[0]).collect();
            assert_eq!(
                values.iter().max().expect("rows") - values.iter().min().expect("rows"),
                9
            );
        }
    }

    #[test]
    fn ties_stay_together_and_too_few_rows_are_refused() {
        // 15 rows of one value, 5 of another: the only strict cut leaves 5 on one side.
        let rows: Vec<Vec<u32>> = (0..20).map(|i| vec![u32::from(i >= 15)]).collect();
        let mut r = records(&rows, 1);
        let m = Mondrian {
            k: 6,
            l: 0,
            scales: &scales(1, 1.0),
            sensitive_cardinality: &[],
        };
        assert_eq!(classes(m.run(&mut r)), vec![0..20]);
        let mut r = records(&rows[..5], 1);
        assert_eq!(m.run(&mut r), Outcome::TooFewRows);
    }

    #[test]
    fn l_diversity_blocks_cuts_and_whole_tables() {
        // Sensitive value equals the QI's parity: any cut keeps both values on each side
        // only if it is large enough.
        let rows: Vec<Vec<u32>> = (0..40).map(|v| vec![v, u32::from(v >= 20)]).collect();
        let mut r = records(&rows, 1);
        let m = Mondrian {
            k: 5,
            l: 2,
            scales: &scales(1, 39.0),
            sensitive_cardinality: &[2],
        };
        // Sensitive value is 0 below 20 and 1 above: no cut keeps two values on both sides.
        assert_eq!(classes(m.run(&mut r)), vec![0..40]);
        let same: Vec<Vec<u32>> = (0..40).map(|v| vec![v, 0]).collect();
        let mut r = records(&same, 1);
        assert_eq!(m.run(&mut r), Outcome::NotDiverse);
    }

    #[test]
    fn the_widest_normalized_dimension_is_cut_first() {
        // dim 0 spans 0..=1 of 0..=1 (width 1); dim 1 spans 0..=19 of 0..=1000 (0.019).
        let rows: Vec<Vec<u32>> = (0..20).map(|i| vec![i % 2, i]).collect();
        let mut r = records(&rows, 2);
        let m = Mondrian {
            k: 10,
            l: 0,
            scales: &[Scale::Linear { span: 1.0 }, Scale::Linear { span: 1000.0 }],
            sensitive_cardinality: &[],
        };
        let c = classes(m.run(&mut r));
        assert_eq!(c.len(), 2);
        for class in c {
            let first = r.row(class.start)[0];
            assert!(class.clone().all(|i| r.row(i)[0] == first));
        }
    }

    proptest! {
        #[test]
        fn classes_cover_every_row_once_hold_k_rows_and_do_not_overlap(
            values in proptest::collection::vec((0u32..8, 0u32..50, 0u32..3), 0..300),
            k in 1usize..12,
            l in 0usize..3,
        ) {
            let rows: Vec<Vec<u32>> = values.iter().map(|&(a, b, s)| vec![a, b, s]).collect();
            let mut r = records(&rows, 2);
            let scales = [Scale::Linear { span: 7.0 }, Scale::Linear { span: 49.0 }];
            let m = Mondrian { k, l, scales: &scales, sensitive_cardinality: &[3] };
            match m.run(&mut r) {
                Outcome::TooFewRows => prop_assert!(rows.len() < k.max(1)),
                Outcome::NotDiverse => {
                    let distinct: std::collections::BTreeSet<u32> =
                        values.iter().map(|v| v.2).collect();
                    prop_assert!(distinct.len() < l);
                }
                Outcome::Classes(classes) => {
                    // Every input row exactly once, unchanged.
                    let mut ids: Vec<u32> = (0..r.len()).map(|i| r.id(i)).collect();
                    ids.sort_unstable();
                    prop_assert_eq!(ids, (0..rows.len() as u32).collect::<Vec<_>>());
                    for i in 0..r.len() {
                        prop_assert_eq!(&r.row(i)[..3], rows[r.id(i) as usize].as_slice());
                    }
                    let mut next = 0;
                    let mut boxes = Vec::new();
                    for class in &classes {
                        prop_assert_eq!(class.start, next);
                        next = class.end;
                        prop_assert!(class.len() >= k);
                        let distinct: std::collections::BTreeSet<u32> =
                            class.clone().map(|i| r.row(i)[2]).collect();
                        prop_assert!(distinct.len() >= l);
                        let bounds: Vec<(u32, u32)> = (0..2)
                            .map(|dim| {
                                let it = class.clone().map(|i| r.row(i)[dim]);
                                (it.clone().min().unwrap_or(0), it.max().unwrap_or(0))
                            })
                            .collect();
                        boxes.push(bounds);
                    }
                    prop_assert_eq!(next, rows.len());
                    // Strict: the classes' boxes are disjoint.
                    for (i, a) in boxes.iter().enumerate() {
                        for b in &boxes[i + 1..] {
                            let overlap = a.iter().zip(b).all(|(x, y)| x.0 <= y.1 && y.0 <= x.1);
                            prop_assert!(!overlap, "{:?} {:?}", a, b);
                        }
                    }
                }
            }
        }
    }
}
