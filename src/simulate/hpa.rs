//! The Kubernetes HPA control loop and a fleet of replicas that serve only after their warm-up.

use std::collections::VecDeque;

use crate::domain::Timestamp;
use crate::plan::{Workload, reactive_replicas};

/// The HPA's scaling decision, one call per sync period.
///
/// Source: Kubernetes documentation, "Horizontal Pod Autoscaling" (algorithm details, stabilisation
/// window, default `behavior`): the metric formula with 0.1 tolerance ([`reactive_replicas`]); each
/// raw recommendation is remembered, and a scale-down never goes below the highest recommendation of
/// the last `stabilisation_millis` (300 s by default); scale-up is limited by the default policies
/// (the larger of +100% and +4 pods per 15 s period); min and max are applied last, min winning.
#[derive(Debug, Clone)]
pub(crate) struct HpaController {
    /// How long raw recommendations are remembered for scale-down stabilisation.
    stabilisation_millis: i64,
    /// Raw recommendations with their time, oldest first, within the stabilisation window.
    recommendations: VecDeque<(Timestamp, u32)>,
}

impl HpaController {
    pub(crate) fn new(stabilisation_millis: i64) -> Self {
        Self {
            stabilisation_millis,
            recommendations: VecDeque::new(),
        }
    }

    /// Replicas to run from `now`, given the load seen now and the replicas running (ready or not).
    pub(crate) fn decide(
        &mut self,
        workload: &Workload,
        now: Timestamp,
        load: f64,
        current: u32,
        floor: u32,
        ceiling: u32,
    ) -> u32 {
        let raw = reactive_replicas(workload, load, current, u32::MAX);
        while self
            .recommendations
            .front()
            .is_some_and(|&(at, _)| now.as_millis() - at.as_millis() >= self.stabilisation_millis)
        {
            self.recommendations.pop_front();
        }
        self.recommendations.push_back((now, raw));
        let highest_recent = self
            .recommendations
            .iter()
            .map(|&(_, replicas)| replicas)
            .max()
            .unwrap_or(raw);
        let stabilised = if raw >= current {
            raw
        } else {
            highest_recent.min(current)
        };
        let scale_up_limit = current.saturating_mul(2).max(current.saturating_add(4));
        let limited = stabilised.min(scale_up_limit);
        limited.min(ceiling).max(floor)
    }
}

/// Replicas of one strategy: the ready ones serve, the requested ones serve after the warm-up.
#[derive(Debug, Clone)]
pub(crate) struct Fleet {
    /// Replicas serving now.
    ready: u32,
    /// Requested replicas as (time they start serving, count), in request order.
    starting: VecDeque<(Timestamp, u32)>,
    /// Time from request to serving, in milliseconds.
    warm_up_millis: i64,
}

impl Fleet {
    /// A fleet already running `ready` warm replicas.
    pub(crate) fn new(ready: u32, warm_up_millis: i64) -> Self {
        Self {
            ready,
            starting: VecDeque::new(),
            warm_up_millis,
        }
    }

    /// Replicas running, ready or starting: what the scale subresource reports and what is paid for.
    pub(crate) fn total(&self) -> u32 {
        self.ready + self.starting.iter().map(|&(_, count)| count).sum::<u32>()
    }

    /// Replicas serving.
    pub(crate) fn ready(&self) -> u32 {
        self.ready
    }

    /// Moves to `target` replicas at `now`: new ones start warming, removals take starting replicas
    /// first (they serve nothing yet), newest first, then ready ones. Then promotes every replica
    /// whose warm-up is over by `now`.
    pub(crate) fn scale_to(&mut self, now: Timestamp, target: u32) {
        let total = self.total();
        if target > total {
            self.starting.push_back((
                now.saturating_add_millis(self.warm_up_millis),
                target - total,
            ));
        } else {
            let mut surplus = total - target;
            while surplus > 0 {
                match self.starting.back_mut() {
                    Some((_, count)) if *count > surplus => {
                        *count -= surplus;
                        surplus = 0;
                    }
                    Some((_, count)) => {
                        surplus -= *count;
                        self.starting.pop_back();
                    }
                    None => {
                        self.ready -= surplus;
                        surplus = 0;
                    }
                }
            }
        }
        while let Some(&(ready_at, count)) = self.starting.front() {
            if ready_at > now {
                break;
            }
            self.ready += count;
            self.starting.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::WorkloadParams;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_millis(seconds * 1000)
    }

    #[test]
    fn fleet_serves_after_warm_up_and_drops_starting_first() {
        let mut fleet = Fleet::new(2, 60_000);
        fleet.scale_to(at(0), 5);
        assert_eq!((fleet.ready(), fleet.total()), (2, 5));
        fleet.scale_to(at(30), 4);
        assert_eq!((fleet.ready(), fleet.total()), (2, 4));
        fleet.scale_to(at(60), 4);
        assert_eq!((fleet.ready(), fleet.total()), (4, 4));
        fleet.scale_to(at(75), 1);
        assert_eq!((fleet.ready(), fleet.total()), (1, 1));
        let mut instant = Fleet::new(0, 0);
        instant.scale_to(at(0), 3);
        assert_eq!(instant.ready(), 3);
    }

    #[test]
    fn hpa_stabilises_scale_down_and_limits_scale_up() {
        let workload = WorkloadParams::new("api", "requests", 10.0, 100, Duration::ZERO)
            .target_utilisation(100.0)
            .check()
            .unwrap();
        let mut hpa = HpaController::new(300_000);
        // 1 replica facing 200 load: at most max(2x, +4) = 5 per sync.
        assert_eq!(hpa.decide(&workload, at(0), 200.0, 1, 1, 100), 5);
        assert_eq!(hpa.decide(&workload, at(15), 200.0, 5, 1, 100), 10);
        assert_eq!(hpa.decide(&workload, at(30), 200.0, 10, 1, 100), 20);
        // Load falls: held at the highest recommendation of the last 300 s.
        assert_eq!(hpa.decide(&workload, at(45), 50.0, 20, 1, 100), 20);
        assert_eq!(hpa.decide(&workload, at(314), 50.0, 20, 1, 100), 20);
        // 300 s after the last recommendation of 20, the window holds only 5s.
        assert_eq!(hpa.decide(&workload, at(330), 50.0, 20, 1, 100), 5);
        // Within tolerance: keep.
        assert_eq!(hpa.decide(&workload, at(345), 54.0, 5, 1, 100), 5);
        // The floor (a plan) wins over everything, the ceiling over the formula.
        assert_eq!(hpa.decide(&workload, at(360), 50.0, 5, 30, 100), 30);
        assert_eq!(hpa.decide(&workload, at(375), 900.0, 60, 1, 70), 70);
    }
}
