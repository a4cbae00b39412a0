//! Choosing a workload's planning rule for its service-level objective, by replaying what its model
//! already holds: the out-of-sample forecasts its backtest made at each fold origin.
//!
//! The candidates are rules a user would otherwise pick: the upper bound of each candidate level,
//! and the lowest level's (about the median) times a headroom factor, the HPA's target utilisation
//! applied to the forecast. For each candidate, each fold's forecast is planned as the service would plan it (the
//! workload's sizing, min/max, scale-in policy and warm-up) and served against the demand that
//! followed by the executor rule `max(planned, HPA)`, tick by tick as in the full replay. The rule
//! kept is the cheapest in replica-hours whose short steps stay within the objective; when none
//! does, the one with the fewest short steps, and the choice says the objective was not met.
//! Nothing is fitted: a choice costs a few milliseconds. See `docs/decisions.md`, "Planning for a
//! service level".

use std::fmt;

use super::Simulation;
use super::hpa::{Fleet, HpaController};
use super::replay::StepAccumulator;
use crate::domain::{Forecast, Level, Timestamp};
use crate::plan::{Observation, Planner, PlanningRule, Slo, Workload};

/// Planning levels, in percent, a choice replays.
pub const CANDIDATE_LEVELS: [f64; 14] = [
    10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 85.0, 90.0, 95.0, 97.5, 99.0, 99.5,
];

/// Headroom factors a choice replays on the upper bound of the lowest candidate level: planning
/// there at `h` is planning the forecast's median at a target utilisation `h` times lower.
pub const CANDIDATE_HEADROOMS: [f64; 6] = [1.1, 1.25, 1.5, 2.0, 3.0, 4.0];

/// The candidate levels as [`Level`]s, lowest first.
pub fn candidate_levels() -> Vec<Level> {
    CANDIDATE_LEVELS
        .iter()
        .map(|percent| {
            Level::from_percent(*percent).expect("invariant: candidates lie in (0, 100)")
        })
        .collect()
}

/// Every rule a choice replays: each candidate level's upper bound, then the lowest level's times
/// each candidate headroom.
pub fn candidate_rules() -> Vec<PlanningRule> {
    let levels = candidate_levels();
    let lowest = levels[0];
    levels
        .into_iter()
        .map(PlanningRule::upper_bound)
        .chain(CANDIDATE_HEADROOMS.iter().map(|&headroom| PlanningRule {
            level: lowest,
            headroom,
        }))
        .collect()
}

/// One backtest fold as a replay reads it.
#[derive(Debug, Clone)]
pub struct ReplayFold {
    /// The forecast made at the fold's origin, with an interval at every candidate level.
    pub forecast: Forecast,
    /// The demand observed over the forecast's steps (`NaN` where nothing was observed).
    pub demand: Vec<f64>,
    /// The last load observed before the origin, if any.
    pub latest: Option<f64>,
}

/// How one planning rule did over the replayed folds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleScore {
    /// The rule planned on.
    pub rule: PlanningRule,
    /// Observed steps with demand above serving capacity at some moment.
    pub short_steps: usize,
    /// Observed steps.
    pub scored_steps: usize,
    /// Replica-hours paid for.
    pub replica_hours: f64,
    /// Replica-hours of a plan made from the true demand over the same folds.
    pub oracle_replica_hours: f64,
}

impl RuleScore {
    /// Short steps as a share of observed steps.
    pub fn short_share(&self) -> f64 {
        if self.scored_steps == 0 {
            0.0
        } else {
            self.short_steps as f64 / self.scored_steps as f64
        }
    }

    /// Replica-hours relative to the oracle's.
    pub fn vs_oracle(&self) -> f64 {
        if self.oracle_replica_hours > 0.0 {
            self.replica_hours / self.oracle_replica_hours
        } else {
            f64::NAN
        }
    }
}

/// Why a workload plans on the rule it plans on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSource {
    /// The cheapest rule that met the objective in the replay.
    SloMet,
    /// No rule met the objective; the one with the fewest short steps.
    SloNotMet,
    /// `planning_level` was set explicitly; the replay only reports how it did.
    Explicit,
}

impl RuleSource {
    /// Lowercase name used in APIs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SloMet => "slo-met",
            Self::SloNotMet => "slo-not-met",
            Self::Explicit => "explicit",
        }
    }
}

/// The planning rule chosen for a workload, with the replay it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleChoice {
    /// The objective.
    pub slo: Slo,
    /// How the rule was chosen.
    pub source: RuleSource,
    /// The chosen rule's replayed score.
    pub chosen: RuleScore,
    /// Every rule replayed, in the order of [`candidate_rules`].
    pub candidates: Vec<RuleScore>,
    /// Backtest folds replayed.
    pub folds: usize,
}

