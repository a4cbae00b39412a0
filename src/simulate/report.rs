//! What a replay found: per-strategy scores and timelines, as a table and as CSV.

use std::fmt;
use std::io::Write;
use std::path::Path;

use super::SimulateError;
use crate::domain::{Step, Timestamp};

/// A way of running replicas that the simulator compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Plans from forecasts, applied as `max(planned, HPA)`.
    Predictive,
    /// The Kubernetes HPA alone.
    Hpa,
    /// A plan made from the true demand: the least capacity that never runs short.
    Oracle,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 3] = [Self::Predictive, Self::Hpa, Self::Oracle];

    /// Lowercase name used in tables, CSV and the chart legend.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Predictive => "predictive",
            Self::Hpa => "hpa",
            Self::Oracle => "oracle",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scored series step of one strategy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRecord {
    /// Fewest replicas serving at any moment of the step.
    pub ready_min: u32,
    /// Mean replicas running (ready or starting) over the step.
    pub replicas_mean: f64,
    /// Demand exceeded serving capacity at 100% at some moment of the step (observed steps only).
    pub underprovisioned: bool,
    /// Demand not served, in load units times hours (observed steps only).
    pub unserved: f64,
    /// Replica-hours paid for over the step.
    pub replica_hours: f64,
    /// The step has a real observation (a gap is held for control but not scored).
    pub observed: bool,
}

/// How one strategy did over the replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Observed steps with demand above serving capacity at some moment.
    pub underprovisioned_steps: usize,
    /// Observed steps.
    pub scored_steps: usize,
    /// `underprovisioned_steps / scored_steps`.
    pub underprovisioned_share: f64,
    /// Unserved demand as a share of all demand.
    pub unserved_share: f64,
    /// Replica-hours paid for.
    pub replica_hours: f64,
    /// Replica-hours relative to the oracle's (1.25 is 25% more than needed).
    pub vs_oracle: f64,
}

impl Score {
    /// The score with `vs_oracle` taken against an oracle that spent `oracle_hours`.
    #[must_use]
    pub fn against_oracle(mut self, oracle_hours: f64) -> Self {
        self.vs_oracle = ratio(self.replica_hours, oracle_hours);
        self
    }
}

/// One strategy's timeline and score.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyRun {
    /// Which strategy.
    pub strategy: Strategy,
    /// One record per scored step.
    pub timeline: Vec<StepRecord>,
    /// Totals over the timeline.
    pub score: Score,
}

/// The outcome of a replay.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationReport {
    start: Timestamp,
    step: Step,
    capacity_per_replica: f64,
    demand: Vec<f64>,
    runs: Vec<StrategyRun>,
    replans: usize,
}

impl SimulationReport {
    pub(super) fn new(
        start: Timestamp,
        step: Step,
        capacity_per_replica: f64,
        demand: Vec<f64>,
        timelines: [Vec<StepRecord>; 3],
        replans: usize,
    ) -> Self {
        let step_hours = step.as_millis() as f64 / 3_600_000.0;
        let total_demand: f64 = demand
            .iter()
            .filter(|value| value.is_finite())
            .map(|value| value * step_hours)
            .sum();
        let mut runs: Vec<StrategyRun> = Strategy::ALL
            .into_iter()
            .zip(timelines)
            .map(|(strategy, timeline)| {
                let scored_steps = timeline.iter().filter(|record| record.observed).count();
                let underprovisioned_steps = timeline
                    .iter()
                    .filter(|record| record.underprovisioned)
                    .count();
                let unserved: f64 = timeline.iter().map(|record| record.unserved).sum();
                let replica_hours = timeline.iter().map(|record| record.replica_hours).sum();
                StrategyRun {
                    strategy,
                    score: Score {
                        underprovisioned_steps,
                        scored_steps,
                        underprovisioned_share: ratio(
                            underprovisioned_steps as f64,
                            scored_steps as f64,
                        ),
                        unserved_share: ratio(unserved, total_demand),
                        replica_hours,
                        vs_oracle: f64::NAN,
                    },
                    timeline,
                }
            })
            .collect();
        let oracle_hours = runs
            .iter()
            .find(|run| run.strategy == Strategy::Oracle)
            .map_or(f64::NAN, |run| run.score.replica_hours);
        for run in &mut runs {
            run.score = run.score.against_oracle(oracle_hours);
        }
        Self {
            start,
            step,
            capacity_per_replica,
            demand,
            runs,
            replans,
        }
    }

