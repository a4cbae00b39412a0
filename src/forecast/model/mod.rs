//! The model spec users fit ([`ModelParams`]: the ensemble or one member) and the fitted model.
//!
//! Fitting runs in stages, each in its own file:
//!
//! 1. preprocessing (`preprocess`), then the rolling-origin backtest of every member (but one
//!    that another member tried covers), scored per bucket of lead times and gated against the
//!    seasonal naive baseline: members that beat it in no bucket are dropped, and in a bucket no
//!    member beats, the baseline leads the blend (`gating`);
//! 2. combination weights per bucket (`weights`), with the number of members blended chosen by
//!    their held-out error (`selection`);
//! 3. conformal calibration on the combined forecast's own backtest residuals (`calibrate`);
//! 4. a final refit of the members that carry weight (`refit`), giving the [`FittedModel`]
//!    (`fitted`), which forecasts, re-anchors on newer data and serialises (`serialized`).
//!
//! Gating and weights are found per bucket of lead times (the buckets the intervals are
//! calibrated on), since which member errs least depends on how far ahead it forecasts: members
//! that track the latest level win at short leads, seasonal ones a day ahead. Horizon-specific
//! combination weights: Timmermann, "Forecast combinations", Handbook of Economic Forecasting 1
//! (2006), section 2.3; the same idea as calibrating each horizon step separately (see
//! `conformal`).

mod calibrate;
mod fitted;
mod gating;
mod refit;
mod selection;
mod serialized;
mod weights;

use std::ops::Range;

use crate::domain::TimeSeries;

use super::accuracy;
use super::backtest::{BacktestParams, BacktestReport};
use super::conformal::{self, ConformalParams};
use super::level_shift::LevelShift;
use super::members::{MemberKind, MemberSpec};
use super::preprocess::{self, Prepared, PreprocessParams, PreprocessSummary};
use super::{Fit, ForecastError};

pub use fitted::FittedModel;

use fitted::CalibratedEnsemble;

/// How the ensemble combines the members that beat the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Combination {
    /// Constrained stacking: least-squares weights on the backtest forecasts, non-negative and
    /// summing to one (Breiman, "Stacked regressions", Machine Learning 24, 1996).
    Stacking,
    /// Weights proportional to the inverse squared backtest mean absolute error, over the `top_k`
    /// members with the lowest error: Bates & Granger's inverse-MSE weights ("The combination of
    /// forecasts", Operational Research Quarterly 20(4), 1969) with the MAE in place of the root
    /// MSE, so that one day no member foresaw (a blizzard, an outage) does not decide the weights
    /// alone. The default: on short, drifting backtests it is steadier than stacking, which tends
    /// to put all weight on one member.
    #[default]
    InverseError,
}

/// An unfitted model: the ensemble of several members, or one member alone.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `members` | all eight | members tried (the seasonal naive baseline is always evaluated) | non-empty |
/// | `combination` | `InverseError` | how weights are found | see [`Combination`] |
/// | `min_weight` | 0.02 | weights below this are dropped and the rest renormalised | `[0, 0.5)` |
/// | `top_k` | eight (every member) | most members kept by `InverseError` per bucket; the backtest picks 1..=top_k per bucket | `>= 1` |
/// | `recency_decay` | 0.9 | weight of each older backtest fold relative to the next newer one, when finding weights, choosing how many to blend and calibrating the intervals | `(0, 1]` |
/// | `preprocess` | default | gap filling, outliers, transform, seasonality | see [`PreprocessParams`] |
/// | `backtest` | default | folds and calibrated horizon | see [`BacktestParams`] |
/// | `conformal` | default | interval calibration | see [`ConformalParams`] |
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParams {
    members: Vec<MemberSpec>,
    single: bool,
    combination: Combination,
    min_weight: f64,
    top_k: usize,
    recency_decay: f64,
    preprocess: PreprocessParams,
    backtest: BacktestParams,
    conformal: ConformalParams,
}

impl ModelParams {
    /// The ensemble of every member with default settings.
    pub fn ensemble() -> Self {
        let members = MemberSpec::all();
        Self {
            // No cap below the member count: the held-out blend-size choice decides how many to
            // blend in each bucket (`docs/decisions.md`, "Blend size: one-standard-error rule").
            top_k: members.len(),
            members,
            single: false,
            combination: Combination::default(),
            min_weight: 0.02,
            recency_decay: 0.9,
            preprocess: PreprocessParams::default(),
            backtest: BacktestParams::default(),
            conformal: ConformalParams::default(),
        }
    }

