//! Netflix Scryer: an FFT predictor and an augmented linear regression, combined.
//!
//! Netflix Technology Blog, "Scryer: Netflix's Predictive Auto Scaling Engine" (parts 1 and 2,
//! 2013). Scryer removes outliers first (done here by the shared preprocessing), then runs two
//! predictors: an FFT-based one that keeps the dominant frequencies of the history, and an
//! "augmented linear regression" on the values at the same time of day over past days, augmented
//! with same-day-of-week information when weeks of history exist; the two are averaged.
//!
//! The regression here is a fixed-effects model: one intercept per time of day (the phase of the
//! daily period) plus a slope over days shared by all phases, fitted on the last `days` cycles;
//! when two or more weeks are available, the average residual of each (day of week, hour block)
//! is added back, shrunk towards zero by `n / (n + 1)` because each cell has only a few weeks.

use crate::forecast::ForecastError;
use crate::forecast::seasonality::{CalendarPeriod, Seasonality};
use crate::forecast::stats;

use super::fft::{FittedFft, fit_harmonics};
use super::learned_state::Curve;
use super::{FitInput, MemberState, PointForecaster};

/// Parameters of the Scryer member.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `days` | 14 | past cycles in the same-time-of-day regression | `>= 2` |
/// | `fft_harmonics` | 6 | harmonics kept by the FFT predictor (smoother than the `fft` member) | `>= 1` |
/// | `fft_weight` | 0.5 | weight of the FFT predictor in the average | `[0, 1]` |
/// | `slope_damping` | 0.8 | per-cycle damping of the regression's slope | `[0, 1]` |
#[derive(Debug, Clone, PartialEq)]
pub struct ScryerParams {
    days: usize,
    fft_harmonics: usize,
    fft_weight: f64,
    slope_damping: f64,
}

impl Default for ScryerParams {
    fn default() -> Self {
        Self {
            days: 14,
            fft_harmonics: 6,
            fft_weight: 0.5,
            slope_damping: 0.8,
        }
    }
}

/// Hour blocks per day for the day-of-week adjustment: coarse enough that each cell holds
/// several points from every past week.
const WEEKDAY_BLOCKS: usize = 12;

impl ScryerParams {
    /// Past cycles in the regression.
    #[must_use]
    pub fn days(mut self, days: usize) -> Self {
        self.days = days;
        self
    }

    /// Harmonics kept by the FFT predictor.
    #[must_use]
    pub fn fft_harmonics(mut self, count: usize) -> Self {
        self.fft_harmonics = count;
        self
    }

    /// Weight of the FFT predictor (the regression gets the rest).
    #[must_use]
    pub fn fft_weight(mut self, weight: f64) -> Self {
        self.fft_weight = weight;
        self
    }

