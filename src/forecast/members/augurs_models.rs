//! augurs' MSTL and AutoETS as members.
//!
//! MSTL: Bandara, Hyndman & Bergmeir, "MSTL: A Seasonal-Trend Decomposition Algorithm for Time
//! Series with Multiple Seasonal Patterns" (2021), as implemented by `augurs-mstl` (on `stlrs`):
//! the series is split into one seasonal component per period plus a trend, the seasonal
//! components are repeated forward and the deseasonalised series is forecast by AutoETS.
//! AutoETS: Hyndman et al., "Forecasting with Exponential Smoothing: The State Space Approach"
//! (2008), as implemented by `augurs-ets` after statsforecast's `AutoETS`.
//!
//! ETS likelihood optimisation is the slowest step of any member, so both fit ETS only on the most
//! recent `ets_window` points: the level and slope of a smoothing model depend mostly on them.

use augurs::ets::AutoETS;
use augurs::ets::trend::AutoETSTrendModel;
use augurs::mstl::{FittedTrendModel, MSTLModel, TrendModel};
use augurs::{Fit as _, Forecast as AugursForecast, Predict as _};

use crate::forecast::ForecastError;
use crate::forecast::seasonality::{CalendarPeriod, Seasonality};

use super::learned_state::{FROZEN_STEPS, FrozenPath};
use super::yearly::YearlyTerms;
use super::{FitInput, MemberKind, MemberState, PointForecaster};

/// Parameters of the MSTL member.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `ets_window` | 288 | most recent deseasonalised points the ETS trend is fitted on | `>= 16` |
/// | `max_window` | 8064 | most recent points decomposed | `>= 16` |
/// | `max_period` | 1440 | longest period decomposed (STL's cost grows with the period: a 2016-step week costs 7x a 288-step day) | `>= 2` |
#[derive(Debug, Clone, PartialEq)]
pub struct MstlParams {
    ets_window: usize,
    max_window: usize,
    max_period: usize,
}

impl Default for MstlParams {
    fn default() -> Self {
        Self {
            ets_window: 288,
            max_window: 8064,
            max_period: 1440,
        }
    }
}

impl MstlParams {
    /// Most recent deseasonalised points the ETS trend is fitted on.
    #[must_use]
    pub fn ets_window(mut self, points: usize) -> Self {
        self.ets_window = points;
        self
    }

    /// Most recent points decomposed.
    #[must_use]
    pub fn max_window(mut self, points: usize) -> Self {
        self.max_window = points;
        self
    }

    /// Longest period decomposed.
    #[must_use]
    pub fn max_period(mut self, steps: usize) -> Self {
        self.max_period = steps;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.ets_window < 16 {
            return Err(ForecastError::invalid("ets_window", "must be at least 16"));
        }
        if self.max_window < 16 {
            return Err(ForecastError::invalid("max_window", "must be at least 16"));
        }
        if self.max_period < 2 {
            return Err(ForecastError::invalid("max_period", "must be at least 2"));
        }
        Ok(self)
    }

    pub(crate) fn min_history(&self, seasonality: &Seasonality) -> usize {
        // MSTL needs two full cycles of a period to estimate it.
        seasonality
            .periods()
            .iter()
            .filter(|period| period.steps <= self.max_period)
            .map(|period| 2 * period.steps)
            .min()
            .unwrap_or(16)
            .max(16)
    }

    /// The detected periods MSTL decomposes on `len` points: those with two cycles in its window
    /// and no longer than `max_period`.
    pub(crate) fn periods(&self, seasonality: &Seasonality, len: usize) -> Vec<usize> {
        seasonality
            .steps_fitting(len.min(self.max_window), 2.0)
            .into_iter()
            .filter(|period| (2..=self.max_period).contains(period))
            .collect()
    }

    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let window_len = input.values.len().min(self.max_window);
        let window = &input.values[input.values.len() - window_len..];
        let mut periods = self.periods(input.seasonality, input.values.len());
        if periods.is_empty() {
            return Err(failed(
                MemberKind::Mstl,
                "no seasonal period with two cycles in the window",
            ));
        }
        periods.sort_unstable();
        let cycle = periods.last().copied().unwrap_or(1);
        let yearly = yearly_beside_shorter(input.seasonality, &periods)
            .and_then(|period| YearlyTerms::fit(window, period).map(|terms| (period, terms)));
        let (stl_periods, series) = match &yearly {
            Some((period, terms)) => (
                periods.iter().copied().filter(|p| p != period).collect(),
                window
                    .iter()
                    .enumerate()
                    .map(|(index, value)| value - terms.at(index))
                    .collect(),
            ),
            None => (periods, window.to_vec()),
        };
        let trend = TailEts {
            window: self.ets_window,
        };
        let fitted = MSTLModel::new(stl_periods, trend)
            .fit(&series)
            .map_err(|error| failed(MemberKind::Mstl, error))?;
        Ok(Box::new(AugursForecaster {
            model: AugursModel::Mstl(fitted),
            cycle,
            anchor_points: super::anchor_window(input.horizon),
            yearly: yearly.map(|(_, terms)| (terms, window_len)),
        }))
    }
}

