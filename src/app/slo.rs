//! Planning for a service-level objective: the rule a workload's SLO picks from the backtest
//! forecasts its model stores, and the replay of `prescale simulate` under that rule beside the
//! cost/shortfall curve over levels and the HPA that spends the same replica-hours.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::domain::{Forecast, Horizon, Level, TimeSeries};
use crate::events::{BaseForecaster, EventCalendar};
use crate::forecast::{Fit, FittedModel, ForecastError, LevelShift, Predict};
use crate::plan::{PlanningRule, Workload};
use crate::simulate::{
    ReplayFold, RuleChoice, RuleChooser, Score, Simulation, SimulationParams, SimulationReport,
    Strategy, candidate_levels, candidate_rules,
};

use super::planning::plan_levels;
use super::{AppError, ModelChoice, unfitted_level_shift};

/// Lowest and highest HPA target utilisation the equal-cost search tries, as fractions.
const HPA_TARGET_RANGE: (f64, f64) = (0.01, 1.0);
/// Bisection rounds of the equal-cost search: the target is found to within 0.99 / 2^14.
const HPA_SEARCH_ROUNDS: usize = 14;

/// The levels a forecast must carry for `workload` to be planned under its SLO: every candidate
/// and those of [`plan_levels`].
pub(super) fn rule_levels(workload: &Workload) -> Vec<Level> {
    let mut levels = plan_levels(workload);
    if workload.slo().is_some() {
        levels.extend(candidate_levels());
        levels.sort_by(|left, right| left.fraction().total_cmp(&right.fraction()));
        levels.dedup();
    }
    levels
}

/// The backtest folds of `model` with the demand `history` observed over them: each fold's
/// out-of-sample forecast at every level of `levels`, and the last load before its origin.
pub fn replay_folds(
    model: &FittedModel,
    history: &TimeSeries,
    levels: &[Level],
) -> Vec<ReplayFold> {
    model
        .backtest_forecasts(levels)
        .into_iter()
        .map(|forecast| {
            let step = history.step().as_millis();
            let offset =
                (forecast.start().as_millis() - history.start().as_millis()).div_euclid(step);
            let value_at = |index: i64| -> f64 {
                usize::try_from(index)
                    .ok()
                    .and_then(|index| history.values().get(index).copied())
                    .unwrap_or(f64::NAN)
            };
            let demand = (0..forecast.len() as i64)
                .map(|index| value_at(offset + index))
                .collect();
            let latest = (0..offset)
                .rev()
                .map(value_at)
                .find(|value| value.is_finite());
            ReplayFold {
                forecast,
                demand,
                latest,
            }
        })
        .collect()
}

/// The planning rule `workload`'s SLO picks from `model`'s backtest over `history` (the window the
/// model was fitted on, or newer): `None` without an SLO, or when the model stores no fold with
/// observed demand (a model stored before folds were kept). Blocking, milliseconds: no fit.
pub fn choose_rule(
    model: &FittedModel,
    history: &TimeSeries,
    workload: &Workload,
) -> Option<RuleChoice> {
    let slo = workload.slo()?;
    let folds = replay_folds(model, history, &rule_levels(workload));
    Simulation::executor_defaults(history.step()).choose_rule(workload, slo, &folds)
}

/// The HPA alone at the target utilisation that spends the replica-hours it is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaMatch {
    /// Target utilisation, as a fraction.
    pub target_utilisation: f64,
    /// How that HPA did.
    pub score: Score,
}

/// One point of the cost/shortfall curve: the predictive strategy planning on one rule at every
/// replan, and the HPA at the same cost.
#[derive(Debug, Clone, PartialEq)]
pub struct RulePoint {
    /// The rule planned on.
    pub rule: PlanningRule,
    /// How the predictive strategy did.
    pub predictive: Score,
    /// The HPA spending the same replica-hours.
    pub hpa: HpaMatch,
}

