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
echo "Running the tumbling job (5-minute windows per pickup zone) over the topic, bounded at its end..."
$TS submit tumbling --topic "$TOPIC" --until latest >/dev/null
.venv/bin/python - <<'PY'
from tripstream.config import load_settings
from tripstream.stack import Stack
from tripstream.jobs.submit import flink_jobs

stack = Stack(load_settings())
job = next(j for j in flink_jobs(stack) if j["name"] == "tripstream-tumbling")
stack.flink.wait_job_state(job["jid"], {"FINISHED"}, 300)
with stack.postgres.connect() as conn:
    windows, trips = conn.execute("SELECT count(*), sum(trips) FROM tumbling_zone_stats").fetchone()
    print(f"tumbling_zone_stats: {windows:,} windows holding {trips:,} trips")
    print("busiest 5-minute windows:")
    for start, zone, n, revenue in conn.execute(
            "SELECT window_start, pu_location_id, trips, round(revenue::numeric, 2) FROM tumbling_zone_stats "
            "ORDER BY trips DESC, window_start LIMIT 5"):
        print(f"  {start}  zone {zone:>3}  {n:>3} trips  ${revenue}")
PY
echo
echo "Flink web UI:   $($TS status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["flink"]["rest"])')"
echo "Peek at events: $TS topic tail $TOPIC -n 2"
echo "PostgreSQL:     psql \"\$($TS dsn)\""
echo "Logs:           $TS logs kafka|flink|postgres"
echo "Stop:           make down"
