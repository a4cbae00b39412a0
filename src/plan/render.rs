//! How plans and reasons print: the plan's header, the reactive line and one row per change.

use std::fmt;

use super::{Plan, PlanningRule, Reason};

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Initial => f.write_str("initial"),
            Self::DailyRamp => f.write_str("daily ramp"),
            Self::Trend => f.write_str("trend"),
            Self::Event { name } => write!(f, "event: {name}"),
            Self::HeldByScaleIn => f.write_str("held by scale-in policy"),
            Self::MinReplicas => f.write_str("at min replicas"),
            Self::MaxReplicas => f.write_str("capped at max replicas"),
            Self::AboveMax => f.write_str("above max by buffer"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plan for {} ({}, {} steps of {}, planned on the {}, warm-up {})",
            self.workload,
            self.mode,
            self.steps.len(),
            self.step,
            PlanningRule {
                level: self.level,
                headroom: self.headroom,
            },
            humantime::format_duration(self.warm_up)
        )?;
        if let Some(reactive) = &self.reactive {
            writeln!(
                f,
                "reactive now: {} replicas (load {:.1} at {}, {} running); executors apply max(planned, reactive)",
                reactive.replicas,
                reactive.observation.load,
                reactive.observation.at,
                reactive.observation.replicas
            )?;
        }
        writeln!(
            f,
            "{:<22} {:<22} {:>8} {:>6} {:>6} {:>12}  reason",
            "request at", "serve from", "desired", "low", "high", "planned load"
        )?;
        for step in self.changes() {
            writeln!(
                f,
                "{:<22} {:<22} {:>8} {:>6} {:>6} {:>12.1}  {}",
                step.request_at.to_string(),
                step.at.to_string(),
                step.desired,
                step.low,
                step.high,
                step.planned_load,
                step.reason
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}
