//! Preprocessing shared by every model: gap filling, outlier replacement, a variance-stabilising
//! transform and robust standardisation, plus the inverse that maps forecasts back.
//!
//! Models see a gap-free series on a unit scale, so an outage does not teach a false pattern, a
//! spike does not inflate a regression, and huge or tiny magnitudes cannot overflow.

use crate::domain::{Step, TimeSeries, Timestamp};

use super::ForecastError;
use super::level_shift;
use super::seasonality::{self, Seasonality, SeasonalityParams};
use super::stats;

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

/// Parameters of the preprocessing every model runs.
///
/// | Name | Default | Purpose | Range |
/// |---|---|---|---|
/// | `outlier_threshold` | 5.0 | robust z-score beyond which a point is replaced | `> 0`, `inf` disables |
/// | `hampel_half_window` | 3 | half width of the short rolling-median filter, in steps | `>= 1` |
/// | `transform` | `Auto` | variance-stabilising transform | see [`TransformChoice`] |
/// | `seasonality` | default | how periods are detected | see [`SeasonalityParams`] |
/// | `max_history` | 28 days of steps, at least 8,064 | most recent points kept | `>= 16` |
/// | `level_shift_threshold` | 8.0 | size, in noise sigmas of seasonal differences, from which a jump still in force at the end moves the older history to the new level | `> 0`, `inf` disables |
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessParams {
    outlier_threshold: f64,
    hampel_half_window: usize,
    transform: TransformChoice,
    seasonality: SeasonalityParams,
    max_history: Option<usize>,
    level_shift_threshold: f64,
}

impl Default for PreprocessParams {
    fn default() -> Self {
        Self {
            outlier_threshold: 5.0,
            hampel_half_window: 3,
            transform: TransformChoice::Auto,
            seasonality: SeasonalityParams::default(),
            max_history: None,
            level_shift_threshold: 8.0,
        }
    }
}

/// Floor of the residual sigma in outlier tests, in units of the series' robust sigma.
const MIN_RESIDUAL_SIGMA: f64 = 0.05;

/// Fewest observed points any model accepts: below this no period or error can be estimated.
pub const MIN_OBSERVED: usize = 16;

impl PreprocessParams {
    /// Robust z-score beyond which a point counts as an outlier (`f64::INFINITY` disables).
    #[must_use]
    pub fn outlier_threshold(mut self, threshold: f64) -> Self {
        self.outlier_threshold = threshold;
        self
    }

    /// Half width of the short rolling-median (Hampel) filter.
    #[must_use]
    pub fn hampel_half_window(mut self, steps: usize) -> Self {
        self.hampel_half_window = steps;
        self
    }

    /// The variance-stabilising transform.
    #[must_use]
    pub fn transform(mut self, transform: TransformChoice) -> Self {
        self.transform = transform;
        self
    }

    /// Seasonality detection settings.
    #[must_use]
    pub fn seasonality(mut self, params: SeasonalityParams) -> Self {
        self.seasonality = params;
        self
    }

    /// Most recent points kept; older history is dropped before anything else.
    #[must_use]
    pub fn max_history(mut self, points: usize) -> Self {
        self.max_history = Some(points);
        self
    }

    /// Size of a recent level shift, in noise sigmas of the seasonal differences, from which the
    /// history before it is moved to the new level (`f64::INFINITY` disables).
    #[must_use]
    pub fn level_shift_threshold(mut self, sigmas: f64) -> Self {
        self.level_shift_threshold = sigmas;
        self
    }

    /// Validates the parameters.
    pub fn check(self) -> Result<Self, ForecastError> {
        if self.level_shift_threshold.is_nan() || self.level_shift_threshold <= 0.0 {
            return Err(ForecastError::invalid(
                "level_shift_threshold",
                "must be positive (infinity disables level-shift handling)",
            ));
        }
        if self.outlier_threshold.is_nan() || self.outlier_threshold <= 0.0 {
            return Err(ForecastError::invalid(
                "outlier_threshold",
                "must be positive (infinity disables outlier handling)",
            ));
        }
        if self.hampel_half_window == 0 {
            return Err(ForecastError::invalid(
                "hampel_half_window",
                "must be at least 1",
            ));
        }
        if self.max_history.is_some_and(|points| points < MIN_OBSERVED) {
            return Err(ForecastError::invalid(
                "max_history",
                format!("must be at least {MIN_OBSERVED}"),
            ));
        }
        let seasonality = self.seasonality.check()?;
        Ok(Self {
            seasonality,
            ..self
        })
    }

