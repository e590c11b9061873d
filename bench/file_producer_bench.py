"""A real TLC file into Kafka, the path users take: the whole command, against what they would use.

The bundled month is repeated until it has at least ``--rows`` rows (one parquet file, written
once before timing). Then, alternating within each round, each way sends every row of that file
to a fresh 4-partition topic of the running broker, and the topic is counted afterwards:

- ``tripstream produce FILE --speed max``: the whole command in a new process (interpreter start,
  imports, topic checks, reading, building the records, sending, flushing), wall clock;
- the same send in this process, one event at a time (``TripProducer.send`` with
  ``file_items`` and no encoder): the records and the client are the same as the command's, built
  the way every release before the bulk encoder built them, so the ratio is what bulk building bought;
- the course's way: kafka-python, the file read with pyarrow, one dict per row, ``json.dumps`` as
  the value serializer, ``send`` per row, default settings, timed from reading to flush.

Rates are rows over wall time; the ratios compare rounds minutes apart on the same machine.
Writes ``bench/results/file-producer-<time>.md`` and ``.json``.

    .venv/bin/python bench/file_producer_bench.py [--rows 1000000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from tripstream.config import Settings, load_settings
from tripstream.events.producer import TripProducer, file_items
from tripstream.events.readers import open_trip_file
from tripstream.kafka.topics import count, ensure_topic

ROOT = Path(__file__).resolve().parents[1]
MONTH = ROOT / "data" / "green_tripdata_2024-10.parquet"
RESULTS = Path(__file__).resolve().parent / "results"


def repeated_month(rows: int, directory: Path) -> Path:
    """The month concatenated with itself until it has at least ``rows`` rows."""
    month = pq.read_table(MONTH)
    copies = -(-rows // month.num_rows)
    path = directory / f"green_tripdata_2024-10x{copies}.parquet"
    pq.write_table(pa.concat_tables([month] * copies), path)
    return path


def _topic(settings: Settings, name: str) -> str:
    topic = f"bench-file-{name}-{uuid.uuid4().hex[:8]}"
    ensure_topic(settings.kafka, topic, partitions=4)
    return topic


def the_command(settings: Settings, path: Path) -> dict[str, Any]:
    topic = f"bench-file-cli-{uuid.uuid4().hex[:8]}"  # the command creates it, as a user's would
    started = time.perf_counter()
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "tripstream"), "produce", str(path), "--topic", topic,
                             "--partitions", "4", "--speed", "max", "--quiet", "--json"],
                            capture_output=True, text=True, timeout=1800, env=os.environ.copy())
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"tripstream produce failed: {result.stderr.strip().splitlines()[-1:]}")
    report = json.loads(result.stdout)
    return {"topic": topic, "seconds": seconds, "sent": report["sent"], "send_seconds": report["seconds"]}


def one_event_at_a_time(settings: Settings, path: Path) -> dict[str, Any]:
    topic = _topic(settings, "single")
    producer = TripProducer(settings.kafka, topic)
    started = time.perf_counter()
    report = producer.send(file_items(open_trip_file(path), order="file"))
    seconds = time.perf_counter() - started
    if not report.ok:
        raise RuntimeError(f"one-event send failed: {report.first_error}")
    return {"topic": topic, "seconds": seconds, "sent": report.sent}


def kafka_python(settings: Settings, path: Path) -> dict[str, Any]:
    from kafka import KafkaProducer

    topic = _topic(settings, "kafkapython")
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers,
                             value_serializer=lambda row: json.dumps(row, default=str).encode("utf-8"))
    started = time.perf_counter()
    sent = 0
    for batch in pq.ParquetFile(path).iter_batches():
        for row in batch.to_pylist():
            producer.send(topic, value=row)
            sent += 1
    producer.flush()
    seconds = time.perf_counter() - started
    producer.close()
    return {"topic": topic, "seconds": seconds, "sent": sent}


WAYS: dict[str, Callable[[Settings, Path], dict[str, Any]]] = {
    "tripstream produce (whole command)": the_command,
    "same records, one event at a time (in process)": one_event_at_a_time,
    "kafka-python, a dict per row (the course)": kafka_python,
}


def render(results: dict[str, list[dict[str, Any]]], rows: int, args: argparse.Namespace) -> str:
    best = {name: max(r["rows_per_s"] for r in runs) for name, runs in results.items()}
    median = {name: statistics.median(r["rows_per_s"] for r in runs) for name, runs in results.items()}
    ours = "tripstream produce (whole command)"
    lines = [
        f"# A TLC file into Kafka ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"{rows:,} rows (the bundled month repeated), 4 partitions, {args.rounds} alternating rounds, "
        f"{platform.node()} ({os.cpu_count()} cores), load at the end {os.getloadavg()[0]:.1f}.",
        f"Command: `.venv/bin/python bench/file_producer_bench.py --rows {args.rows} --rounds {args.rounds}`",
        "",
        "| way | rows/s, best | rows/s, median | tripstream produce / this (best) |",
        "|---|---|---|---|",
    ]
    for name in results:
        lines.append(f"| {name} | {best[name]:,.0f} | {median[name]:,.0f} | {best[ours] / best[name]:.2f} |")
    send_rates = [r["sent"] / r["send_seconds"] for r in results[ours]]
    lines += ["", f"The command's own report (reading, building and sending, without interpreter start and "
                  f"topic checks): best {max(send_rates):,.0f} rows/s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = load_settings()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in WAYS}
    with tempfile.TemporaryDirectory(prefix="tripstream-bench-") as tmp:
        path = repeated_month(args.rows, Path(tmp))
        rows = open_trip_file(path).count()
        for round_no in range(args.rounds):
            for name, way in WAYS.items():
                run = way(settings, path)
                if count(settings.kafka, run["topic"]) != rows or run["sent"] != rows:
                    raise RuntimeError(f"{name}: {run['sent']} sent, topic {run['topic']} does not hold all {rows} rows")
                run["rows_per_s"] = rows / run["seconds"]
                results[name].append(run)
                print(f"round {round_no + 1}: {name:50s} {run['rows_per_s']:>10,.0f} rows/s ({run['seconds']:.1f} s)",
                      flush=True)
    text = render(results, rows, args)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"file-producer-{stamp}.md").write_text(text)
    (RESULTS / f"file-producer-{stamp}.json").write_text(json.dumps({"rows": rows, "results": results}, indent=2))
    print("\n" + text)


if __name__ == "__main__":
    sys.exit(main())
