//! Forecasting use cases: parse what a user asks for, fit, predict, and score by rolling-origin backtest.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use crate::domain::{Forecast, Horizon, Level, Step, TimeSeries};
use crate::forecast::accuracy;
use crate::forecast::{
    BacktestParams, Fit, FittedModel, ForecastError, LevelShift, MemberKind, MemberSpec,
    ModelParams, Predict,
};

use super::AppError;

/// One day in milliseconds: the season MASE is scaled by.
const DAY_MILLIS: i64 = 86_400_000;

/// Which model to fit: the ensemble or one member alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelChoice {
    /// The backtested, weighted ensemble with conformal intervals.
    Ensemble,
    /// A single member, with the same preprocessing and calibrated intervals.
    Member(MemberKind),
}

impl ModelChoice {
    /// Every choice: the ensemble first, then each member.
    pub fn all() -> Vec<ModelChoice> {
        std::iter::once(Self::Ensemble)
            .chain(
                MemberSpec::all()
                    .into_iter()
                    .map(|spec| Self::Member(spec.kind())),
            )
            .collect()
    }

    /// The validated model parameters for this choice.
    pub fn params(self) -> Result<ModelParams, ForecastError> {
        self.unchecked().check()
    }

    /// The parameters of a model fitted to be served, re-anchored on newer data, until its next
    /// retrain: backtested from origins spread over the day (`BacktestParams::spread_origins`),
    /// since it will forecast from every time of day, not only from the one it was fitted at.
    pub fn served_params(self) -> Result<ModelParams, ForecastError> {
        self.unchecked()
            .backtest(BacktestParams::default().spread_origins())
            .check()
    }

    /// The parameters before their check.
    fn unchecked(self) -> ModelParams {
        match self {
            Self::Ensemble => ModelParams::ensemble(),
            Self::Member(kind) => ModelParams::single(MemberSpec::default_for(kind)),
        }
    }
}

impl fmt::Display for ModelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ensemble => f.write_str("ensemble"),
            Self::Member(kind) => write!(f, "{kind}"),
        }
    }
}