/// `prescale simulate`'s replay: the run as the service would plan (under the workload's SLO when
/// it has one), the rule chosen at each replan, the curve over levels and the HPA at equal cost.
#[derive(Debug)]
pub struct SloReplay {
    /// The replay as the service plans.
    pub report: SimulationReport,
    /// The rule chosen at each replan (empty without an SLO).
    pub choices: Vec<RuleChoice>,
    /// The HPA spending the replay's predictive replica-hours.
    pub hpa_equal_cost: HpaMatch,
    /// One replay per candidate rule.
    pub curve: Vec<RulePoint>,
}

/// How a replay's forecasts are made at each replan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayFits {
    /// A fresh fit at every replan.
    #[default]
    EveryReplan,
    /// As the service serves between retrains: a model fitted as the service fits its live models
    /// ([`ModelChoice::served_params`]) at most this long before the replan (a retrain),
    /// re-anchored on the newest history without refitting, its SLO rule chosen once when it was
    /// fitted; a replan this long after the last retrain retrains. In between, a model that cannot
    /// be re-anchored, or that a level shift since its fit left on the old level, is refitted.
    RetrainEvery(Duration),
}

impl fmt::Display for ReplayFits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EveryReplan => f.write_str("fitted at every replan"),
            Self::RetrainEvery(every) => write!(
                f,
                "retrained every {}, re-anchored on the newest history between retrains",
                humantime::format_duration(*every)
            ),
        }
    }
}

