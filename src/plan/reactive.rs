//! The reactive safety net: what a Kubernetes HPA would ask for given the latest observed load.

use super::Workload;
use crate::domain::Timestamp;

/// The HPA's default tolerance: no scaling while the usage ratio is within 10% of 1.
///
/// Source: Kubernetes documentation, "Horizontal Pod Autoscaling", algorithm details
/// (`--horizontal-pod-autoscaler-tolerance`, default 0.1).
pub const HPA_TOLERANCE: f64 = 0.1;

/// The latest observation of a workload: its load and how many replicas it runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// When the load was observed (start of the series bucket it came from).
    pub at: Timestamp,
    /// The observed load, in the series' units.
    pub load: f64,
    /// Replicas running (ready or starting) at that time.
    pub replicas: u32,
}

/// The reactive recommendation a plan carries beside its schedule.
///
/// Executors apply `max(planned, reactive)` (see [`super::Plan::executor_target`]) so that a spike the
/// forecast did not foresee is still met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reactive {
    /// The observation it was computed from.
    pub observation: Observation,
    /// Replicas the HPA formula asks for, within min and max.
    pub replicas: u32,
}

impl Reactive {
    /// Computes the recommendation for `observation` under `workload`.
    pub fn new(workload: &Workload, observation: Observation) -> Self {
        Self {
            observation,
            replicas: reactive_replicas(
                workload,
                observation.load,
                observation.replicas,
                workload.max_replicas(),
            ),
        }
    }
}

/// The Kubernetes HPA formula for a load metric, clamped to `[min_replicas, ceiling]`.
///
/// The load is treated as an External metric with an `AverageValue` target of one replica's load at
/// the target utilisation: `desired = ceil(current * ratio)` with
/// `ratio = load / (current * load_per_replica)`, which is `ceil(load / load_per_replica)`; while
/// `|ratio - 1| <= 0.1` the current count is kept. Source: Kubernetes documentation, "Horizontal Pod
/// Autoscaling", algorithm details. A non-finite load keeps the current count, as the HPA does when a
/// metric is missing.
pub fn reactive_replicas(workload: &Workload, load: f64, current: u32, ceiling: u32) -> u32 {
    let floor = workload.min_replicas();
    let ceiling = ceiling.max(floor);
    if !load.is_finite() {
        return current.clamp(floor, ceiling);
    }
    let desired = if current == 0 {
        workload.replicas_for(load)
    } else {
        let ratio = load.max(0.0) / (f64::from(current) * workload.load_per_replica());
        if (ratio - 1.0).abs() <= HPA_TOLERANCE {
            current
        } else {
            workload.replicas_for(load)
        }
    };
    desired.clamp(floor, ceiling)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::WorkloadParams;

    fn workload() -> Workload {
        WorkloadParams::new("api", "requests", 10.0, 50, Duration::ZERO)
            .target_utilisation(50.0)
            .min_replicas(2)
            .check()
            .unwrap()
    }

    #[test]
    fn follows_the_hpa_formula_with_tolerance() {
        let workload = workload();
        // 10 replicas at 5 units each is exactly on target.
        assert_eq!(reactive_replicas(&workload, 50.0, 10, 50), 10);
        // 8% over target is within tolerance: keep 10.
        assert_eq!(reactive_replicas(&workload, 54.0, 10, 50), 10);
        // 20% over target: ceil(10 * 1.2) = 12.
        assert_eq!(reactive_replicas(&workload, 60.0, 10, 50), 12);
        // Far below: scale to ceil(12 / 5) = 3.
        assert_eq!(reactive_replicas(&workload, 12.0, 10, 50), 3);
        // Clamped to min and to the ceiling.
        assert_eq!(reactive_replicas(&workload, 0.0, 10, 50), 2);
        assert_eq!(reactive_replicas(&workload, 1e6, 10, 50), 50);
        assert_eq!(reactive_replicas(&workload, f64::NAN, 7, 50), 7);
    }

    #[test]
    fn reactive_carries_its_observation() {
        let observation = Observation {
            at: Timestamp::from_millis(0),
            load: 60.0,
            replicas: 10,
        };
        let reactive = Reactive::new(&workload(), observation);
        assert_eq!(reactive.replicas, 12);
        assert_eq!(reactive.observation, observation);
    }
}
