#!/usr/bin/env bash
# Times a 7-day replay with hourly replans on 28 days of 5-minute history (35 days in all), release build.
#   bash benches/simulate_speed.sh
# The series is synthetic (daily and weekly cycles, trend, seeded noise): no sample series has 35 days at
# 5 minutes. Records go to docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
work=target/simulate-speed
mkdir -p "$work"
python3 - "$work/load_5m.csv" <<'PY'
import math, random, sys
random.seed(11)
start = 1_700_000_000  # seconds
with open(sys.argv[1], "w") as out:
    out.write("timestamp,value\n")
    for t in range(35 * 288):
        daily = math.sin(2 * math.pi * t / 288)
        weekly = math.cos(2 * math.pi * t / 2016)
        value = 1000 + 400 * daily + 150 * weekly + 0.02 * t + random.uniform(-60, 60)
        out.write(f"{start + 300 * t},{value:.3f}\n")
PY
cat > "$work/workload.toml" <<'TOML'
name = "synthetic"
series = "load"
capacity_per_replica = 40.0
min_replicas = 2
max_replicas = 200
warm_up = "10m"
TOML
/usr/bin/time -f "wall %e s, peak RSS %M KiB" target/release/prescale simulate --input "$work/load_5m.csv" \
  --workload "$work/workload.toml" --days 7 --replan-every 1h --output "$work/replay.csv" --chart "$work/replay.png"
