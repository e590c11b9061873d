#!/usr/bin/env bash
# The demo: bring the stack up and show where everything is.
set -euo pipefail
cd "$(dirname "$0")/.."
TS=.venv/bin/tripstream

$TS up
echo
echo "Flink web UI:   $($TS status --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["flink"]["rest"])')"
echo "PostgreSQL:     psql \"\$(.venv/bin/tripstream dsn)\""
echo "Logs:           .venv/bin/tripstream logs kafka|flink|postgres"
echo "Stop:           make down"
