#!/usr/bin/env bash
# The demo: bring the stack up, replay the bundled month into Kafka in event-time order, run
# every job over it (bounded at the topic's end), and summarise what they wrote.
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
for job in tumbling sliding session surge anomalies; do
  $TS submit "$job" --topic "$TOPIC" --until latest --wait >/dev/null
done
echo
$TS summary
echo
echo "Flink web UI:   $($TS status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["flink"]["rest"])')"
echo "Jobs:           $TS jobs"
echo "Dashboard:      $TS dashboard   (then open http://127.0.0.1:8765/; $TS health checks the jobs)"
echo "PostgreSQL:     psql \"\$($TS dsn)\"   (tables: tumbling_zone_stats, sliding_zone_stats, pair_sessions, late_trips, surge_alerts, trip_anomalies)"
echo "Logs:           $TS logs kafka|flink|postgres"
echo "Stop:           make down"
