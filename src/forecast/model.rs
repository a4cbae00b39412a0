//! The model spec users fit ([`ModelParams`]: the ensemble or one member) and the fitted model.
//!
//! Fitting runs: preprocessing → rolling-origin backtest of every member (but one that another
//! member tried covers) → gating against the seasonal naive baseline (members that beat it in no
//! bucket are dropped; in a bucket no member beats, the baseline leads the blend) → combination
//! weights, with the number of members blended chosen by their held-out error → conformal
//! calibration on the combined forecast's own backtest residuals → a final refit of the members
//! that carry weight.
//!
//! Gating and weights are found per bucket of lead times (the buckets the intervals are
//! calibrated on), since which member errs least depends on how far ahead it forecasts: members
//! that track the latest level win at short leads, seasonal ones a day ahead. Horizon-specific
//! combination weights: Timmermann, "Forecast combinations", Handbook of Economic Forecasting 1
//! (2006), section 2.3; the same idea as calibrating each horizon step separately (see
//! `conformal`).

use std::ops::Range;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::{Step, TimeSeries, Timestamp};

use super::backtest::{self, BacktestParams, BacktestReport, MemberReport, MemberStatus};
use super::conformal::{self, Calibration, ConformalParams};
use super::members::{self, Anchor, FitInput, MemberKind, MemberSpec, MemberState};
use super::metrics;
use super::preprocess::{self, Cleaning, Prepared, PreprocessParams, PreprocessSummary, Scaler};
use super::stats;
use super::{Fit, ForecastError, Predict};
use crate::domain::{Forecast, Horizon, Interval, Level};

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
/// | `top_k` | 3 | most members kept by `InverseError` per bucket; the backtest picks 1..=top_k (fewer, better members dilute less) | `>= 1` |
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
        Self {
            members: MemberSpec::all(),
            single: false,
            combination: Combination::default(),
            min_weight: 0.02,
            top_k: 3,
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

/// A member's backtest outcome while fitting.
struct Candidate {
    spec: MemberSpec,
    /// Fold forecasts, or why the member was not backtested (too little history, it failed, or
    /// another member tried covers it).
    folds: Result<backtest::FoldForecasts, String>,
}

impl Fit for ModelParams {
    type Fitted = FittedModel;

    fn fit(&self, series: &TimeSeries) -> Result<FittedModel, ForecastError> {
        let prepared = preprocess::prepare(series, &self.preprocess)?;
        let len = prepared.values.len();
        let horizon = self.backtest.resolve_horizon(prepared.step, len);
        let origins = self.backtest.origins(len, horizon);
        let seasonality = &prepared.seasonality;
        let naive_scale = naive_scale(&prepared);

        if self.single {
            let spec = &self.members[0];
            let needed = spec.min_history(seasonality, horizon);
            if len < needed {
                return Err(ForecastError::NotEnoughHistory { needed, got: len });
            }
        }

        let tried = self.tried_members();
        let candidates: Vec<Candidate> = tried
            .iter()
            .map(|spec| {
                let needed = spec.min_history(seasonality, horizon);
                let earliest = origins.last().copied().unwrap_or(0);
                let redundant = if self.single {
                    None
                } else {
                    spec.redundant_beside(&tried, seasonality, len)
                };
                let folds = if let Some(reason) = redundant {
                    Err(reason)
                } else if earliest < needed {
                    Err(ForecastError::NotEnoughHistory {
                        needed: needed + (len - earliest),
                        got: len,
                    }
                    .to_string())
                } else {
                    backtest::run_member(spec, &prepared, &origins, horizon)
                        .map_err(|error| error.to_string())
                };
                Candidate {
                    spec: spec.clone(),
                    folds,
                }
            })
            .collect();

        // Horizon buckets: members are gated and weighted per bucket of lead times, and the
        // intervals calibrated on the same buckets.
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
        let ends = conformal::bucket_ends(&observed, &self.conformal);
        let ranges: Vec<Range<usize>> = ends
            .iter()
            .scan(0, |from, end| {
                let range = *from..*end;
                *from = *end;
                Some(range)
            })
            .collect();
        // Model-scale MAE of each candidate per bucket, where it could be scored.
        let bucket_mae: Vec<Vec<Option<f64>>> = candidates
            .iter()
            .map(|candidate| {
                ranges
                    .iter()
                    .map(|range| {
                        let folds = candidate.folds.as_ref().ok()?;
                        let sliced: Vec<Vec<f64>> = folds
                            .forecasts
                            .iter()
                            .map(|f| f[range.clone()].to_vec())
                            .collect();
                        let shifted: Vec<usize> =
                            origins.iter().map(|origin| origin + range.start).collect();
                        backtest::score(&sliced, &prepared, &shifted, None)
                            .map(|scores| scores.model_scale_mae)
                    })
                    .collect()
            })
            .collect();
        let baseline_position = candidates
            .iter()
            .position(|c| c.spec.kind() == MemberKind::SeasonalNaive);
        // beats[candidate][bucket]: below the baseline's error in that bucket (or nothing to
        // compare: trust the member over the baseline).
        let beats: Vec<Vec<bool>> = bucket_mae
            .iter()
            .map(|maes| {
                maes.iter()
                    .enumerate()
                    .map(|(bucket, mae)| {
                        let baseline = baseline_position.and_then(|b| bucket_mae[b][bucket]);
                        match (mae, baseline) {
                            (Some(mae), Some(baseline)) => *mae < baseline,
                            _ => true,
                        }
                    })
                    .collect()
            })
            .collect();

        // Decide who may carry weight.
        let mut reports = Vec::with_capacity(candidates.len());
        let mut eligible: Vec<usize> = Vec::new();
        let mut baseline_index: Option<usize> = None;
        for (index, candidate) in candidates.iter().enumerate() {
            let kind = candidate.spec.kind();
            let configured = self.members.iter().any(|m| m.kind() == kind);
            let (status, scores) = match &candidate.folds {
                Err(reason) => (
                    MemberStatus::Skipped {
                        reason: reason.clone(),
                    },
                    None,
                ),
                Ok(folds) => {
                    let scores =
                        backtest::score(&folds.forecasts, &prepared, &origins, naive_scale);
                    let status = if self.single && !configured {
                        MemberStatus::Reference
                    } else if self.single {
                        eligible.push(index);
                        MemberStatus::ZeroWeight
                    } else if kind == MemberKind::SeasonalNaive {
                        // The baseline only forecasts where no member beats it.
                        baseline_index = Some(index);
                        MemberStatus::ZeroWeight
                    } else if beats[index].iter().any(|beats| *beats) {
                        eligible.push(index);
                        MemberStatus::ZeroWeight
                    } else {
                        MemberStatus::LostToBaseline
                    };
                    (status, scores)
                }
            };
            reports.push(MemberReport {
                kind,
                status,
                scores,
            });
        }
        // allowed[bucket][slot]: members that beat the baseline in the bucket. Where none does,
        // the baseline leads and every eligible member may join it: the inverse-error weights
        // favour the baseline, and the held-out choice of how many to blend below keeps it alone
        // when blending did not help on the backtest.
        let mut allowed: Vec<Vec<bool>> = (0..ranges.len())
            .map(|bucket| {
                eligible
                    .iter()
                    .map(|index| self.single || beats[*index][bucket])
                    .collect()
            })
            .collect();
        if let Some(baseline) = baseline_index
            && allowed.iter().any(|slots| !slots.contains(&true))
        {
            eligible.push(baseline);
            for slots in &mut allowed {
                let alone = !slots.contains(&true);
                if alone {
                    slots.iter_mut().for_each(|slot| *slot = true);
                }
                slots.push(alone);
            }
        }
        if eligible.is_empty() {
            // Only possible for a single member that could not be backtested: fit it anyway and
            // calibrate on in-sample differences.
            let index = candidates
                .iter()
                .position(|c| self.members[0].kind() == c.spec.kind())
                .unwrap_or(0);
            eligible.push(index);
            allowed = vec![vec![true]; ranges.len()];
        }

        let fold_matrix: Vec<&[Vec<f64>]> = eligible
            .iter()
            .map(|index| {
                candidates[*index]
                    .folds
                    .as_ref()
                    .map(|f| f.forecasts.as_slice())
                    .unwrap_or(&[])
            })
            .collect();
        let bucket_weights = |left_out: Option<usize>, top_ks: &[usize]| -> Vec<Vec<f64>> {
            ranges
                .iter()
                .zip(&allowed)
                .zip(top_ks)
                .map(|((range, allowed), top_k)| {
                    let admission = Admission {
                        allowed,
                        top_k: *top_k,
                    };
                    self.weights(
                        &fold_matrix,
                        &prepared,
                        &origins,
                        left_out,
                        range,
                        admission,
                    )
                })
                .collect()
        };

        // The combined forecast's backtest, each fold weighted without looking at itself, for
        // every number of members the inverse-error rule may keep. With no backtested member
        // there is none, and the calibration falls back to in-sample changes.
        let backtested = fold_matrix.iter().any(|folds| !folds.is_empty());
        let scored_folds = if backtested { origins.len() } else { 0 };
        let cross_validated = origins.len() >= 2;
        let tried_top_ks: Vec<usize> =
            if cross_validated && self.combination == Combination::InverseError {
                (1..=self.top_k).collect()
            } else {
                vec![self.top_k]
            };
        let held_out_by_top_k: Vec<Vec<Vec<f64>>> = tried_top_ks
            .iter()
            .map(|top_k| {
                let uniform = vec![*top_k; ranges.len()];
                (0..scored_folds)
                    .map(|fold| {
                        // With one fold there is nothing to hold out: it is weighted on itself.
                        let held_out = bucket_weights(cross_validated.then_some(fold), &uniform);
                        let forecasts: Vec<Option<&[f64]>> = fold_matrix
                            .iter()
                            .map(|folds| folds.get(fold).map(Vec::as_slice))
                            .collect();
                        combine(&forecasts, &held_out, &ends, horizon)
                    })
                    .collect()
            })
            .collect();
        // Per bucket, the number of members whose held-out blend erred least.
        let blend_errors = fold_errors(&held_out_by_top_k, &prepared, &origins, &ranges);
        let choose = |left_out: Option<usize>| {
            least_held_out_error(&blend_errors, self.recency_decay, left_out)
        };
        let chosen = choose(None);
        let top_ks: Vec<usize> = chosen.iter().map(|choice| tried_top_ks[*choice]).collect();
        let weights = bucket_weights(None, &top_ks);
        if tracing::enabled!(tracing::Level::DEBUG) {
            for ((range, bucket), top_k) in ranges.iter().zip(&weights).zip(&top_ks) {
                let members: Vec<String> = eligible
                    .iter()
                    .zip(bucket)
                    .filter(|(_, weight)| **weight > 0.0)
                    .map(|(index, weight)| {
                        format!("{}={weight:.2}", candidates[*index].spec.kind())
                    })
                    .collect();
                tracing::debug!(?range, top_k, weights = %members.join(" "), "bucket weights");
            }
        }
        // A fold's combined forecast, which the intervals are calibrated on, blends as many members
        // as the other folds chose: neither its weights nor its blend size saw it.
        let combined_folds: Vec<Vec<f64>> = (0..scored_folds)
            .map(|fold| {
                let chosen_without = if cross_validated {
                    choose(Some(fold))
                } else {
                    chosen.clone()
                };
                (0..horizon)
                    .map(|step| {
                        let choice = chosen_without[conformal::bucket_of(&ends, step)];
                        held_out_by_top_k[choice][fold][step]
                    })
                    .collect()
            })
            .collect();
        let combined_scores = backtest::score(&combined_folds, &prepared, &origins, naive_scale);
        let fold_scores: Vec<Option<backtest::Scores>> = (0..combined_folds.len())
            .map(|fold| {
                backtest::score(
                    &combined_folds[fold..=fold],
                    &prepared,
                    &origins[fold..=fold],
                    naive_scale,
                )
            })
            .collect();
        let residuals = backtest::residuals_by_fold(&combined_folds, &prepared, &origins);
        let fallback: Vec<f64> = prepared.values.windows(2).map(|w| w[1] - w[0]).collect();
        let calibration =
            Calibration::new(&residuals, &self.conformal, self.recency_decay, &fallback);
        if tracing::enabled!(tracing::Level::DEBUG) {
            calibration.log_summary(prepared.scaler.transform);
        }

        // Final refit on the whole history of every member that carries weight in some bucket.
        let full_input = FitInput {
            values: &prepared.values,
            actual: &prepared.actual,
            start: prepared.start,
            step: prepared.step,
            seasonality,
            horizon,
        };
        let mut parts: Vec<Part> = Vec::new();
        let mut final_errors: Vec<(usize, ForecastError)> = Vec::new();
        for (slot, index) in eligible.iter().enumerate() {
            let slot_weights: Vec<f64> = weights.iter().map(|bucket| bucket[slot]).collect();
            if slot_weights.iter().all(|weight| *weight <= 0.0) {
                continue;
            }
            let spec = &candidates[*index].spec;
            match spec.fit_window(&full_input) {
                Ok(fitted) => parts.push(Part {
                    kind: spec.kind(),
                    weights: slot_weights,
                    member: fitted.state(),
                }),
                Err(error) => final_errors.push((*index, error)),
            }
        }
        if parts.is_empty() {
            return Err(final_errors.into_iter().next().map_or(
                ForecastError::NotEnoughHistory {
                    needed: preprocess::MIN_OBSERVED,
                    got: len,
                },
                |(_, error)| error,
            ));
        }
        // Renormalise each bucket over the members that could be refitted; a bucket whose members
        // all failed falls back to an equal share of the others.
        for bucket in 0..ends.len() {
            let total: f64 = parts.iter().map(|part| part.weights[bucket]).sum();
            let count = parts.len() as f64;
            for part in &mut parts {
                part.weights[bucket] = if total > 0.0 {
                    part.weights[bucket] / total
                } else {
                    1.0 / count
                };
            }
        }
        for (index, error) in final_errors {
            reports[index].status = MemberStatus::Skipped {
                reason: error.to_string(),
            };
        }
        for report in &mut reports {
            if let Some(part) = parts.iter().find(|part| part.kind == report.kind) {
                report.status = MemberStatus::Used {
                    weight: part.mean_weight(&ends),
                };
            }
        }

        let learned = Learned {
            trained_end: prepared.end(),
            step: prepared.step,
            scaler: prepared.scaler,
            parts,
            ends,
            calibration,
            report: BacktestReport {
                horizon,
                origins,
                members: reports,
                combined: combined_scores,
                combined_folds: fold_scores,
            },
            summary: PreprocessSummary::from(&prepared),
            cleaning: self.preprocess.cleaning(),
        };
        let needed = learned.recent_needed().min(len);
        Ok(FittedModel {
            recent: prepared.values[len - needed..].to_vec(),
            recent_start: prepared.time_at(len - needed),
            end: prepared.end(),
            learned: Arc::new(learned),
        })
    }
}

/// Which eligible members may carry weight in one bucket of lead times, and how many at most.
#[derive(Debug, Clone, Copy)]
struct Admission<'a> {
    /// Per eligible member: whether it beat the baseline in the bucket (or may join the baseline
    /// where none did).
    allowed: &'a [bool],
    /// Most members the inverse-error rule keeps.
    top_k: usize,
}