    /// How newer data is cleaned before a stored model forecasts from it.
    pub(crate) fn cleaning(&self) -> Cleaning {
        Cleaning {
            hampel_half_window: self.hampel_half_window,
            outlier_threshold: self.outlier_threshold,
        }
    }

    fn resolved_max_history(&self, step: Step) -> usize {
        self.max_history.unwrap_or_else(|| {
            let four_weeks = (28 * 86_400_000 / step.as_millis().max(1)) as usize;
            four_weeks.max(8064)
        })
    }
}

/// The outlier rule a stored model applies to newer data (see [`prepare_recent`]).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Cleaning {
    /// Half width of the rolling-median filter, in steps.
    hampel_half_window: usize,
    /// Robust z-score beyond which a point is replaced.
    outlier_threshold: f64,
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
        values
            .iter()
            .map(|value| {
                if value.is_nan() {
                    f64::NAN
                } else {
                    self.inverse(*value)
                }
            })
            .collect()
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
}

/// A series ready for the models: gap-free, cleaned, transformed and standardised.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// Time of `values[0]` (leading gaps and history beyond `max_history` are dropped).
    pub(crate) start: Timestamp,
    /// Spacing of the series.
    pub(crate) step: Step,
    /// Cleaned values on the model scale: what models fit.
    pub(crate) values: Vec<f64>,
    /// Observed values on the model scale, NaN where the bucket was empty: what errors are scored on.
    pub(crate) actual: Vec<f64>,
    /// Mapping to and from the caller's scale.
    pub(crate) scaler: Scaler,
    /// Periods detected on the cleaned series.
    pub(crate) seasonality: Seasonality,
    /// Points replaced as outliers.
    pub(crate) outliers: usize,
    /// Empty buckets filled in.
    pub(crate) imputed: usize,
    /// A recent level shift the older history was moved by.
    pub(crate) level_shift: Option<LevelShift>,
}

impl Prepared {
    /// Time just after the last value, where forecasts start.
    pub(crate) fn end(&self) -> Timestamp {
        self.time_at(self.values.len())
    }

    /// Time of `values[index]`.
    pub(crate) fn time_at(&self, index: usize) -> Timestamp {
        let offset = i64::try_from(index).unwrap_or(i64::MAX);
        self.start
            .saturating_add_millis(offset.saturating_mul(self.step.as_millis()))
    }
}

/// What preprocessing did to a series, for reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreprocessSummary {
    /// Points the models were fitted on (after trimming).
    pub points: usize,
    /// Empty buckets that were filled in.
    pub imputed: usize,
    /// Points replaced as outliers.
    pub outliers: usize,
    /// The transform chosen.
    pub transform: Transform,
    /// The periods found.
    pub seasonality: Seasonality,
    /// A level shift still in force at the end of the history: the models saw the history before
    /// it moved to the new level.
    #[serde(default)]
    pub level_shift: Option<LevelShift>,
}

/// A jump to a new level found near the end of a series, in the caller's units.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LevelShift {
    /// Time of the first point at the new level.
    pub at: Timestamp,
    /// Median of the season before the shift.
    pub before: f64,
    /// Median from the shift to the end.
    pub after: f64,
    /// The older history was scaled by the ratio of the levels (else the difference was added).
    pub multiplicative: bool,
    /// The factor the older history's deviations from its level were shrunk by, when the series
    /// wiggles far less at the new level (see `level_shift::Adjustment::Damp`); models stored
    /// before it was introduced read `None`.
    #[serde(default)]
    pub damping: Option<f64>,
}

impl From<&Prepared> for PreprocessSummary {
    fn from(prepared: &Prepared) -> Self {
        Self {
            points: prepared.values.len(),
            imputed: prepared.imputed,
            outliers: prepared.outliers,
            transform: prepared.scaler.transform,
            seasonality: prepared.seasonality.clone(),
            level_shift: prepared.level_shift,
        }
    }
}