impl RuleChoice {
    /// The rule to plan on.
    pub fn rule(&self) -> PlanningRule {
        self.chosen.rule
    }

    /// The level whose upper bound the rule plans on.
    pub fn level(&self) -> Level {
        self.chosen.rule.level
    }

    /// Whether the chosen rule met the objective in the replay.
    pub fn met(&self) -> bool {
        self.chosen.short_share() <= self.slo.max_short_share
    }
}

impl fmt::Display for RuleChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let chosen = &self.chosen;
        let figures = format!(
            "{:.2}% of {} replayed steps short over {} backtest folds, {:.1} replica-hours \
             ({:.3}x the oracle)",
            chosen.short_share() * 100.0,
            chosen.scored_steps,
            self.folds,
            chosen.replica_hours,
            chosen.vs_oracle()
        );
        let rule = chosen.rule;
        let slo = self.slo.text();
        match self.source {
            RuleSource::SloMet => write!(
                f,
                "slo {slo} met: planning on the {rule}, the cheapest rule that met it: {figures}"
            ),
            RuleSource::SloNotMet => write!(
                f,
                "slo {slo} not met by any rule: planning on the {rule}, the fewest short steps: \
                 {figures}"
            ),
            RuleSource::Explicit => write!(
                f,
                "planning_level {}% is set explicitly and wins over slo {slo} ({}): {figures}",
                rule.level.percent(),
                if self.met() { "met" } else { "not met" }
            ),
        }
    }
}

impl Simulation {
    /// Chooses `workload`'s planning rule for `slo` by replaying `folds` with every candidate rule
    /// (and the workload's own level when it is set explicitly, which then wins). `None` when no
    /// fold has an observed step.
    pub fn choose_rule(
        &self,
        workload: &Workload,
        slo: Slo,
        folds: &[ReplayFold],
    ) -> Option<RuleChoice> {
        let mut rules = candidate_rules();
        let own = workload.planning_rule();
        if workload.planning_level_is_explicit() && !rules.contains(&own) {
            rules.push(own);
        }
        let oracle_replica_hours: f64 = folds
            .iter()
            .map(|fold| self.replay_oracle(workload, fold))
            .sum();
        let candidates: Vec<RuleScore> = rules
            .into_iter()
            .filter_map(|rule| {
                let planned = workload.with_planning_rule(rule);
                let mut total = RuleScore {
                    rule,
                    short_steps: 0,
                    scored_steps: 0,
                    replica_hours: 0.0,
                    oracle_replica_hours,
                };
                for fold in folds {
                    let (short, scored, hours) = self.replay_fold(&planned, fold)?;
                    total.short_steps += short;
                    total.scored_steps += scored;
                    total.replica_hours += hours;
                }
                Some(total)
            })
            .collect();
        if candidates.iter().all(|score| score.scored_steps == 0) {
            return None;
        }
        let (source, chosen) = if workload.planning_level_is_explicit() {
            let own = candidates.iter().find(|score| score.rule == own)?;
            (RuleSource::Explicit, *own)
        } else if let Some(cheapest) = candidates
            .iter()
            .filter(|score| score.short_share() <= slo.max_short_share)
            .min_by(|left, right| left.replica_hours.total_cmp(&right.replica_hours))
        {
            (RuleSource::SloMet, *cheapest)
        } else {
            let fewest_short = candidates.iter().min_by(|left, right| {
                left.short_steps
                    .cmp(&right.short_steps)
                    .then(left.replica_hours.total_cmp(&right.replica_hours))
            })?;
            (RuleSource::SloNotMet, *fewest_short)
        };
        Some(RuleChoice {
            slo,
            source,
            chosen,
            candidates,
            folds: folds.len(),
        })
    }

    /// Plans `fold`'s forecast for `workload` and serves its demand by `max(planned, HPA)`:
    /// `(short steps, observed steps, replica-hours)`; `None` when the plan cannot be made.
    fn replay_fold(&self, workload: &Workload, fold: &ReplayFold) -> Option<(usize, usize, f64)> {
        let forecast = &fold.forecast;
        let mut planner = Planner::new(workload);
        if let Some(load) = fold.latest {
            let at = forecast
                .start()
                .saturating_add_millis(-forecast.step().as_millis());
            planner = planner.latest(Observation {
                at,
                load,
                replicas: workload.presumed_running(load),
            });
        }
        let plan = planner.plan(forecast).ok()?;
        let start_replicas = plan.target_at(forecast.start())?;
        let mut hpa = HpaController::new(self.stabilisation_millis);
        Some(
            self.serve(workload, fold, start_replicas, |now, load, running| {
                self.predictive_target(Some(&plan), &mut hpa, workload, now, load, running)
            }),
        )
    }