impl ModelParams {
    /// Combination weights for the eligible members, fitted on the horizon `steps` of every fold
    /// except `left_out`; members the `admission` does not allow get none.
    fn weights(
        &self,
        fold_matrix: &[&[Vec<f64>]],
        prepared: &Prepared,
        origins: &[usize],
        left_out: Option<usize>,
        steps: &Range<usize>,
        admission: Admission<'_>,
    ) -> Vec<f64> {
        let Admission { allowed, top_k } = admission;
        let active: Vec<usize> = (0..fold_matrix.len()).filter(|m| allowed[*m]).collect();
        let scatter = |raw: Vec<f64>| -> Vec<f64> {
            let mut full = vec![0.0; fold_matrix.len()];
            for (member, weight) in active.iter().zip(raw) {
                full[*member] = weight;
            }
            full
        };
        if active.len() <= 1 {
            return scatter(vec![1.0]);
        }
        // Rows: every observed (fold, step) pair, scaled by the square root of its fold's recency
        // weight so that squared errors are weighted; columns: members.
        let mut columns: Vec<Vec<f64>> = vec![Vec::new(); active.len()];
        let mut targets = Vec::new();
        for (fold, origin) in origins.iter().enumerate() {
            if Some(fold) == left_out {
                continue;
            }
            // Origins are latest first, so fold 0 is the most recent.
            let row_scale = self.recency_decay.powi(fold as i32).sqrt();
            let rows: Vec<&[f64]> = active
                .iter()
                .map(|m| fold_matrix[*m].get(fold).map_or(&[][..], Vec::as_slice))
                .collect();
            let available = rows.iter().map(|row| row.len()).min().unwrap_or(0);
            for step in steps.start..steps.end.min(available) {
                let Some(actual) = prepared.actual.get(origin + step).filter(|a| !a.is_nan())
                else {
                    continue;
                };
                targets.push(actual * row_scale);
                for (column, row) in columns.iter_mut().zip(&rows) {
                    column.push(row[step] * row_scale);
                }
            }
        }
        if targets.is_empty() {
            return scatter(vec![1.0 / active.len() as f64; active.len()]);
        }
        let raw = match self.combination {
            Combination::Stacking => simplex_least_squares(&columns, &targets),
            Combination::InverseError => {
                let errors: Vec<f64> = columns
                    .iter()
                    .map(|column| metrics::mae(&targets, column).map_or(f64::INFINITY, |e| e * e))
                    .collect();
                let mut ranked: Vec<f64> = errors.clone();
                ranked.sort_by(f64::total_cmp);
                let cutoff = ranked[(top_k - 1).min(ranked.len() - 1)];
                errors
                    .iter()
                    .map(|mse| match *mse {
                        mse if mse > cutoff || !mse.is_finite() => 0.0,
                        mse if mse > 0.0 => 1.0 / mse,
                        _ => 1e12,
                    })
                    .collect()
            }
        };
        scatter(prune(raw, self.min_weight))
    }
}

