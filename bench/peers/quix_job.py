"""The ``tumbling`` job in Quix Streams, for the peer benchmark (runs in build/peers/quix-venv).

Per pickup zone and 5-minute tumbling window on ``pickup_at``: trips, revenue (sum of
total_amount), tips (sum of tip_amount) and avg_distance, upserted into PostgreSQL on
(window_start, zone). The same job as Flink's built-in ``tumbling``, in Quix's own idiom:

- the window groups by the Kafka message key, which our producer sets to the pickup zone, so no
  repartition topic is needed;
- event time comes from the payload (``pickup_at``, wall clock read as UTC), and the grace period
  is our watermark delay; a window is emitted once, when it closes (``.final()``), closed per
  partition (``closing_strategy="partition"``) as Flink's watermark is;
- the rows go through Quix's own PostgreSQLSink (psycopg2, ``INSERT ... ON CONFLICT DO UPDATE``).

Several copies in one consumer group share the partitions. Settings come from the environment
(PEER_* and libpq's PG*), so the password never appears on a command line. On SIGTERM the
application stops cleanly and prints one ``PEER_STATS {json}`` line: messages read and the wall
clock of the first and last, which the benchmark turns into a steady rate.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Mean, Sum
from quixstreams.sinks.community.postgresql import PostgreSQLSink

_EPOCH = datetime(1970, 1, 1)


class Meter:
    """Messages seen by the timestamp extractor, with the wall clock of the first and the last."""

    def __init__(self) -> None:
        self.messages = 0
        self.first: float | None = None
        self.last: float | None = None

    def event_time(self, value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
        """Quix's timestamp extractor: ``pickup_at`` ("YYYY-MM-DD HH:MM:SS", UTC) in epoch ms."""
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.messages += 1
        return int((datetime.fromisoformat(value["pickup_at"]) - _EPOCH) / timedelta(milliseconds=1))


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"quix_job: environment variable {name} is not set")
    return value


def to_row(value: dict[str, Any], key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
    """A closed window's aggregate as the table row (naive UTC timestamps, as Flink writes them)."""
    return {"window_start": datetime.fromtimestamp(value["start"] / 1000, timezone.utc).replace(tzinfo=None),
            "window_end": datetime.fromtimestamp(value["end"] / 1000, timezone.utc).replace(tzinfo=None),
            "zone": int(key), "trips": value["trips"], "revenue": value["revenue"], "tips": value["tips"],
            "avg_distance": value["avg_distance"]}


def main() -> None:
    meter = Meter()
    app = Application(broker_address=_env("PEER_KAFKA"), consumer_group=_env("PEER_GROUP"),
                      auto_offset_reset="earliest", state_dir=_env("PEER_STATE_DIR"), loglevel="WARNING")
    topic = app.topic(_env("PEER_TOPIC"), key_deserializer="str", value_deserializer="json",
                      timestamp_extractor=meter.event_time)
    window_ms = int(_env("PEER_WINDOW_MS"))
    sdf = app.dataframe(topic)
    sdf = (sdf.tumbling_window(duration_ms=window_ms, grace_ms=int(_env("PEER_WATERMARK_MS")))
           .agg(trips=Count(), revenue=Sum("total_amount"), tips=Sum("tip_amount"),
                avg_distance=Mean("trip_distance"))
           .final(closing_strategy="partition"))
    sdf = sdf.apply(to_row, metadata=True)
    sdf.sink(PostgreSQLSink(host=_env("PGHOST"), port=int(_env("PGPORT")), dbname=_env("PGDATABASE"),
                            user=_env("PGUSER"), password=_env("PGPASSWORD"), table_name=_env("PEER_TABLE"),
                            primary_key_columns=["window_start", "zone"], upsert_on_primary_key=True,
                            include_metadata=False, schema_auto_update=False))
    app.run()
    print("PEER_STATS " + json.dumps({"messages": meter.messages, "first": meter.first, "last": meter.last}),
          flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