    /// Replica-hours of a plan made from `fold`'s true demand (no scale-in restraint), served
    /// with the same warm-up: the least a plan could have cost.
    fn replay_oracle(&self, workload: &Workload, fold: &ReplayFold) -> f64 {
        let demand: Vec<f64> = held_demand(fold);
        let forecast = Forecast::new(
            fold.forecast.start(),
            fold.forecast.step(),
            demand.clone(),
            vec![crate::domain::Interval {
                level: workload.planning_level(),
                lower: demand.clone(),
                upper: demand,
            }],
        );
        let Ok(plan) = Planner::new(&workload.as_oracle()).plan(&forecast) else {
            return 0.0;
        };
        let start_replicas = plan.target_at(forecast.start()).unwrap_or(0);
        self.serve(workload, fold, start_replicas, |now, _, running| {
            plan.target_at(now).unwrap_or(running)
        })
        .2
    }

    /// Serves `fold`'s demand from a fleet of `start_replicas` warm replicas, asking `target`
    /// each sync period: `(short steps, observed steps, replica-hours)`.
    fn serve(
        &self,
        workload: &Workload,
        fold: &ReplayFold,
        start_replicas: u32,
        mut target: impl FnMut(Timestamp, f64, u32) -> u32,
    ) -> (usize, usize, f64) {
        let step = fold.forecast.step();
        let ticks = self.ticks_per_step(step);
        let tick_hours = self.sync_millis as f64 / 3_600_000.0;
        let warm_up_millis = i64::try_from(workload.warm_up().as_millis()).unwrap_or(i64::MAX);
        let mut fleet = Fleet::new(start_replicas, warm_up_millis);
        let (mut short, mut scored, mut hours) = (0, 0, 0.0);
        for (index, load) in held_demand(fold).into_iter().enumerate() {
            let start = fold.forecast.time_at(index);
            let mut accumulator = StepAccumulator::default();
            for tick in 0..ticks {
                let now = start.saturating_add_millis(tick as i64 * self.sync_millis);
                let wanted = target(now, load, fleet.total());
                fleet.scale_to(now, wanted);
                accumulator.add(&fleet, load, workload.capacity_per_replica(), tick_hours);
            }
            let observed = fold
                .demand
                .get(index)
                .is_some_and(|value| value.is_finite());
            let record = accumulator.finish(observed, ticks);
            short += usize::from(record.underprovisioned);
            scored += usize::from(observed);
            hours += record.replica_hours;
        }
        (short, scored, hours)
    }
}