    /// Start of the first scored step.
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Spacing of the scored steps.
    pub fn step(&self) -> Step {
        self.step
    }

    /// Load one replica serves at 100%.
    pub fn capacity_per_replica(&self) -> f64 {
        self.capacity_per_replica
    }

    /// Recorded demand per scored step, `NaN` for gaps.
    pub fn demand(&self) -> &[f64] {
        &self.demand
    }

    /// Every strategy's run, in [`Strategy::ALL`] order.
    pub fn runs(&self) -> &[StrategyRun] {
        &self.runs
    }

    /// One strategy's run.
    pub fn run(&self, strategy: Strategy) -> &StrategyRun {
        self.runs
            .iter()
            .find(|run| run.strategy == strategy)
            .expect("every report holds a run of every strategy")
    }

    /// Number of forecasts and plans made.
    pub fn replans(&self) -> usize {
        self.replans
    }

    /// Time of scored step `index`.
    pub fn time_at(&self, index: usize) -> Timestamp {
        self.start
            .saturating_add_millis(index as i64 * self.step.as_millis())
    }

    /// Writes one row per strategy: `strategy,underprovisioned_steps,scored_steps,
    /// underprovisioned_share,unserved_share,replica_hours,vs_oracle`.
    pub fn write_summary_csv(&self, mut out: impl Write) -> Result<(), SimulateError> {
        writeln!(
            out,
            "strategy,underprovisioned_steps,scored_steps,underprovisioned_share,unserved_share,replica_hours,vs_oracle"
        )?;
        for run in &self.runs {
            let score = &run.score;
            writeln!(
                out,
                "{},{},{},{:.6},{:.6},{:.3},{:.6}",
                run.strategy,
                score.underprovisioned_steps,
                score.scored_steps,
                score.underprovisioned_share,
                score.unserved_share,
                score.replica_hours,
                score.vs_oracle
            )?;
        }
        Ok(())
    }

    /// Writes one row per scored step: the time, the demand, and per strategy the fewest serving
    /// replicas, their capacity at 100%, the mean running replicas and whether it ran short.
    pub fn write_timeline_csv(&self, mut out: impl Write) -> Result<(), SimulateError> {
        write!(out, "timestamp,demand")?;
        for run in &self.runs {
            let name = run.strategy;
            write!(
                out,
                ",{name}_ready,{name}_capacity,{name}_replicas_mean,{name}_underprovisioned"
            )?;
        }
        writeln!(out)?;
        for (index, demand) in self.demand.iter().enumerate() {
            write!(out, "{},", self.time_at(index))?;
            if demand.is_finite() {
                write!(out, "{demand}")?;
            }
            for run in &self.runs {
                let record = &run.timeline[index];
                write!(
                    out,
                    ",{},{},{:.3},{}",
                    record.ready_min,
                    f64::from(record.ready_min) * self.capacity_per_replica,
                    record.replicas_mean,
                    u8::from(record.underprovisioned)
                )?;
            }
            writeln!(out)?;
        }
        Ok(())
    }

    /// Draws demand and each strategy's serving capacity over time into a PNG at `path`.
    pub fn write_png(&self, path: &Path, size: (u32, u32)) -> Result<(), SimulateError> {
        super::chart::draw(self, path, size)
    }
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        f64::NAN
    }
}

impl fmt::Display for SimulationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.time_at(self.demand.len());
        writeln!(
            f,
            "replay {} .. {} ({} steps of {}, {} replans)",
            self.start,
            end,
            self.demand.len(),
            self.step,
            self.replans
        )?;
        writeln!(
            f,
            "{:<11} {:>18} {:>10} {:>14} {:>10}",
            "strategy", "under-provisioned", "unserved", "replica-hours", "vs oracle"
        )?;
        for run in &self.runs {
            let score = &run.score;
            writeln!(
                f,
                "{:<11} {:>9} ({:>5.1}%) {:>9.3}% {:>14.1} {:>9.3}x",
                run.strategy.as_str(),
                score.underprovisioned_steps,
                score.underprovisioned_share * 100.0,
                score.unserved_share * 100.0,
                score.replica_hours,
                score.vs_oracle
            )?;
        }
        Ok(())
    }
}