/// Replays the last `days` of `history` for `workload` (replanning every `simulation`'s interval
/// from the newest history window before it, beside the HPA and the oracle), choosing the
/// planning rule at each replan from the model `fits` gives there when the workload has an SLO,
/// then replays every candidate rule from the same forecasts and searches the HPA target
/// utilisation that costs the same as each. Fits at most once per replan; everything after reuses
/// those forecasts.
pub fn replay_with_slo(
    history: &TimeSeries,
    workload: &Workload,
    simulation: SimulationParams,
    choice: ModelChoice,
    fits: ReplayFits,
) -> Result<SloReplay, AppError> {
    let simulation = simulation.check(history.step())?;
    let models = ReplayModels::new(choice, fits, workload);
    let as_planned = models.as_planned();
    let every_candidate = ModelView {
        models: &models,
        every_candidate: true,
    };
    let report = simulation.run_choosing(history, workload, &as_planned, &as_planned)?;
    let choices = models.chosen.take();
    let cost = report.run(Strategy::Predictive).score.replica_hours;
    let oracle_hours = report.run(Strategy::Oracle).score.replica_hours;
    let hpa_equal_cost = hpa_at_cost(
        &simulation,
        history,
        workload,
        &as_planned,
        cost,
        oracle_hours,
    )?;
    let curve = candidate_rules()
        .into_iter()
        .map(|rule| {
            let planned = workload.with_planning_rule(rule);
            let predictive = simulation
                .run(history, &planned, &every_candidate)?
                .run(Strategy::Predictive)
                .score;
            let hpa = hpa_at_cost(
                &simulation,
                history,
                workload,
                &every_candidate,
                predictive.replica_hours,
                oracle_hours,
            )?;
            Ok(RulePoint {
                rule,
                predictive,
                hpa,
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    Ok(SloReplay {
        report,
        choices,
        hpa_equal_cost,
        curve,
    })
}

/// The HPA alone at the target utilisation whose replica-hours come closest to `replica_hours`,
/// by bisection (an HPA's cost falls as its target rises). The forecasts are the cached ones, so
/// the predictive and oracle strategies the replay also runs cost no fit.
fn hpa_at_cost(
    simulation: &Simulation,
    history: &TimeSeries,
    workload: &Workload,
    models: &ModelView<'_>,
    replica_hours: f64,
    oracle_hours: f64,
) -> Result<HpaMatch, AppError> {
    let hpa_at = |target: f64| -> Result<HpaMatch, AppError> {
        // That run's oracle sizes for the probe's target; the comparison is with the workload's.
        let score = simulation
            .run(history, &workload.with_target_utilisation(target), models)?
            .run(Strategy::Hpa)
            .score
            .against_oracle(oracle_hours);
        Ok(HpaMatch {
            target_utilisation: target,
            score,
        })
    };
    let (mut low, mut high) = HPA_TARGET_RANGE;
    let mut best = hpa_at(high)?;
    if best.score.replica_hours >= replica_hours {
        return Ok(best);
    }
    for _ in 0..HPA_SEARCH_ROUNDS {
        let middle = 0.5 * (low + high);
        let probe = hpa_at(middle)?;
        if (probe.score.replica_hours - replica_hours).abs()
            < (best.score.replica_hours - replica_hours).abs()
        {
            best = probe;
        }
        if probe.score.replica_hours > replica_hours {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(best)
}

/// The fits of a replay: one per history the replay forecasts from, kept as two forecasts (at
/// the levels the service would ask for, and at every candidate level for the curve; nesting makes
/// a band depend on the levels beside it) and, under an SLO, the rule chosen from that fit, so
/// later runs over the same replans cost no fit.
#[derive(Debug)]
struct ReplayModels<'a> {
    /// The model fitted at each replan.
    choice: ModelChoice,
    /// When a replan fits and when it re-anchors.
    fits: ReplayFits,
    /// Under [`ReplayFits::RetrainEvery`], the fits in the order they were made.
    fitted: RefCell<Vec<ReplayFit>>,
    /// Under [`ReplayFits::RetrainEvery`], the level shift the last refit between retrains was
    /// made for.
    shift_refit: Cell<Option<LevelShift>>,
    /// The workload whose SLO picks the rule.
    workload: &'a Workload,
    /// Levels the service's forecasts carry for the workload.
    planned_levels: Vec<Level>,
    /// Both forecasts by (history start, history end, horizon), in milliseconds and steps.
    forecasts: RefCell<HashMap<(i64, i64, usize), [Forecast; 2]>>,
    /// Rules chosen by (history start, history end).
    rules: RefCell<HashMap<(i64, i64), RuleChoice>>,
    /// The rules the replay planned on, in replan order.
    chosen: RefCell<Vec<RuleChoice>>,
}

/// [`ReplayModels`] as a forecaster and rule chooser: with the service's levels or every
/// candidate level.
#[derive(Debug, Clone, Copy)]
struct ModelView<'a> {
    /// The fits.
    models: &'a ReplayModels<'a>,
    /// Forecasts carry every candidate level (the curve), not the service's.
    every_candidate: bool,
}

impl BaseForecaster for ModelView<'_> {
    type Error = ForecastError;

    fn forecast(&self, history: &TimeSeries, horizon: Horizon) -> Result<Forecast, ForecastError> {
        let models = self.models;
        let which = usize::from(self.every_candidate);
        let key = (
            history.start().as_millis(),
            history.end().as_millis(),
            horizon.steps(),
        );
        if let Some(forecasts) = models.forecasts.borrow().get(&key) {
            return Ok(forecasts[which].clone());
        }
        let (model, rule) = models.model_for(history)?;
        let mut every_level = models.planned_levels.clone();
        every_level.extend(candidate_levels());
        every_level.sort_by(|left, right| left.fraction().total_cmp(&right.fraction()));
        every_level.dedup();
        let forecasts = [
            model.predict(horizon, &models.planned_levels)?,
            model.predict(horizon, &every_level)?,
        ];
        if let Some(rule) = rule {
            models.rules.borrow_mut().insert((key.0, key.1), rule);
        }
        let forecast = forecasts[which].clone();
        models.forecasts.borrow_mut().insert(key, forecasts);
        Ok(forecast)
    }
}

/// A fit of a replay under [`ReplayFits::RetrainEvery`].
#[derive(Debug)]
struct ReplayFit {
    /// End of the history it was fitted on, in milliseconds.
    end: i64,
    /// The model.
    model: FittedModel,
    /// The rule its SLO chose.
    rule: Option<RuleChoice>,
    /// A scheduled retrain; else a refit between two (see [`ReplayModels::model_for`]).
    retrain: bool,
}

impl<'a> ReplayModels<'a> {
    /// No fit yet, for `workload`.
    fn new(choice: ModelChoice, fits: ReplayFits, workload: &'a Workload) -> Self {
        Self {
            choice,
            fits,
            fitted: RefCell::default(),
            shift_refit: Cell::default(),
            workload,
            planned_levels: rule_levels(workload),
            forecasts: RefCell::default(),
            rules: RefCell::default(),
            chosen: RefCell::default(),
        }
    }

    /// The fits as the forecaster and rule chooser of the service's levels.
    fn as_planned(&self) -> ModelView<'_> {
        ModelView {
            models: self,
            every_candidate: false,
        }
    }

    /// The model that forecasts from the end of `history`, with the rule its SLO chose: a fresh fit,
    /// or under [`ReplayFits::RetrainEvery`] the newest fit since the last retrain, made less than
    /// that long before, re-anchored on `history`. As the service does between retrains, a model
    /// that cannot be re-anchored, or that was not fitted with a level shift a fit would now find
    /// ([`unfitted_level_shift`]), is refitted.
    fn model_for(
        &self,
        history: &TimeSeries,
    ) -> Result<(FittedModel, Option<RuleChoice>), ForecastError> {
        let end = history.end().as_millis();
        let ReplayFits::RetrainEvery(every) = self.fits else {
            let model = self.choice.params()?.fit(history)?;
            let rule = choose_rule(&model, history, self.workload);
            return Ok((model, rule));
        };
        let every = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        let (retrained, live) = {
            let fits = self.fitted.borrow();
            let retrained = fits
                .iter()
                .rev()
                .find(|fit| fit.retrain && fit.end <= end && end - fit.end < every);
            // The newest fit since that retrain: the retrain, or a refit after it.
            let live = retrained.and_then(|retrained| {
                fits.iter()
                    .rev()
                    .find(|fit| fit.end <= end && fit.end >= retrained.end)
                    .map(|fit| (fit.model.reanchor(history), fit.rule.clone()))
            });
            (retrained.is_some(), live)
        };
        // A model that cannot be re-anchored, or that a level shift since its fit left on the old
        // level, is refitted, as the service does; the retrains keep their schedule.
        if let Some((Ok(model), rule)) = live {
            let refitting_for = self.shift_refit.get();
            match unfitted_level_shift(&model, history, refitting_for.as_ref())? {
                None => return Ok((model, rule)),
                Some(shift) => {
                    tracing::debug!(at = %shift.at, before = shift.before, after = shift.after, refit_at = %history.end(), "replay: refitting on a level shift the model was not fitted with");
                    self.shift_refit.set(Some(shift));
                }
            }
        }
        let model = self.choice.served_params()?.fit(history)?;
        let rule = choose_rule(&model, history, self.workload);
        self.fitted.borrow_mut().push(ReplayFit {
            end,
            model: model.clone(),
            rule: rule.clone(),
            retrain: !retrained,
        });
        Ok((model, rule))
    }
}

impl RuleChooser for ModelView<'_> {
    fn rule_after(&self, seen: &TimeSeries) -> Option<PlanningRule> {
        let key = (seen.start().as_millis(), seen.end().as_millis());
        let choice = self.models.rules.borrow().get(&key).cloned()?;
        let rule = choice.rule();
        self.models.chosen.borrow_mut().push(choice);
        Some(rule)
    }
}

/// The replay settings of `prescale simulate`: replans every `replan_every` from the newest
/// `history_window`, with `calendar`'s events.
pub fn simulate_params(
    days: f64,
    replan_every: Duration,
    history_window: Duration,
    calendar: EventCalendar,
) -> SimulationParams {
    SimulationParams::new(days, replan_every)
        .history_window(history_window)
        .events(calendar)
}

impl fmt::Display for SloReplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.report)?;
        let hpa = &self.hpa_equal_cost;
        writeln!(
            f,
            "{:<11} {:>9} ({:>5.1}%) {:>9.3}% {:>14.1} {:>9.3}x  (target utilisation {:.1}%)",
            "hpa@cost",
            hpa.score.underprovisioned_steps,
            hpa.score.underprovisioned_share * 100.0,
            hpa.score.unserved_share * 100.0,
            hpa.score.replica_hours,
            hpa.score.vs_oracle,
            hpa.target_utilisation * 100.0
        )?;
        let cost = self.report.run(Strategy::Predictive).score.replica_hours;
        if (hpa.score.replica_hours - cost).abs() > 0.01 * cost {
            writeln!(
                f,
                "            the closest the HPA comes to the predictive {cost:.1} replica-hours \
                 at a target utilisation of {:.0}% to {:.0}%",
                HPA_TARGET_RANGE.0 * 100.0,
                HPA_TARGET_RANGE.1 * 100.0
            )?;
        }
        if let Some(first) = self.choices.first() {
            let mut counts: Vec<(PlanningRule, usize)> = Vec::new();
            for choice in &self.choices {
                let rule = choice.rule();
                match counts.iter_mut().find(|(counted, _)| *counted == rule) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((rule, 1)),
                }
            }
            counts.sort_by(|left, right| {
                (left.0.headroom, left.0.level.fraction())
                    .partial_cmp(&(right.0.headroom, right.0.level.fraction()))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            let rules: Vec<String> = counts
                .iter()
                .map(|(rule, count)| format!("{} x{count}", rule.label()))
                .collect();
            let met = self.choices.iter().filter(|choice| choice.met()).count();
            writeln!(
                f,
                "slo {} short steps: rules chosen at {} replans: {}; met in the backtest replay at {met}",
                first.slo.text(),
                self.choices.len(),
                rules.join(", ")
            )?;
        }
        writeln!(
            f,
            "every replan on one rule (level%, or level%*headroom), beside the hpa spending the same replica-hours:"
        )?;
        writeln!(
            f,
            "{:>9} {:>18} {:>14} {:>10} {:>12} {:>18}",
            "rule",
            "under-provisioned",
            "replica-hours",
            "vs oracle",
            "hpa target",
            "hpa under-prov."
        )?;
        for point in &self.curve {
            let (predictive, hpa) = (&point.predictive, &point.hpa.score);
            writeln!(
                f,
                "{:>9} {:>9} ({:>5.1}%) {:>14.1} {:>9.3}x {:>11.1}% {:>9} ({:>5.1}%)",
                point.rule.label(),
                predictive.underprovisioned_steps,
                predictive.underprovisioned_share * 100.0,
                predictive.replica_hours,
                predictive.vs_oracle,
                point.hpa.target_utilisation * 100.0,
                hpa.underprovisioned_steps,
                hpa.underprovisioned_share * 100.0
            )?;
        }
        Ok(())
    }
}

