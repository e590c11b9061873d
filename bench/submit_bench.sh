#!/usr/bin/env bash
# The demo's seven jobs over the bundled month (topic trips, bounded at its end), submitted
# one `tripstream submit --wait` after another (the demo before) and all through one client
# (`tripstream submit A B C ... --wait`, the demo now), alternating, on the running stack.
#   bash bench/submit_bench.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
TS=.venv/bin/tripstream
JOBS="passthrough tumbling sliding session surge anomalies examples/borough_demand.toml"
rounds=${1:-2}
for r in $(seq 1 "$rounds"); do
  start=$(date +%s%N)
  for job in $JOBS; do
    $TS submit "$job" --until latest --wait >/dev/null
  done
  one=$(( ($(date +%s%N) - start) / 1000000 ))
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  $TS submit $JOBS --until latest --wait >/dev/null
  together=$(( ($(date +%s%N) - start) / 1000000 ))
  awk -v r="$r" -v a="$one" -v b="$together" 'BEGIN { printf "round %s: one after another %.1f s, together %.1f s, together / one after another %.2f\n", r, a / 1000, b / 1000, b / a }'
done