    /// One member alone; it is still backtested (for its intervals) and the baseline is reported
    /// beside it for comparison.
    pub fn single(member: MemberSpec) -> Self {
        Self {
            members: vec![member],
            single: true,
            ..Self::ensemble()
        }
    }

    /// The members the ensemble tries.
    #[must_use]
    pub fn members(mut self, members: Vec<MemberSpec>) -> Self {
        self.members = members;
        self
    }

    /// How weights are found.
    #[must_use]
    pub fn combination(mut self, combination: Combination) -> Self {
        self.combination = combination;
        self
    }

    /// Smallest weight kept.
    #[must_use]
    pub fn min_weight(mut self, weight: f64) -> Self {
        self.min_weight = weight;
        self
    }

    /// Members kept by the inverse-error combination.
    #[must_use]
    pub fn top_k(mut self, count: usize) -> Self {
        self.top_k = count;
        self
    }

    /// Weight of each older backtest fold relative to the next newer one.
    #[must_use]
    pub fn recency_decay(mut self, decay: f64) -> Self {
        self.recency_decay = decay;
        self
    }

    /// Preprocessing settings.
    #[must_use]
    pub fn preprocess(mut self, params: PreprocessParams) -> Self {
        self.preprocess = params;
        self
    }

    /// Backtest settings.
    #[must_use]
    pub fn backtest(mut self, params: BacktestParams) -> Self {
        self.backtest = params;
        self
    }

    /// Interval calibration settings.
    #[must_use]
    pub fn conformal(mut self, params: ConformalParams) -> Self {
        self.conformal = params;
        self
    }

    /// Validates every setting, members included.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.members.is_empty() {
            return Err(ForecastError::invalid("members", "must not be empty"));
        }
        if self.single && self.members.len() != 1 {
            return Err(ForecastError::invalid(
                "members",
                "a single-member model holds exactly one member",
            ));
        }
        if !(self.recency_decay > 0.0 && self.recency_decay <= 1.0) {
            return Err(ForecastError::invalid(
                "recency_decay",
                "must lie in (0, 1]",
            ));
        }
        if self.top_k == 0 {
            return Err(ForecastError::invalid("top_k", "must be at least 1"));
        }
        if !(0.0..0.5).contains(&self.min_weight) {
            return Err(ForecastError::invalid("min_weight", "must lie in [0, 0.5)"));
        }
        let members = self
            .members
            .into_iter()
            .map(MemberSpec::check)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            members,
            preprocess: self.preprocess.check()?,
            backtest: self.backtest.check()?,
            conformal: self.conformal.check()?,
            ..self
        })
    }

    /// The level shift still in force that a fit of `series` would find and move the older history
    /// to (`PreprocessSummary::level_shift`), found without fitting: preprocessing only.
    pub fn level_shift(&self, series: &TimeSeries) -> Result<Option<LevelShift>, ForecastError> {
        Ok(preprocess::prepare(series, &self.preprocess)?.level_shift)
    }

    /// The members tried, with the baseline first when it was not configured explicitly.
    fn tried_members(&self) -> Vec<MemberSpec> {
        let mut tried = self.members.clone();
        if !tried.iter().any(|m| m.kind() == MemberKind::SeasonalNaive) {
            tried.insert(0, MemberSpec::default_for(MemberKind::SeasonalNaive));
        }
        tried
    }
}

impl Default for ModelParams {
    fn default() -> Self {
        Self::ensemble()
    }
}

impl Fit for ModelParams {
    type Fitted = FittedModel;

