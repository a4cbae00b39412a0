#!/usr/bin/env bash
# The SLO replay benchmark: `prescale simulate` over the last 7 days of every 5-minute and hourly
# series of the evaluation sets, hourly replans, 10-minute warm-up, an SLO of 1% short steps.
#   bash benches/slo_replay.sh [DATA_DIR...]    (default: ../shared/data ../shared/data/dev)
#   SIMULATE_ARGS="--retrain-every 1d" bash benches/slo_replay.sh    (extra `prescale simulate` options)
# Each series gets a workload whose 7-day peak needs 50 replicas at the 70% target (min 1, max 200).
# Prints the per-series table of docs/BENCHMARKS.md ("Planning for an SLO") with medians; the
# outputs of every run stay in target/slo-replay/.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet
binary="$target/release/prescale"
work="$target/slo-replay"
mkdir -p "$work"
dirs=("$@")
if [ ${#dirs[@]} -eq 0 ]; then
  dirs=(../shared/data ../shared/data/dev)
fi
for dir in "${dirs[@]}"; do
  for csv in "$dir"/*.csv; do
    name=$(basename "$csv" .csv)
    # The median step and the 7-day peak decide whether the series is in, and its workload. Rows
    # without a value (empty or NaN) are left out of the copy replayed: a missing sample is a gap.
    read -r step_minutes capacity < <(python3 - "$csv" "$work/$name.input.csv" <<'PY'
import csv, datetime, math, statistics, sys
def finite(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
rows = [(datetime.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")), r["value"])
        for r in csv.DictReader(open(sys.argv[1]))]
with open(sys.argv[2], "w") as out:
    out.write("timestamp,value\n")
    for time, value in rows:
        if finite(value):
            out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ')},{value}\n")
times = [t for t, _ in rows]
step = statistics.median((b - a).total_seconds() for a, b in zip(times, times[1:])) / 60
end = times[-1]
recent = [float(v) for t, v in rows if finite(v) and (end - t).total_seconds() <= 7 * 86400]
print(round(step), max(recent) / (50 * 0.7))
PY
)
    if [ "$step_minutes" != 5 ] && [ "$step_minutes" != 60 ]; then
      continue
    fi
    cat > "$work/$name.workload.toml" <<TOML
name = "$name"
series = "$name"
capacity_per_replica = $capacity
min_replicas = 1
max_replicas = 200
warm_up = "10m"
slo = { max_short_steps = "1%" }
TOML
    echo "== $name ($step_minutes min)" >&2
    # shellcheck disable=SC2086
    if ! "$binary" simulate ${SIMULATE_ARGS:-} --input "$work/$name.input.csv" --workload "$work/$name.workload.toml" --days 7 \
      --replan-every 1h --output "$work/$name.csv" > "$work/$name.txt" 2> "$work/$name.err"; then
      echo "   failed: $(tail -n 1 "$work/$name.err")" >&2
      echo "failed" > "$work/$name.failed"
    else
      rm -f "$work/$name.failed"
    fi
  done
done
python3 - "$work" <<'PY'
import csv, glob, os, re, statistics, sys
work = sys.argv[1]
rows, failed = [], []
for path in sorted(glob.glob(os.path.join(work, "*.workload.toml"))):
    name = os.path.basename(path)[: -len(".workload.toml")]
    if os.path.exists(os.path.join(work, name + ".failed")):
        failed.append((name, open(os.path.join(work, name + ".err")).read().strip().splitlines()[-1]))
        continue
    summary = {r["strategy"]: r for r in csv.DictReader(open(os.path.join(work, name + ".csv")))}
    levels = {r["rule"]: r for r in csv.DictReader(open(os.path.join(work, name + ".levels.csv")))}
    text = open(os.path.join(work, name + ".txt")).read()
    chosen = re.search(r"rules chosen at \d+ replans: ([^;]*);", text)
    pred, hpa, planned = summary["predictive"], summary["hpa"], levels["as-planned"]
    scored = int(pred["scored_steps"])
    rows.append(dict(
        name=name, scored=scored, chosen=chosen.group(1) if chosen else "-",
        short=int(pred["underprovisioned_steps"]), hpa_short=int(hpa["underprovisioned_steps"]),
        cost=float(pred["vs_oracle"]), hpa_cost=float(hpa["vs_oracle"]),
        eq_target=float(planned["hpa_target_utilisation"]), eq_short=int(planned["hpa_short_steps"]),
        eq_hours=float(planned["hpa_replica_hours"]), hours=float(planned["replica_hours"]),
        l95=levels.get("95"),
    ))
print("| series | steps | rules chosen (replans) | short steps: prescale / HPA@70% | replica-hours vs oracle: prescale / HPA@70% | HPA at equal cost: target, short steps | at equal cost no more short than the HPA |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['name']} | {r['scored']} | {r['chosen']} | {r['short']} ({100*r['short']/r['scored']:.1f}%) / {r['hpa_short']} ({100*r['hpa_short']/r['scored']:.1f}%) "
          f"| {r['cost']:.3f}x / {r['hpa_cost']:.3f}x | {100*r['eq_target']:.1f}%, {r['eq_short']} | {'yes' if r['short'] <= r['eq_short'] else '**no**'} |")
if rows:
    med = lambda key: statistics.median(r[key] for r in rows)
    share = lambda key: statistics.median(r[key] / r["scored"] for r in rows)
    print(f"| **median** | | | {100*share('short'):.2f}% / {100*share('hpa_short'):.2f}% | {med('cost'):.3f}x / {med('hpa_cost'):.3f}x | {100*share('eq_short'):.2f}% short | {sum(r['short'] <= r['eq_short'] for r in rows)} of {len(rows)} |")
if rows:
    held = sum(r["short"] <= 0.01 * r["scored"] for r in rows)
    print(f"\nThe SLO of 1% held on {held} of {len(rows)} series.\n")
    # The curve: every replan planned on one rule, medians over the series.
    curves = {r["name"]: {c["rule"]: c for c in csv.DictReader(open(os.path.join(work, r["name"] + ".levels.csv")))} for r in rows}
    rules = [rule for rule in next(iter(curves.values())) if all(rule in curve for curve in curves.values())]
    print("| rule | replica-hours vs oracle | short steps | series above 1% short | series with more short steps than the HPA at equal cost |")
    print("|---|---|---|---|---|")
    for rule in rules:
        points = [curve[rule] for curve in curves.values()]
        share = [int(p["short_steps"]) / int(p["scored_steps"]) for p in points]
        name = "SLO 1% (as planned)" if rule == "as-planned" else f"{rule.replace('*', '% x')}{'' if '*' in rule else '%'} at every replan"
        print(f"| {name} | {statistics.median(float(p['vs_oracle']) for p in points):.3f}x | {100*statistics.median(share):.2f}% "
              f"| {sum(x > 0.01 for x in share)} | {sum(int(p['short_steps']) > int(p['hpa_short_steps']) for p in points)} |")
if rows:
    # Could a rule that plans higher only where the forecast ramps have caught them? The demand at
    # each of prescale's short steps against the least in the steps starting up to 15 minutes
    # before it (at least one step): how sudden the loads were that got past plan and HPA.
    import datetime
    print("\n| series | prescale's short steps | demand against the least in the 15 minutes before: min, median, max |")
    print("|---|---|---|")
    for r in rows:
        timeline = list(csv.DictReader(open(os.path.join(work, r["name"] + ".timeline.csv"))))
        times = [datetime.datetime.fromisoformat(t["timestamp"].replace("Z", "+00:00")) for t in timeline[:2]]
        step_minutes = (times[1] - times[0]).total_seconds() / 60
        before = max(1, int(15 // step_minutes))
        demand = [float(t["demand"]) if t["demand"] else float("nan") for t in timeline]
        rises = []
        for index, t in enumerate(timeline):
            if t["predictive_underprovisioned"] in ("0", ""):
                continue
            earlier = [d for d in demand[max(0, index - before):index] if d == d]
            if earlier and min(earlier) > 0:
                rises.append(demand[index] / min(earlier))
        if rises:
            note = "" if len(rises) == r["short"] else f" ({r['short'] - len(rises)} more after a gap or a zero)"
            print(f"| {r['name']} | {r['short']} | {min(rises):.2f}x, {statistics.median(rises):.2f}x, {max(rises):.2f}x{note} |")
for name, error in failed:
    print(f"\n{name}: failed: {error}")
PY
