//! Small numeric helpers shared by the models: robust location and scale, quantiles, line fits.
//!
//! Everything here ignores NaN and never panics on empty input, so callers can feed raw windows.

/// Median of the finite values, `None` when there are none.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    median_in_place(&mut finite)
}

/// Median of a buffer the caller no longer needs in order (avoids a copy in hot loops).
pub(crate) fn median_in_place(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let middle = values.len() / 2;
    let (_, upper_median, _) = values.select_nth_unstable_by(middle, f64::total_cmp);
    let upper_median = *upper_median;
    if values.len() % 2 == 1 {
        return Some(upper_median);
    }
    let lower_median = values[..middle]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    Some(lower_median / 2.0 + upper_median / 2.0)
}

/// Median absolute deviation around `center`, scaled by 1.4826 to estimate a normal sigma.
pub(crate) fn mad_sigma(values: &[f64], center: f64) -> Option<f64> {
    let deviations: Vec<f64> = values
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| (v - center).abs())
        .collect();
    median(&deviations).map(|mad| 1.4826 * mad)
}

/// Arithmetic mean of the finite values; 0 for none. Sums scaled values so huge inputs do not
/// overflow.
pub(crate) fn mean(values: &[f64]) -> f64 {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let count = finite.clone().count();
    if count == 0 {
        return 0.0;
    }
    let largest = finite.clone().fold(0.0_f64, |acc, v| acc.max(v.abs()));
    if largest == 0.0 {
        return 0.0;
    }
    largest * (finite.map(|v| v / largest).sum::<f64>() / count as f64)
}

/// Sample standard deviation of the finite values; 0 for fewer than two.
pub(crate) fn std_dev(values: &[f64]) -> f64 {
    let center = mean(values);
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < 2 {
        return 0.0;
    }
    let largest = finite
        .iter()
        .fold(0.0_f64, |acc, v| acc.max((v - center).abs()));
    if largest == 0.0 || !largest.is_finite() {
        return 0.0;
    }
    let sum_squares: f64 = finite
        .iter()
        .map(|v| ((v - center) / largest).powi(2))
        .sum();
    largest * (sum_squares / (finite.len() - 1) as f64).sqrt()
}

/// Weighted mean of `(value, weight)` pairs and its standard error: the weighted standard deviation
/// (with the small-sample correction) over the square root of the effective number of pairs,
/// `(sum w)^2 / sum w^2`. The error is infinite when only one pair carries weight, so that nothing
/// is judged on one observation.
pub(crate) fn weighted_mean_and_error(pairs: &[(f64, f64)]) -> (f64, f64) {
    let total: f64 = pairs.iter().map(|(_, weight)| weight).sum();
    let squares: f64 = pairs.iter().map(|(_, weight)| weight * weight).sum();
    if total <= 0.0 {
        return (0.0, f64::INFINITY);
    }
    let mean = pairs
        .iter()
        .map(|(value, weight)| value * weight)
        .sum::<f64>()
        / total;
    let effective = total * total / squares;
    if effective <= 1.0 + 1e-9 {
        return (mean, f64::INFINITY);
    }
    let variance = pairs
        .iter()
        .map(|(value, weight)| weight * (value - mean).powi(2))
        .sum::<f64>()
        / total
        * effective
        / (effective - 1.0);
    (mean, (variance / effective).sqrt())
}

/// Least-squares line through `(index, value)` for the finite values: `(intercept, slope)`.
pub(crate) fn fit_line(values: &[f64]) -> (f64, f64) {
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(index, v)| (index as f64, *v))
        .collect();
    if points.is_empty() {
        return (0.0, 0.0);
    }
    let count = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / count;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / count;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (mean_y - slope * mean_x, slope)
}

/// `values` minus their least-squares line (see [`fit_line`]); NaN stays NaN.
pub(crate) fn detrend(values: &[f64]) -> Vec<f64> {
    let (intercept, slope) = fit_line(values);
    values
        .iter()
        .enumerate()
        .map(|(index, value)| value - intercept - slope * index as f64)
        .collect()
}

/// Sum of `phi^1 + ... + phi^steps`: how far a damped trend travels in `steps` steps.
///
/// Gardner & McKenzie (1985), "Forecasting trends in time series", Management Science 31(10).
pub(crate) fn damped_steps(phi: f64, steps: usize) -> f64 {
    if phi >= 1.0 {
        return steps as f64;
    }
    phi * (1.0 - phi.powi(steps.min(i32::MAX as usize) as i32)) / (1.0 - phi)
}

/// Per-step damping factor whose effect halves every `half_life` steps.
pub(crate) fn phi_from_half_life(half_life: f64) -> f64 {
    if half_life <= 0.0 || !half_life.is_finite() {
        return 0.0;
    }
    0.5_f64.powf(1.0 / half_life)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mean_and_its_standard_error() {
        // Equal weights: the sample mean and s / sqrt(n).
        let (mean, error) =
            weighted_mean_and_error(&[(1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (6.0, 1.0)]);
        assert!((mean - 3.0).abs() < 1e-12);
        let s = ((4.0_f64 + 1.0 + 0.0 + 9.0) / 3.0).sqrt();
        assert!((error - s / 2.0).abs() < 1e-12, "{error}");
        // Weights scale out; identical values have no spread.
        let (_, doubled) =
            weighted_mean_and_error(&[(1.0, 2.0), (2.0, 2.0), (3.0, 2.0), (6.0, 2.0)]);
        assert!((doubled - error).abs() < 1e-12);
        assert_eq!(
            weighted_mean_and_error(&[(5.0, 1.0), (5.0, 0.5)]),
            (5.0, 0.0)
        );
        // One observation, or none, says nothing about the spread.
        assert_eq!(
            weighted_mean_and_error(&[(5.0, 1.0), (7.0, 0.0)]).1,
            f64::INFINITY
        );
        assert_eq!(weighted_mean_and_error(&[]).1, f64::INFINITY);
    }

    #[test]
    fn robust_statistics_ignore_nan() {
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(mean(&[1e308, 1e308]), 1e308);
        assert!((std_dev(&[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        let (intercept, slope) = fit_line(&[1.0, 3.0, 5.0]);
        assert!((intercept - 1.0).abs() < 1e-12 && (slope - 2.0).abs() < 1e-12);
        assert!((damped_steps(0.5, 2) - 0.75).abs() < 1e-12);
        assert!((phi_from_half_life(1.0) - 0.5).abs() < 1e-12);
    }
}