/// For each bucket of lead times, the index of the candidate to use: the largest blend whose
/// held-out combined fold forecasts erred no more than one standard error above the candidate that
/// erred least there, over every fold but `left_out`, each fold weighted `recency_decay^k` for the
/// k-th newest. Candidates are ordered by blend size, so a later one blends more members; `errors`
/// comes from [`fold_errors`]. This is how the backtest decides between one clear winner and a
/// blend: selection must win by more than the folds' own spread, otherwise the blend, whose
/// errors vary less from one day to the next, is kept (the one-standard-error rule of Breiman,
/// Friedman, Olshen & Stone, "Classification and Regression Trees", 1984, §3.4.3, with the more
/// robust candidate in the role of the simpler one).
fn least_held_out_error(
    errors: &[Vec<Vec<f64>>],
    recency_decay: f64,
    left_out: Option<usize>,
) -> Vec<usize> {
    let buckets = errors.first().map_or(0, Vec::len);
    // Every candidate and bucket holds one error per fold.
    let fold_count = errors
        .first()
        .and_then(|first| first.first())
        .map_or(0, Vec::len);
    let folds: Vec<(usize, f64)> = (0..fold_count)
        .filter(|fold| Some(*fold) != left_out)
        .map(|fold| (fold, conformal::fold_weight(recency_decay, fold)))
        .collect();
    (0..buckets)
        .map(|bucket| {
            let weighted = |index: usize| -> f64 {
                folds
                    .iter()
                    .map(|(fold, weight)| weight * errors[index][bucket][*fold])
                    .sum()
            };
            let mut best = (f64::INFINITY, errors.len().saturating_sub(1));
            for index in (0..errors.len()).rev() {
                let error = weighted(index);
                if error < best.0 * (1.0 - 1e-9) {
                    best = (error, index);
                }
            }
            (best.1 + 1..errors.len())
                .rev()
                .find(|index| {
                    let differences: Vec<(f64, f64)> = folds
                        .iter()
                        .map(|(fold, weight)| {
                            let difference =
                                errors[*index][bucket][*fold] - errors[best.1][bucket][*fold];
                            (difference, *weight)
                        })
                        .collect();
                    let (mean, standard_error) = stats::weighted_mean_and_error(&differences);
                    mean <= standard_error
                })
                .unwrap_or(best.1)
        })
        .collect()
}

