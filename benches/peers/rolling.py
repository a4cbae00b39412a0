"""Rolling origins on a daily series: `prescale forecast` (its sized history window) beside AutoETS, MSTL
and Prophet on the same window, H steps ahead from each of N origins spaced H apart over the end of the
series. Pools the scored points of all origins: MAE and 80%/95% coverage per model.

    target/peers-venv/bin/python benches/peers/rolling.py target/release/prescale FILE.csv H N

Run `bash benches/peers/run.sh` once first: it installs the peers in target/peers-venv.
"""
import logging
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pandas as pd
warnings.filterwarnings("ignore")
logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
logging.getLogger("prophet").setLevel(logging.WARNING)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers as P
from prophet import Prophet
from statsforecast import StatsForecast
from statsforecast.models import MSTL, AutoETS

binary, path, H, N = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
start, step, series = P.load(path)
window = P.sized_points(step)
rows = {}
tmp = tempfile.mkdtemp()
def add(model, actual, point, lo80, hi80, lo95, hi95):
    m = ~np.isnan(actual)
    r = rows.setdefault(model, [0, 0.0, 0, 0])
    r[0] += m.sum(); r[1] += np.abs(actual[m] - point[m]).sum()
    r[2] += ((lo80[m] <= actual[m]) & (actual[m] <= hi80[m])).sum()
    r[3] += ((lo95[m] <= actual[m]) & (actual[m] <= hi95[m])).sum()
for k in range(N, 0, -1):
    origin = len(series) - k * H
    train_from = max(0, origin - window)
    train = series[train_from:origin]
    actual = series[origin:origin + H]
    times = pd.to_datetime(start + step * np.arange(train_from, origin), unit="ms")
    # prescale: the history up to the origin, as a CSV (gaps as empty values, missing samples)
    csv = os.path.join(tmp, "h.csv"); out = os.path.join(tmp, "f.csv")
    pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": train}).to_csv(csv, index=False, na_rep="")
    subprocess.run([binary, "forecast", "--data-dir", os.path.join(tmp, "data"), "--input", csv, "--horizon", str(H), "--output", out], check=True, capture_output=True)
    f = pd.read_csv(out)
    add("prescale", actual, f["mean"].to_numpy(), f["lower_80"].to_numpy(), f["upper_80"].to_numpy(), f["lower_95"].to_numpy(), f["upper_95"].to_numpy())
    filled = pd.Series(train).interpolate(limit_direction="both").to_numpy()
    frame = pd.DataFrame({"unique_id": "s", "ds": times, "y": filled})
    for label, model in {"autoets": AutoETS(season_length=7), "mstl": MSTL(season_length=[7, 365])}.items():
        o = StatsForecast(models=[model], freq="D", n_jobs=1).forecast(df=frame, h=H, level=[80, 95])
        c = [c for c in o.columns if c not in ("unique_id", "ds") and "-lo-" not in c and "-hi-" not in c][0]
        add(label, actual, o[c].to_numpy(), o[f"{c}-lo-80"].to_numpy(), o[f"{c}-hi-80"].to_numpy(), o[f"{c}-lo-95"].to_numpy(), o[f"{c}-hi-95"].to_numpy())
    future = pd.DataFrame({"ds": pd.to_datetime(start + step * np.arange(origin, origin + H), unit="ms")})
    bands = {}
    for width in (0.8, 0.95):
        p = Prophet(interval_width=width, daily_seasonality=False, weekly_seasonality=True)
        p.fit(frame[["ds", "y"]]); bands[width] = p.predict(future)
    add("prophet", actual, bands[0.95]["yhat"].to_numpy(), bands[0.8]["yhat_lower"].to_numpy(), bands[0.8]["yhat_upper"].to_numpy(), bands[0.95]["yhat_lower"].to_numpy(), bands[0.95]["yhat_upper"].to_numpy())
print(f"{os.path.basename(path)}: {N} origins x {H} steps, window {window} points")
for model, (n, ae, c80, c95) in rows.items():
    print(f"{model:<10} MAE {ae / n:.4f}  cov80 {c80 / n:.3f}  cov95 {c95 / n:.3f}  ({n} points)")
