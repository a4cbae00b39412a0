"""A recurring holiday on a daily series: prescale with the holiday as a planned event beside
Prophet given the same holiday, and both without it. From an origin a week before each of the
last N occurrences with data after them, H days ahead (the holiday inside), on the sized history
window. Pools the scored points of all origins: MAE over the whole horizon and over the holiday's
days, and 80%/95% coverage per model.

    target/peers-venv/bin/python benches/peers/recurring_events.py target/release/prescale FILE.csv MM-DD DAYS H N

The holiday starts every year on MM-DD and lasts DAYS days, e.g. `12-22 11` for 22 December to
1 January. prescale learns its effect from the past occurrences in its window (`prescale events
add`, one event per year, all of one name); Prophet gets the same dates as `holidays` with
`upper_window = DAYS - 1`. Run `bash benches/peers/run.sh` once first: it installs the peers in
target/peers-venv.
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

binary, path, month_day, days, H, N = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
start, step, series = P.load(path)
window = P.sized_points(step)
day_ms = 86_400_000
first_year = pd.Timestamp(start, unit="ms").year
last = start + step * (len(series) - 1)
starts = [pd.Timestamp(f"{year}-{month_day}") for year in range(first_year, pd.Timestamp(last, unit="ms").year + 1)]
starts = [s for s in starts if s.value // 1_000_000 >= start]
# occurrences whose whole horizon (from a week before) has data
scored = [s for s in starts if (s.value // 1_000_000 - 7 * day_ms - start) // step + H <= len(series)][-N:]
rows = {}
tmp = tempfile.mkdtemp()


def add(model, actual, in_event, point, lo80, hi80, lo95, hi95):
    m = ~np.isnan(actual)
    r = rows.setdefault(model, [0, 0.0, 0, 0.0, 0, 0])
    r[0] += m.sum(); r[1] += np.abs(actual[m] - point[m]).sum()
    e = m & in_event
    r[2] += e.sum(); r[3] += np.abs(actual[e] - point[e]).sum()
    r[4] += ((lo80[m] <= actual[m]) & (actual[m] <= hi80[m])).sum()
    r[5] += ((lo95[m] <= actual[m]) & (actual[m] <= hi95[m])).sum()


def iso(ms):
    return pd.Timestamp(ms, unit="ms").strftime("%Y-%m-%dT%H:%M:%SZ")


for occurrence in scored:
    event_from = occurrence.value // 1_000_000
    origin = (event_from - 7 * day_ms - start) // step
    train_from = max(0, origin - window)
    train = series[train_from:origin]
    actual = series[origin:origin + H]
    times = pd.to_datetime(start + step * np.arange(train_from, origin), unit="ms")
    horizon_ms = start + step * np.arange(origin, origin + H)
    in_event = (horizon_ms >= event_from) & (horizon_ms < event_from + days * day_ms)
    csv = os.path.join(tmp, "h.csv")
    pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "value": train}).to_csv(csv, index=False, na_rep="")
    for label, with_events in (("prescale", False), ("prescale+events", True)):
        data = tempfile.mkdtemp(dir=tmp)
        if with_events:
            for s in starts:
                s_ms = s.value // 1_000_000
                if s_ms <= event_from:
                    subprocess.run([binary, "events", "add", "--data-dir", data, "--name", "holiday",
                                    "--start", iso(s_ms), "--end", iso(s_ms + days * day_ms)], check=True, capture_output=True)
        out = os.path.join(tmp, "f.csv")
        subprocess.run([binary, "forecast", "--data-dir", data, "--input", csv, "--horizon", str(H), "--output", out], check=True, capture_output=True)
        f = pd.read_csv(out)
        add(label, actual, in_event, f["mean"].to_numpy(), f["lower_80"].to_numpy(), f["upper_80"].to_numpy(), f["lower_95"].to_numpy(), f["upper_95"].to_numpy())
    frame = pd.DataFrame({"ds": times, "y": pd.Series(train).interpolate(limit_direction="both").to_numpy()})
    future = pd.DataFrame({"ds": pd.to_datetime(horizon_ms, unit="ms")})
    holidays = pd.DataFrame({"holiday": "holiday", "ds": starts, "lower_window": 0, "upper_window": days - 1})
    for label, given in (("prophet", None), ("prophet+holidays", holidays)):
        bands = {}
        for width in (0.8, 0.95):
            p = Prophet(interval_width=width, daily_seasonality=False, weekly_seasonality=True, holidays=given)
            p.fit(frame); bands[width] = p.predict(future)
        add(label, actual, in_event, bands[0.95]["yhat"].to_numpy(), bands[0.8]["yhat_lower"].to_numpy(), bands[0.8]["yhat_upper"].to_numpy(), bands[0.95]["yhat_lower"].to_numpy(), bands[0.95]["yhat_upper"].to_numpy())
print(f"{os.path.basename(path)}: holiday {month_day} for {days} days, origins a week before {[s.date().isoformat() for s in scored]}, {H} steps, window {window} points")
for model, (n, ae, ne, aee, c80, c95) in rows.items():
    print(f"{model:<17} MAE {ae / n:.4f}  holiday MAE {aee / max(ne, 1):.4f}  cov80 {c80 / n:.3f}  cov95 {c95 / n:.3f}  ({n} points, {ne} on the holiday)")
