//! Gaps and outliers: linear interpolation inside gaps, a short Hampel filter against spikes, and
//! a seasonal pass that replaces points far from the same phase of neighbouring cycles (and fills
//! long outages with the seasonal shape).

use crate::forecast::stats;

/// Floor of the residual sigma in outlier tests, in units of the series' robust sigma.
const MIN_RESIDUAL_SIGMA: f64 = 0.05;

/// The outlier rule a stored model applies to newer data (see [`super::prepare_recent`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Cleaning {
    /// Half width of the rolling-median filter, in steps.
    pub(super) hampel_half_window: usize,
    /// Robust z-score beyond which a point is replaced.
    pub(super) outlier_threshold: f64,
}

/// Linear interpolation inside gaps; the ends are held at the nearest observation.
pub(super) fn interpolate(values: &[f64]) -> Vec<f64> {
    let mut filled = values.to_vec();
    let mut last_observed: Option<usize> = None;
    for index in 0..values.len() {
        if values[index].is_nan() {
            continue;
        }
        match last_observed {
            Some(previous) if index > previous + 1 => {
                let from = values[previous];
                let to = values[index];
                let width = (index - previous) as f64;
                for (offset, slot) in filled[previous + 1..index].iter_mut().enumerate() {
                    let fraction = (offset + 1) as f64 / width;
                    *slot = from + (to - from) * fraction;
                }
            }
            None => filled[..index].fill(values[index]),
            _ => {}
        }
        last_observed = Some(index);
    }
    if let Some(last) = last_observed {
        let hold = values[last];
        filled[last + 1..].fill(hold);
    }
    filled
}

/// Hampel filter: replaces observed points far from their rolling median by that median.
///
/// Pearson (2002), "Outliers in process modeling and identification", IEEE TCST 10(1). The scale is
/// the MAD of all rolling-median residuals rather than a local MAD, so a flat stretch (local MAD 0)
/// does not turn every small wiggle into an outlier.
pub(super) fn hampel(
    filled: &mut [f64],
    observed: &[f64],
    half_window: usize,
    threshold: f64,
) -> usize {
    if !threshold.is_finite() || filled.len() < 2 * half_window + 1 {
        return 0;
    }
    let mut window = Vec::with_capacity(2 * half_window + 1);
    let len = filled.len();
    let rolling: Vec<f64> = (0..len)
        .map(|index| {
            // Points without a full window on both sides are not judged: one-sided neighbours
            // of a sloped stretch would make its ends look like outliers.
            if index < half_window || index + half_window >= len {
                return f64::NAN;
            }
            let from = index - half_window;
            let to = index + half_window + 1;
            // The point itself is left out: on a smooth monotone stretch it would be its own
            // window's median, and the residual scale would collapse to zero.
            window.clear();
            window.extend_from_slice(&filled[from..index]);
            window.extend_from_slice(&filled[index + 1..to]);
            stats::median_in_place(&mut window).unwrap_or(filled[index])
        })
        .collect();
    replace_far(filled, observed, &rolling, threshold)
}

/// Replaces observed points far from the median of the same phase in neighbouring cycles, and
/// fills empty buckets from those neighbours, so a long outage takes the seasonal shape rather
/// than a straight line.
///
/// Phases are compared after removing a rolling median level, so a level shift is not mistaken
/// for a run of outliers on either side of it. Only points with a later cycle are judged: at the
/// end of the series a departure from the past may be a real change, which the models must see.
pub(super) fn seasonal_clean(
    filled: &mut [f64],
    observed: &[f64],
    period: usize,
    threshold: f64,
) -> usize {
    let expected = seasonal_expectation(filled, observed, period);
    for index in 0..filled.len() {
        if observed[index].is_nan() && expected[index].is_finite() {
            filled[index] = expected[index];
        }
    }
    replace_far(filled, observed, &expected, threshold)
}

