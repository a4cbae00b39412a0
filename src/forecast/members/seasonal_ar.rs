//! Seasonal AR: an autoregression on the seasonal differences, SARIMA(p,0,0)(0,1,0)_s.
//!
//! Box, Jenkins, Reinsel & Ljung, "Time Series Analysis: Forecasting and Control" (5th ed.),
//! chapter 9; Hyndman & Athanasopoulos, "Forecasting: Principles and Practice" (3rd ed.),
//! section 9.9. The differences `d_t = x_t - x_{t-s}` follow an AR(p) without constant; the
//! forecast is the value one season earlier plus the predicted difference. It is the seasonal
//! naive forecast corrected by how far the newest values stand from theirs a season ago, with the
//! correction fading over the lead time at the rate the data shows: load that runs 20% above last
//! week at 9:00 is likely to do so at 9:30 too, less so tomorrow. The correction decays to zero, so
//! the forecast never extrapolates a trend.
//!
//! With no detected period the differences are first differences (ARIMA(p,1,0)): the newest level
//! carried forward with its short-term dynamics.
//!
//! Coefficients come from the Yule–Walker equations solved by Levinson–Durbin recursion, which
//! gives a stationary AR for every order at once; the order is the one with the lowest AIC.

use crate::forecast::ForecastError;
use crate::forecast::seasonality::Seasonality;

use super::{FitInput, MemberState, PointForecaster};

/// Fewest seasonal differences the coefficients are estimated from.
const MIN_DIFFERENCES: usize = 32;

/// Parameters of the seasonal AR member.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `max_order` | 3 | highest AR order tried (the order is chosen by AIC) | `1..=24` |
/// | `max_window` | 8064 | most recent points fitted | `>= 64` |
/// | `period` | strongest detected with two cycles in the window, else 1 | season length in steps | `>= 1` |
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalArParams {
    max_order: usize,
    max_window: usize,
    period: Option<usize>,
}

impl Default for SeasonalArParams {
    fn default() -> Self {
        Self {
            max_order: 3,
            max_window: 8064,
            period: None,
        }
    }
}

impl SeasonalArParams {
    /// Highest AR order tried.
    #[must_use]
    pub fn max_order(mut self, order: usize) -> Self {
        self.max_order = order;
        self
    }

    /// Most recent points fitted.
    #[must_use]
    pub fn max_window(mut self, points: usize) -> Self {
        self.max_window = points;
        self
    }

    /// Forces the season length instead of using the strongest detected period.
    #[must_use]
    pub fn period(mut self, steps: usize) -> Self {
        self.period = Some(steps);
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if !(1..=24).contains(&self.max_order) {
            return Err(ForecastError::invalid("max_order", "must lie in 1..=24"));
        }
        if self.max_window < 64 {
            return Err(ForecastError::invalid("max_window", "must be at least 64"));
        }
        if self.period == Some(0) {
            return Err(ForecastError::invalid("period", "must be at least 1"));
        }
        Ok(self)
    }

    pub(crate) fn min_history(&self, _seasonality: &Seasonality) -> usize {
        // Without enough history for the detected period the member falls back to first
        // differences, so only a forced period raises the minimum.
        self.period.unwrap_or(1) + MIN_DIFFERENCES
    }

    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let window_len = input.values.len().min(self.max_window);
        let window = &input.values[input.values.len() - window_len..];
        let period = self
            .period
            .or_else(|| {
                input
                    .seasonality
                    .steps_fitting(window_len, 2.0)
                    .into_iter()
                    .find(|period| window_len >= period + MIN_DIFFERENCES)
            })
            .unwrap_or(1);
        let differences: Vec<f64> = window
            .iter()
            .skip(period)
            .zip(window)
            .map(|(now, before)| now - before)
            .collect();
        let coefficients = yule_walker_aic(&differences, self.max_order);
        let tail = window[window_len.saturating_sub(period + coefficients.len())..].to_vec();
        Ok(Box::new(FittedSeasonalAr {
            tail,
            period,
            coefficients,
        }))
    }
}

