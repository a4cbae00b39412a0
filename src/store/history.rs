//! One series' history: a sorted, de-duplicated Polars frame plus a small buffer of recent writes.

use polars::prelude::{DataFrame, Float64Chunked, Int64Chunked, IntoColumn, PlSmallStr};

use crate::domain::{Aggregation, Sample, Step, TimeRange, Timestamp};

use super::Gap;

/// Column of the frame holding epoch milliseconds.
pub(super) const TIMESTAMP_COLUMN: &str = "timestamp_ms";
/// Column of the frame holding the values.
pub(super) const VALUE_COLUMN: &str = "value";

/// Below this many buffered samples a write never triggers a merge on its own.
const MIN_PENDING_BEFORE_MERGE: usize = 256;

/// The stored samples of one series.
///
/// Writes land in `pending` in the order they were acknowledged; reads first merge `pending` into
/// `frame`. Merging costs a copy of the frame, so it waits until the buffer is a sizeable fraction of
/// the frame: each sample is then copied a bounded number of times, whatever the batch sizes.
#[derive(Debug)]
pub(super) struct SeriesHistory {
    /// Sorted by timestamp, one row per timestamp, both columns in one contiguous chunk.
    frame: DataFrame,
    /// Samples acknowledged but not yet merged, in write order (later entries win).
    pending: Vec<Sample>,
    /// True when the series changed since it was last written to a checkpoint.
    dirty: bool,
}

/// Builds the two-column frame; both vectors move into Arrow buffers without a copy.
fn build_frame(timestamps: Vec<i64>, values: Vec<f64>) -> DataFrame {
    let height = timestamps.len();
    let timestamps =
        Int64Chunked::from_vec(PlSmallStr::from_static(TIMESTAMP_COLUMN), timestamps).into_column();
    let values =
        Float64Chunked::from_vec(PlSmallStr::from_static(VALUE_COLUMN), values).into_column();
    DataFrame::new(height, vec![timestamps, values])
        .expect("invariant: two columns of equal height with distinct names")
}

impl SeriesHistory {
    /// A series with no samples.
    pub(super) fn new() -> Self {
        Self {
            frame: build_frame(Vec::new(), Vec::new()),
            pending: Vec::new(),
            dirty: false,
        }
    }

    /// Restores a series from a checkpoint frame, re-establishing the frame's invariants whatever the file held.
    pub(super) fn from_frame(frame: &DataFrame) -> Result<Self, String> {
        let timestamps = frame
            .column(TIMESTAMP_COLUMN)
            .and_then(|column| column.i64().cloned())
            .map_err(|error| format!("column {TIMESTAMP_COLUMN}: {error}"))?;
        let values = frame
            .column(VALUE_COLUMN)
            .and_then(|column| column.f64().cloned())
            .map_err(|error| format!("column {VALUE_COLUMN}: {error}"))?;
        if timestamps.null_count() > 0 || values.null_count() > 0 {
            return Err("checkpoint holds null cells".to_owned());
        }
        let mut history = Self::new();
        history.pending = timestamps
            .into_no_null_iter()
            .zip(values.into_no_null_iter())
            .map(|(timestamp, value)| Sample::new(timestamp, value))
            .collect();
        history.merge_pending();
        history.dirty = false;
        Ok(history)
    }

    /// Timestamps and values of the merged frame.
    fn columns(&self) -> (&[i64], &[f64]) {
        let timestamps = self
            .frame
            .column(TIMESTAMP_COLUMN)
            .and_then(|column| column.i64())
            .and_then(|chunked| chunked.cont_slice())
            .expect("invariant: the timestamp column is one null-free i64 chunk");
        let values = self
            .frame
            .column(VALUE_COLUMN)
            .and_then(|column| column.f64())
            .and_then(|chunked| chunked.cont_slice())
            .expect("invariant: the value column is one null-free f64 chunk");
        (timestamps, values)
    }

    /// Buffers acknowledged samples; merges when the buffer has grown large relative to the frame.
    pub(super) fn push(&mut self, samples: &[Sample]) {
        self.pending.extend_from_slice(samples);
        self.dirty = true;
        if self.pending.len() >= MIN_PENDING_BEFORE_MERGE.max(self.frame.height() / 8) {
            self.merge_pending();
        }
    }

