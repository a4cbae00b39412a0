#!/usr/bin/env bash
# Rebuilds models/ from notebooks-data/ with `prescale retrain`: imports the sample series under the
# names the demo uses (src/app/samples.rs) into a temporary store, then trains and promotes one
# version per series into models/. Run from anywhere; it replaces models/manifest.json and the
# model files (a change of the model format needs this, and a migration note: see README.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release --quiet
prescale="$root/target/release/prescale"
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
while read -r name file; do
  "$prescale" import --data-dir "$store" --series "$name" "notebooks-data/$file" >/dev/null
done <<'LIST'
nyc_taxi nyc_taxi.csv
ec2_cpu_5f5533 ec2_cpu_utilization_5f5533.csv
ec2_cpu_ac20cd ec2_cpu_utilization_ac20cd.csv
rds_cpu_cc0c53 rds_cpu_utilization_cc0c53.csv
traffic_occupancy_6005 occupancy_6005.csv
traffic_speed_6005 speed_6005.csv
LIST
find models -mindepth 1 -maxdepth 1 ! -name README.md ! -name .gitignore ! -name regenerate.sh \
  -exec rm -rf {} +
printf '[registry]\ndir = "%s/models"\n' "$root" > "$store/prescale.toml"
"$prescale" retrain --config "$store/prescale.toml" --data-dir "$store" --all