/// `fold`'s demand as control loops see it: a gap holds the last known load.
fn held_demand(fold: &ReplayFold) -> Vec<f64> {
    let mut last = fold.latest.unwrap_or(0.0);
    fold.demand
        .iter()
        .map(|value| {
            if value.is_finite() {
                last = *value;
            }
            last
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::{Interval, Step};
    use crate::plan::WorkloadParams;

    const STEPS: usize = 288;

    fn step() -> Step {
        Step::FIVE_MINUTES
    }

    /// One replica serves 10 at 100% and is planned at 100%: planning on an upper bound `u` runs
    /// `ceil(u / 10)` replicas.
    fn workload(slo: &str) -> Workload {
        WorkloadParams::new("api", "requests", 10.0, 100, Duration::from_secs(600))
            .target_utilisation(100.0)
            .slo_max_short_steps(Some(slo))
            .check()
            .unwrap()
    }

    /// A day of demand at 100 with a one-step spike to `spike` every 20 steps (14 of 288 steps,
    /// 4.9%), forecast at 100 with the upper bound of level `l`% at `100 + max(0, l - 45)`: 140
    /// at 85%, 145 at 90%.
    fn fold(day: i64, spike: f64) -> ReplayFold {
        fold_with_bounds(day, spike, |percent| 100.0 + (percent - 45.0).max(0.0))
    }

    /// [`fold`] with the upper bound of level `l`% at `upper(l)`.
    fn fold_with_bounds(day: i64, spike: f64, upper: impl Fn(f64) -> f64) -> ReplayFold {
        let start = Timestamp::from_millis(day * 86_400_000);
        let demand: Vec<f64> = (0..STEPS)
            .map(|index| if index % 20 == 10 { spike } else { 100.0 })
            .collect();
        let intervals = candidate_levels()
            .into_iter()
            .map(|level| Interval {
                level,
                lower: vec![90.0; STEPS],
                upper: vec![upper(level.percent()); STEPS],
            })
            .collect();
        ReplayFold {
            forecast: Forecast::new(start, step(), vec![100.0; STEPS], intervals),
            demand,
            latest: Some(100.0),
        }
    }

    fn choose(workload: &Workload, folds: &[ReplayFold]) -> RuleChoice {
        Simulation::executor_defaults(step())
            .choose_rule(workload, workload.slo().unwrap(), folds)
            .unwrap()
    }

    /// A spike of 145 needs 15 ready replicas: the 90% level (upper bound 150) is the lowest that
    /// serves every spike (a one-step spike is over before a reactive replica is warm), so it is
    /// the cheapest level within 1% short steps; the levels below leave every spike short.
    #[test]
    fn the_cheapest_level_that_meets_the_slo_is_chosen() {
        let workload = workload("1%");
        let folds = [fold(1, 145.0), fold(2, 145.0), fold(3, 145.0)];
        let choice = choose(&workload, &folds);
        assert_eq!(choice.source, RuleSource::SloMet, "{choice}");
        assert_eq!(choice.level().percent(), 90.0, "{choice}");
        assert_eq!(choice.chosen.short_steps, 0, "{choice}");
        assert_eq!(choice.chosen.scored_steps, 3 * STEPS);
        let below = choice
            .candidates
            .iter()
            .find(|score| score.rule == PlanningRule::upper_bound(level(85.0)))
            .unwrap();
        assert_eq!(below.short_steps, 3 * 14, "every spike is short at 85%");
        let above = choice
            .candidates
            .iter()
            .find(|score| score.rule == PlanningRule::upper_bound(level(97.5)))
            .unwrap();
        assert!(above.replica_hours > choice.chosen.replica_hours);
        assert!(choice.chosen.vs_oracle() > 1.0);
        // A looser objective (6% > 14 of 288) takes the cheapest level of all.
        let loose = choose(&self::workload("6%"), &folds);
        assert_eq!(loose.level(), candidate_levels()[0], "{loose}");
    }

    fn level(percent: f64) -> Level {
        Level::from_percent(percent).unwrap()
    }

    /// Bands far wider than the errors: every level from 50% up has its upper bound at
    /// `100 + 4 l` (300 at 50%), those below at 100. The levels that serve the spikes of 145 cost
    /// at least 30 replicas; the median's bound (100) with a headroom of 1.5 serves them with 15,
    /// so that rule is chosen, at the same (zero) short steps and half the replica-hours.
    #[test]
    fn a_headroom_rule_wins_where_the_bands_are_wider_than_the_errors() {
        let workload = workload("1%");
        let wide = |percent: f64| {
            if percent < 50.0 {
                100.0
            } else {
                100.0 + 4.0 * percent
            }
        };
        let folds: Vec<ReplayFold> = (1..=3)
            .map(|day| fold_with_bounds(day, 145.0, wide))
            .collect();
        let choice = choose(&workload, &folds);
        assert_eq!(choice.source, RuleSource::SloMet, "{choice}");
        let rule = choice.rule();
        assert_eq!(rule.level, candidate_levels()[0], "{choice}");
        assert_eq!(rule.headroom, 1.5, "{choice}");
        assert_eq!(choice.chosen.short_steps, 0, "{choice}");
        let cheapest_level = choice
            .candidates
            .iter()
            .filter(|score| !score.rule.has_headroom() && score.short_steps == 0)
            .map(|score| score.replica_hours)
            .min_by(f64::total_cmp)
            .unwrap();
        assert!(
            choice.chosen.replica_hours < 0.6 * cheapest_level,
            "{} against {cheapest_level}: {choice}",
            choice.chosen.replica_hours
        );
        assert!(
            choice.to_string().contains("10% upper bound x1.5"),
            "{choice}"
        );
    }

    /// No candidate's upper bound covers a spike of 500: the choice says the objective is not met
    /// and plans on the level with the fewest short steps (all tie, so the cheapest), not on the
    /// highest level.
    #[test]
    fn an_slo_no_level_meets_says_so() {
        let workload = workload("1%");
        let choice = choose(&workload, &[fold(1, 500.0), fold(2, 500.0)]);
        assert_eq!(choice.source, RuleSource::SloNotMet);
        assert!(!choice.met());
        assert_eq!(choice.level(), candidate_levels()[0], "{choice}");
        assert!(choice.to_string().contains("not met"), "{choice}");
    }

    /// An explicit planning level wins over the SLO; the replay still reports how it does.
    #[test]
    fn an_explicit_level_wins_over_the_slo() {
        let workload = WorkloadParams::new("api", "requests", 10.0, 100, Duration::from_secs(600))
            .target_utilisation(100.0)
            .planning_level(80.0)
            .slo_max_short_steps(Some("1%"))
            .check()
            .unwrap();
        let choice = choose(&workload, &[fold(1, 145.0)]);
        assert_eq!(choice.source, RuleSource::Explicit);
        assert_eq!(choice.level().percent(), 80.0);
        assert!(!choice.met());
    }
}
