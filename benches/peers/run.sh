#!/usr/bin/env bash
# Peer comparison in one run: prescale's ensemble beside statsforecast (AutoETS, MSTL) and Prophet, on the
# same split of the same series (last day held out, at most the history window prescale sizes to the step
# before it: 28 days of 5-minute or hourly data, 8 years of daily data).
#   bash benches/peers/run.sh [FILE.csv ...]     (default: every series in notebooks-data/)
#   PEERS_ORIGINS=7 bash benches/peers/run.sh ...  the last 7 days held out in turn, each forecast from
#                                                  the history before it (`backtest --folds 7`)
# Installs the peers in a virtualenv under target/peers-venv (PyPI). Benchmarks only: never run by tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
files=("$@")
origins=${PEERS_ORIGINS:-1}
[ ${#files[@]} -gt 0 ] || files=(notebooks-data/*.csv)
venv=target/peers-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet statsforecast prophet pandas numpy
fi
cargo build --release --quiet
out=target/peers
mkdir -p "$out"
echo "series,model,mase,smape,coverage_80,coverage_95,seconds,width_80,width_95" > "$out/prescale.csv"
for file in "${files[@]}"; do
  name=$(basename "$file" .csv)
  target/release/prescale backtest --input "$file" --horizon 1d --folds "$origins" --model ensemble \
    --output "$out/$name.prescale.csv" > /dev/null
  # model,mase,smape,coverage_80,width_80,coverage_95,width_95,fit_predict_ms,folds,failure
  tail -n +2 "$out/$name.prescale.csv" | awk -F, -v s="$name" \
    '{ printf "%s,prescale_ensemble,%.4f,%.4f,%.4f,%.4f,%.3f,%.6g,%.6g\n", s, $2, $3, $4, $6, $8/1000, $5, $7 }' >> "$out/prescale.csv"
done
"$venv/bin/python" benches/peers/peers.py --origins "$origins" "${files[@]}" > "$out/peers.csv"
"$venv/bin/python" benches/peers/compare.py "$out/prescale.csv" "$out/peers.csv"