impl SloReplay {
    /// Writes the replay as planned and the curve as CSV, one row each: `rule,short_steps,
    /// scored_steps,replica_hours,vs_oracle,hpa_target_utilisation,hpa_short_steps,
    /// hpa_replica_hours`, where `rule` is `as-planned` or a rule: a level in percent (`95`), or
    /// `level*headroom` (`10*1.5`).
    pub fn write_levels_csv(&self, mut out: impl std::io::Write) -> std::io::Result<()> {
        writeln!(
            out,
            "rule,short_steps,scored_steps,replica_hours,vs_oracle,hpa_target_utilisation,hpa_short_steps,hpa_replica_hours"
        )?;
        let planned = self.report.run(Strategy::Predictive).score;
        let rows = std::iter::once(("as-planned".to_owned(), &planned, &self.hpa_equal_cost))
            .chain(self.curve.iter().map(|point| {
                (
                    point.rule.label().replace('%', ""),
                    &point.predictive,
                    &point.hpa,
                )
            }));
        for (rule, predictive, hpa) in rows {
            writeln!(
                out,
                "{rule},{},{},{},{},{},{},{}",
                predictive.underprovisioned_steps,
                predictive.scored_steps,
                predictive.replica_hours,
                predictive.vs_oracle,
                hpa.target_utilisation,
                hpa.score.underprovisioned_steps,
                hpa.score.replica_hours
            )?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::app::build_plan;
    use crate::domain::{Step, Timestamp};
    use crate::plan::WorkloadParams;
    use crate::simulate::RuleSource;

    /// Fourteen days at 5 minutes: a daily cycle around 100, and on one step in twenty a burst
    /// of 2 to 20 times the load that nothing announces.
    fn bursty_series() -> TimeSeries {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let values = (0..14 * 288)
            .map(|index| {
                let daily = 100.0 + 40.0 * (index as f64 * std::f64::consts::TAU / 288.0).sin();
                let noise = rng.random_range(-5.0..5.0);
                let burst = if rng.random_bool(0.05) {
                    rng.random_range(2.0..20.0)
                } else {
                    1.0
                };
                (daily + noise) * burst
            })
            .collect();
        TimeSeries::new(Timestamp::from_millis(0), Step::FIVE_MINUTES, values)
    }

    /// A workload of `requests` at 10 per replica, with a 10-minute warm-up and an SLO of 1% short
    /// steps.
    fn api_with_slo(max_replicas: u32) -> Workload {
        WorkloadParams::new(
            "api",
            "requests",
            10.0,
            max_replicas,
            Duration::from_secs(600),
        )
        .slo_max_short_steps(Some("1%"))
        .check()
        .unwrap()
    }

    /// `prescale simulate`'s replay: the rule chosen at every replan, one point of the curve per
    /// candidate level from the same fits, and an HPA whose target utilisation spends what the plan
    /// spent.
    #[test]
    fn the_hpa_at_equal_cost_spends_what_the_plan_spends() {
        let history = bursty_series();
        let workload = api_with_slo(1000);
        let replay = replay_with_slo(
            &history,
            &workload,
            SimulationParams::new(0.25, Duration::from_secs(3600)),
            ModelChoice::Ensemble,
            ReplayFits::EveryReplan,
        )
        .unwrap();
        assert_eq!(replay.choices.len(), replay.report.replans());
        assert_eq!(replay.curve.len(), candidate_rules().len());
        let planned = replay.report.run(Strategy::Predictive).score.replica_hours;
        let hpa = replay.hpa_equal_cost;
        assert!(
            (hpa.score.replica_hours - planned).abs() <= 0.05 * planned,
            "{hpa:?} against {planned}"
        );
        assert!(
            hpa.target_utilisation < workload.target_utilisation(),
            "{hpa:?}"
        );
        // Against the workload's oracle, not one sized for the HPA's lower target.
        let oracle = replay.report.run(Strategy::Oracle).score.replica_hours;
        let predictive = replay.report.run(Strategy::Predictive).score.vs_oracle;
        assert!(
            (hpa.score.vs_oracle - hpa.score.replica_hours / oracle).abs() < 1e-9,
            "{hpa:?} against an oracle of {oracle}"
        );
        assert!(
            (hpa.score.vs_oracle - predictive).abs() <= 0.05 * predictive,
            "{hpa:?} against {predictive}"
        );
        let (lowest, highest) = (
            &replay.curve[0],
            &replay.curve[candidate_levels().len() - 1],
        );
        assert!(lowest.predictive.replica_hours < highest.predictive.replica_hours);
        assert!(lowest.hpa.target_utilisation > highest.hpa.target_utilisation);
    }

    /// The fits of a replay of `workload` retrained daily, as the service serves.
    fn retrained_daily(workload: &Workload) -> ReplayModels<'_> {
        ReplayModels::new(
            ModelChoice::Ensemble,
            ReplayFits::RetrainEvery(Duration::from_secs(86_400)),
            workload,
        )
    }

    /// Replayed as the service serves between retrains: a replan an hour after a fit re-anchors
    /// that fit (the forecast of re-anchoring it by hand, and the rule chosen when it was fitted),
    /// and one a retrain period later fits anew.
    #[test]
    fn a_replay_retrained_daily_reanchors_its_fit_until_the_next_retrain() {
        let history = bursty_series();
        let workload = api_with_slo(1000);
        let models = retrained_daily(&workload);
        let view = models.as_planned();
        let day = 288;
        let window = |end: usize| history.slice(end - 7 * day..end);
        let rule_at = |end: usize| {
            let seen = window(end);
            models.rules.borrow()[&(seen.start().as_millis(), seen.end().as_millis())].clone()
        };
        let horizon = Horizon::try_from(24).unwrap();

        view.forecast(&window(10 * day), horizon).unwrap();
        let fitted = models.fitted.borrow()[0].model.clone();
        let hour_later = view.forecast(&window(10 * day + 12), horizon).unwrap();
        assert_eq!(models.fitted.borrow().len(), 1, "re-anchored, not refitted");
        let by_hand = fitted
            .reanchor(&window(10 * day + 12))
            .unwrap()
            .predict(horizon, &models.planned_levels)
            .unwrap();
        assert_eq!(hour_later, by_hand);
        assert_eq!(rule_at(10 * day + 12), rule_at(10 * day));

        view.forecast(&window(11 * day), horizon).unwrap();
        assert_eq!(models.fitted.borrow().len(), 2, "a day later: retrained");
    }

    /// Between retrains, a level shift the fit did not see refits once it has lasted (a rise of 20
    /// on a daily cycle, 90 minutes at 5 minutes), once; the retrains keep their schedule, a day
    /// after the last retrain, not after the refit.
    #[test]
    fn a_replay_refits_on_a_level_shift_and_keeps_its_retrain_schedule() {
        let day = 288;
        let rise_at = 10 * day + 24;
        let values: Vec<f64> = (0..12 * day)
            .map(|index| {
                let phase = (index % day) as f64 / day as f64 * std::f64::consts::TAU;
                let level = if index >= rise_at { 60.0 } else { 40.0 };
                level + 15.0 * phase.sin() + ((index * 7919) % 17) as f64 / 8.0
            })
            .collect();
        let history = TimeSeries::new(Timestamp::from_millis(0), Step::FIVE_MINUTES, values);
        let workload = api_with_slo(1000);
        let models = retrained_daily(&workload);
        let view = models.as_planned();
        let window = |end: usize| history.slice(end - 7 * day..end);
        let horizon = Horizon::try_from(24).unwrap();
        let fits = || {
            models
                .fitted
                .borrow()
                .iter()
                .map(|fit| fit.retrain)
                .collect::<Vec<_>>()
        };

        view.forecast(&window(10 * day), horizon).unwrap();
        view.forecast(&window(rise_at + 12), horizon).unwrap();
        assert_eq!(fits(), [true], "an hour into the rise: re-anchored");
        view.forecast(&window(rise_at + 24), horizon).unwrap();
        assert_eq!(fits(), [true, false], "two hours into the rise: refitted");
        let refit = models.fitted.borrow()[1].model.clone();
        let shift = refit
            .preprocessing()
            .level_shift
            .expect("the refit sees the shift");
        assert!(
            (shift.at.as_millis() - history.time_at(rise_at).as_millis()).abs() <= 3 * 300_000,
            "{shift:?}"
        );
        view.forecast(&window(rise_at + 36), horizon).unwrap();
        view.forecast(&window(11 * day - 1), horizon).unwrap();
        assert_eq!(fits(), [true, false], "the refit knows the shift");
        view.forecast(&window(11 * day), horizon).unwrap();
        assert_eq!(
            fits(),
            [true, false, true],
            "a day after the retrain: retrained"
        );
    }

    /// Bursts on 5% of the steps, most of them above what `max_replicas` can serve: no level
    /// keeps short steps within 1%. The plan says so, and is made on the level the replay found
    /// fewest short steps with, the one it reports.
    #[test]
    fn a_workload_whose_slo_cannot_be_met_says_so() {
        let history = bursty_series();
        let workload = api_with_slo(20);
        let horizon = Horizon::try_from(24).unwrap();
        let outcome = build_plan(
            &history,
            &workload,
            horizon,
            &EventCalendar::default(),
            ModelChoice::Ensemble,
            None,
        )
        .unwrap();
        let rule = outcome
            .rule
            .expect("a workload with an SLO reports its rule");
        assert_eq!(rule.source, RuleSource::SloNotMet, "{rule}");
        assert!(!rule.met());
        assert!(rule.folds >= 1 && rule.chosen.scored_steps >= 288, "{rule}");
        assert!(rule.to_string().contains("not met"), "{rule}");
        let fewest = rule
            .candidates
            .iter()
            .map(|score| score.short_steps)
            .min()
            .unwrap();
        assert_eq!(rule.chosen.short_steps, fewest);
        assert_eq!(outcome.plan.level(), rule.level());
    }
}