/// Expected value of each point from its rolling level plus the median detrended value of the
/// same phase in up to three cycles either side (only where `trusted` is not NaN, which marks
/// gaps); NaN where that is not defined or where no later cycle exists.
fn seasonal_expectation(filled: &[f64], trusted: &[f64], period: usize) -> Vec<f64> {
    const NEIGHBOUR_CYCLES: usize = 3;
    let len = filled.len();
    let masked: Vec<f64> = filled
        .iter()
        .zip(trusted)
        .map(|(v, t)| if t.is_nan() { f64::NAN } else { *v })
        .collect();
    // The level is a rolling median of the series minus a global per-phase median profile:
    // without the profile, a window missing some phases (an outage) is biased towards the others.
    let mut profile: Vec<f64> = (0..period)
        .map(|phase| {
            let same_phase: Vec<f64> = masked.iter().skip(phase).step_by(period).copied().collect();
            stats::median(&same_phase).unwrap_or(0.0)
        })
        .collect();
    let profile_center = stats::median(&profile).unwrap_or(0.0);
    for value in &mut profile {
        *value -= profile_center;
    }
    let without_profile: Vec<f64> = masked
        .iter()
        .enumerate()
        .map(|(index, v)| v - profile[index % period])
        .collect();
    let level = rolling_level(&without_profile, period);
    let deseasoned: Vec<f64> = masked.iter().zip(&level).map(|(v, l)| v - l).collect();
    let mut neighbours = Vec::with_capacity(2 * NEIGHBOUR_CYCLES);
    (0..len)
        .map(|index| {
            if index + period >= len {
                return f64::NAN;
            }
            neighbours.clear();
            for cycle in 1..=NEIGHBOUR_CYCLES {
                let offset = cycle * period;
                if index >= offset && deseasoned[index - offset].is_finite() {
                    neighbours.push(deseasoned[index - offset]);
                }
                if index + offset < len && deseasoned[index + offset].is_finite() {
                    neighbours.push(deseasoned[index + offset]);
                }
            }
            if neighbours.len() < 2 || !level[index].is_finite() {
                return f64::NAN;
            }
            stats::median_in_place(&mut neighbours).map_or(f64::NAN, |shape| level[index] + shape)
        })
        .collect()
}

/// Centred rolling median over one period (ignoring NaN), evaluated every eighth of a period and
/// interpolated linearly in between (a full rolling median would cost a selection per point).
fn rolling_level(values: &[f64], period: usize) -> Vec<f64> {
    let len = values.len();
    let stride = (period / 8).max(1);
    let half = period / 2;
    let mut window = Vec::with_capacity(period + 1);
    let anchors: Vec<(usize, f64)> = (0..len)
        .step_by(stride)
        .chain(std::iter::once(len - 1))
        .map(|center| {
            let from = center.saturating_sub(half);
            let to = (center + half + 1).min(len);
            window.clear();
            window.extend(values[from..to].iter().filter(|v| v.is_finite()));
            (
                center,
                stats::median_in_place(&mut window).unwrap_or(f64::NAN),
            )
        })
        .collect();
    let mut level = vec![0.0; len];
    for pair in anchors.windows(2) {
        let ((left, left_value), (right, right_value)) = (pair[0], pair[1]);
        let span = (right - left).max(1) as f64;
        for (index, slot) in level.iter_mut().enumerate().take(right + 1).skip(left) {
            let fraction = (index - left) as f64 / span;
            *slot = left_value + (right_value - left_value) * fraction;
        }
    }
    if anchors.len() == 1 {
        level.fill(anchors[0].1);
    }
    level
}

/// Robust sigma of `filled - expected` over observed points with an expectation; 0 if undefined.
fn residual_sigma(filled: &[f64], observed: &[f64], expected: &[f64]) -> f64 {
    let residuals: Vec<f64> = filled
        .iter()
        .zip(expected)
        .zip(observed)
        .filter(|((_, e), o)| e.is_finite() && !o.is_nan())
        .map(|((v, e), _)| v - e)
        .collect();
    stats::mad_sigma(&residuals, 0.0)
        .filter(|sigma| sigma.is_finite())
        .unwrap_or(0.0)
}

/// Replaces observed points whose distance from `expected` exceeds `threshold` robust sigmas.
fn replace_far(filled: &mut [f64], observed: &[f64], expected: &[f64], threshold: f64) -> usize {
    if !threshold.is_finite() {
        return 0;
    }
    let sigma = residual_sigma(filled, observed, expected);
    // A zero sigma means most points match their expectation exactly (e.g. a step function);
    // nothing can be called an outlier relative to that, so leave the series alone.
    if sigma <= 0.0 {
        return 0;
    }
    // On a nearly noise-free series sigma is tiny and the curvature at every peak would look
    // like an outlier; the values here are in units of the series' robust sigma, so this floor
    // never calls a departure of less than a quarter of the series' spread an outlier.
    let sigma = sigma.max(MIN_RESIDUAL_SIGMA);
    let mut replaced = 0;
    for index in 0..filled.len() {
        let far = expected[index].is_finite()
            && !observed[index].is_nan()
            && (filled[index] - expected[index]).abs() > threshold * sigma;
        if far {
            filled[index] = expected[index];
            replaced += 1;
        }
    }
    replaced
}