    fn fit(&self, series: &TimeSeries) -> Result<FittedModel, ForecastError> {
        let prepared = preprocess::prepare(series, &self.preprocess)?;
        let len = prepared.values.len();
        let horizon = self.backtest.resolve_horizon(prepared.step, len);
        if self.single {
            let needed = self.members[0].min_history(&prepared.seasonality, horizon);
            if len < needed {
                return Err(ForecastError::NotEnoughHistory { needed, got: len });
            }
        }
        let origins = self.backtest.origins(len, horizon);
        let folds = Folds::new(&prepared, origins, horizon, &self.conformal);
        let naive_scale = naive_scale(&prepared);

        let candidates = self.backtest_candidates(&folds);
        let mut gate = self.gate(&folds, &candidates, naive_scale);
        let fold_matrix = gate.fold_matrix(&candidates);
        let blend = self.choose_blend(&folds, &fold_matrix, &gate.allowed);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let kinds: Vec<MemberKind> = gate
                .eligible
                .iter()
                .map(|index| candidates[*index].spec.kind())
                .collect();
            blend.log_weights(&folds.ranges, &kinds);
        }
        let combined = self.calibrate(&folds, &blend.combined_folds, naive_scale);
        let members = refit::refit(&folds, &candidates, &mut gate, &blend.weights)?;

        let Folds { origins, ends, .. } = folds;
        let ensemble = CalibratedEnsemble {
            trained_end: prepared.end(),
            step: prepared.step,
            scaler: prepared.scaler,
            parts: members,
            ends,
            calibration: combined.calibration,
            report: BacktestReport {
                horizon,
                origins,
                members: gate.reports,
                combined: combined.scores,
                combined_folds: combined.fold_scores,
            },
            summary: PreprocessSummary::from(&prepared),
            cleaning: self.preprocess.cleaning(),
            fold_forecasts: blend.combined_folds,
            shift_adjustment: prepared.shift_adjustment,
        };
        Ok(FittedModel::new(ensemble, &prepared))
    }
}

/// The rolling-origin backtest every fitting stage reads: the series, where the folds start, and
/// the buckets of lead times members are gated and weighted on (and the intervals calibrated on).
struct Folds<'a> {
    /// The preprocessed series.
    prepared: &'a Prepared,
    /// Where each fold's forecast starts, latest first (fold 0 is the most recent).
    origins: Vec<usize>,
    /// Steps forecast from each origin.
    horizon: usize,
    /// First step after each bucket of lead times.
    ends: Vec<usize>,
    /// The lead steps of each bucket: `ends` as ranges.
    ranges: Vec<Range<usize>>,
}

impl<'a> Folds<'a> {
    /// The folds starting at `origins`, with buckets sized on what was observed after them.
    fn new(
        prepared: &'a Prepared,
        origins: Vec<usize>,
        horizon: usize,
        conformal: &ConformalParams,
    ) -> Self {
        let observed: Vec<Vec<f64>> = origins
            .iter()
            .map(|origin| {
                (0..horizon)
                    .map(|step| {
                        prepared
                            .actual
                            .get(origin + step)
                            .copied()
                            .unwrap_or(f64::NAN)
                    })
                    .collect()
            })
            .collect();
        let ends = conformal::bucket_ends(&observed, conformal);
        let ranges: Vec<Range<usize>> = ends
            .iter()
            .scan(0, |from, end| {
                let range = *from..*end;
                *from = *end;
                Some(range)
            })
            .collect();
        Self {
            prepared,
            origins,
            horizon,
            ends,
            ranges,
        }
    }
}

/// The in-sample seasonal naive MAE (in the series' units) that MASE divides by.
fn naive_scale(prepared: &Prepared) -> Option<f64> {
    let history = prepared.scaler.inverse_observed(&prepared.actual);
    let period = prepared.seasonality.primary().unwrap_or(1);
    accuracy::seasonal_naive_scale(&history, period)
}

#[cfg(test)]
mod test_support {
    //! A small backtest shared by the stages' tests.

    use crate::domain::{Step, TimeSeries, Timestamp};
    use crate::forecast::preprocess::{self, Prepared};
    use crate::forecast::{PreprocessParams, TransformChoice};

    /// A prepared 960-point series (untransformed) and four one-horizon (48-step) fold origins.
    pub(super) fn four_fold_backtest() -> (Prepared, [usize; 4]) {
        let values: Vec<f64> = (0..960).map(|t| ((t * 37) % 101) as f64).collect();
        let series = TimeSeries::new(Timestamp::from_millis(0), Step::FIVE_MINUTES, values);
        let prepared = preprocess::prepare(
            &series,
            &PreprocessParams::default().transform(TransformChoice::Identity),
        )
        .unwrap();
        (prepared, [912, 864, 816, 768])
    }
}
