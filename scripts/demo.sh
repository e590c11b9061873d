#!/usr/bin/env bash
# The demo: bring the stack up, replay the bundled month into Kafka, show where to look.
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
  echo "Topic '$TOPIC' already holds $have events (make down && .venv/bin/tripstream down --purge to start over)."
fi
echo
$TS topic describe "$TOPIC"
echo
echo "Flink web UI:   $($TS status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["flink"]["rest"])')"
echo "Peek at events: $TS topic tail $TOPIC -n 2"
echo "PostgreSQL:     psql \"\$($TS dsn)\""
echo "Logs:           $TS logs kafka|flink|postgres"
echo "Stop:           make down"