    /// Adds every sample of `newer` as if appended after this history's: on a timestamp both hold,
    /// `newer`'s value is kept.
    pub(super) fn overlay(&mut self, newer: &mut SeriesHistory) {
        let (timestamps, values) = newer.merged_columns();
        let samples: Vec<Sample> = timestamps
            .iter()
            .zip(values)
            .map(|(timestamp, value)| Sample::new(*timestamp, *value))
            .collect();
        self.push(&samples);
    }

    /// Folds the buffer into the frame: sort, keep the last write per timestamp, merge with the frame.
    pub(super) fn merge_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // A stable sort keeps write order among equal timestamps, so the last of a run is the latest write.
        if !pending.is_sorted_by_key(|sample| sample.timestamp) {
            pending.sort_by_key(|sample| sample.timestamp);
        }
        let mut incoming: Vec<Sample> = Vec::with_capacity(pending.len());
        for sample in pending {
            match incoming.last_mut() {
                Some(last) if last.timestamp == sample.timestamp => *last = sample,
                _ => incoming.push(sample),
            }
        }
        let (old_timestamps, old_values) = self.columns();
        let capacity = old_timestamps.len() + incoming.len();
        let mut timestamps = Vec::with_capacity(capacity);
        let mut values = Vec::with_capacity(capacity);
        let mut old = 0;
        for sample in &incoming {
            let new_time = sample.timestamp.as_millis();
            while old < old_timestamps.len() && old_timestamps[old] < new_time {
                timestamps.push(old_timestamps[old]);
                values.push(old_values[old]);
                old += 1;
            }
            if old < old_timestamps.len() && old_timestamps[old] == new_time {
                old += 1;
            }
            timestamps.push(new_time);
            values.push(sample.value);
        }
        timestamps.extend_from_slice(&old_timestamps[old..]);
        values.extend_from_slice(&old_values[old..]);
        timestamps.shrink_to_fit();
        values.shrink_to_fit();
        self.frame = build_frame(timestamps, values);
    }

    /// The merged frame, for checkpoints.
    pub(super) fn frame(&mut self) -> &DataFrame {
        self.merge_pending();
        &self.frame
    }

    /// True when the series changed since the last checkpoint.
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the series as changed since its last checkpoint (after a failed checkpoint).
    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Marks the series as written to a checkpoint.
    pub(super) fn mark_clean(&mut self) {
        self.dirty = false;
    }

    /// Merged timestamps and values, for summaries.
    pub(super) fn merged_columns(&mut self) -> (&[i64], &[f64]) {
        self.merge_pending();
        self.columns()
    }

    /// Resamples `[from, to)` onto `buckets` buckets of `step`; empty buckets are NaN.
    pub(super) fn window(
        &mut self,
        range: TimeRange,
        step: Step,
        buckets: usize,
        agg: Aggregation,
    ) -> Vec<f64> {
        self.merge_pending();
        let (timestamps, values) = self.columns();
        let from = range.from().as_millis();
        let to = range.to().as_millis();
        let lower = timestamps.partition_point(|time| *time < from);
        let upper = lower + timestamps[lower..].partition_point(|time| *time < to);
        let mut output = vec![f64::NAN; buckets];
        let mut counts = if agg == Aggregation::Mean {
            vec![0u32; buckets]
        } else {
            Vec::new()
        };
        let step = step.as_millis();
        for (time, value) in timestamps[lower..upper].iter().zip(&values[lower..upper]) {
            // In range, so the offset is non-negative and the bucket is below `buckets`.
            let bucket = ((time - from) / step) as usize;
            let slot = &mut output[bucket];
            match agg {
                Aggregation::Mean => {
                    *slot = if counts[bucket] == 0 {
                        *value
                    } else {
                        *slot + value
                    };
                    counts[bucket] += 1;
                }
                Aggregation::Sum => *slot = if slot.is_nan() { *value } else { *slot + value },
                Aggregation::Max => {
                    *slot = if slot.is_nan() {
                        *value
                    } else {
                        slot.max(*value)
                    }
                }
                // Timestamps are sorted, so the last sample seen in a bucket is its latest.
                Aggregation::Last => *slot = *value,
            }
        }
        if agg == Aggregation::Mean {
            for (slot, count) in output.iter_mut().zip(&counts) {
                if *count > 1 {
                    *slot /= f64::from(*count);
                }
            }
        }
        output
    }

    /// True when the series holds no samples (retention dropped them all).
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.frame.height() == 0
    }

    /// Drops samples before `cutoff`; returns how many went.
    pub(super) fn drop_before(&mut self, cutoff: Timestamp) -> usize {
        self.merge_pending();
        let (timestamps, values) = self.columns();
        let keep_from = timestamps.partition_point(|time| *time < cutoff.as_millis());
        if keep_from == 0 {
            return 0;
        }
        let frame = build_frame(
            timestamps[keep_from..].to_vec(),
            values[keep_from..].to_vec(),
        );
        self.frame = frame;
        self.dirty = true;
        keep_from
    }
}

