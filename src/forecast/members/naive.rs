//! Seasonal naive: every step repeats the value one season earlier (the baseline).
//!
//! Hyndman & Athanasopoulos, "Forecasting: Principles and Practice" (3rd ed.), section 5.2. Every
//! other member must beat it in the backtest to enter the ensemble.

use crate::forecast::ForecastError;
use crate::forecast::seasonality::Seasonality;

use super::{FitInput, MemberState, PointForecaster};

/// Parameters of the seasonal naive baseline.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `period` | strongest detected | season length in steps; 1 repeats the last value | `>= 1` |
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeasonalNaiveParams {
    period: Option<usize>,
}

impl SeasonalNaiveParams {
    /// Forces the season length instead of using the strongest detected period.
    #[must_use]
    pub fn period(mut self, steps: usize) -> Self {
        self.period = Some(steps);
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.period == Some(0) {
            return Err(ForecastError::invalid("period", "must be at least 1"));
        }
        Ok(self)
    }

    pub(crate) fn min_history(&self, seasonality: &Seasonality) -> usize {
        self.period.or(seasonality.primary()).unwrap_or(1)
    }

    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let period = self
            .period
            .or_else(|| input.periods(1.0).first().copied())
            .unwrap_or(1)
            .min(input.values.len());
        let last_season = input.values[input.values.len() - period..].to_vec();
        Ok(Box::new(FittedSeasonalNaive { last_season }))
    }
}

#[derive(Debug)]
struct FittedSeasonalNaive {
    /// The final season of the window, repeated forward.
    last_season: Vec<f64>,
}

impl PointForecaster for FittedSeasonalNaive {
    fn forecast(&self, horizon: usize) -> Vec<f64> {
        self.last_season
            .iter()
            .copied()
            .cycle()
            .take(horizon)
            .collect()
    }

    fn state(&self) -> MemberState {
        MemberState::SeasonalNaive {
            period: self.last_season.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{input, seasonality};
    use super::*;

    #[test]
    fn repeats_the_last_season() {
        let values: Vec<f64> = (0..12).map(|t| (t % 4) as f64 + t as f64 * 0.0).collect();
        let season = seasonality(&[4]);
        let fitted = SeasonalNaiveParams::default()
            .fit_window(&input(&values, &season, 6))
            .unwrap();
        assert_eq!(fitted.forecast(6), vec![0.0, 1.0, 2.0, 3.0, 0.0, 1.0]);
        let none = seasonality(&[]);
        let flat = SeasonalNaiveParams::default()
            .fit_window(&input(&values, &none, 3))
            .unwrap();
        assert_eq!(flat.forecast(3), vec![3.0; 3]);
    }
}