impl FromStr for ModelChoice {
    type Err = AppError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_lowercase();
        Self::all()
            .into_iter()
            .find(|choice| choice.to_string() == wanted)
            .ok_or_else(|| AppError::InvalidRequest {
                reason: format!(
                    "unknown model {text:?}; expected one of {}",
                    Self::all()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

/// Parses a horizon given as a duration (`1d`, `90m`) or a number of steps (`288`).
pub fn parse_horizon(text: &str, step: Step) -> Result<Horizon, AppError> {
    let trimmed = text.trim();
    let steps = match trimmed.parse::<usize>() {
        Ok(steps) => steps,
        Err(_) => {
            let duration =
                humantime::parse_duration(trimmed).map_err(|error| AppError::InvalidRequest {
                    reason: format!(
                        "horizon {trimmed:?} is neither a step count nor a duration: {error}"
                    ),
                })?;
            // A cast would wrap a huge duration round to a small one (2^64 ms + 1h to 1h).
            let millis =
                i64::try_from(duration.as_millis()).map_err(|_| AppError::InvalidRequest {
                    reason: format!("horizon {trimmed} is too long"),
                })?;
            if millis % step.as_millis() != 0 {
                return Err(AppError::InvalidRequest {
                    reason: format!("horizon {trimmed} is not a whole number of {step} steps"),
                });
            }
            (millis / step.as_millis()) as usize
        }
    };
    Ok(Horizon::try_from(steps)?)
}

/// Parses interval levels in percent, e.g. `80,95`.
pub fn parse_levels(text: &str) -> Result<Vec<Level>, AppError> {
    text.split(',')
        .map(|part| {
            let percent: f64 = part.trim().parse().map_err(|_| AppError::InvalidRequest {
                reason: format!("level {part:?} is not a number of percent"),
            })?;
            Ok(Level::from_percent(percent)?)
        })
        .collect()
}

/// Fits `choice` to `series`.
pub fn fit(series: &TimeSeries, choice: ModelChoice) -> Result<FittedModel, AppError> {
    Ok(choice.params()?.fit(series)?)
}

/// Fits `choice` to `series` to be served until the next retrain (see
/// [`ModelChoice::served_params`]): the live models of the service and the registry's.
pub fn fit_served(series: &TimeSeries, choice: ModelChoice) -> Result<FittedModel, AppError> {
    Ok(choice.served_params()?.fit(series)?)
}

/// A level shift in `history`, the newest data a served model `model` is re-anchored on, that a
/// fit of `history` would find and adjust for but `model` was not fitted with, and that is not
/// `refitting_for` (the shift a refit was already started for): a reason to refit before the next
/// retrain. A re-anchored model follows the newest points with its lags but keeps the level and
/// bands it learned, so after a lasting jump its bounds sit on the old level until it is refitted.
/// Preprocessing only, no fit (see `docs/decisions.md`, "Refitting on a level shift").
pub fn unfitted_level_shift(
    model: &FittedModel,
    history: &TimeSeries,
    refitting_for: Option<&LevelShift>,
) -> Result<Option<LevelShift>, ForecastError> {
    let Some(shift) = ModelChoice::Ensemble
        .served_params()?
        .level_shift(history)?
    else {
        return Ok(None);
    };
    let known = model.fitted_with(&shift)
        || refitting_for.is_some_and(|started| started.same_as(&shift, history.step()));
    Ok((!known).then_some(shift))
}

/// Fits and predicts in one call: the base forecaster the planner and the simulator use.
pub fn forecaster(
    choice: ModelChoice,
    levels: Vec<Level>,
) -> impl Fn(&TimeSeries, Horizon) -> Result<Forecast, ForecastError> {
    move |history: &TimeSeries, horizon: Horizon| {
        choice.params()?.fit(history)?.predict(horizon, &levels)
    }
}

/// Writes `timestamp,mean,lower_L,upper_L,...` with one lower/upper pair per level.
pub fn write_forecast_csv(forecast: &Forecast, path: &Path) -> Result<(), AppError> {
    let output_error = |source| AppError::Output {
        path: path.to_owned(),
        source,
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(output_error)?);
    let mut header = String::from("timestamp,mean");
    for interval in forecast.intervals() {
        let percent = interval.level.percent();
        header.push_str(&format!(",lower_{percent},upper_{percent}"));
    }
    writeln!(out, "{header}").map_err(output_error)?;
    for (index, mean) in forecast.point().iter().enumerate() {
        write!(out, "{},{mean}", forecast.time_at(index)).map_err(output_error)?;
        for interval in forecast.intervals() {
            write!(out, ",{},{}", interval.lower[index], interval.upper[index])
                .map_err(output_error)?;
        }
        writeln!(out).map_err(output_error)?;
    }
    out.flush().map_err(output_error)
}

/// Accuracy of one model over the folds of a backtest, averaged over the folds it could be scored on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelScore {
    /// The model.
    pub model: ModelChoice,
    /// Mean absolute scaled error: MAE over the in-sample MAE of the one-day seasonal naive forecast.
    pub mase: Option<f64>,
    /// Symmetric mean absolute percentage error, in percent.
    pub smape: Option<f64>,
    /// Share of observed values inside each level's interval, in the order the levels were asked.
    pub coverage: Vec<Option<f64>>,
    /// Mean width of each level's interval.
    pub width: Vec<Option<f64>>,
    /// Mean wall time of one fit plus predict, in milliseconds.
    pub fit_predict_millis: f64,
    /// Folds the model could be fitted and scored on.
    pub folds_scored: usize,
    /// Why the model failed on the folds it could not be fitted on, if any.
    pub failure: Option<String>,
}

/// A rolling-origin backtest: the last `folds * horizon` points are forecast `horizon` at a time, each
/// from the history before it (at most `max_history` points of it).
#[derive(Debug, Clone, PartialEq)]
pub struct Backtest {
    /// Steps forecast from each origin.
    pub horizon: Horizon,
    /// Number of origins.
    pub folds: usize,
    /// Interval levels scored.
    pub levels: Vec<Level>,
    /// Most recent points each fit may use (28 days by default).
    pub max_history: usize,
}

impl Backtest {
    /// Scores every `choice` on `series`.
    pub fn run(
        &self,
        series: &TimeSeries,
        choices: &[ModelChoice],
    ) -> Result<Vec<ModelScore>, AppError> {
        let horizon = self.horizon.steps();
        if self.folds == 0 {
            return Err(AppError::InvalidRequest {
                reason: "a backtest needs at least one fold".to_owned(),
            });
        }
        let needed = self.folds.saturating_mul(horizon);
        if series.len() <= needed {
            return Err(AppError::from(ForecastError::NotEnoughHistory {
                needed: needed.saturating_add(1),
                got: series.len(),
            }));
        }
        let season = ((DAY_MILLIS / series.step().as_millis()) as usize).max(1);
        let mut scores = Vec::new();
        for choice in choices {
            let params = choice.params()?;
            let mut totals = FoldTotals::new(self.levels.len());
            let mut failure = None;
            for fold in 0..self.folds {
                let origin = series.len() - needed + fold * horizon;
                let train_from = origin.saturating_sub(self.max_history);
                let train = series.slice(train_from..origin);
                let actual = &series.values()[origin..origin + horizon];
                let started = Instant::now();
                let outcome = params
                    .fit(&train)
                    .and_then(|model| model.predict(self.horizon, &self.levels));
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                match outcome {
                    Ok(forecast) => totals.add(
                        &forecast,
                        actual,
                        train.values(),
                        season,
                        &self.levels,
                        elapsed,
                    ),
                    Err(error) => failure = Some(error.to_string()),
                }
            }
            scores.push(totals.finish(*choice, failure));
        }
        Ok(scores)
    }
}

/// Running sums of the per-fold scores of one model.
#[derive(Debug)]
struct FoldTotals {
    /// MASE of each fold that had one.
    mase: Vec<f64>,
    /// sMAPE of each fold that had one.
    smape: Vec<f64>,
    /// Per requested level (in order), the interval coverage of each fold.
    coverage: Vec<Vec<f64>>,
    /// Per requested level (in order), the mean interval width of each fold.
    width: Vec<Vec<f64>>,
    /// Fit-and-predict time of each scored fold, in milliseconds; its length is the folds scored.
    millis: Vec<f64>,
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

impl FoldTotals {
    fn new(levels: usize) -> Self {
        Self {
            mase: Vec::new(),
            smape: Vec::new(),
            coverage: vec![Vec::new(); levels],
            width: vec![Vec::new(); levels],
            millis: Vec::new(),
        }
    }

    fn add(
        &mut self,
        forecast: &Forecast,
        actual: &[f64],
        history: &[f64],
        season: usize,
        levels: &[Level],
        millis: f64,
    ) {
        let point = forecast.point();
        self.millis.push(millis);
        if let Some(mase) = accuracy::mase(actual, point, history, season) {
            self.mase.push(mase);
        }
        if let Some(smape) = accuracy::smape(actual, point) {
            self.smape.push(smape);
        }
        for (index, level) in levels.iter().enumerate() {
            let Some(interval) = forecast.interval(*level) else {
                continue;
            };
            if let Some(coverage) = accuracy::coverage(actual, &interval.lower, &interval.upper) {
                self.coverage[index].push(coverage);
            }
            if let Some(width) = accuracy::mean_width(actual, &interval.lower, &interval.upper) {
                self.width[index].push(width);
            }
        }
    }

    fn finish(self, model: ModelChoice, failure: Option<String>) -> ModelScore {
        ModelScore {
            model,
            mase: mean(&self.mase),
            smape: mean(&self.smape),
            coverage: self.coverage.iter().map(|values| mean(values)).collect(),
            width: self.width.iter().map(|values| mean(values)).collect(),
            fit_predict_millis: mean(&self.millis).unwrap_or(f64::NAN),
            folds_scored: self.millis.len(),
            failure,
        }
    }
}

/// Formats an optional figure, `-` when absent.
fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.decimals$}"))
}

/// The backtest as a text table.
pub fn format_scores(scores: &[ModelScore], levels: &[Level]) -> String {
    let mut text = format!("{:<15} {:>7} {:>7}", "model", "MASE", "sMAPE");
    for level in levels {
        let percent = level.percent();
        text.push_str(&format!(
            " {:>7} {:>10}",
            format!("cov{percent}"),
            format!("width{percent}")
        ));
    }
    text.push_str(&format!(" {:>10} {:>5}\n", "fit+pred", "folds"));
    for score in scores {
        text.push_str(&format!(
            "{:<15} {:>7} {:>7}",
            score.model.to_string(),
            figure(score.mase, 3),
            figure(score.smape, 2)
        ));
        for (coverage, width) in score.coverage.iter().zip(&score.width) {
            text.push_str(&format!(
                " {:>7} {:>10}",
                figure(*coverage, 3),
                figure(*width, 2)
            ));
        }
        text.push_str(&format!(
            " {:>8.1}ms {:>5}",
            score.fit_predict_millis, score.folds_scored
        ));
        if let Some(failure) = &score.failure {
            text.push_str(&format!("  ({failure})"));
        }
        text.push('\n');
    }
    text
}

/// The backtest as CSV, same columns as the table.
pub fn write_scores_csv(
    scores: &[ModelScore],
    levels: &[Level],
    path: &Path,
) -> Result<(), AppError> {
    let output_error = |source| AppError::Output {
        path: path.to_owned(),
        source,
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(output_error)?);
    let mut header = String::from("model,mase,smape");
    for level in levels {
        let percent = level.percent();
        header.push_str(&format!(",coverage_{percent},width_{percent}"));
    }
    header.push_str(",fit_predict_ms,folds,failure");
    writeln!(out, "{header}").map_err(output_error)?;
    let cell = |value: Option<f64>| value.map_or_else(String::new, |value| value.to_string());
    for score in scores {
        write!(
            out,
            "{},{},{}",
            score.model,
            cell(score.mase),
            cell(score.smape)
        )
        .map_err(output_error)?;
        for (coverage, width) in score.coverage.iter().zip(&score.width) {
            write!(out, ",{},{}", cell(*coverage), cell(*width)).map_err(output_error)?;
        }
        let failure = score
            .failure
            .as_deref()
            .unwrap_or("")
            .replace([',', '\n'], ";");
        writeln!(
            out,
            ",{},{},{failure}",
            score.fit_predict_millis, score.folds_scored
        )
        .map_err(output_error)?;
    }
    out.flush().map_err(output_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;

    #[test]
    fn horizons_parse_as_durations_or_steps() {
        let step = Step::FIVE_MINUTES;
        assert_eq!(parse_horizon("1d", step).unwrap().steps(), 288);
        assert_eq!(parse_horizon("90m", step).unwrap().steps(), 18);
        assert_eq!(parse_horizon("12", step).unwrap().steps(), 12);
        assert!(parse_horizon("7m", step).is_err());
        assert!(parse_horizon("0", step).is_err());
        assert!(parse_horizon("soon", step).is_err());
        // 125 * 2^64 ms + 1h: the milliseconds wrap to exactly one hour in an i64.
        assert!(parse_horizon("2305843009213697552s", step).is_err());
        assert!(parse_horizon(&format!("{}s", u64::MAX), step).is_err());
    }

    #[test]
    fn levels_and_models_parse() {
        let levels = parse_levels("80, 95").unwrap();
        assert_eq!(levels, Level::DEFAULTS.to_vec());
        assert!(parse_levels("100").is_err());
        assert_eq!(
            "FFT".parse::<ModelChoice>().unwrap(),
            ModelChoice::Member(MemberKind::Fft)
        );
        assert_eq!(
            "ensemble".parse::<ModelChoice>().unwrap(),
            ModelChoice::Ensemble
        );
        assert!("prophet".parse::<ModelChoice>().is_err());
    }

    #[test]
    fn backtest_scores_a_seasonal_series_better_than_its_naive_scale() {
        let values: Vec<f64> = (0..24 * 21)
            .map(|t| {
                100.0 + 30.0 * (2.0 * std::f64::consts::PI * t as f64 / 24.0).sin() + (t % 7) as f64
            })
            .collect();
        let series = TimeSeries::new(
            Timestamp::from_millis(0),
            Step::try_from(3_600_000).unwrap(),
            values,
        );
        let backtest = Backtest {
            horizon: Horizon::try_from(24).unwrap(),
            folds: 2,
            levels: Level::DEFAULTS.to_vec(),
            max_history: 28 * 24,
        };
        let scores = backtest
            .run(
                &series,
                &[
                    ModelChoice::Ensemble,
                    ModelChoice::Member(MemberKind::SeasonalNaive),
                ],
            )
            .unwrap();
        assert_eq!(scores.len(), 2);
        assert_eq!(scores[0].folds_scored, 2);
        let mase = scores[0].mase.unwrap();
        assert!(mase.is_finite() && mase < 1.0, "ensemble MASE {mase}");
        assert!(format_scores(&scores, &backtest.levels).contains("ensemble"));
    }
}