/// Median of the positive spacings, and the gaps longer than twice it.
pub(super) fn spacing(timestamps: &[i64]) -> (Option<Step>, Vec<Gap>) {
    let mut diffs: Vec<i64> = timestamps
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .collect();
    if diffs.is_empty() {
        return (None, Vec::new());
    }
    let middle = diffs.len() / 2;
    let (_, median, _) = diffs.select_nth_unstable(middle);
    let median = *median;
    let gaps = timestamps
        .windows(2)
        .filter(|pair| pair[1] - pair[0] > 2 * median)
        .map(|pair| Gap {
            after: Timestamp::from_millis(pair[0]),
            before: Timestamp::from_millis(pair[1]),
        })
        .collect();
    (Step::try_from(median).ok(), gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(from: i64, to: i64) -> TimeRange {
        TimeRange::new(Timestamp::from_millis(from), Timestamp::from_millis(to)).unwrap()
    }

    fn filled(samples: &[(i64, f64)]) -> SeriesHistory {
        let mut history = SeriesHistory::new();
        let samples: Vec<Sample> = samples.iter().map(|(t, v)| Sample::new(*t, *v)).collect();
        history.push(&samples);
        history
    }

    #[test]
    fn later_writes_win_and_order_does_not_matter() {
        let mut history = filled(&[(30, 3.0), (10, 1.0), (20, 2.0), (10, 9.0)]);
        history.push(&[Sample::new(20, 7.0)]);
        assert_eq!(
            history.merged_columns(),
            (&[10, 20, 30][..], &[9.0, 7.0, 3.0][..])
        );
    }

    #[test]
    fn aggregates_buckets_and_leaves_empty_ones_nan() {
        let mut history = filled(&[(0, 1.0), (5, 3.0), (10, 4.0), (35, 8.0)]);
        let step = Step::try_from(10).unwrap();
        let window = |history: &mut SeriesHistory, agg| history.window(range(0, 40), step, 4, agg);
        let mean = window(&mut history, Aggregation::Mean);
        assert_eq!(mean[..2], [2.0, 4.0]);
        assert!(mean[2].is_nan());
        assert_eq!(mean[3], 8.0);
        assert_eq!(window(&mut history, Aggregation::Max)[0], 3.0);
        assert_eq!(window(&mut history, Aggregation::Sum)[0], 4.0);
        assert_eq!(window(&mut history, Aggregation::Last)[0], 3.0);
    }

    #[test]
    fn window_excludes_samples_outside_range() {
        let mut history = filled(&[(-5, 100.0), (0, 1.0), (19, 2.0), (20, 100.0)]);
        let window = history.window(
            range(0, 20),
            Step::try_from(10).unwrap(),
            2,
            Aggregation::Sum,
        );
        assert_eq!(window, vec![1.0, 2.0]);
    }

    #[test]
    fn retention_drops_only_older_samples() {
        let mut history = filled(&[(1, 1.0), (2, 2.0), (3, 3.0)]);
        assert_eq!(history.drop_before(Timestamp::from_millis(2)), 2 - 1);
        assert_eq!(history.merged_columns().0, &[2, 3]);
        assert_eq!(history.drop_before(Timestamp::from_millis(0)), 0);
    }

    #[test]
    fn restores_from_an_unsorted_frame() {
        let frame = build_frame(vec![3, 1, 2, 1], vec![3.0, 1.0, 2.0, 5.0]);
        let mut history = SeriesHistory::from_frame(&frame).unwrap();
        assert_eq!(
            history.merged_columns(),
            (&[1, 2, 3][..], &[5.0, 2.0, 3.0][..])
        );
        assert!(!history.is_dirty());
    }
}
