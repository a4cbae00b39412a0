//! The variance-stabilising transform and the standardisation that put a series on the models'
//! unit scale, and the inverse that maps forecasts back.

use crate::forecast::stats;

/// Which variance-stabilising transform to apply before modelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TransformChoice {
    /// Pick by Guerrero's method among identity, square root and log (see [`Transform`]).
    #[default]
    Auto,
    /// Never transform.
    Identity,
    /// Square root (λ = 0.5), when the series has no negative values.
    Sqrt,
    /// Natural log (λ = 0), when the series is strictly positive.
    Log,
}

/// A Box–Cox transform with λ ∈ {1, 0.5, 0}, chosen for a series.
///
/// Box & Cox (1964), "An analysis of transformations", JRSS B 26(2); λ chosen by Guerrero (1993),
/// "Time-series analysis supported by power transformations", J. Forecasting 12(1): the λ that
/// makes the ratio `sd / mean^(1-λ)` most nearly constant across subseries. Quantiles survive a
/// monotone transform, so bounds are inverted exactly like the point forecast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Transform {
    /// No transform.
    Identity,
    /// `sqrt(y)`; inverse `max(z, 0)^2`.
    Sqrt,
    /// `ln(y)`; inverse `exp(z)`.
    Log,
}

impl Transform {
    fn forward(self, value: f64) -> f64 {
        match self {
            Self::Identity => value,
            Self::Sqrt => value.max(0.0).sqrt(),
            Self::Log => value.max(f64::MIN_POSITIVE).ln(),
        }
    }

    fn inverse(self, value: f64) -> f64 {
        match self {
            Self::Identity => value,
            Self::Sqrt => value.max(0.0).powi(2),
            // ln(f64::MAX) is about 709.78: clamp so the inverse stays finite.
            Self::Log => value.min(709.0).exp(),
        }
    }

    fn lambda(self) -> f64 {
        match self {
            Self::Identity => 1.0,
            Self::Sqrt => 0.5,
            Self::Log => 0.0,
        }
    }
}

/// Maps values between the caller's scale and the models' standardised scale.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Scaler {
    /// The variance-stabilising transform applied first.
    pub(crate) transform: Transform,
    /// Subtracted after the transform (a median, so spikes do not move it).
    center: f64,
    /// Divides after centring (a robust sigma, 1 for constant series).
    scale: f64,
}

impl Scaler {
    pub(crate) fn forward(&self, value: f64) -> f64 {
        (self.transform.forward(value) - self.center) / self.scale
    }

    /// Maps observed values back to the caller's scale, keeping gaps (`NaN`) as gaps, so scores in
    /// the caller's units skip the same steps as in model units.
    pub(crate) fn inverse_observed(&self, values: &[f64]) -> Vec<f64> {
        map_observed(values, |value| self.inverse(value))
    }

    /// `values` on the model scale, keeping gaps (`NaN`) as gaps.
    pub(super) fn forward_observed(&self, values: &[f64]) -> Vec<f64> {
        map_observed(values, |value| self.forward(value))
    }

    /// Back to the caller's scale, clamped so the result is always finite.
    pub(crate) fn inverse(&self, value: f64) -> f64 {
        let transformed = (value * self.scale + self.center).clamp(f64::MIN, f64::MAX);
        let original = self.transform.inverse(transformed);
        if original.is_nan() {
            self.transform.inverse(self.center)
        } else {
            original.clamp(f64::MIN, f64::MAX)
        }
    }

    /// The scaler that standardises `clean` after `transform`: centred on the median of the
    /// transformed values and divided by their robust sigma.
    pub(super) fn fit(transform: Transform, clean: &[f64]) -> (Self, Vec<f64>) {
        let transformed: Vec<f64> = clean.iter().map(|v| transform.forward(*v)).collect();
        let center = stats::median(&transformed).unwrap_or(0.0);
        let scale = unit_scale(&transformed, center);
        let scaler = Scaler {
            transform,
            center,
            scale,
        };
        let values = transformed.iter().map(|v| (v - center) / scale).collect();
        (scaler, values)
    }
}

