"""The ``tumbling`` job in Spark Structured Streaming, for the peer benchmark (runs in build/peers/spark-venv).

Per pickup zone and 5-minute tumbling window on ``pickup_at``: trips, revenue (sum of
total_amount), tips (sum of tip_amount) and avg_distance, with a watermark of our delay, upserted
into PostgreSQL on (window_start, zone) from ``foreachBatch`` (Spark's JDBC sink cannot upsert):
psycopg2 ``execute_values`` with ``ON CONFLICT DO UPDATE``, one transaction per micro-batch.

Two ways to run, from PEER_TRIGGER:

- ``available-now``: read the topic as it is now, to its end, then stop (``trigger(availableNow)``):
  the throughput run;
- ``default``: no trigger set, so micro-batches run back to back, until SIGTERM: the freshness run.

PEER_MODE picks the output mode: ``append`` writes a window once, when the watermark has passed
its end (Quix's ``.final()``); ``update`` rewrites a window's row in every batch that changes it
(what Flink's job does). Times are parsed and windows computed in UTC, and the window bounds leave
Spark as epoch seconds, so no local time zone can shift them.

Settings come from the environment (PEER_* and libpq's PG*), the password included. Every
finished micro-batch prints one ``PEER_PROGRESS {json}`` line (batch id, input rows, its duration
in ms), so the benchmark can tell how long its batches took, and ``PEER_READY`` once the query
reads the topic (waiting for data, or a batch done), when the freshness run may start producing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from datetime import datetime, timezone
from types import FrameType
from typing import Any

import psycopg2
from psycopg2.extras import execute_values
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

TRIP_SCHEMA = T.StructType([
    T.StructField("pickup_at", T.StringType()),
    T.StructField("pu_location_id", T.IntegerType()),
    T.StructField("trip_distance", T.DoubleType()),
    T.StructField("tip_amount", T.DoubleType()),
    T.StructField("total_amount", T.DoubleType()),
])
COLUMNS = ("window_start", "window_end", "zone", "trips", "revenue", "tips", "avg_distance")


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"spark_job: environment variable {name} is not set")
    return value


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)


class Upsert:
    """The foreachBatch function: a micro-batch's window rows into the table, in one transaction."""

    def __init__(self, table: str) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in ("window_start", "zone"))
        self.sql = (f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES %s "
                    f"ON CONFLICT (window_start, zone) DO UPDATE SET {updates}")

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        rows = [(_utc(r[0]), _utc(r[1]), *r[2:]) for r in batch.collect()]
        if not rows:
            return
        with psycopg2.connect(host=_env("PGHOST"), port=_env("PGPORT"), dbname=_env("PGDATABASE"),
                              user=_env("PGUSER"), password=_env("PGPASSWORD")) as conn:
            with conn.cursor() as cur:
                execute_values(cur, self.sql, rows, page_size=2000)
        conn.close()


def build(spark: SparkSession) -> DataFrame:
    """Kafka topic -> parsed trips -> windowed aggregate, window bounds as epoch seconds."""
    watermark_ms, window_ms = int(_env("PEER_WATERMARK_MS")), int(_env("PEER_WINDOW_MS"))
    trips = (spark.readStream.format("kafka")
             .option("kafka.bootstrap.servers", _env("PEER_KAFKA"))
             .option("subscribe", _env("PEER_TOPIC"))
             .option("startingOffsets", "earliest")
             .load()
             .select(F.from_json(F.col("value").cast("string"), TRIP_SCHEMA).alias("t"))
             .select("t.*")
             .withColumn("event_time", F.to_timestamp("pickup_at", "yyyy-MM-dd HH:mm:ss")))
    return (trips.withWatermark("event_time", f"{watermark_ms} milliseconds")
            .groupBy(F.window("event_time", f"{window_ms} milliseconds"), F.col("pu_location_id"))
            .agg(F.count(F.lit(1)).alias("trips"), F.sum("total_amount").alias("revenue"),
                 F.sum("tip_amount").alias("tips"), F.avg("trip_distance").alias("avg_distance"))
            .select(F.col("window.start").cast("long").alias("window_start"),
                    F.col("window.end").cast("long").alias("window_end"),
                    F.col("pu_location_id").alias("zone"), "trips", "revenue", "tips", "avg_distance"))


def report_progress(progress: list[Any], reported: set[int]) -> None:
    """One PEER_PROGRESS line per micro-batch not reported yet."""
    for p in progress:
        if p.batchId in reported:
            continue
        reported.add(p.batchId)
        print("PEER_PROGRESS " + json.dumps({"batch": p.batchId, "rows": p.numInputRows,
                                             "ms": p.durationMs.get("triggerExecution", 0),
                                             "watermark": p.eventTime.get("watermark")}), flush=True)


def main() -> None:
    jars = _env("PEER_JARS")
    spark = (SparkSession.builder.master(os.environ.get("PEER_MASTER", "local[2]")).appName("tripstream-peer")
             .config("spark.jars", jars)
             .config("spark.sql.session.timeZone", "UTC")
             .config("spark.sql.shuffle.partitions", os.environ.get("PEER_SHUFFLE_PARTITIONS", "2"))
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    writer = (build(spark).writeStream.outputMode(_env("PEER_MODE")).foreachBatch(Upsert(_env("PEER_TABLE")))
              .option("checkpointLocation", _env("PEER_CHECKPOINT")))
    trigger = _env("PEER_TRIGGER")
    if trigger == "available-now":
        writer = writer.trigger(availableNow=True)
    elif trigger != "default":
        raise SystemExit(f"spark_job: PEER_TRIGGER must be available-now or default, got {trigger!r}")
    stopping: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    query = writer.start()
    reported: set[int] = set()
    ready = False
    while not query.awaitTermination(0.25):
        report_progress(query.recentProgress, reported)
        if not ready and (reported or query.status["message"].startswith("Waiting for data")):
            ready = True
            print("PEER_READY", flush=True)  # the source is reading: the freshness run may start producing
        if stopping:
            query.stop()
            break
    report_progress(query.recentProgress, reported)
    failure = query.exception()
    spark.stop()
    if failure is not None:
        print(f"spark_job: the query failed: {str(failure).splitlines()[0]}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