/// `errors[candidate][bucket][fold]`: the absolute model-scale error of each candidate's combined
/// fold forecasts over the lead steps of each of `ranges`, summed over the fold's observed points
/// (folds start at `origins`, latest first). Computed once, then weighted and summed for every
/// fold left out by [`least_held_out_error`].
fn fold_errors(
    candidates: &[Vec<Vec<f64>>],
    prepared: &Prepared,
    origins: &[usize],
    ranges: &[Range<usize>],
) -> Vec<Vec<Vec<f64>>> {
    candidates
        .iter()
        .map(|combined| {
            ranges
                .iter()
                .map(|steps| {
                    combined
                        .iter()
                        .zip(origins)
                        .map(|(forecast, origin)| {
                            steps
                                .clone()
                                .filter_map(|step| {
                                    let actual = prepared.actual.get(origin + step)?;
                                    let error = (actual - forecast.get(step)?).abs();
                                    error.is_finite().then_some(error)
                                })
                                .sum()
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// Drops weights below `min_weight` and renormalises to sum to one.
fn prune(weights: Vec<f64>, min_weight: f64) -> Vec<f64> {
    let total: f64 = weights.iter().filter(|w| w.is_finite()).sum();
    if total <= 0.0 {
        return vec![1.0 / weights.len() as f64; weights.len()];
    }
    let normalised: Vec<f64> = weights.iter().map(|w| w.max(0.0) / total).collect();
    let largest = normalised.iter().copied().fold(0.0, f64::max);
    let kept: Vec<f64> = normalised
        .iter()
        .map(|w| {
            if *w >= min_weight || *w == largest {
                *w
            } else {
                0.0
            }
        })
        .collect();
    let kept_total: f64 = kept.iter().sum();
    kept.iter().map(|w| w / kept_total).collect()
}

/// Minimises `|sum_j w_j columns[j] - targets|^2` over the probability simplex by projected
/// gradient descent (simplex projection: Duchi et al., "Efficient projections onto the l1-ball",
/// ICML 2008). Works on the Gram matrix, so cost is independent of the number of rows.
fn simplex_least_squares(columns: &[Vec<f64>], targets: &[f64]) -> Vec<f64> {
    let members = columns.len();
    let rows = targets.len() as f64;
    let mut gram = vec![vec![0.0; members]; members];
    let mut cross = vec![0.0; members];
    for left in 0..members {
        for right in left..members {
            let value: f64 = columns[left]
                .iter()
                .zip(&columns[right])
                .map(|(a, b)| a * b)
                .sum::<f64>()
                / rows;
            gram[left][right] = value;
            gram[right][left] = value;
        }
        cross[left] = columns[left]
            .iter()
            .zip(targets)
            .map(|(a, b)| a * b)
            .sum::<f64>()
            / rows;
    }
    // Step 1/L with L bounded by the trace (the Gram matrix is positive semi-definite).
    let trace: f64 = (0..members).map(|i| gram[i][i]).sum();
    if !(trace > 0.0 && trace.is_finite()) {
        return vec![1.0 / members as f64; members];
    }
    let step = 1.0 / trace;
    let mut weights = vec![1.0 / members as f64; members];
    for _ in 0..2000 {
        let gradient: Vec<f64> = (0..members)
            .map(|i| (0..members).map(|j| gram[i][j] * weights[j]).sum::<f64>() - cross[i])
            .collect();
        let moved: Vec<f64> = weights
            .iter()
            .zip(&gradient)
            .map(|(w, g)| w - step * g)
            .collect();
        let projected = project_to_simplex(&moved);
        let change: f64 = projected
            .iter()
            .zip(&weights)
            .map(|(a, b)| (a - b).abs())
            .sum();
        weights = projected;
        if change < 1e-10 {
            break;
        }
    }
    weights
}

fn project_to_simplex(point: &[f64]) -> Vec<f64> {
    let mut sorted = point.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut cumulative = 0.0;
    let mut threshold = 0.0;
    for (index, value) in sorted.iter().enumerate() {
        cumulative += value;
        let candidate = (cumulative - 1.0) / (index + 1) as f64;
        if value - candidate > 0.0 {
            threshold = candidate;
        }
    }
    point.iter().map(|v| (v - threshold).max(0.0)).collect()
}

/// Weighted sum of member forecasts over `horizon` steps, with the weights of the bucket (see
/// [`conformal::bucket_ends`]) each step falls in; `weights[bucket][member]`. A forecast shorter
/// than the horizon is padded with its last value; a missing one contributes nothing.
fn combine(
    forecasts: &[Option<&[f64]>],
    weights: &[Vec<f64>],
    ends: &[usize],
    horizon: usize,
) -> Vec<f64> {
    (0..horizon)
        .map(|step| {
            let bucket = &weights[conformal::bucket_of(ends, step)];
            forecasts
                .iter()
                .zip(bucket)
                .filter_map(|(forecast, weight)| {
                    let forecast = (*forecast)?;
                    let value = forecast.get(step).or(forecast.last())?;
                    Some(weight * value)
                })
                .sum()
        })
        .collect()
}

/// A member of the fitted combination.
#[derive(Debug, Serialize, Deserialize)]
struct Part {
    /// Which member.
    kind: MemberKind,
    /// Its weight in each horizon bucket (each bucket's weights sum to one over the parts).
    weights: Vec<f64>,
    /// What the member learned on the whole history.
    member: MemberState,
}
impl Part {
    /// Weight averaged over the steps of the calibrated horizon (buckets end at `ends`).
    fn mean_weight(&self, ends: &[usize]) -> f64 {
        let horizon = ends.last().copied().unwrap_or(1).max(1) as f64;
        let mut from = 0;
        let mut total = 0.0;
        for (weight, end) in self.weights.iter().zip(ends) {
            total += weight * (end - from) as f64;
            from = *end;
        }
        total / horizon
    }
}

/// The in-sample seasonal naive MAE (in the series' units) that MASE divides by.
fn naive_scale(prepared: &Prepared) -> Option<f64> {
    let history = prepared.scaler.inverse_observed(&prepared.actual);
    let period = prepared.seasonality.primary().unwrap_or(1);
    metrics::seasonal_naive_scale(&history, period)
}

/// What a fit learned, shared by every re-anchored copy of the model.
#[derive(Debug, Serialize, Deserialize)]
struct Learned {
    /// Time just after the last value fitted.
    trained_end: Timestamp,
    /// Spacing of the series and of its forecasts.
    step: Step,
    /// Mapping from the model scale back to the series' units.
    scaler: Scaler,
    /// Members with their weights per horizon bucket and learned state.
    parts: Vec<Part>,
    /// First step after each horizon bucket the weights change at.
    ends: Vec<usize>,
    /// Interval offsets from the combined forecast's backtest residuals.
    calibration: Calibration,
    /// Backtest figures, per member and combined.
    report: BacktestReport,
    /// What preprocessing did.
    summary: PreprocessSummary,
    /// How newer data is cleaned before a re-anchored forecast.
    cleaning: Cleaning,
}

impl Learned {
    /// Newest points every member's forecast reads.
    fn recent_needed(&self) -> usize {
        self.parts
            .iter()
            .map(|part| part.member.recent_needed())
            .max()
            .unwrap_or(1)
    }

    /// Checks what a decoder cannot: the parts agree with the buckets.
    fn check(&self) -> Result<(), String> {
        if self.parts.is_empty() || self.ends.is_empty() {
            return Err("a model holds at least one member and one horizon bucket".to_owned());
        }
        if self
            .parts
            .iter()
            .any(|part| part.weights.len() != self.ends.len())
        {
            return Err("every member holds one weight per horizon bucket".to_owned());
        }
        Ok(())
    }
}

/// A fitted model: immutable, forecasts from the end of the series it was fitted on or, once
/// [re-anchored](FittedModel::reanchor), from the end of newer data without refitting.
///
/// It serialises (with serde, in any format) to everything needed to forecast later: each
/// member's learned state, the ensemble weights, the calibration, the scaler, the backtest
/// report, and the newest preprocessed points.
#[derive(Debug, Clone)]
pub struct FittedModel {
    /// What the fit learned.
    learned: Arc<Learned>,
    /// Newest gap-free values on the model scale: what members forecast from.
    recent: Vec<f64>,
    /// Time of `recent[0]`.
    recent_start: Timestamp,
    /// Time just after the last of `recent`: where forecasts start.
    end: Timestamp,
}

impl FittedModel {
    /// Backtest figures: per-member scores and status (used, dropped, skipped and why).
    pub fn report(&self) -> &BacktestReport {
        &self.learned.report
    }

    /// What preprocessing found and did (transform, outliers, imputed points, seasonality).
    pub fn preprocessing(&self) -> &PreprocessSummary {
        &self.learned.summary
    }

    /// Members in the combined forecast with their weights, averaged over the calibrated
    /// horizon (weights are found per bucket of lead times).
    pub fn weights(&self) -> Vec<(MemberKind, f64)> {
        self.learned
            .parts
            .iter()
            .map(|part| (part.kind, part.mean_weight(&self.learned.ends)))
            .collect()
    }

    /// Time of the first forecast step.
    pub fn forecast_start(&self) -> Timestamp {
        self.end
    }

    /// Time just after the last value the model was fitted on.
    pub fn trained_end(&self) -> Timestamp {
        self.learned.trained_end
    }

    /// Time of the first value the model was fitted on (after preprocessing trimmed the start).
    pub fn trained_start(&self) -> Timestamp {
        let points = i64::try_from(self.learned.summary.points).unwrap_or(i64::MAX);
        self.learned
            .trained_end
            .saturating_add_millis(-points.saturating_mul(self.learned.step.as_millis()))
    }

    /// Spacing of the series.
    pub fn step(&self) -> Step {
        self.learned.step
    }

    /// The same model forecasting from the end of `series` — newer data than it was fitted on,
    /// on the same grid — without refitting: the new points are cleaned and scaled as the
    /// training data was, and every member re-anchored on them (see `members::state`).
    ///
    /// Fails when `series` is on another step or grid, ends before the training data did, or
    /// holds too few points for the members' lags.
    pub fn reanchor(&self, series: &TimeSeries) -> Result<FittedModel, ForecastError> {
        let step = self.learned.step;
        let refuse = |reason: String| ForecastError::CannotReanchor { reason };
        if series.step() != step {
            return Err(refuse(format!(
                "the series is on a step of {}, the model on {step}",
                series.step()
            )));
        }
        let since = series.end().as_millis() - self.learned.trained_end.as_millis();
        if since < 0 {
            return Err(refuse(format!(
                "the series ends at {}, before the training data did ({})",
                series.end(),
                self.learned.trained_end
            )));
        }
        if since % step.as_millis() != 0 {
            return Err(refuse(
                "the series is not on the grid the model was fitted on".to_owned(),
            ));
        }
        let needed = self.learned.recent_needed();
        let (recent_start, recent) = preprocess::prepare_recent(
            series,
            needed,
            &self.learned.scaler,
            self.learned.cleaning,
        )?;
        Ok(FittedModel {
            learned: Arc::clone(&self.learned),
            recent,
            recent_start,
            end: series.end(),
        })
    }

    /// Steps from the end of the training data to where forecasts start.
    fn elapsed(&self) -> usize {
        let millis = self.end.as_millis() - self.learned.trained_end.as_millis();
        usize::try_from(millis / self.learned.step.as_millis()).unwrap_or(0)
    }
}

/// The serialised form of a [`FittedModel`], borrowed for writing.
#[derive(Serialize)]
struct StoredRef<'a> {
    learned: &'a Learned,
    recent: &'a [f64],
    recent_start: Timestamp,
}

/// The serialised form of a [`FittedModel`], owned for reading.
#[derive(Deserialize)]
struct StoredOwned {
    learned: Learned,
    recent: Vec<f64>,
    recent_start: Timestamp,
}

impl Serialize for FittedModel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredRef {
            learned: &self.learned,
            recent: &self.recent,
            recent_start: self.recent_start,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FittedModel {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredOwned::deserialize(deserializer)?;
        stored.learned.check().map_err(serde::de::Error::custom)?;
        if stored.recent.is_empty() {
            return Err(serde::de::Error::custom("a model holds its newest points"));
        }
        let points = i64::try_from(stored.recent.len()).unwrap_or(i64::MAX);
        let end = stored
            .recent_start
            .saturating_add_millis(points.saturating_mul(stored.learned.step.as_millis()));
        Ok(FittedModel {
            learned: Arc::new(stored.learned),
            recent: stored.recent,
            recent_start: stored.recent_start,
            end,
        })
    }
}

impl Predict for FittedModel {
    fn predict(&self, horizon: Horizon, levels: &[Level]) -> Result<Forecast, ForecastError> {
        let learned = &*self.learned;
        let steps = horizon.steps();
        let anchor = Anchor {
            values: &self.recent,
            start: self.recent_start,
            step: learned.step,
            elapsed: self.elapsed(),
        };
        let forecasts: Vec<Vec<f64>> = learned
            .parts
            .iter()
            .map(|part| part.member.forecast_from(&anchor, steps))
            .collect();
        let slices: Vec<Option<&[f64]>> = forecasts.iter().map(|f| Some(f.as_slice())).collect();
        let weights: Vec<Vec<f64>> = (0..learned.ends.len())
            .map(|bucket| {
                learned
                    .parts
                    .iter()
                    .map(|part| part.weights[bucket])
                    .collect()
            })
            .collect();
        let model_point = members::sanitize(combine(&slices, &weights, &learned.ends, steps));
        let scaler = &learned.scaler;
        let point: Vec<f64> = model_point.iter().map(|v| scaler.inverse(*v)).collect();
        let inflations = learned.calibration.inflations(levels);
        let intervals = levels
            .iter()
            .zip(inflations)
            .map(|(level, inflation)| {
                let band = learned
                    .calibration
                    .band(model_point.len(), *level, inflation);
                let (lower, upper): (Vec<f64>, Vec<f64>) = model_point
                    .iter()
                    .zip(band)
                    .map(|(value, (low, high))| {
                        (scaler.inverse(value + low), scaler.inverse(value + high))
                    })
                    .unzip();
                Interval {
                    level: *level,
                    lower,
                    upper,
                }
            })
            .collect();
        Ok(Forecast::new(self.end, learned.step, point, intervals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simplex_stacking_finds_the_mixture() {
        let first: Vec<f64> = (0..200).map(|t| (t as f64 * 0.1).sin()).collect();
        let second: Vec<f64> = (0..200).map(|t| (t as f64 * 0.37).cos()).collect();
        let targets: Vec<f64> = first
            .iter()
            .zip(&second)
            .map(|(a, b)| 0.3 * a + 0.7 * b)
            .collect();
        let weights = simplex_least_squares(&[first, second], &targets);
        assert!((weights[0] - 0.3).abs() < 1e-3 && (weights[1] - 0.7).abs() < 1e-3);
        assert_eq!(project_to_simplex(&[2.0, 0.0]), vec![1.0, 0.0]);
        assert_eq!(prune(vec![0.99, 0.01], 0.02), vec![1.0, 0.0]);
    }

    #[test]
    fn each_bucket_combines_with_its_own_weights() {
        let first = [1.0, 1.0, 1.0, 1.0];
        let second = [3.0, 3.0];
        let forecasts = [Some(first.as_slice()), Some(second.as_slice()), None];
        let weights = vec![vec![1.0, 0.0, 0.5], vec![0.25, 0.75, 0.0]];
        // The second forecast is padded with its last value; the missing one adds nothing.
        assert_eq!(
            combine(&forecasts, &weights, &[2, 4], 4),
            vec![1.0, 1.0, 2.5, 2.5]
        );
    }

    /// A prepared 960-point series (untransformed) and four one-horizon (48-step) fold origins.
    fn four_fold_backtest() -> (Prepared, [usize; 4]) {
        use crate::forecast::{PreprocessParams, TransformChoice};

        let values: Vec<f64> = (0..960).map(|t| ((t * 37) % 101) as f64).collect();
        let series = TimeSeries::new(Timestamp::from_millis(0), Step::FIVE_MINUTES, values);
        let prepared = preprocess::prepare(
            &series,
            &PreprocessParams::default().transform(TransformChoice::Identity),
        )
        .unwrap();
        (prepared, [912, 864, 816, 768])
    }

    #[test]
    fn weights_follow_the_member_that_errs_least_at_each_lead_time() {
        let (prepared, origins) = four_fold_backtest();
        // `early` is close at leads 0..24 and far after; `late` the other way round.
        let member = |early_error: f64, late_error: f64| -> Vec<Vec<f64>> {
            origins
                .iter()
                .map(|origin| {
                    (0..48)
                        .map(|step| {
                            let error = if step < 24 { early_error } else { late_error };
                            let sign = if step % 2 == 0 { 1.0 } else { -1.0 };
                            prepared.actual[origin + step] + sign * error
                        })
                        .collect()
                })
                .collect()
        };
        let early = member(0.01, 1.0);
        let late = member(1.0, 0.01);
        let fold_matrix = [early.as_slice(), late.as_slice()];
        let params = ModelParams::ensemble();
        let both = Admission {
            allowed: &[true, true],
            top_k: 2,
        };
        let short = params.weights(&fold_matrix, &prepared, &origins, None, &(0..24), both);
        let long = params.weights(&fold_matrix, &prepared, &origins, Some(0), &(24..48), both);
        assert!(short[0] > 0.99 && long[1] > 0.99, "{short:?} {long:?}");
        // A member not allowed in a bucket (it lost to the baseline there) gets nothing.
        let only_late = params.weights(
            &fold_matrix,
            &prepared,
            &origins,
            None,
            &(0..24),
            Admission {
                allowed: &[false, true],
                top_k: 2,
            },
        );
        assert_eq!(only_late, vec![0.0, 1.0]);
    }

    #[test]
    fn the_held_out_choice_keeps_the_blend_unless_selection_wins_by_more_than_its_noise() {
        let (prepared, origins) = four_fold_backtest();
        // Forecasts off by `error(fold, step)` from what happened.
        let candidate = |error: &dyn Fn(usize, usize) -> f64| -> Vec<Vec<f64>> {
            origins
                .iter()
                .enumerate()
                .map(|(fold, origin)| {
                    (0..48)
                        .map(|step| prepared.actual[origin + step] + error(fold, step))
                        .collect()
                })
                .collect()
        };
        let ranges = [0..24, 24..48];
        // Each candidate is exact in one bucket of lead times.
        let early = candidate(&|_, step| if step < 24 { 0.0 } else { 1.0 });
        let late = candidate(&|_, step| if step < 24 { 1.0 } else { 0.0 });
        let both = [early.clone(), late.clone()];
        assert_eq!(
            least_held_out_error(&fold_errors(&both, &prepared, &origins, &ranges), 1.0, None),
            vec![0, 1]
        );
        // A tie goes to the later candidate (the larger blend).
        let same = [early.clone(), early];
        assert_eq!(
            least_held_out_error(&fold_errors(&same, &prepared, &origins, &ranges), 1.0, None),
            vec![1, 1]
        );
        // `recent` is exact on the newest fold only; `older` on the three before it. Without
        // decay three folds outweigh one.
        let recent = candidate(&|fold, _| if fold == 0 { 0.0 } else { 1.0 });
        let older = candidate(&|fold, _| if fold == 0 { 1.0 } else { 0.0 });
        let pair = fold_errors(
            &[recent.clone(), older.clone()],
            &prepared,
            &origins,
            &ranges,
        );
        assert_eq!(least_held_out_error(&pair, 1.0, None), vec![1, 1]);
        // Halving each older fold's weight, `recent` errs least; but its edge comes from one fold
        // and reverses on the others, within a standard error, so the larger blend is kept.
        assert_eq!(least_held_out_error(&pair, 0.5, None), vec![1, 1]);
        // In the other order, the decay decides which of the two errs least.
        let swapped = fold_errors(&[older, recent], &prepared, &origins, &ranges);
        assert_eq!(least_held_out_error(&swapped, 0.5, None), vec![1, 1]);
        // Left out, the newest fold has no say: `older` is exact on every fold left.
        assert_eq!(least_held_out_error(&swapped, 0.5, Some(0)), vec![0, 0]);
        // A smaller blend that errs less on every fold, by a steady margin, is chosen.
        let steady = candidate(&|fold, _| 0.2 + 0.01 * fold as f64);
        let worse = candidate(&|fold, _| 0.5 + 0.02 * fold as f64);
        let clear = fold_errors(&[steady, worse], &prepared, &origins, &ranges);
        assert_eq!(least_held_out_error(&clear, 0.9, None), vec![0, 0]);
    }
}