/// Runs the whole pipeline; fails with `NotEnoughHistory` below [`MIN_OBSERVED`] observations.
pub(crate) fn prepare(
    series: &TimeSeries,
    params: &PreprocessParams,
) -> Result<Prepared, ForecastError> {
    let raw: Vec<f64> = series
        .values()
        .iter()
        .map(|v| if v.is_finite() { *v } else { f64::NAN })
        .collect();
    let keep_from = raw
        .len()
        .saturating_sub(params.resolved_max_history(series.step()));
    let first_observed = raw[keep_from..]
        .iter()
        .position(|v| !v.is_nan())
        .map(|offset| keep_from + offset);
    let observed = raw[keep_from..].iter().filter(|v| !v.is_nan()).count();
    let Some(first) = first_observed.filter(|_| observed >= MIN_OBSERVED) else {
        return Err(ForecastError::NotEnoughHistory {
            needed: MIN_OBSERVED,
            got: observed,
        });
    };
    let raw = &raw[first..];
    let start = series.time_at(first);
    let step = series.step();

    // Work on a robust unit scale from here on, so huge magnitudes cannot overflow sums.
    let raw_center = stats::median(raw).unwrap_or(0.0);
    let raw_scale = unit_scale(raw, raw_center);
    let unit: Vec<f64> = raw.iter().map(|v| (v - raw_center) / raw_scale).collect();

    let mut filled = interpolate(&unit);
    let imputed = unit.iter().filter(|v| v.is_nan()).count();
    let mut outliers = hampel(
        &mut filled,
        &unit,
        params.hampel_half_window,
        params.outlier_threshold,
    );
    // Detect on observed, non-outlying points only: interpolated stretches and spikes would
    // dilute the autocorrelation of the real pattern.
    let trusted: Vec<f64> = unit
        .iter()
        .zip(&filled)
        .map(|(observed, cleaned)| {
            if observed == cleaned {
                *observed
            } else {
                f64::NAN
            }
        })
        .collect();
    let seasonality = seasonality::detect(&trusted, step, &params.seasonality);
    if let Some(period) = seasonality.primary() {
        outliers += seasonal_clean(&mut filled, &unit, period, params.outlier_threshold);
    }

    let mut original_clean: Vec<f64> = filled.iter().map(|v| v * raw_scale + raw_center).collect();
    let mut raw = raw.to_vec();
    let level_shift = find_level_shift(
        &original_clean,
        step,
        &seasonality,
        params.level_shift_threshold,
    )
    .map(|(detected, season)| {
        let adjustment = level_shift::adjustment(&original_clean, detected, season);
        let season_before = detected.index.saturating_sub(season);
        let summary = LevelShift {
            at: series.time_at(first + detected.index),
            before: stats::median(&original_clean[season_before..detected.index])
                .unwrap_or(f64::NAN),
            after: stats::median(&original_clean[detected.index..]).unwrap_or(f64::NAN),
            multiplicative: matches!(adjustment, level_shift::Adjustment::Scale(_)),
            damping: match adjustment {
                level_shift::Adjustment::Damp { factor, .. } => Some(factor),
                _ => None,
            },
        };
        // Models fit, and backtests score, the history moved to the new level.
        level_shift::adjust(&mut original_clean, detected.index, adjustment);
        level_shift::adjust(&mut raw, detected.index, adjustment);
        summary
    });
    let raw = raw.as_slice();
    let transform = choose_transform(
        params.transform,
        &original_clean,
        raw,
        seasonality.primary(),
    );
    let transformed: Vec<f64> = original_clean
        .iter()
        .map(|v| transform.forward(*v))
        .collect();
    let center = stats::median(&transformed).unwrap_or(0.0);
    let scale = unit_scale(&transformed, center);
    let scaler = Scaler {
        transform,
        center,
        scale,
    };
    let values = transformed.iter().map(|v| (v - center) / scale).collect();
    let actual = raw
        .iter()
        .map(|v| {
            if v.is_nan() {
                f64::NAN
            } else {
                scaler.forward(*v)
            }
        })
        .collect();
    Ok(Prepared {
        start,
        step,
        values,
        actual,
        scaler,
        seasonality,
        outliers,
        imputed,
        level_shift,
    })
}

/// Steps in a day (at least 1).
fn values_per_day(step: Step) -> usize {
    usize::try_from(86_400_000 / step.as_millis().max(1))
        .unwrap_or(1)
        .max(1)
}

