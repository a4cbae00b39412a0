//! Buckets of lead times: consecutive horizon steps whose widths double from one to the next,
//! the unit the ensemble weights and the interval scales are found on.

use super::ConformalParams;

/// First step after each bucket of horizon steps, for `values[fold][step]` (NaN where nothing was
/// observed): `params.buckets` buckets whose widths double from one to the next (the last covers
/// the second half of the horizon), each merged into the next until it holds at least
/// `min_per_bucket` finite values; leftover steps join the last bucket.
///
/// Both the combination weights and the interval scales are found per bucket, since errors,
/// and which member errs least, change with the lead time. Doubling widths: forecast errors
/// grow fastest at short leads (like `sqrt(h)` for a random walk), so equal buckets would pool
/// leads whose errors differ most in the first bucket and barely differ in the last; with
/// doubling widths each bucket spans the same ratio of `sqrt(h)`.
pub(crate) fn bucket_ends(values: &[Vec<f64>], params: &ConformalParams) -> Vec<usize> {
    let horizon = values.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let bucket_count = params.buckets.min(horizon);
    let mut ends: Vec<usize> = Vec::new();
    let mut from = 0;
    for bucket in 0..bucket_count {
        let halvings = i32::try_from(bucket_count - 1 - bucket).unwrap_or(i32::MAX);
        let to = ((horizon as f64 * 0.5_f64.powi(halvings)).ceil() as usize).clamp(1, horizon);
        let count: usize = finite_in(values, from, to).iter().map(Vec::len).sum();
        if count >= params.min_per_bucket {
            ends.push(to);
            from = to;
        }
    }
    match ends.last_mut() {
        Some(last) => *last = horizon,
        None => ends.push(horizon),
    }
    ends
}

/// Index of the bucket holding `step` (steps beyond the last bucket belong to it).
pub(crate) fn bucket_of(ends: &[usize], step: usize) -> usize {
    ends.iter()
        .position(|end| step < *end)
        .unwrap_or(ends.len().saturating_sub(1))
}

/// The finite values of every fold in steps `from..to`, per fold.
pub(super) fn finite_in(residuals: &[Vec<f64>], from: usize, to: usize) -> Vec<Vec<f64>> {
    residuals
        .iter()
        .map(|fold| {
            fold.iter()
                .take(to)
                .skip(from)
                .copied()
                .filter(|r| r.is_finite())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_in_width_and_merge_until_full() {
        let residuals = vec![vec![0.5; 48]; 10];
        assert_eq!(
            bucket_ends(&residuals, &ConformalParams::default()),
            vec![6, 12, 24, 48]
        );
        let one_fold = vec![vec![0.5; 288]];
        assert_eq!(
            bucket_ends(&one_fold, &ConformalParams::default()),
            vec![72, 144, 288]
        );
    }
}