/// `values` mapped by `map`, gaps (`NaN`) kept as gaps.
fn map_observed(values: &[f64], map: impl Fn(f64) -> f64) -> Vec<f64> {
    values
        .iter()
        .map(|value| {
            if value.is_nan() {
                f64::NAN
            } else {
                map(*value)
            }
        })
        .collect()
}

/// A robust, strictly positive, finite scale for `values` around `center`.
pub(super) fn unit_scale(values: &[f64], center: f64) -> f64 {
    let robust = stats::mad_sigma(values, center).unwrap_or(0.0);
    let scale = if robust > 0.0 && robust.is_finite() {
        robust
    } else {
        stats::std_dev(values)
    };
    if scale > 0.0 && scale.is_finite() {
        scale
    } else {
        1.0
    }
}

/// The transform `choice` asks for, where the values allow it: `Auto` picks by [`guerrero`]
/// among those the minimum of `raw` and `clean` allows.
pub(super) fn choose_transform(
    choice: TransformChoice,
    clean: &[f64],
    raw: &[f64],
    period: Option<usize>,
) -> Transform {
    let minimum = raw
        .iter()
        .chain(clean)
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let sqrt_allowed = minimum >= 0.0;
    let log_allowed = minimum > 0.0;
    match choice {
        TransformChoice::Identity => Transform::Identity,
        TransformChoice::Sqrt if sqrt_allowed => Transform::Sqrt,
        TransformChoice::Log if log_allowed => Transform::Log,
        TransformChoice::Sqrt | TransformChoice::Log => Transform::Identity,
        TransformChoice::Auto => {
            let mut candidates = vec![Transform::Identity];
            if sqrt_allowed {
                candidates.push(Transform::Sqrt);
            }
            if log_allowed {
                candidates.push(Transform::Log);
            }
            guerrero(clean, period, &candidates)
        }
    }
}

/// Guerrero's λ among `candidates`; identity unless another is clearly (10%) more stable, since a
/// needless transform only adds curvature to the inverse.
fn guerrero(values: &[f64], period: Option<usize>, candidates: &[Transform]) -> Transform {
    let chunk = period
        .filter(|p| values.len() >= 4 * p && *p >= 2)
        .unwrap_or_else(|| (values.len() / 8).max(2));
    // The criterion is scale-invariant, so divide by the largest magnitude to keep sums finite.
    let largest = values.iter().fold(0.0_f64, |acc, v| acc.max(v.abs()));
    if largest <= 0.0 || !largest.is_finite() {
        return Transform::Identity;
    }
    let groups: Vec<(f64, f64)> = values
        .chunks_exact(chunk)
        .map(|group| {
            let scaled: Vec<f64> = group.iter().map(|v| v / largest).collect();
            (stats::mean(&scaled), stats::std_dev(&scaled))
        })
        .collect();
    if groups.len() < 3 || groups.iter().any(|(mean, _)| *mean <= 0.0) {
        return Transform::Identity;
    }
    let variation = |transform: Transform| {
        let ratios: Vec<f64> = groups
            .iter()
            .map(|(mean, sd)| sd / mean.powf(1.0 - transform.lambda()))
            .collect();
        let center = stats::mean(&ratios);
        if center > 0.0 {
            stats::std_dev(&ratios) / center
        } else {
            f64::INFINITY
        }
    };
    let identity = variation(Transform::Identity);
    candidates
        .iter()
        .copied()
        .map(|transform| (transform, variation(transform)))
        .filter(|(_, score)| score.is_finite())
        .min_by(|left, right| left.1.total_cmp(&right.1))
        .filter(|(_, score)| *score < 0.9 * identity)
        .map_or(Transform::Identity, |(transform, _)| transform)
}
