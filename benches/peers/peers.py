"""Peer comparison: statsforecast (AutoETS, MSTL) and Prophet on the same split as `prescale backtest`.

For each series: bin onto a grid of its median step aligned to multiples of the step since the epoch
(bucket mean, as prescale's store does), hold out the last day (the last `horizon` buckets), fit on at most
the history window prescale sizes to the step before it (`forecast::HistoryWindow::Sized`: 8 years of
daily data, 28 days of hourly or 5-minute data), forecast the day with 80% and 95% intervals. Empty training buckets are linearly
interpolated (the peers cannot take gaps); only observed test buckets are scored. MASE divides by the
in-sample MAE of the one-day seasonal naive forecast over the training window, counting only pairs
where both values were observed: the same definition prescale uses.

With `--origins N` (first argument), the last N days are each held out in turn and forecast from the
history before them, as `prescale backtest --folds N` does; each figure is then the mean over the N days.

Prints one CSV row per (series, model):
series,model,mase,smape,coverage_80,coverage_95,seconds,width_80,width_95 (mean band widths over the
scored buckets, in the series' units)
"""

import csv
import sys
import time
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

DAY_MS = 86_400_000
YEAR_MS = 31_556_952_000
MAX_FIT_POINTS = 8_064


def sized_points(step):
    """Points of prescale's sized history window at `step` (see src/forecast/history.rs)."""
    year = round(YEAR_MS / step)
    if year >= 52:
        years = min(MAX_FIT_POINTS // year, 8)
        if years >= 3:
            return years * year
    return min(MAX_FIT_POINTS, -(-4 * 7 * DAY_MS // step))


def load(path):
    frame = pd.read_csv(path)
    ms = pd.to_datetime(frame["timestamp"], utc=True).astype("int64") // 1_000_000
    values = frame["value"].astype(float).to_numpy()
    order = np.argsort(ms.to_numpy(), kind="stable")
    ms = ms.to_numpy()[order]
    values = values[order]
    diffs = np.diff(ms)
    diffs = diffs[diffs > 0]
    step = int(np.sort(diffs)[len(diffs) // 2])
    start = (ms[0] // step) * step
    buckets = int((ms[-1] // step) * step - start) // step + 1
    index = (ms - start) // step
    sums = np.bincount(index, weights=values, minlength=buckets)
    counts = np.bincount(index, minlength=buckets)
    with np.errstate(invalid="ignore"):
        series = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return start, step, series


def scale(history, period):
    a, f = history[period:], history[:-period]
    mask = ~np.isnan(a) & ~np.isnan(f)
    return float(np.mean(np.abs(a[mask] - f[mask])))


def scores(actual, point, lo80, hi80, lo95, hi95, mase_scale):
    mask = ~np.isnan(actual)
    a, p = actual[mask], point[mask]
    mae = float(np.mean(np.abs(a - p)))
    denominator = np.abs(a) + np.abs(p)
    smape = float(np.mean(np.where(denominator > 0, 200 * np.abs(a - p) / np.where(denominator > 0, denominator, 1), 0)))
    cov80 = float(np.mean((lo80[mask] <= a) & (a <= hi80[mask])))
    cov95 = float(np.mean((lo95[mask] <= a) & (a <= hi95[mask])))
    width80 = float(np.mean(hi80[mask] - lo80[mask]))
    width95 = float(np.mean(hi95[mask] - lo95[mask]))
    return mae / mase_scale, smape, cov80, cov95, width80, width95


def forecast_peers(name, start, step, series, origin):
    """The peers' scores for the day after `origin`: {model: (mase, smape, cov80, cov95, seconds, width80, width95)}."""
    from prophet import Prophet
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoETS

    horizon = DAY_MS // step
    # The calendar cycles the step resolves (at least two steps long): day, week, year.
    cycles = [p for p in (DAY_MS // step, 7 * DAY_MS // step, round(YEAR_MS / step)) if p >= 2]
    season = max(1, DAY_MS // step)
    train_from = max(0, origin - sized_points(step))
    train = series[train_from:origin]
    actual = series[origin:origin + horizon]
    filled = pd.Series(train).interpolate(limit_direction="both").to_numpy()
    mase_scale = scale(train, season)
    times = pd.to_datetime(start + step * np.arange(train_from, origin), unit="ms")
    frame = pd.DataFrame({"unique_id": name, "ds": times, "y": filled})
    seasons = [period for period in cycles if len(train) >= 2 * period]
    ets_season = cycles[0] if cycles else 1
    models = {
        "statsforecast_autoets": AutoETS(season_length=min(ets_season, 24)),
        "statsforecast_mstl": MSTL(season_length=seasons),
    }
    results = {}
    for label, model in models.items():
        began = time.perf_counter()
        fitted = StatsForecast(models=[model], freq=f"{step // 60000}min", n_jobs=1)
        out = fitted.forecast(df=frame, h=horizon, level=[80, 95])
        seconds = time.perf_counter() - began
        column = [c for c in out.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
        mase, smape, cov80, cov95, width80, width95 = scores(
            actual,
            out[column].to_numpy(),
            out[f"{column}-lo-80"].to_numpy(),
            out[f"{column}-hi-80"].to_numpy(),
            out[f"{column}-lo-95"].to_numpy(),
            out[f"{column}-hi-95"].to_numpy(),
            mase_scale,
        )
        results[label] = (mase, smape, cov80, cov95, seconds, width80, width95)
    began = time.perf_counter()
    future_times = pd.to_datetime(start + step * np.arange(origin, origin + horizon), unit="ms")
    bands = {}
    for width in (0.8, 0.95):
        prophet = Prophet(interval_width=width, daily_seasonality=step < DAY_MS, weekly_seasonality=True)
        prophet.fit(frame[["ds", "y"]])
        bands[width] = prophet.predict(pd.DataFrame({"ds": future_times}))
    seconds = time.perf_counter() - began
    mase, smape, cov80, cov95, width80, width95 = scores(
        actual,
        bands[0.95]["yhat"].to_numpy(),
        bands[0.8]["yhat_lower"].to_numpy(),
        bands[0.8]["yhat_upper"].to_numpy(),
        bands[0.95]["yhat_lower"].to_numpy(),
        bands[0.95]["yhat_upper"].to_numpy(),
        mase_scale,
    )
    results["prophet"] = (mase, smape, cov80, cov95, seconds, width80, width95)
    return results


def main(arguments):
    import logging

    logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    origins = 1
    if arguments[:1] == ["--origins"]:
        origins, arguments = int(arguments[1]), arguments[2:]
    writer = csv.writer(sys.stdout)
    writer.writerow(
        ["series", "model", "mase", "smape", "coverage_80", "coverage_95", "seconds", "width_80", "width_95"]
    )
    for path in arguments:
        name = path.rsplit("/", 1)[-1].removesuffix(".csv")
        start, step, series = load(path)
        horizon = DAY_MS // step
        # The last `origins` days, each forecast from the history before it (prescale's
        # `backtest --folds N`); each figure is the mean over the days, as prescale reports it.
        per_model = {}
        for k in range(origins, 0, -1):
            for label, row in forecast_peers(name, start, step, series, len(series) - k * horizon).items():
                per_model.setdefault(label, []).append(row)
        for label, rows in per_model.items():
            row = [float(np.nanmean(column)) for column in zip(*rows)]
            writer.writerow([name, label, *[f"{value:.4f}" for value in row[:4]], f"{row[4]:.3f}", *[f"{value:.6g}" for value in row[5:]]])
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
