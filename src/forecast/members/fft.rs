//! FFT extrapolation: keep the significant harmonics of the detected periods and continue them.
//!
//! The approach of spectral extrapolation (e.g. Chatfield, "The Analysis of Time Series", ch. 7;
//! used for load forecasting by Netflix Scryer, 2013): remove a linear trend, take the discrete
//! Fourier transform of a window holding a whole number of cycles of the longest period (so the
//! harmonics fall on exact bins and do not leak), keep the bins at harmonics of detected periods
//! whose power stands clearly above the noise floor, and sum those sinusoids forward. The trend is
//! continued damped so that a short ramp is not extrapolated forever.

use rustfft::FftPlanner;
use rustfft::num_complex::Complex;

use crate::forecast::ForecastError;
use crate::forecast::seasonality::Seasonality;
use crate::forecast::stats;

use super::learned_state::Curve;
use super::{FitInput, MemberState, PointForecaster, check_trend_half_life};

/// Parameters of the FFT member.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `harmonics` | 16 | most harmonics kept per period | `>= 1` |
/// | `significance` | 4.0 | least power of a kept bin, as a multiple of the median bin power | `>= 1` |
/// | `max_window` | 8064 | most recent points analysed | `>= 16` |
/// | `trend_half_life` | horizon / 4 | steps after which the extrapolated slope has halved | `> 0` |
#[derive(Debug, Clone, PartialEq)]
pub struct FftParams {
    harmonics: usize,
    significance: f64,
    max_window: usize,
    trend_half_life: Option<f64>,
}

impl Default for FftParams {
    fn default() -> Self {
        Self {
            harmonics: 16,
            significance: 4.0,
            max_window: 8064,
            trend_half_life: None,
        }
    }
}

impl FftParams {
    /// Most harmonics kept per period.
    #[must_use]
    pub fn harmonics(mut self, count: usize) -> Self {
        self.harmonics = count;
        self
    }

    /// Least power of a kept bin relative to the median bin power.
    #[must_use]
    pub fn significance(mut self, ratio: f64) -> Self {
        self.significance = ratio;
        self
    }

    /// Most recent points analysed.
    #[must_use]
    pub fn max_window(mut self, points: usize) -> Self {
        self.max_window = points;
        self
    }

    /// Steps after which the extrapolated slope has halved.
    #[must_use]
    pub fn trend_half_life(mut self, steps: f64) -> Self {
        self.trend_half_life = Some(steps);
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.harmonics == 0 {
            return Err(ForecastError::invalid("harmonics", "must be at least 1"));
        }
        if !(self.significance >= 1.0 && self.significance.is_finite()) {
            return Err(ForecastError::invalid("significance", "must be at least 1"));
        }
        if self.max_window < 16 {
            return Err(ForecastError::invalid("max_window", "must be at least 16"));
        }
        check_trend_half_life(self.trend_half_life)?;
        Ok(self)
    }

    pub(crate) fn min_history(&self, _seasonality: &Seasonality) -> usize {
        8
    }

    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let periods = input.periods(2.0);
        let half_life = self
            .trend_half_life
            .unwrap_or((input.horizon as f64 / 4.0).max(1.0));
        Ok(Box::new(fit_harmonics(
            input.values,
            &periods,
            self.harmonics,
            self.significance,
            self.max_window,
            half_life,
            input.horizon,
        )))
    }
}

/// The FFT fit, shared with the Scryer member.
pub(crate) fn fit_harmonics(
    values: &[f64],
    periods: &[usize],
    harmonics: usize,
    significance: f64,
    max_window: usize,
    trend_half_life: f64,
    horizon: usize,
) -> FittedFft {
    let longest = periods.iter().copied().max().unwrap_or(0);
    let available = values.len().min(max_window);
    // A whole number of cycles of the longest period keeps its harmonics on exact bins.
    let window_len = if longest > 0 && available >= longest {
        available / longest * longest
    } else {
        available
    };
    let window = &values[values.len() - window_len..];
    let (intercept, slope) = cycle_trend(window, longest);
    let mut buffer: Vec<Complex<f64>> = window
        .iter()
        .enumerate()
        .map(|(index, value)| Complex::new(value - intercept - slope * index as f64, 0.0))
        .collect();
    FftPlanner::new()
        .plan_fft_forward(window_len)
        .process(&mut buffer);
    let half = window_len / 2;
    let mut powers: Vec<f64> = buffer[1..half.max(1)]
        .iter()
        .map(|c| c.norm_sqr())
        .collect();
    let noise_floor = stats::median_in_place(&mut powers).unwrap_or(0.0);
    let mut bins: Vec<usize> = Vec::new();
    for period in periods {
        for harmonic in 1..=harmonics {
            let bin = (harmonic as f64 * window_len as f64 / *period as f64).round() as usize;
            if bin == 0 || bin >= half || bins.contains(&bin) {
                continue;
            }
            if buffer[bin].norm_sqr() > significance * noise_floor {
                bins.push(bin);
            }
        }
    }
    let components = bins
        .into_iter()
        .map(|bin| Harmonic {
            frequency: 2.0 * std::f64::consts::PI * bin as f64 / window_len as f64,
            amplitude: 2.0 * buffer[bin].norm() / window_len as f64,
            phase: buffer[bin].arg(),
        })
        .collect();
    let mut fitted = FittedFft {
        window_len,
        level: intercept + slope * (window_len as f64 - 1.0),
        slope,
        phi: stats::phi_from_half_life(trend_half_life),
        components,
        offset: 0.0,
        anchor_points: super::anchor_window(horizon),
    };
    fitted.offset = fitted.offset_on(window, 0);
    fitted
}

