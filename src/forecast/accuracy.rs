//! Accuracy metrics for point forecasts and intervals.
//!
//! Every metric skips pairs where the actual value is NaN (an empty bucket), so forecasts are
//! scored only where something was observed. `None` means nothing could be scored.
//! Definitions follow Hyndman & Koehler, "Another look at measures of forecast accuracy",
//! International Journal of Forecasting 22(4), 2006 (MASE), and the M4 competition (sMAPE).

/// Mean absolute error.
pub fn mae(actual: &[f64], forecast: &[f64]) -> Option<f64> {
    mean_over(actual, forecast, |a, f| (a - f).abs())
}

/// Root mean squared error.
pub fn rmse(actual: &[f64], forecast: &[f64]) -> Option<f64> {
    mean_over(actual, forecast, |a, f| (a - f).powi(2)).map(f64::sqrt)
}

/// Symmetric mean absolute percentage error in percent (0 to 200); pairs of zeros count as 0.
pub fn smape(actual: &[f64], forecast: &[f64]) -> Option<f64> {
    mean_over(actual, forecast, |a, f| {
        let denominator = a.abs() + f.abs();
        if denominator == 0.0 {
            0.0
        } else {
            200.0 * (a - f).abs() / denominator
        }
    })
}

/// In-sample mean absolute error of the seasonal naive forecast with `period`: the MASE scale.
pub fn seasonal_naive_scale(history: &[f64], period: usize) -> Option<f64> {
    let period = period.max(1);
    if history.len() <= period {
        return None;
    }
    mean_over(
        &history[period..],
        &history[..history.len() - period],
        |a, f| (a - f).abs(),
    )
}

/// Mean absolute scaled error: MAE divided by the in-sample seasonal naive MAE of `history`.
///
/// `None` when the scale is zero or undefined (a constant history has no naive error).
pub fn mase(actual: &[f64], forecast: &[f64], history: &[f64], period: usize) -> Option<f64> {
    let scale = seasonal_naive_scale(history, period)?;
    if scale <= 0.0 {
        return None;
    }
    mae(actual, forecast).map(|error| error / scale)
}

/// Fraction of observed actuals inside `[lower, upper]`.
pub fn coverage(actual: &[f64], lower: &[f64], upper: &[f64]) -> Option<f64> {
    let scored: Vec<bool> = actual
        .iter()
        .zip(lower.iter().zip(upper))
        .filter(|(a, _)| !a.is_nan())
        .map(|(a, (l, u))| *l <= *a && *a <= *u)
        .collect();
    if scored.is_empty() {
        return None;
    }
    Some(scored.iter().filter(|inside| **inside).count() as f64 / scored.len() as f64)
}

/// Mean width of the interval over the observed steps.
pub fn mean_width(actual: &[f64], lower: &[f64], upper: &[f64]) -> Option<f64> {
    let widths: Vec<f64> = actual
        .iter()
        .zip(lower.iter().zip(upper))
        .filter(|(a, _)| !a.is_nan())
        .map(|(_, (l, u))| u - l)
        .collect();
    (!widths.is_empty()).then(|| widths.iter().sum::<f64>() / widths.len() as f64)
}

fn mean_over(actual: &[f64], forecast: &[f64], error: impl Fn(f64, f64) -> f64) -> Option<f64> {
    let errors: Vec<f64> = actual
        .iter()
        .zip(forecast)
        .filter(|(a, f)| !a.is_nan() && !f.is_nan())
        .map(|(a, f)| error(*a, *f))
        .collect();
    (!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_skip_missing_actuals() {
        let actual = [1.0, f64::NAN, 3.0];
        let forecast = [2.0, 100.0, 3.0];
        assert_eq!(mae(&actual, &forecast), Some(0.5));
        assert_eq!(rmse(&actual, &forecast), Some((0.5_f64).sqrt()));
        assert_eq!(smape(&[0.0], &[0.0]), Some(0.0));
        assert!((smape(&[1.0], &[3.0]).unwrap() - 100.0).abs() < 1e-12);
        assert_eq!(
            coverage(&actual, &[0.0, 0.0, 3.5], &[2.0, 0.0, 4.0]),
            Some(0.5)
        );
        assert_eq!(
            mean_width(&actual, &[0.0, 0.0, 3.5], &[2.0, 0.0, 4.0]),
            Some(1.25)
        );
        assert_eq!(mae(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn mase_scales_by_the_in_sample_seasonal_naive_error() {
        let history = [0.0, 1.0, 0.0, 1.0, 2.0];
        // Lag-2 naive errors: |0-0|, |1-1|, |2-0| -> mean 2/3.
        assert!((seasonal_naive_scale(&history, 2).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((mase(&[1.0], &[0.0], &history, 2).unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(mase(&[1.0], &[0.0], &[5.0; 10], 1), None);
    }
}