/// The detected yearly cycle among MSTL's `periods`, when a shorter one is decomposed beside it:
/// then the year is fitted as Fourier terms ([`YearlyTerms`]) and STL decomposes the shorter
/// cycles only. A yearly cycle alone stays with STL (MSTL needs one cycle to decompose).
fn yearly_beside_shorter(seasonality: &Seasonality, periods: &[usize]) -> Option<usize> {
    let year = seasonality
        .periods()
        .iter()
        .find(|period| period.calendar == Some(CalendarPeriod::Year))?
        .steps;
    (periods.contains(&year) && periods.iter().any(|period| *period < year)).then_some(year)
}

/// Parameters of the ETS member.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `ets_window` | 288 | most recent points fitted | `>= 16` |
#[derive(Debug, Clone, PartialEq)]
pub struct EtsParams {
    ets_window: usize,
}

impl Default for EtsParams {
    fn default() -> Self {
        Self { ets_window: 288 }
    }
}

impl EtsParams {
    /// Most recent points fitted.
    #[must_use]
    pub fn ets_window(mut self, points: usize) -> Self {
        self.ets_window = points;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.ets_window < 16 {
            return Err(ForecastError::invalid("ets_window", "must be at least 16"));
        }
        Ok(self)
    }

    pub(crate) fn min_history(&self, _seasonality: &Seasonality) -> usize {
        16
    }

    /// Why this member adds nothing to an ensemble beside `mstl` on `len` points, if it does not:
    /// MSTL decomposes a detected cycle and fits the same AutoETS to what is left, while this
    /// member, which holds no season (augurs-ets 0.10 fits no seasonal model, see
    /// [`Self::fit_window`]), forecasts the cycle's mean. It cannot beat the baseline at any lead
    /// the cycle matters for, and on the evaluation series it never carried weight beside a
    /// decomposed cycle; backtesting it only costs time (see `docs/decisions.md`, "ETS only where
    /// MSTL decomposes no cycle").
    pub(crate) fn redundant_beside(
        &self,
        mstl: &MstlParams,
        seasonality: &Seasonality,
        len: usize,
    ) -> Option<String> {
        let decomposed = mstl.periods(seasonality, len);
        let longest = decomposed.iter().max()?;
        Some(format!(
            "ets holds no season; mstl fits AutoETS after removing the {longest}-step cycle"
        ))
    }

    pub(crate) fn fit_window(
        &self,
        input: &FitInput<'_>,
    ) -> Result<Box<dyn PointForecaster>, ForecastError> {
        let window_len = input.values.len().min(self.ets_window);
        let window = &input.values[input.values.len() - window_len..];
        // Only the non-seasonal search: augurs-ets 0.10 implements no seasonal model. Asked for
        // one, it either refuses its starting parameters as inadmissible (long seasons) or panics
        // in `initial_state` with `unimplemented!` (seasons of a few steps, e.g. the 2- or 4-step
        // cycle of a 10- or 20-minute job on a 5-minute series), so no seasonal form ever fits.
        // Short cycles are left to the members that model them (MSTL, the curve members).
        let fitted = AutoETS::new(1, "AZN")
            .and_then(|spec| spec.fit(window))
            .map_err(|error| failed(MemberKind::Ets, error))?;
        Ok(Box::new(AugursForecaster {
            model: AugursModel::Ets(fitted),
            cycle: 1,
            anchor_points: super::anchor_window(input.horizon),
            yearly: None,
        }))
    }
}

fn failed(member: MemberKind, reason: impl ToString) -> ForecastError {
    ForecastError::MemberFailed {
        member,
        reason: reason.to_string(),
    }
}

/// An MSTL trend model that fits AutoETS on the tail of the deseasonalised series only.
#[derive(Debug, Clone)]
struct TailEts {
    /// Most recent points fitted.
    window: usize,
}

impl TrendModel for TailEts {
    fn name(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed("AutoETS on the most recent points")
    }

