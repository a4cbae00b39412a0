//! The replica count as an HPA metric: what value makes a Kubernetes HPA (driven by KEDA's external
//! scaler) run a planned number of replicas, given the HPA's tolerance.
//!
//! The metric is an `AverageValue` target of 1 with the value set to the replicas wanted, so the HPA's
//! desired count is `ceil(value / target)` = the replicas. The HPA ignores a change while
//! `|value / (target * current) - 1| <= tolerance` (`--horizontal-pod-autoscaler-tolerance`, 0.1 by
//! default), which would swallow a planned scale-up from 50 to 54. [`metric_value`] rounds such a
//! scale-up up to the smallest count the tolerance lets through: never fewer replicas than planned, at
//! the cost of a few more. See docs/decisions.md, "KEDA external scaler".
//!
//! Source: Kubernetes documentation, "Horizontal Pod Autoscaling", algorithm details; the formula is
//! `pkg/controller/podautoscaler/replica_calculator.go` (`GetExternalPerPodMetricReplicas`).

/// The target every replica-count metric is served with: one replica per unit of the value.
pub const REPLICA_METRIC_TARGET: f64 = 1.0;

/// Whether the HPA keeps `current` replicas when the metric reads `value` against `target` per pod:
/// the usage ratio `value / (target * current)` is within `tolerance` of 1. The comparison is the
/// HPA's own, in `f64`, so the boundary falls where the HPA puts it.
pub fn hpa_keeps_current(value: f64, target: f64, current: u32, tolerance: f64) -> bool {
    let usage_ratio = value / (target * f64::from(current));
    (1.0 - usage_ratio).abs() <= tolerance
}

/// The replicas the HPA sets when the metric reads `value` against an `AverageValue` `target` while
/// `current` run: `current` within the tolerance, otherwise `ceil(value / target)`. With no replica
/// running (`current == 0`), the HPA is inactive and KEDA scales to one first; the formula's answer
/// is then `ceil(value / target)`.
pub fn hpa_replicas(value: f64, target: f64, current: u32, tolerance: f64) -> u32 {
    if current > 0 && hpa_keeps_current(value, target, current, tolerance) {
        return current;
    }
    let desired = (value / target).ceil();
    if desired <= 0.0 {
        0
    } else if desired >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        desired as u32
    }
}

/// The value to serve against [`REPLICA_METRIC_TARGET`] so that an HPA running `current` replicas
/// (when known) runs at least `desired`, and exactly `desired` whenever the tolerance lets it.
///
/// A scale-up the tolerance would swallow is served as the smallest count that escapes it (50 -> 54
/// under 0.1 becomes 55); a scale-down it swallows is left to the HPA, which keeps `current`, more
/// than planned (serving less would make the HPA run fewer replicas than the plan). With
/// `tolerance` 0 (the HPA configured with `behavior.scaleUp.tolerance: 0`) or `current` unknown,
/// the value is `desired`.
pub fn metric_value(desired: u32, current: Option<u32>, tolerance: f64) -> u32 {
    let Some(current) = current.filter(|&current| current > 0 && desired > current) else {
        return desired;
    };
    let mut value = desired;
    while value < u32::MAX
        && hpa_keeps_current(f64::from(value), REPLICA_METRIC_TARGET, current, tolerance)
    {
        value += 1;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_TOLERANCE: f64 = super::super::HPA_TOLERANCE;

    #[test]
    fn a_scale_up_from_50_to_54_is_swallowed_unless_rounded_up_to_55() {
        assert_eq!(hpa_replicas(54.0, 1.0, 50, DEFAULT_TOLERANCE), 50);
        let value = metric_value(54, Some(50), DEFAULT_TOLERANCE);
        // 55/50 is 1.1 on paper, but 1.0 - 55.0/50.0 is -0.10000000000000009 in f64, as in the
        // HPA's Go: just outside the tolerance.
        assert_eq!(value, 55);
        assert_eq!(
            hpa_replicas(f64::from(value), 1.0, 50, DEFAULT_TOLERANCE),
            55
        );
        assert_eq!(metric_value(52, Some(50), DEFAULT_TOLERANCE), 55);
    }

    #[test]
    fn outside_the_tolerance_or_without_it_the_value_is_the_plan() {
        assert_eq!(metric_value(60, Some(50), DEFAULT_TOLERANCE), 60);
        assert_eq!(metric_value(54, Some(50), 0.0), 54);
        assert_eq!(metric_value(54, None, DEFAULT_TOLERANCE), 54);
        assert_eq!(metric_value(1, Some(0), DEFAULT_TOLERANCE), 1);
        // A scale-down is never served below the plan.
        assert_eq!(metric_value(48, Some(50), DEFAULT_TOLERANCE), 48);
        assert_eq!(hpa_replicas(48.0, 1.0, 50, DEFAULT_TOLERANCE), 50);
        assert_eq!(hpa_replicas(40.0, 1.0, 50, DEFAULT_TOLERANCE), 40);
    }

    #[test]
    fn the_served_value_never_leaves_the_hpa_below_the_plan() {
        for tolerance in [0.0, 0.05, 0.1, 0.25] {
            for current in 1..=120 {
                for desired in 0..=140 {
                    let value = metric_value(desired, Some(current), tolerance);
                    let runs = hpa_replicas(f64::from(value), 1.0, current, tolerance);
                    assert!(runs >= desired, "{current} -> {desired} at {tolerance}");
                    if desired > current {
                        assert_eq!(runs, value, "a scale-up is followed");
                        if value > desired {
                            let one_less = f64::from(value - 1);
                            assert_eq!(
                                hpa_replicas(one_less, 1.0, current, tolerance),
                                current,
                                "{value} is the smallest count escaping the tolerance"
                            );
                        }
                    }
                }
            }
        }
    }
}