/// Intercept and slope of the trend under a periodic signal, as `(intercept, slope)`.
///
/// With whole cycles of the longest period, the slope between the means of the first and last
/// cycle is exact for "line plus periodic" series, where a least-squares line would be biased by
/// the periodic part's correlation with time.
pub(crate) fn cycle_trend(window: &[f64], period: usize) -> (f64, f64) {
    let len = window.len();
    if period == 0 || len < 2 * period {
        return stats::fit_line(window);
    }
    let first = stats::mean(&window[..period]);
    let last = stats::mean(&window[len - period..]);
    let slope = (last - first) / (len - period) as f64;
    let intercept = stats::mean(window) - slope * (len as f64 - 1.0) / 2.0;
    (intercept, slope)
}

/// One kept sinusoid: `amplitude * cos(frequency * t + phase)` with `t` indexing the window.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Harmonic {
    frequency: f64,
    amplitude: f64,
    phase: f64,
}

/// Kept harmonics plus a damped linear trend.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FittedFft {
    /// Length of the analysed window; forecasts continue its time index.
    window_len: usize,
    /// Trend value at the last point of the window.
    level: f64,
    /// Trend slope per step.
    slope: f64,
    /// Per-step damping of the slope.
    phi: f64,
    /// The significant harmonics.
    components: Vec<Harmonic>,
    /// Recent mean residual, added to re-anchor the level (see `anchor_offset`).
    offset: f64,
    /// Points `offset` averages over.
    anchor_points: usize,
}

impl FittedFft {
    /// The periodic part at window index `t` (may lie beyond the window).
    fn seasonal_at(&self, t: f64) -> f64 {
        self.components
            .iter()
            .map(|h| h.amplitude * (h.frequency * t + h.phase).cos())
            .sum()
    }
}

impl Curve for FittedFft {
    fn curve(&self, k: i64) -> f64 {
        let trend = if k <= 0 {
            self.slope * k as f64
        } else {
            self.slope * stats::damped_steps(self.phi, k as usize)
        };
        self.level + trend + self.seasonal_at((self.window_len as i64 - 1 + k) as f64)
    }

    fn anchor_points(&self) -> usize {
        self.anchor_points
    }
}

impl PointForecaster for FittedFft {
    fn forecast(&self, horizon: usize) -> Vec<f64> {
        self.curve_forecast(self.offset, horizon)
    }

    fn state(&self) -> MemberState {
        MemberState::Fft(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{input, seasonality, sinusoid};
    use super::*;

    #[test]
    fn recovers_a_pure_sinusoid_of_known_period() {
        let values = sinusoid(24 * 20, 24.0, 3.0, 10.0);
        let season = seasonality(&[24]);
        let fitted = FftParams::default()
            .fit_window(&input(&values, &season, 48))
            .unwrap();
        let expected = sinusoid(24 * 20 + 48, 24.0, 3.0, 10.0);
        for (step, value) in fitted.forecast(48).iter().enumerate() {
            assert!(
                (value - expected[24 * 20 + step]).abs() < 1e-6,
                "step {step}: {value}"
            );
        }
    }

    #[test]
    fn damps_a_ramp() {
        let values: Vec<f64> = (0..100).map(|t| t as f64).collect();
        let season = seasonality(&[]);
        let fitted = FftParams::default()
            .trend_half_life(10.0)
            .fit_window(&input(&values, &season, 40))
            .unwrap();
        let forecast = fitted.forecast(200);
        assert!((forecast[0] - 100.0).abs() < 0.1);
        // The damped slope travels at most phi / (1 - phi) ≈ 13.9 steps.
        assert!(forecast[199] < 99.0 + 15.0);
        assert!(forecast.windows(2).all(|pair| pair[1] >= pair[0]));
    }
}
