//! Preprocessing shared by every model: gap filling, outlier replacement, a variance-stabilising
//! transform and robust standardisation, plus the inverse that maps forecasts back.
//!
//! Models see a gap-free series on a unit scale, so an outage does not teach a false pattern, a
//! spike does not inflate a regression, and huge or tiny magnitudes cannot overflow. Gaps and
//! outliers are handled in `cleaning`, the transform and scale in `transform`, and a recent level
//! shift in `level_shift`.

mod cleaning;
mod transform;

use crate::domain::{Step, TimeSeries, Timestamp};

use super::ForecastError;
use super::level_shift::{self, Adjustment, LevelShift};
use super::seasonality::{self, Seasonality, SeasonalityParams};
use super::stats;

pub(crate) use cleaning::Cleaning;
pub(crate) use transform::Scaler;
pub use transform::{Transform, TransformChoice};

use cleaning::{hampel, interpolate, seasonal_clean};
use transform::{choose_transform, unit_scale};

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
    /// How the history before `level_shift` was moved.
    pub(crate) shift_adjustment: Option<Adjustment>,
    /// No observed value of the history fitted is negative.
    pub(crate) non_negative: bool,
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
    /// No observed value of the history fitted was negative: forecasts and their bounds are
    /// kept at or above zero. False in models stored before it was kept, which are not clamped.
    #[serde(default)]
    pub non_negative: bool,
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
            non_negative: prepared.non_negative,
        }
    }
}

/// Whether no observed value (NaN marks a gap) is negative: what keeps a series' forecasts at or
/// above zero, at the fit and on every re-anchor.
pub(crate) fn never_negative(values: &[f64]) -> bool {
    values.iter().all(|value| value.is_nan() || *value >= 0.0)
}

/// Runs the whole pipeline; fails with `NotEnoughHistory` below [`MIN_OBSERVED`] observations.
pub(crate) fn prepare(
    series: &TimeSeries,
    params: &PreprocessParams,
) -> Result<Prepared, ForecastError> {
    let (first, raw) = newest_observed(series, params)?;
    let non_negative = never_negative(&raw);
    let start = series.time_at(first);
    let step = series.step();

    // Work on a robust unit scale from here on, so huge magnitudes cannot overflow sums.
    let raw_center = stats::median(&raw).unwrap_or(0.0);
    let raw_scale = unit_scale(&raw, raw_center);
    let unit: Vec<f64> = raw.iter().map(|v| (v - raw_center) / raw_scale).collect();
    let cleaned = clean(&unit, step, params);

    let mut original_clean: Vec<f64> = cleaned
        .filled
        .iter()
        .map(|v| v * raw_scale + raw_center)
        .collect();
    let mut raw = raw;
    let shifted = level_shift::remove_recent(
        &mut original_clean,
        &mut raw,
        step,
        &cleaned.seasonality,
        params.level_shift_threshold,
        |index| series.time_at(first + index),
    );
    let transform = choose_transform(
        params.transform,
        &original_clean,
        &raw,
        cleaned.seasonality.primary(),
    );
    let (scaler, values) = Scaler::fit(transform, &original_clean);
    let actual = scaler.forward_observed(&raw);
    Ok(Prepared {
        start,
        step,
        values,
        actual,
        scaler,
        seasonality: cleaned.seasonality,
        outliers: cleaned.outliers,
        imputed: cleaned.imputed,
        level_shift: shifted.map(|(shift, _)| shift),
        shift_adjustment: shifted.map(|(_, adjustment)| adjustment),
        non_negative,
    })
}

/// The index of the first observed value within the newest `max_history` points of `series`,
/// and the values from there on (non-finite ones as `NaN`); fails with `NotEnoughHistory` below
/// [`MIN_OBSERVED`] observations.
fn newest_observed(
    series: &TimeSeries,
    params: &PreprocessParams,
) -> Result<(usize, Vec<f64>), ForecastError> {
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
    Ok((first, raw[first..].to_vec()))
}

/// A series on the unit scale with its gaps filled and outliers replaced.
struct Cleaned {
    /// Gap-free values with outliers replaced.
    filled: Vec<f64>,
    /// Periods detected on the trusted (observed, non-outlying) points.
    seasonality: Seasonality,
    /// Points replaced as outliers.
    outliers: usize,
    /// Empty buckets filled in.
    imputed: usize,
}

/// Fills the gaps of `unit`, replaces spikes with the short Hampel filter, detects the periods,
/// and replaces what is far from the seasonal shape of the primary period.
fn clean(unit: &[f64], step: Step, params: &PreprocessParams) -> Cleaned {
    let mut filled = interpolate(unit);
    let imputed = unit.iter().filter(|v| v.is_nan()).count();
    let mut outliers = hampel(
        &mut filled,
        unit,
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
        outliers += seasonal_clean(&mut filled, unit, period, params.outlier_threshold);
    }
    Cleaned {
        filled,
        seasonality,
        outliers,
        imputed,
    }
}

/// The newest `points` of `series` ready for a stored model: those before the time of `shift`
/// moved by its adjustment as the fit moved its history, on the model scale of `scaler`, gaps
/// interpolated and spikes replaced by the short Hampel filter the fit used. The seasonal outlier
/// pass of [`prepare`] is left out: it needs whole seasons and a fresh seasonality detection,
/// which is the refit a stored model avoids. Returns the time of the first value and the values.
pub(crate) fn prepare_recent(
    series: &TimeSeries,
    points: usize,
    scaler: &Scaler,
    cleaning: Cleaning,
    shift: Option<(Timestamp, Adjustment)>,
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
        .enumerate()
        .map(|(offset, v)| {
            if !v.is_finite() {
                return f64::NAN;
            }
            match shift {
                Some((at, adjustment)) if series.time_at(from + offset) < at => {
                    scaler.forward(adjustment.apply(*v))
                }
                _ => scaler.forward(*v),
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