#[derive(Debug)]
struct FittedSeasonalAr {
    /// The newest `period + order` values of the window.
    tail: Vec<f64>,
    period: usize,
    coefficients: Vec<f64>,
}

impl PointForecaster for FittedSeasonalAr {
    fn forecast(&self, horizon: usize) -> Vec<f64> {
        forecast(&self.tail, self.period, &self.coefficients, horizon)
    }

    fn state(&self) -> MemberState {
        MemberState::SeasonalAr {
            period: self.period,
            coefficients: self.coefficients.clone(),
        }
    }
}

/// Forecasts `horizon` steps after the end of `values` with AR `coefficients` on the differences
/// at lag `period`. Differences older than `values` reaches are taken as zero.
pub(crate) fn forecast(
    values: &[f64],
    period: usize,
    coefficients: &[f64],
    horizon: usize,
) -> Vec<f64> {
    let order = coefficients.len();
    let period = period.max(1);
    let len = values.len();
    if len == 0 {
        return vec![0.0; horizon];
    }
    // Extended series: the values, then the forecasts, so a horizon past one season reads its
    // own forecasts a season back.
    let keep = (period + order).min(len);
    let mut series: Vec<f64> = values[len - keep..].to_vec();
    let mut differences: Vec<f64> = (0..order)
        .rev()
        .map(|back| {
            let now = series.len().checked_sub(1 + back);
            let before = now.and_then(|now| now.checked_sub(period));
            match (now, before) {
                (Some(now), Some(before)) => series[now] - series[before],
                _ => 0.0,
            }
        })
        .collect();
    let mut out = Vec::with_capacity(horizon);
    for _ in 0..horizon {
        let predicted: f64 = coefficients
            .iter()
            .zip(differences.iter().rev())
            .map(|(phi, d)| phi * d)
            .sum();
        let season_ago = series
            .len()
            .checked_sub(period)
            .map_or(series[series.len() - 1], |index| series[index]);
        let value = season_ago + predicted;
        series.push(value);
        differences.push(predicted);
        out.push(value);
    }
    out
}