    fn fit(
        &self,
        y: &[f64],
    ) -> Result<Box<dyn FittedTrendModel + Sync + Send>, Box<dyn std::error::Error + Send + Sync>>
    {
        let tail = &y[y.len().saturating_sub(self.window)..];
        // A damped additive trend only: the deseasonalised series needs a level and a bounded
        // slope, and searching all of ETS's non-seasonal forms costs three fits instead of one.
        let damped = AutoETS::new(1, "AAN")?.damped(true)?;
        AutoETSTrendModel::from(damped).fit(tail)
    }
}

#[derive(Debug)]
enum AugursModel {
    Mstl(augurs::mstl::FittedMSTLModel),
    Ets(augurs::ets::FittedAutoETS),
}

#[derive(Debug)]
struct AugursForecaster {
    /// The fitted augurs model.
    model: AugursModel,
    /// The longest period the model repeats (1 for none).
    cycle: usize,
    /// Points a re-anchored forecast's intercept correction averages over.
    anchor_points: usize,
    /// The yearly terms MSTL's decomposition was fitted without, and the length of the window
    /// they are indexed on (the first forecast step's index).
    yearly: Option<(YearlyTerms, usize)>,
}

impl PointForecaster for AugursForecaster {
    fn forecast(&self, horizon: usize) -> Vec<f64> {
        let result: Result<AugursForecast, String> = match &self.model {
            AugursModel::Mstl(model) => model.predict(horizon, None).map_err(|e| e.to_string()),
            AugursModel::Ets(model) => model.predict(horizon, None).map_err(|e| e.to_string()),
        };
        match result {
            Ok(forecast) if forecast.point.len() == horizon => match &self.yearly {
                Some((terms, end)) => (forecast.point.iter().enumerate())
                    .map(|(step, value)| value + terms.at(end + step))
                    .collect(),
                None => forecast.point,
            },
            // A fitted augurs model only fails to predict on internal inconsistency. NaN marks the
            // failure: the backtest then skips the member, and a final forecast is sanitised.
            _ => vec![f64::NAN; horizon],
        }
    }

    fn state(&self) -> MemberState {
        MemberState::Frozen(FrozenPath {
            path: self.forecast(FROZEN_STEPS.max(2 * self.cycle)),
            cycle: self.cycle,
            anchor_points: self.anchor_points,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{seasonality, sinusoid};
    use super::*;

    /// augurs-ets 0.10 panics on a seasonal model of a short season (`unimplemented!` in its
    /// initial state), which is why `EtsParams::fit_window` never asks for one; a panic like it in
    /// any member is a failure of that member, with the panic's message as the reason.
    #[test]
    fn a_panic_inside_augurs_is_a_member_failure_with_its_message() {
        let values = sinusoid(96, 4.0, 1.0, 10.0);
        let outcome = super::super::catch_member_panic(MemberKind::Ets, || {
            AutoETS::new(4, "AAA")
                .and_then(|spec| spec.fit(&values))
                .map_err(|error| failed(MemberKind::Ets, error))
        });
        let Err(ForecastError::MemberFailed { member, reason }) = outcome else {
            panic!("expected a member failure, got {outcome:?}");
        };
        assert_eq!(member, MemberKind::Ets);
        assert!(
            reason.starts_with("panicked: ") && reason.contains("not implemented"),
            "{reason}"
        );
    }

    #[test]
    fn ets_is_redundant_beside_mstl_whenever_mstl_decomposes_a_cycle() {
        let ets = EtsParams::default();
        let mstl = MstlParams::default();
        // A 48-step day: MSTL decomposes it (and the week).
        let reason = ets.redundant_beside(&mstl, &seasonality(&[48, 336]), 1344);
        assert!(reason.is_some_and(|reason| reason.contains("336-step")));
        // A short cycle too: ETS holds no season, so MSTL covers it (a weekly cycle of daily data).
        let reason = ets.redundant_beside(&mstl, &seasonality(&[7, 365]), 2920);
        assert!(reason.is_some_and(|reason| reason.contains("365-step")));
        // With no cycle, non-seasonal ETS is the right model and MSTL has nothing to remove.
        assert_eq!(ets.redundant_beside(&mstl, &seasonality(&[]), 3000), None);
        // A cycle MSTL cannot decompose (under two cycles of it in the window) leaves ETS in.
        assert_eq!(
            ets.redundant_beside(&mstl, &seasonality(&[1000]), 1500),
            None
        );
        assert!(
            ets.redundant_beside(&mstl, &seasonality(&[1000]), 2000)
                .is_some()
        );
    }
}