    /// Per-cycle damping of the regression's slope.
    #[must_use]
    pub fn slope_damping(mut self, damping: f64) -> Self {
        self.slope_damping = damping;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.days < 2 {
            return Err(ForecastError::invalid("days", "must be at least 2"));
        }
        if self.fft_harmonics == 0 {
            return Err(ForecastError::invalid(
                "fft_harmonics",
                "must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.fft_weight) {
            return Err(ForecastError::invalid("fft_weight", "must lie in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.slope_damping) {
            return Err(ForecastError::invalid(
                "slope_damping",
                "must lie in [0, 1]",
            ));
        }
        Ok(self)
    }

    pub(crate) fn min_history(&self, seasonality: &Seasonality) -> usize {
        2 * seasonality.primary().unwrap_or(8)
    }

    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let periods = input.periods(2.0);
        // Scryer regresses on the same time of day: use the calendar day when the series has a
        // daily cycle or no detected cycle at all (weak daily patterns often escape detection),
        // else the shortest detected period.
        let calendar_day = input
            .steps_per_day()
            .filter(|day| input.values.len() >= 2 * day);
        let day = calendar_day
            .filter(|day| periods.contains(day) || periods.is_empty())
            .or_else(|| periods.iter().copied().min())
            .unwrap_or(8.min(input.values.len() / 2).max(1));
        let fft = fit_harmonics(
            input.values,
            &periods,
            self.fft_harmonics,
            4.0,
            8064,
            (input.horizon as f64 / 4.0).max(1.0),
            input.horizon,
        );
        // Day-of-week offsets only make sense on top of a calendar day.
        let week = CalendarPeriod::Week
            .steps(input.step)
            .filter(|week| calendar_day == Some(day) && input.values.len() >= 2 * week);
        let mut regression = SameTimeRegression::fit(input.values, day, self.days, week);
        regression.slope_damping = self.slope_damping;
        regression.anchor_points = super::anchor_window(input.horizon);
        regression.offset = regression.offset_on(input.values, 0);
        Ok(Box::new(FittedScryer {
            fft,
            regression,
            fft_weight: self.fft_weight,
        }))
    }
}

/// Phase intercepts and a shared slope over past cycles, plus day-of-week offsets.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct SameTimeRegression {
    /// Cycle length in steps.
    period: usize,
    /// Length of the fitted history; forecasts continue its index.
    len: usize,
    /// Intercept per phase at the mean cycle index.
    phase_mean: Vec<f64>,
    /// Mean cycle index of the fitted cycles (relative to the last cycle, so negative).
    mean_cycle: f64,
    /// Change per cycle shared by every phase.
    slope: f64,
    /// Week length in steps and the offset per (position in week / block).
    weekday_offsets: Option<(usize, Vec<f64>)>,
    /// Recent mean residual, added to re-anchor the level (see `anchor_offset`).
    offset: f64,
    /// Points `offset` averages over.
    anchor_points: usize,
    /// Per-cycle damping of the slope ahead.
    slope_damping: f64,
}

impl SameTimeRegression {
    fn fit(values: &[f64], period: usize, max_cycles: usize, week: Option<usize>) -> Self {
        let len = values.len();
        let cycles = (len / period).clamp(1, max_cycles);
        // Cycle c (0 = the most recent complete one ending at len) covers
        // values[len - (c + 1) * period .. len - c * period]; its index on the time axis is -c.
        let value_at = |cycle: usize, phase_of_index: usize| {
            let start = len - (cycle + 1) * period;
            values[start + phase_of_index]
        };
        let phase_of = |index: usize| index % period;
        let mut phase_mean = vec![0.0; period];
        let mean_cycle = -((cycles - 1) as f64) / 2.0;
        // Fixed-effects (within) regression: demean per phase, then one slope for all.
        let mut numerator = 0.0;
        let mut denominator = 0.0;
        for offset in 0..period {
            let phase = phase_of(len - period + offset);
            let mean = (0..cycles).map(|c| value_at(c, offset)).sum::<f64>() / cycles as f64;
            phase_mean[phase] = mean;
            for cycle in 0..cycles {
                let centred_time = -(cycle as f64) - mean_cycle;
                numerator += centred_time * (value_at(cycle, offset) - mean);
                denominator += centred_time * centred_time;
            }
        }
        let slope = if denominator > 0.0 {
            numerator / denominator
        } else {
            0.0
        };
        let weekday_offsets = week.map(|week| {
            let blocks_per_week = (week / period) * WEEKDAY_BLOCKS;
            let mut sums = vec![0.0; blocks_per_week];
            let mut counts = vec![0usize; blocks_per_week];
            let weeks = (len / week).min(4);
            for index in len - weeks * week..len {
                let cycle_back = (len - 1 - index) / period;
                let fitted =
                    phase_mean[phase_of(index)] + slope * (-(cycle_back as f64) - mean_cycle);
                let block = Self::week_block(index, week, period);
                sums[block] += values[index] - fitted;
                counts[block] += 1;
            }
            let per_block_points = (period / WEEKDAY_BLOCKS).max(1) as f64;
            let offsets = sums
                .iter()
                .zip(&counts)
                .map(|(sum, count)| {
                    if *count == 0 {
                        return 0.0;
                    }
                    let average = sum / *count as f64;
                    let weeks_seen = *count as f64 / per_block_points;
                    average * weeks_seen / (weeks_seen + 1.0)
                })
                .collect();
            (week, offsets)
        });
        Self {
            period,
            len,
            phase_mean,
            mean_cycle,
            slope,
            weekday_offsets,
            offset: 0.0,
            anchor_points: 1,
            slope_damping: 1.0,
        }
    }

    /// In-sample value at `index` of the fitted history (without the anchor offset).
    fn fitted_at(&self, index: usize) -> f64 {
        let cycle_back = (self.len - 1 - index) / self.period;
        let weekday = self
            .weekday_offsets
            .as_ref()
            .map_or(0.0, |(week, offsets)| {
                offsets[Self::week_block(index, *week, self.period)]
            });
        self.phase_mean[index % self.period]
            + self.slope * (-(cycle_back as f64) - self.mean_cycle)
            + weekday
    }

    fn week_block(index: usize, week: usize, period: usize) -> usize {
        let position = index % week;
        let day = position / period;
        let block = (position % period) * WEEKDAY_BLOCKS / period;
        day * WEEKDAY_BLOCKS + block
    }

    fn forecast(&self, horizon: usize) -> Vec<f64> {
        self.curve_forecast(self.offset, horizon)
    }
}

impl Curve for SameTimeRegression {
    fn curve(&self, k: i64) -> f64 {
        let index = (self.len as i64 - 1 + k) as usize;
        if k <= 0 {
            return self.fitted_at(index);
        }
        let cycles_ahead = (k as usize - 1) / self.period + 1;
        let travelled = stats::damped_steps(self.slope_damping, cycles_ahead);
        let weekday = self
            .weekday_offsets
            .as_ref()
            .map_or(0.0, |(week, offsets)| {
                offsets[Self::week_block(index, *week, self.period)]
            });
        self.phase_mean[index % self.period] + self.slope * (-self.mean_cycle + travelled) + weekday
    }

    fn anchor_points(&self) -> usize {
        self.anchor_points
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FittedScryer {
    /// The FFT predictor.
    fft: FittedFft,
    /// The same-time-of-day regression.
    regression: SameTimeRegression,
    /// Weight of the FFT predictor.
    fft_weight: f64,
}

impl FittedScryer {
    fn blend(&self, spectral: &[f64], regression: &[f64]) -> Vec<f64> {
        spectral
            .iter()
            .zip(regression)
            .map(|(s, r)| self.fft_weight * s + (1.0 - self.fft_weight) * r)
            .collect()
    }

    /// Forecasts from newer `values`, each predictor re-anchored on them.
    pub(crate) fn forecast_on(&self, values: &[f64], elapsed: usize, horizon: usize) -> Vec<f64> {
        self.blend(
            &self.fft.forecast_on(values, elapsed, horizon),
            &self.regression.forecast_on(values, elapsed, horizon),
        )
    }

    /// Newest points a re-anchored forecast reads.
    pub(crate) fn recent_needed(&self) -> usize {
        self.fft.anchor_points().max(self.regression.anchor_points)
    }
}

impl PointForecaster for FittedScryer {
    fn forecast(&self, horizon: usize) -> Vec<f64> {
        self.blend(
            &self.fft.forecast(horizon),
            &self.regression.forecast(horizon),
        )
    }

    fn state(&self) -> MemberState {
        MemberState::Scryer(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{input, seasonality, sinusoid};
    use super::*;

    #[test]
    fn regression_follows_a_growing_daily_shape() {
        // Hourly data: a daily sinusoid whose level grows by 0.5 per day.
        let mut values = sinusoid(24 * 10, 24.0, 1.0, 0.0);
        for (t, value) in values.iter_mut().enumerate() {
            *value += 0.5 * (t / 24) as f64;
        }
        let regression = SameTimeRegression::fit(&values, 24, 14, None);
        assert!((regression.slope - 0.5).abs() < 1e-9);
        let forecast = regression.forecast(24);
        let truth = sinusoid(24 * 11, 24.0, 1.0, 5.0);
        for step in 0..24 {
            assert!((forecast[step] - truth[240 + step]).abs() < 1e-9);
        }
    }

    #[test]
    fn combined_predictor_recovers_a_periodic_series() {
        let values = sinusoid(24 * 14, 24.0, 2.0, 1.0);
        let season = seasonality(&[24]);
        let fitted = ScryerParams::default()
            .fit_window(&input(&values, &season, 24))
            .unwrap();
        let truth = sinusoid(24 * 15, 24.0, 2.0, 1.0);
        for (step, value) in fitted.forecast(24).iter().enumerate() {
            assert!((value - truth[24 * 14 + step]).abs() < 1e-6, "step {step}");
        }
    }
}