/// The newest level shift of `values` still in force, at most a week (or a season, if longer)
/// old, and the season it was tested on: the longest detected period with three cycles in the
/// history, repeated to span at least a day when three such spans fit, else one day. A rise must
/// have lasted a sixteenth of the season (at least 6 steps), a drop more than a day.
fn find_level_shift(
    values: &[f64],
    step: Step,
    seasonality: &Seasonality,
    threshold: f64,
) -> Option<(level_shift::Detected, usize)> {
    let day = values_per_day(step);
    let fits = |season: &usize| 3 * season <= values.len();
    let season = match seasonality
        .steps_fitting(values.len(), 3.0)
        .into_iter()
        .max()
    {
        // Whole cycles spanning at least a day: a cycle of an hour is too short a reference to
        // tell a shift from a burst, and its multiple still cancels the cycle.
        Some(period) => Some(period * day.div_ceil(period))
            .filter(fits)
            .unwrap_or(period),
        None => Some(day).filter(fits)?,
    };
    let max_age = (7 * day).max(season);
    level_shift::detect_recent(values, season, (season / 16).max(6), threshold, max_age)
        // A drop moves the history down, so forecasts and plans with it: it must outlast a day
        // (a holiday, an outage) first. A rise is taken as soon as it has lasted.
        .filter(|detected| detected.shift > 0.0 || values.len() - detected.index > day)
        .map(|detected| (detected, season))
}

/// The newest `points` of `series` ready for a stored model: on the model scale of `scaler`, gaps
/// interpolated and spikes replaced by the short Hampel filter the fit used. The seasonal outlier
/// pass of [`prepare`] is left out: it needs whole seasons and a fresh seasonality detection,
/// which is the refit a stored model avoids. Returns the time of the first value and the values.
pub(crate) fn prepare_recent(
    series: &TimeSeries,
    points: usize,
    scaler: &Scaler,
    cleaning: Cleaning,
) -> Result<(Timestamp, Vec<f64>), ForecastError> {
    let len = series.len();
    if len < points {
        return Err(ForecastError::NotEnoughHistory {
            needed: points,
            got: len,
        });
    }
    // A little more than needed, so the filter has neighbours on both sides of the first point.
    let from = len - (points + cleaning.hampel_half_window).min(len);
    let scaled: Vec<f64> = series.values()[from..]
        .iter()
        .map(|v| {
            if v.is_finite() {
                scaler.forward(*v)
            } else {
                f64::NAN
            }
        })
        .collect();
    if scaled.iter().all(|v| v.is_nan()) {
        return Err(ForecastError::NotEnoughHistory { needed: 1, got: 0 });
    }
    let mut filled = interpolate(&scaled);
    hampel(
        &mut filled,
        &scaled,
        cleaning.hampel_half_window,
        cleaning.outlier_threshold,
    );
    let skip = filled.len() - points;
    Ok((series.time_at(from + skip), filled.split_off(skip)))
}

/// Detects periods on a raw series after gap filling and outlier removal, without fitting a model.
pub fn detect_seasonality(
    series: &TimeSeries,
    params: &PreprocessParams,
) -> Result<Seasonality, ForecastError> {
    prepare(series, params).map(|prepared| prepared.seasonality)
}

