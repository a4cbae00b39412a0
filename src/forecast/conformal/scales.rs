//! The scale of each horizon step: the mean absolute backtest residual, pooled over runs of
//! steps and made non-decreasing in the lead time.

/// Scale of each of `horizon` steps from `residuals[fold][step]`: the mean absolute residual over
/// runs of consecutive steps holding at least `min_count` finite residuals (leftover steps join
/// the last run), made non-decreasing in the lead time by pool-adjacent-violators weighted by the
/// counts (isotonic regression; Barlow et al., "Statistical Inference under Order Restrictions",
/// 1972). Errors grow with the lead, so a run that errs less than an earlier one is sampling
/// noise and is pooled with it. Per step rather than per bucket: the first bucket of a day-ahead
/// backtest spans leads of half an hour to three hours, whose errors differ severalfold once a
/// member tracks the current deviation, and a plan acts at the shortest of them. Empty when there
/// is no residual.
pub(super) fn step_scales(residuals: &[Vec<f64>], horizon: usize, min_count: usize) -> Vec<f64> {
    // Runs of steps: (first step, sum of |residual|, count).
    let mut runs: Vec<(usize, f64, usize)> = Vec::new();
    let mut open: Option<(usize, f64, usize)> = None;
    for step in 0..horizon {
        let (first, mut sum, mut count) = open.take().unwrap_or((step, 0.0, 0));
        for fold in residuals {
            if let Some(r) = fold.get(step).filter(|r| r.is_finite()) {
                sum += r.abs();
                count += 1;
            }
        }
        if count >= min_count {
            runs.push((first, sum, count));
        } else {
            open = Some((first, sum, count));
        }
    }
    if let Some((first, sum, count)) = open {
        match runs.last_mut() {
            Some(last) => {
                last.1 += sum;
                last.2 += count;
            }
            None => runs.push((first, sum, count)),
        }
    }
    // Pool adjacent violators: a run whose mean is below the one before merges into it.
    let mut pooled: Vec<(usize, f64, usize)> = Vec::with_capacity(runs.len());
    for run in runs {
        pooled.push(run);
        while pooled.len() >= 2 {
            let (_, last_sum, last_count) = pooled[pooled.len() - 1];
            let (_, before_sum, before_count) = pooled[pooled.len() - 2];
            if before_sum * last_count as f64 <= last_sum * before_count as f64 {
                break;
            }
            pooled.pop();
            let before = pooled
                .last_mut()
                .expect("invariant: two runs were on the stack");
            before.1 += last_sum;
            before.2 += last_count;
        }
    }
    let total_count: usize = pooled.iter().map(|run| run.2).sum();
    if total_count == 0 {
        return Vec::new();
    }
    let overall = pooled.iter().map(|run| run.1).sum::<f64>() / total_count as f64;
    let mut scales = vec![0.0; horizon];
    for (index, (first, sum, count)) in pooled.iter().enumerate() {
        let end = pooled.get(index + 1).map_or(horizon, |next| next.0);
        let mean = if *count > 0 {
            sum / *count as f64
        } else {
            overall
        };
        let scale = if mean > 0.0 && mean.is_finite() {
            mean
        } else if overall > 0.0 && overall.is_finite() {
            overall
        } else {
            1.0
        };
        scales[*first..end].fill(scale);
    }
    scales
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_scales_grow_with_the_lead_and_pool_what_does_not() {
        // Ten folds; errors of 1, 2, 3 at steps 0, 1, 2, then a dip to 1 at step 3 and 5 after.
        let residuals: Vec<Vec<f64>> = (0..10)
            .map(|fold| {
                let sign = if fold % 2 == 0 { 1.0 } else { -1.0 };
                [1.0, 2.0, 3.0, 1.0, 5.0].map(|r| r * sign).to_vec()
            })
            .collect();
        // Runs of one step each (ten residuals): the dip is pooled with step 2.
        assert_eq!(
            step_scales(&residuals, 5, 10),
            vec![1.0, 2.0, 2.0, 2.0, 5.0]
        );
        // Runs of two steps (at least twenty residuals), the odd step joining the last run.
        assert_eq!(
            step_scales(&residuals, 5, 20),
            vec![1.5, 1.5, 3.0, 3.0, 3.0]
        );
        assert!(step_scales(&[vec![f64::NAN; 3]], 3, 1).is_empty());
    }
}
