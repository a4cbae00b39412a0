"""Prints prescale's ensemble beside the peers per series, with time ratios, and a tally of the goals."""

import sys

import pandas as pd

ours = pd.read_csv(sys.argv[1])
peers = pd.read_csv(sys.argv[2])
table = pd.concat([ours, peers]).sort_values(["series", "model"])
pd.set_option("display.width", 200)
print(table.to_string(index=False, float_format=lambda value: f"{value:.3f}"))
wins = 0
ratios = []
speed = []
for series, rows in table.groupby("series"):
    mine = rows[rows.model == "prescale_ensemble"].iloc[0]
    best_peer = rows[rows.model != "prescale_ensemble"].mase.min()
    mstl = rows[rows.model == "statsforecast_mstl"]
    wins += bool(mine.mase <= best_peer)
    ratios.append(mine.mase / best_peer)
    if len(mstl):
        speed.append(mstl.iloc[0].seconds / mine.seconds)
print()
print(f"ensemble MASE no worse than the best peer on {wins} of {table.series.nunique()} series")
print(f"median ratio of the ensemble's MASE to the best peer's: {pd.Series(ratios).median():.3f}")
print("speed-up vs statsforecast MSTL per series: " + ", ".join(f"{ratio:.1f}x" for ratio in speed))
for model, rows in table.groupby("model"):
    print(f"{model:<24} mean MASE {rows.mase.mean():.3f}  mean cov95 {rows.coverage_95.mean():.3f}  mean seconds {rows.seconds.mean():.3f}")