/// A robust, strictly positive, finite scale for `values` around `center`.
fn unit_scale(values: &[f64], center: f64) -> f64 {
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

/// Linear interpolation inside gaps; the ends are held at the nearest observation.
fn interpolate(values: &[f64]) -> Vec<f64> {
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
fn hampel(filled: &mut [f64], observed: &[f64], half_window: usize, threshold: f64) -> usize {
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
fn seasonal_clean(filled: &mut [f64], observed: &[f64], period: usize, threshold: f64) -> usize {
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

fn choose_transform(
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

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn series(values: Vec<f64>) -> TimeSeries {
        TimeSeries::new(Timestamp::from_millis(0), Step::FIVE_MINUTES, values)
    }

    #[test]
    fn too_little_history_is_a_clear_error() {
        let mut values = vec![f64::NAN; 40];
        values[3] = 1.0;
        let error = prepare(&series(values), &PreprocessParams::default()).unwrap_err();
        assert_eq!(
            error,
            ForecastError::NotEnoughHistory {
                needed: MIN_OBSERVED,
                got: 1
            }
        );
    }

    #[test]
    fn gaps_are_filled_and_leading_gaps_trimmed() {
        let mut values: Vec<f64> = (0..40).map(|t| t as f64).collect();
        values[0] = f64::NAN;
        values[10] = f64::NAN;
        values[11] = f64::INFINITY;
        let prepared = prepare(
            &series(values),
            &PreprocessParams::default().transform(TransformChoice::Identity),
        )
        .unwrap();
        assert_eq!(prepared.start.as_millis(), Step::FIVE_MINUTES.as_millis());
        assert_eq!(prepared.imputed, 2);
        let restored: Vec<f64> = prepared
            .values
            .iter()
            .map(|v| prepared.scaler.inverse(*v))
            .collect();
        assert!((restored[9] - 10.0).abs() < 1e-9, "{restored:?}");
        assert!((restored[10] - 11.0).abs() < 1e-9);
        assert!(prepared.actual[9].is_nan());
    }

    #[test]
    fn spikes_and_outages_are_replaced_by_the_seasonal_shape() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let period = 48;
        let mut values: Vec<f64> = (0..period * 10)
            .map(|t| {
                100.0
                    + 30.0 * (2.0 * std::f64::consts::PI * t as f64 / period as f64).sin()
                    + rng.random_range(-2.0..2.0)
            })
            .collect();
        values[100] = 1000.0;
        for value in &mut values[200..212] {
            *value = 0.0;
        }
        let prepared = prepare(&series(values.clone()), &PreprocessParams::default()).unwrap();
        assert_eq!(prepared.seasonality.primary(), Some(period));
        let restored: Vec<f64> = prepared
            .values
            .iter()
            .map(|v| prepared.scaler.inverse(*v))
            .collect();
        assert!((restored[100] - 100.0).abs() < 40.0);
        for (index, value) in restored.iter().enumerate().take(212).skip(200) {
            let expected = 100.0 + 30.0 * (2.0 * std::f64::consts::PI * index as f64 / 48.0).sin();
            assert!((value - expected).abs() < 10.0, "{index}: {value}");
        }
        assert!(prepared.outliers >= 13);
    }

    #[test]
    fn multiplicative_counts_get_a_log_or_sqrt_and_invert_exactly() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // Level grows tenfold and noise grows with it: the textbook case for a log.
        let values: Vec<f64> = (0..2000)
            .map(|t| {
                let level = 10.0 * (1.0 + 9.0 * t as f64 / 2000.0);
                level * (1.0 + 0.2 * rng.random_range(-1.0..1.0))
            })
            .collect();
        let prepared = prepare(&series(values.clone()), &PreprocessParams::default()).unwrap();
        assert_ne!(prepared.scaler.transform, Transform::Identity);
        for (raw, model) in values.iter().zip(&prepared.actual) {
            assert!((prepared.scaler.inverse(*model) - raw).abs() < 1e-6 * raw.abs().max(1.0));
        }
    }

    #[test]
    fn a_level_shift_is_not_an_outlier() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let period = 48;
        let values: Vec<f64> = (0..period * 12)
            .map(|t| {
                let level = if t < period * 8 { 6.0 } else { 14.0 };
                level
                    + (2.0 * std::f64::consts::PI * t as f64 / period as f64).sin()
                    + rng.random_range(-0.3..0.3)
            })
            .collect();
        let prepared = prepare(&series(values), &PreprocessParams::default()).unwrap();
        assert!(prepared.outliers <= 5, "{} outliers", prepared.outliers);
    }

    #[test]
    fn a_shift_under_an_hourly_cycle_is_tested_on_whole_days() {
        // Ten days of 5-minute CPU with an hourly job, stepping up 17 hours before the end; the
        // step starts with an hour-long burst, as a deploy's warm-up does.
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let len = 288 * 10;
        let at = len - 204;
        let values: Vec<f64> = (0..len)
            .map(|t| {
                let level = match t {
                    t if t < at => 6.0,
                    t if t < at + 12 => 25.0,
                    _ => 14.5,
                };
                level + if t % 12 < 2 { 1.0 } else { 0.0 } + rng.random_range(-0.2..0.2)
            })
            .collect();
        let hourly = Seasonality::from_periods(vec![seasonality::SeasonalPeriod {
            steps: 12,
            strength: 0.5,
            calendar: None,
        }]);
        let (detected, season) =
            find_level_shift(&values, Step::FIVE_MINUTES, &hourly, 8.0).expect("a shift");
        assert_eq!(season, 288, "whole hours spanning a day");
        assert!(detected.index.abs_diff(at) <= 12, "at {}", detected.index);
        assert!(
            (detected.shift - 8.5).abs() < 1.0,
            "shift {}",
            detected.shift
        );
    }

    #[test]
    fn huge_and_constant_series_stay_finite() {
        for values in [vec![1e300; 50], vec![-3.0; 50], vec![0.0; 50]] {
            let prepared = prepare(&series(values.clone()), &PreprocessParams::default()).unwrap();
            assert!(prepared.values.iter().all(|v| v.is_finite()));
            assert_eq!(prepared.scaler.inverse(prepared.values[0]), values[0]);
        }
        assert!(
            PreprocessParams::default()
                .outlier_threshold(0.0)
                .check()
                .is_err()
        );
    }
}