/// AR coefficients for `series` (taken as zero-mean) by Yule–Walker, the order in `0..=max_order`
/// with the lowest AIC. Levinson–Durbin keeps every partial autocorrelation inside (-1, 1), so
/// the fitted AR is stationary and its forecasts decay.
pub(crate) fn yule_walker_aic(series: &[f64], max_order: usize) -> Vec<f64> {
    let n = series.len();
    let max_order = max_order.min(n / 4);
    let autocovariance: Vec<f64> = (0..=max_order)
        .map(|lag| {
            series
                .iter()
                .zip(&series[lag..])
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / n as f64
        })
        .collect();
    let variance = autocovariance.first().copied().unwrap_or(0.0);
    if !(variance.is_finite() && variance > 0.0) {
        return Vec::new();
    }
    let aic = |innovation: f64, order: usize| n as f64 * innovation.ln() + 2.0 * order as f64;
    let mut best = (aic(variance, 0), Vec::new());
    let mut coefficients: Vec<f64> = Vec::new();
    let mut innovation = variance;
    for order in 1..=max_order {
        let accounted: f64 = coefficients
            .iter()
            .enumerate()
            .map(|(j, phi)| phi * autocovariance[order - 1 - j])
            .sum();
        let reflection = (autocovariance[order] - accounted) / innovation;
        if !(reflection.is_finite() && reflection.abs() < 1.0) {
            break;
        }
        let previous = coefficients.clone();
        coefficients.push(reflection);
        for j in 0..order - 1 {
            coefficients[j] = previous[j] - reflection * previous[order - 2 - j];
        }
        innovation *= 1.0 - reflection * reflection;
        if innovation.is_nan() || innovation <= 0.0 {
            break;
        }
        let score = aic(innovation, order);
        if score < best.0 {
            best = (score, coefficients.clone());
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::super::Anchor;
    use super::super::test_support::{input, seasonality, sinusoid};
    use super::*;
    use crate::domain::{Step, Timestamp};

    /// Seeded, roughly standard normal noise (a sum of twelve uniforms from an LCG).
    fn noise(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            (0..12)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (state >> 11) as f64 / (1u64 << 53) as f64
                })
                .sum::<f64>()
                - 6.0
        }
    }

    /// A simulated AR(2) is recovered, and its order is chosen over higher ones.
    #[test]
    fn yule_walker_recovers_a_known_ar2() {
        let (phi1, phi2) = (0.6, -0.3);
        let mut noise = noise(12_345);
        let mut series = vec![0.0, 0.0];
        for t in 2..20_000 {
            let next = phi1 * series[t - 1] + phi2 * series[t - 2] + noise();
            series.push(next);
        }
        let fitted = yule_walker_aic(&series, 6);
        assert!(
            (2..=3).contains(&fitted.len()),
            "order {}: {fitted:?}",
            fitted.len()
        );
        assert!((fitted[0] - phi1).abs() < 0.05, "{fitted:?}");
        assert!((fitted[1] - phi2).abs() < 0.05, "{fitted:?}");
    }

    /// A pure cycle has zero seasonal differences: the forecast is the last season repeated.
    #[test]
    fn a_pure_cycle_is_repeated() {
        let values = sinusoid(24 * 10, 24.0, 3.0, 5.0);
        let season = seasonality(&[24]);
        let fitted = SeasonalArParams::default()
            .fit_window(&input(&values, &season, 48))
            .unwrap();
        let expected = sinusoid(24 * 12, 24.0, 3.0, 5.0);
        for (step, value) in fitted.forecast(48).iter().enumerate() {
            assert!(
                (value - expected[24 * 10 + step]).abs() < 1e-9,
                "step {step}"
            );
        }
    }

    /// A cycle that has run a unit above last season for a while: the forecast starts near the
    /// raised level and fades back towards last season's values over the lead time.
    #[test]
    fn a_recent_offset_carries_forward_and_fades() {
        let mut values = sinusoid(24 * 20, 24.0, 3.0, 5.0);
        // Persistent deviations: an AR(1) on the seasonal differences, then a recent offset.
        let mut noise = noise(7);
        let mut deviation = 0.0;
        for value in &mut values {
            deviation = 0.9 * deviation + 0.1 * noise();
            *value += deviation;
        }
        let last = values.len();
        for value in &mut values[last - 6..] {
            *value += 1.0;
        }
        let season = seasonality(&[24]);
        let fitted = SeasonalArParams::default()
            .fit_window(&input(&values, &season, 48))
            .unwrap();
        let forecast = fitted.forecast(48);
        let naive: Vec<f64> = (0..48).map(|k| values[last - 24 + k % 24]).collect();
        let first = forecast[0] - naive[0];
        let day_later = forecast[47] - values[last - 24 + 23];
        assert!(first > 0.5, "first step only {first} above last season");
        assert!(
            day_later.abs() < first / 2.0,
            "after a day still {day_later} off (first {first})"
        );
    }

    /// Stored, the member forecasts from newer data with its coefficients.
    #[test]
    fn the_state_forecasts_from_the_newest_values() {
        let state = MemberState::SeasonalAr {
            period: 24,
            coefficients: vec![0.5],
        };
        // The newest day runs 2 above the day before it.
        let mut newer = sinusoid(24 * 10, 24.0, 3.0, 5.0);
        newer.extend(
            sinusoid(24 * 11, 24.0, 3.0, 5.0)[24 * 10..]
                .iter()
                .map(|v| v + 2.0),
        );
        let anchor = Anchor {
            values: &newer,
            start: Timestamp::from_millis(0),
            step: Step::try_from(3_600_000).unwrap(),
            elapsed: 24,
        };
        let out = state.forecast_from(&anchor, 2);
        // The next difference is 0.5 * 2, the one after 0.5 * 1.
        let len = newer.len();
        assert!((out[0] - (newer[len - 24] + 1.0)).abs() < 1e-9, "{out:?}");
        assert!((out[1] - (newer[len - 23] + 0.5)).abs() < 1e-9, "{out:?}");
        assert_eq!(state.recent_needed(), 25);
    }
}
