#!/usr/bin/env bash
# The demo: bring the stack up, replay the bundled month into Kafka in event-time order, run
# every job over it (bounded at the topic's end), summarise what they wrote, and prove it:
# `tripstream verify` compares every table with a batch computation over the same records.
set -euo pipefail
cd "$(dirname "$0")/.."
TS=.venv/bin/tripstream
SAMPLE=data/green_tripdata_2024-10.parquet
TOPIC=${TRIPSTREAM_DEMO_TOPIC:-trips}

$TS up
echo
have=$($TS topic count "$TOPIC" 2>/dev/null || echo 0)
if [ "$have" -eq 0 ]; then
  echo "Replaying $SAMPLE into topic '$TOPIC' in event-time order..."
  $TS produce "$SAMPLE" --topic "$TOPIC" --order event-time
else
  echo "Topic '$TOPIC' already holds $have events (.venv/bin/tripstream down --purge to start over)."
fi
echo
JOBS="passthrough tumbling sliding session surge anomalies"
# A job of your own is a declaration: examples/ holds the course's questions.
DECLARED=borough_demand
# One after another, not `submit A B C` (one client, jobs running at once): with all seven at once
# on two cores, verify found 151 of surge's 1,373 alerts missing (likely a starved source marked
# idle, so surge's watermark ran ahead; not yet confirmed).
for job in $JOBS "examples/$DECLARED.toml"; do
  $TS submit "$job" --topic "$TOPIC" --until latest --wait >/dev/null
done
echo
$TS summary
echo
echo "Verifying every job against a batch truth computed by DuckDB from the same records..."
verdict=0
for job in $JOBS $DECLARED; do
  $TS verify "$job" || verdict=1
done
echo
echo "examples/$DECLARED.toml answers its question from what the stream wrote:"
$TS answer "$DECLARED"
echo
echo "Flink web UI:   $($TS status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["flink"]["rest"])')"
echo "Jobs:           $TS jobs"
echo "Dashboard:      $TS dashboard   (then open http://127.0.0.1:8765/; $TS health checks the jobs)"
echo "PostgreSQL:     $TS psql   (the password stays out of ps; tables: trips, tumbling_zone_stats, sliding_zone_stats, pair_sessions, late_trips, bad_records, surge_alerts, trip_anomalies)"
echo "Logs:           $TS logs kafka|flink|postgres"
echo "Stop:           make down"
if [ "$verdict" -ne 0 ]; then
  echo "VERIFY FAILED: a table differs from the batch truth (see above)." >&2
  exit 1
fi
echo "Verdict: every table equals the batch truth; every record is accounted for."
