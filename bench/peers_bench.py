"""Peers in the benchmark (issue 16): our Flink ``tumbling`` job beside Quix Streams and Spark
Structured Streaming running the same job, on the same topic, in the same run.

Why: a figure of our own means little without the engines people would otherwise pick. Every
peer runs the same job (per pickup zone and 5-minute tumbling window on pickup_at: trips, revenue,
tips, mean distance; watermark 15 s) from the same Kafka topic into a PostgreSQL table of its own,
upserted on (window_start, zone), and every answer is checked: a fast wrong answer is not a result.

1. Throughput. A topic is filled with N synthetic events, in event-time order (no late events),
   keyed by pickup zone over P partitions. Then, one after the other, over exactly those records:
   Flink at parallelism 1 and 2 (bounded at the topic's end), Quix Streams with 1 and 2 processes
   in one consumer group, and Spark ``local[2]`` (``trigger(availableNow)``). For each: the wall
   time from start (submit / process start, start-up included) to every closed window's row being
   in its table, and a steady rate (Flink: events over its source task's running time; Quix:
   events over the time from its first message read to its last; Spark: events over the time of
   its micro-batches).
2. Correctness. A DuckDB GROUP BY over the produced events is the truth. Quix (``.final()``) and
   Spark (append mode) emit a window only once the watermark passes its end, so the windows still
   open at the end of the topic are missing by design: every engine is compared on the closed
   windows only, those ending at least the watermark delay before the *lowest* partition's last
   event time. Trips must match exactly, sums and the mean to a relative 1e-9.
3. Freshness, at a steady produce rate in event-time order: Flink's job and Spark's (default
   trigger, i.e. micro-batches back to back; in update and/or append mode), each alone on a fresh
   topic with the same events: from a trip being produced to its window's row counting it, for the
   last trip of every 10th (window, zone) that the stream closes. p50 and p99.

Peers install themselves (bench/peers/install.py: venvs in build/peers, Spark's Kafka jars with
Maven). A peer that fails to install or run gets one line on stderr and its row says
``failed: <reason>``; the rest of the report is still written. Writes
``bench/results/peers-<UTC time>.md/.json/.png`` and prints the table. Run with the stack up:

    .venv/bin/python bench/peers_bench.py [--events 1000000] [--partitions 4]
        [--freshness-rate 2000 --freshness-seconds 60] [--peers quix,spark | none]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
from psycopg.conninfo import conninfo_to_dict

from peers.install import InstallError, ensure, spark_jars
from freshness_bench import SHORT_FLUSHES, SHORT_FLUSHES_FLAGS
from pipeline_bench import machine, percentile, versions
from tripstream.config import load_settings
from tripstream.events.producer import Item, TripProducer, synthetic_items
from tripstream.events.schema import TripEvent, event_time_ms
from tripstream.events.synthetic import SyntheticStream
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import builtin
from tripstream.jobs.submit import stop, submit
from tripstream.kafka.topics import admin, ensure_topic, read
from tripstream.stack import Stack
from tripstream.stack.errors import WaitTimeout
from tripstream.stack.flink import rest_get
from tripstream.stack.process import wait_until

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PEERS_SRC = ROOT / "bench" / "peers"
WORK = ROOT / "build" / "peers"
START = datetime(2021, 3, 1)
EVENT_RATE = 2.0  # simulated trips per second of event time (as the pipeline benchmark uses)

Cell = tuple[int, int]  # (window start in epoch ms, zone)
Row = tuple[int, float, float, float]  # trips, revenue, tips, avg_distance


class PeerFailed(RuntimeError):
    """A peer run that did not give a result; the message is the row's one-line reason."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# -- input and truth --------------------------------------------------------------------------------
@dataclass
class Columns:
    """The five fields the job reads, of every event produced, for the DuckDB truth."""

    pickup_ms: array = field(default_factory=lambda: array("q"))
    zone: array = field(default_factory=lambda: array("i"))
    total: array = field(default_factory=lambda: array("d"))
    tip: array = field(default_factory=lambda: array("d"))
    distance: array = field(default_factory=lambda: array("d"))

    def tee(self, items: Iterator[tuple[int | None, Item]]) -> Iterator[tuple[int | None, Item]]:
        for clock, item in items:
            if isinstance(item, TripEvent):
                self.pickup_ms.append(item.event_time_ms)
                self.zone.append(item.pu_location_id)
                self.total.append(item.total_amount)
                self.tip.append(item.tip_amount)
                self.distance.append(item.trip_distance)
            yield clock, item


@dataclass
class Filled:
    topic: str
    events: int
    produce_s: float
    truth: dict[Cell, Row]  # the closed windows only
    cutoff_ms: int  # windows ending at or before this are closed
    windows_all: int  # (window, zone) rows over all windows, open ones included


def duckdb_truth(cols: Columns, window_ms: int) -> dict[Cell, Row]:
    """Per (window start, zone): the job's aggregates, by DuckDB over the produced events."""
    table = pa.table({"pickup_ms": pa.array(cols.pickup_ms, pa.int64()), "zone": pa.array(cols.zone, pa.int32()),
                      "total": pa.array(cols.total, pa.float64()), "tip": pa.array(cols.tip, pa.float64()),
                      "distance": pa.array(cols.distance, pa.float64())})
    con = duckdb.connect()
    con.register("events", table)
    rows = con.execute(f"SELECT pickup_ms // {window_ms} * {window_ms}, zone, count(*), sum(total), sum(tip), "
                       "avg(distance) FROM events GROUP BY ALL").fetchall()
    con.close()
    return {(ws, zone): (n, revenue, tips, avg) for ws, zone, n, revenue, tips, avg in rows}


def closed_cutoff(stack: Stack, topic: str, watermark_ms: int) -> int:
    """The end of the last window every engine has closed: the lowest partition's last event time
    minus the watermark delay (Quix closes per partition; Flink's watermark is the partitions' minimum)."""
    last = [event_time_ms(orjson.loads(msg.value())["pickup_at"]) for msg in read(stack.settings.kafka, topic, last=1)]
    if not last:
        raise RuntimeError(f"topic {topic} is empty")
    return min(last) - watermark_ms - 1


def fill(stack: Stack, n: int, partitions: int, window_ms: int, watermark_ms: int) -> Filled:
    topic = f"bench-peers-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=partitions)
    cols = Columns()
    t0 = time.monotonic()
    report = TripProducer(stack.settings.kafka, topic).send(
        cols.tee(synthetic_items(SyntheticStream(11, START, rate=EVENT_RATE, limit=n))))
    produce_s = time.monotonic() - t0
    if not (report.ok and report.delivered == n):
        raise RuntimeError(f"filling {topic}: {report}")
    cutoff = closed_cutoff(stack, topic, watermark_ms)
    truth = duckdb_truth(cols, window_ms)
    closed = {cell: row for cell, row in truth.items() if cell[0] + window_ms <= cutoff}
    return Filled(topic, n, produce_s, closed, cutoff, len(truth))


# -- PostgreSQL -------------------------------------------------------------------------------------
def peer_table_ddl(table: str) -> str:
    return (f"CREATE TABLE IF NOT EXISTS {table} (window_start timestamp NOT NULL, window_end timestamp NOT NULL, "
            "zone integer NOT NULL, trips bigint NOT NULL, revenue double precision, tips double precision, "
            "avg_distance double precision, PRIMARY KEY (window_start, zone))")


def fresh_table(stack: Stack, table: str) -> None:
    """Create the table if needed, and empty it (Flink's: the job's own table, which exists)."""
    with stack.postgres.connect() as conn:
        if table == "tumbling_zone_stats":
            conn.execute("TRUNCATE tumbling_zone_stats, late_trips, bad_records")
        else:
            conn.execute(peer_table_ddl(table))
            conn.execute(f"TRUNCATE {table}")


def zone_column(table: str) -> str:
    return "pu_location_id" if table == "tumbling_zone_stats" else "zone"


def _naive(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).replace(tzinfo=None)


def table_rows(stack: Stack, table: str, last_start_ms: int) -> dict[Cell, Row]:
    with stack.postgres.connect() as conn:
        rows = conn.execute(
            f"SELECT (extract(epoch FROM window_start) * 1000)::bigint, {zone_column(table)}, trips, revenue, tips, "
            f"avg_distance FROM {table} WHERE window_start <= %s", (_naive(last_start_ms),)).fetchall()
    return {(ws, zone): (trips, revenue, tips, avg) for ws, zone, trips, revenue, tips, avg in rows}


def compare(truth: dict[Cell, Row], got: dict[Cell, Row]) -> dict[str, Any]:
    """Rows missing, extra and different; trips exactly, the floats to a relative 1e-9."""
    missing = [c for c in truth if c not in got]
    extra = [c for c in got if c not in truth]
    differ = [c for c in truth if c in got and (got[c][0] != truth[c][0] or not all(
        math.isclose(g, t, rel_tol=1e-9, abs_tol=1e-9) for g, t in zip(got[c][1:], truth[c][1:])))]
    examples = [f"{_naive(c[0]):%Y-%m-%d %H:%M} zone {c[1]}: {what}"
                for what, cells in (("missing", missing), ("extra", extra), ("differs", differ)) for c in cells[:2]]
    return {"windows": len(truth), "missing": len(missing), "extra": len(extra), "differ": len(differ),
            "ok": not (missing or extra or differ), "examples": examples}


class RowsDone:
    """Polls a table until its closed windows hold as many rows and trips as the truth."""

    def __init__(self, stack: Stack, table: str, filled: Filled, window_ms: int) -> None:
        self.stack, self.table = stack, table
        self.last_start = _naive(filled.cutoff_ms - window_ms)
        self.expect = (len(filled.truth), sum(r[0] for r in filled.truth.values()))
        self.seen: tuple[int, int] = (0, 0)

    def __call__(self) -> bool:
        with self.stack.postgres.connect() as conn:
            n, trips = conn.execute(f"SELECT count(*), coalesce(sum(trips), 0) FROM {self.table} "
                                    "WHERE window_start <= %s", (self.last_start,)).fetchone()
        self.seen = (n, int(trips))
        return self.seen == self.expect


# -- peer processes ---------------------------------------------------------------------------------
def peer_env(stack: Stack, extra: dict[str, str]) -> dict[str, str]:
    """The environment a peer runs with: broker, PostgreSQL (password included, never on argv)."""
    pg = conninfo_to_dict(stack.postgres.dsn())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PEER_", "PYTHON", "VIRTUAL_ENV"))}
    env.update({"PGHOST": str(pg.get("host", "127.0.0.1")), "PGPORT": str(pg.get("port", "5432")),
                "PGDATABASE": str(pg["dbname"]), "PGUSER": str(pg["user"]), "PGPASSWORD": str(pg.get("password", "")),
                "PEER_KAFKA": stack.settings.kafka.bootstrap_servers, "SPARK_LOCAL_IP": "127.0.0.1", "TZ": "UTC"})
    env.update(extra)
    return env


def _check_plain_kafka(stack: Stack) -> None:
    extra = {k for k in stack.settings.kafka.client_config() if k != "bootstrap.servers"}
    if extra:
        raise PeerFailed(f"the peers connect without Kafka client settings, and this broker needs {sorted(extra)}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def lines(self, prefix: str) -> list[dict[str, Any]]:
        return [json.loads(line[len(prefix):]) for line in self.stdout.read_text(errors="replace").splitlines()
                if line.startswith(prefix)]

    def reason(self) -> str:
        """The stderr line that says most about a failure: the last error, else the last line."""
        lines = [line.strip() for line in self.stderr.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "Exception" in line or "error:" in line.lower()]
        picked = (errors or lines or [f"exit code {self.popen.returncode}, no output"])[-1]
        return f"{self.name}: {picked[:300]}"


def launch(name: str, python: Path, script: str, env: dict[str, str]) -> Proc:
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    with out.open("wb") as fo, err.open("wb") as fe:
        popen = subprocess.Popen([str(python), str(PEERS_SRC / script)], env=env, stdout=fo, stderr=fe, cwd=ROOT)
    return Proc(name, popen, out, err)


def end(procs: list[Proc], timeout: float = 60.0) -> None:
    """SIGTERM each (a clean stop for both peers), then wait; SIGKILL what is still there."""
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  {p.name} still running {timeout:.0f} s after SIGTERM: killed", file=sys.stderr, flush=True)
            p.popen.kill()
            p.popen.wait()


def failed_proc(procs: list[Proc]) -> Proc | None:
    return next((p for p in procs if p.popen.poll() not in (None, 0)), None)


def delete_topics_of(stack: Stack, marker: str) -> None:
    """Delete the topics a run left behind (Quix's changelog and repartition topics, our inputs)."""
    client = admin(stack.settings.kafka)
    names = [t for t in client.list_topics(timeout=10).topics if marker in t]
    if names:
        for future in client.delete_topics(names, operation_timeout=30).values():
            try:
                future.result()
            except Exception as exc:  # a topic that cannot be deleted is left, not a failed report
                print(f"  could not delete a topic: {exc}", file=sys.stderr)


def peer_timeout(events: int) -> float:
    """How long a peer may take over ``events`` before it counts as stuck: start-up plus 2,000/s."""
    return 300 + events / 2000


# -- throughput runs --------------------------------------------------------------------------------
def warm_up_flink(stack: Stack, filled: Filled) -> float:
    """One unmeasured bounded run into the blackhole sink: the TaskManager's JIT warms up on the
    job's code, so the first measured Flink run is not also the cold one. Returns its seconds."""
    t0 = time.time()
    jid = submit(stack, JobOptions(job="tumbling", topic=filled.topic, until="latest", sink="blackhole",
                                   parallelism=2), timeout=600)
    stack.flink.wait_job_state(jid, {"FINISHED"}, 1800)
    return time.time() - t0


def run_flink(stack: Stack, filled: Filled, parallelism: int, window_ms: int) -> dict[str, Any]:
    fresh_table(stack, "tumbling_zone_stats")
    t0 = time.time()
    jid = submit(stack, JobOptions(job="tumbling", topic=filled.topic, until="latest", sink="jdbc",
                                   parallelism=parallelism), timeout=600)
    stack.flink.wait_job_state(jid, {"FINISHED"}, 1800)
    wall = time.time() - t0
    source = rest_get(stack.flink.rest, f"/jobs/{jid}")["vertices"][0]
    got = table_rows(stack, "tumbling_zone_stats", filled.cutoff_ms - window_ms)
    return {"wall_s": round(wall, 1), "steady_events_per_s": round(filled.events / (source["duration"] / 1000)),
            "steady_basis": "events / source task running time", "correctness": compare(filled.truth, got)}


def run_quix(stack: Stack, python: Path, filled: Filled, processes: int, window_ms: int, watermark_ms: int,
             run_id: str) -> dict[str, Any]:
    table = f"peers_quix_p{processes}"
    fresh_table(stack, table)
    group = f"peers-quix{processes}-{run_id}"
    state = WORK / "state" / group
    env = {"PEER_TOPIC": filled.topic, "PEER_GROUP": group, "PEER_TABLE": table,
           "PEER_WINDOW_MS": str(window_ms), "PEER_WATERMARK_MS": str(watermark_ms)}
    done = RowsDone(stack, table, filled, window_ms)
    t0 = time.time()
    procs = [launch(f"quix-p{processes}-{i}", python, "quix_job.py",
                    peer_env(stack, env | {"PEER_STATE_DIR": str(state / str(i))})) for i in range(processes)]
    try:
        def finished_or_failed() -> bool:
            bad = failed_proc(procs)
            if bad is not None:
                raise PeerFailed(bad.reason())
            return done()

        try:
            wait_until(finished_or_failed, peer_timeout(filled.events),
                       f"quix {processes} process(es): every closed window's row in {table}", interval=0.25)
        except WaitTimeout as exc:
            raise PeerFailed(f"{exc} (rows, trips seen {done.seen}, expected {done.expect})") from None
        wall = time.time() - t0
    finally:
        end(procs)
        shutil.rmtree(state, ignore_errors=True)
        delete_topics_of(stack, group)
    stats = [s for p in procs for s in p.lines("PEER_STATS ")]
    reading = [s for s in stats if s["messages"]]  # a process that joined after the end read nothing
    steady = None
    if len(stats) == processes and reading:
        span = max(s["last"] for s in reading) - min(s["first"] for s in reading)
        steady = round(sum(s["messages"] for s in reading) / span) if span > 0 else None
    got = table_rows(stack, table, filled.cutoff_ms - window_ms)
    return {"wall_s": round(wall, 1), "steady_events_per_s": steady,
            "steady_basis": "events / first to last message read", "messages": [s["messages"] for s in stats],
            "correctness": compare(filled.truth, got)}


def spark_env(table: str, topic: str, mode: str, trigger: str, window_ms: int, watermark_ms: int,
              checkpoint: Path) -> dict[str, str]:
    return {"PEER_TOPIC": topic, "PEER_TABLE": table, "PEER_MODE": mode, "PEER_TRIGGER": trigger,
            "PEER_WINDOW_MS": str(window_ms), "PEER_WATERMARK_MS": str(watermark_ms),
            "PEER_CHECKPOINT": str(checkpoint), "PEER_MASTER": "local[2]",
            "PEER_JARS": ",".join(str(j) for j in spark_jars())}


def run_spark(stack: Stack, python: Path, filled: Filled, window_ms: int, watermark_ms: int,
              run_id: str) -> dict[str, Any]:
    table = "peers_spark"
    fresh_table(stack, table)
    checkpoint = WORK / "state" / f"spark-{run_id}"
    env = spark_env(table, filled.topic, "append", "available-now", window_ms, watermark_ms, checkpoint)
    done = RowsDone(stack, table, filled, window_ms)
    t0 = time.time()
    proc = launch("spark-throughput", python, "spark_job.py", peer_env(stack, env))
    wall = None
    try:
        def rows_or_exit() -> bool:
            nonlocal wall
            if wall is None and done():
                wall = time.time() - t0
            return proc.popen.poll() is not None

        wait_until(rows_or_exit, peer_timeout(filled.events),
                   "spark: the availableNow query to read the topic to its end and stop", interval=0.25)
    except WaitTimeout as exc:
        raise PeerFailed(str(exc)) from None
    finally:
        end([proc])
        shutil.rmtree(checkpoint, ignore_errors=True)
    if proc.popen.returncode != 0:
        raise PeerFailed(proc.reason())
    batches = proc.lines("PEER_PROGRESS ")
    busy_ms = sum(b["ms"] for b in batches)
    got = table_rows(stack, table, filled.cutoff_ms - window_ms)
    correctness = compare(filled.truth, got)
    if wall is None:
        correctness["examples"].insert(0, f"rows never matched the truth's count (seen {done.seen}, expected {done.expect})")
    return {"wall_s": round(wall, 1) if wall is not None else None,
            "steady_events_per_s": round(filled.events / (busy_ms / 1000)) if busy_ms else None,
            "steady_basis": "events / its micro-batches' time",
            "batches": [{k: b[k] for k in ("batch", "rows", "ms")} for b in batches],
            "correctness": correctness}


# -- freshness --------------------------------------------------------------------------------------
def freshness(stack: Stack, name: str, table: str, rate: float, seconds: float, window_ms: int, watermark_ms: int,
              start: Callable[[str], Callable[[], None]]) -> dict[str, Any]:
    """One engine alone on a fresh topic fed at ``rate`` events/s in event-time order.

    ``start(topic)`` starts the engine, returns once it is reading, and gives back its stop
    function. Watched: the last trip of every 10th (window, zone) whose window the stream itself
    closes (ends a watermark delay before the last event), so append and update modes are
    measured on the same cells; latency is from that trip being produced to the row counting it.
    """
    topic = f"bench-peers-fresh-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=4)
    fresh_table(stack, table)
    items = list(synthetic_items(SyntheticStream(12, START, rate=EVENT_RATE, limit=int(rate * seconds))))
    speed = rate / EVENT_RATE
    cells: dict[Cell, list[int]] = {}  # -> [trips, the last trip's clock]
    last_event_ms = 0
    for clock, e in items:
        if isinstance(e, TripEvent):
            ms = e.event_time_ms
            last_event_ms = max(last_event_ms, ms)
            cell = cells.setdefault((ms // window_ms * window_ms, e.pu_location_id), [0, 0])
            cell[0] += 1
            cell[1] = max(cell[1], clock)
    closable = sorted(c for c in cells if c[0] + window_ms + watermark_ms < last_event_ms)
    watched = {c: cells[c] for c in closable[::10]}
    stop_engine = start(topic)
    try:
        producer = TripProducer(stack.settings.kafka, topic)
        t0 = time.time()
        thread = threading.Thread(target=producer.send, args=(iter(items),), kwargs={"speed": speed})
        thread.start()
        origin = items[0][0]

        def produced_at(clock: int) -> float:  # the paced producer's wall time for this clock
            return t0 + (clock - origin) / 1000 / speed

        seen: dict[Cell, float] = {}
        zone = zone_column(table)
        with stack.postgres.connect() as conn:
            def all_seen() -> bool:
                now = time.time()
                due = [c for c, (_, last) in watched.items() if c not in seen and produced_at(last) <= now]
                if due:
                    starts = sorted({_naive(c[0]) for c in due})
                    rows = conn.execute(f"SELECT (extract(epoch FROM window_start) * 1000)::bigint, {zone}, trips "
                                        f"FROM {table} WHERE window_start = ANY(%s)", (starts,)).fetchall()
                    conn.commit()
                    for ws, z, trips in rows:
                        if (ws, z) in watched and (ws, z) not in seen and trips == watched[(ws, z)][0]:
                            seen[(ws, z)] = now
                return not thread.is_alive() and len(seen) == len(watched)

            try:
                wait_until(all_seen, seconds + 60, f"{name}: every watched window's row counting its last trip",
                           interval=0.05)
            except WaitTimeout as exc:
                print(f"  {exc} ({len(seen)} of {len(watched)} seen)", file=sys.stderr, flush=True)
        thread.join()
    finally:
        stop_engine()
        delete_topics_of(stack, topic)
    # Cells whose last trip came in the first 2 s are left out: the engine was still warming up.
    lat = [seen[c] - produced_at(watched[c][1]) for c in seen if produced_at(watched[c][1]) > t0 + 2]
    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    return {"engine": name, "rate_per_s": rate, "seconds": seconds, "watched": len(watched), "seen": len(seen),
            "p50_ms": None if p50 is None else round(1000 * p50), "p99_ms": None if p99 is None else round(1000 * p99)}


def flink_starter(stack: Stack, parallelism: int, **options: Any) -> Callable[[str], Callable[[], None]]:
    def start(topic: str) -> Callable[[], None]:
        jid = submit(stack, JobOptions(job="tumbling", topic=topic, startup="earliest", parallelism=parallelism,
                                       **options))
        stack.flink.wait_job_state(jid, {"RUNNING"}, 120, starting=True)

        def stop_flink() -> None:
            stop(stack, "tumbling")

        return stop_flink

    return start


def spark_starter(stack: Stack, python: Path, table: str, mode: str, window_ms: int, watermark_ms: int,
                  run_id: str) -> Callable[[str], Callable[[], None]]:
    def start(topic: str) -> Callable[[], None]:
        checkpoint = WORK / "state" / f"spark-fresh-{mode}-{run_id}"
        env = spark_env(table, topic, mode, "default", window_ms, watermark_ms, checkpoint)
        proc = launch(f"spark-fresh-{mode}", python, "spark_job.py", peer_env(stack, env))

        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise PeerFailed(proc.reason())
            return "PEER_READY" in proc.stdout.read_text(errors="replace")

        def stop_spark() -> None:
            end([proc])
            shutil.rmtree(checkpoint, ignore_errors=True)

        try:
            wait_until(ready, 300, f"spark ({mode}): the query waiting for data", interval=0.2)
        except BaseException:
            stop_spark()
            raise
        return stop_spark

    return start


# -- report -----------------------------------------------------------------------------------------
def peer_versions(python: dict[str, Path]) -> dict[str, str]:
    out = {}
    for peer, module in (("quix", "quixstreams"), ("spark", "pyspark")):
        if peer in python:
            done = subprocess.run([str(python[peer]), "-c", f"import {module}; print({module}.__version__)"],
                                  capture_output=True, text=True, timeout=120)
            out[peer] = done.stdout.strip() or "?"
    if "spark" in python:
        out["spark_jars"] = ", ".join(j.name for j in spark_jars())
    return out


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, r) for name, r in report["throughput"].items() if r.get("steady_events_per_s")]
    fresh = [f for f in report["freshness"] if f.get("p50_ms") is not None]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    colours = {"Flink": "#27a", "Quix": "#d83", "Spark": "#4a7"}

    def colour(name: str) -> str:
        return next((c for k, c in colours.items() if name.startswith(k)), "#888")

    labels = [n.replace(" ", "\n", 1) for n, _ in rows]
    bars = axes[0].bar(labels, [r["steady_events_per_s"] / 1000 for _, r in rows], color=[colour(n) for n, _ in rows])
    axes[0].bar_label(bars, labels=[f"{r['steady_events_per_s'] / 1000:,.0f}k" for _, r in rows], fontsize=8)
    axes[0].set_ylabel("thousand events / s")
    axes[0].set_title("Steady rate", fontsize=10)
    walled = [(n, r) for n, r in report["throughput"].items() if r.get("wall_s")]
    bars = axes[1].bar([n.replace(" ", "\n", 1) for n, _ in walled], [r["wall_s"] for _, r in walled],
                       color=[colour(n) for n, _ in walled])
    axes[1].bar_label(bars, labels=[f"{r['wall_s']:.0f} s" for _, r in walled], fontsize=8)
    axes[1].set_ylabel("seconds")
    axes[1].set_title(f"Start to every row written ({report['events']:,} events)", fontsize=10)
    if fresh:
        x = range(len(fresh))
        axes[2].bar([i - 0.2 for i in x], [f["p50_ms"] for f in fresh], 0.4, label="p50", color="#79c")
        axes[2].bar([i + 0.2 for i in x], [f["p99_ms"] for f in fresh], 0.4, label="p99", color="#249")
        axes[2].set_xticks(list(x), [f["engine"].replace(" ", "\n", 1) for f in fresh])
        axes[2].set_ylabel("ms")
        axes[2].legend()
    axes[2].set_title(f"Freshness at {report['freshness_rate']:,.0f} events/s", fontsize=10)
    for ax in axes:
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("Tumbling job into PostgreSQL: Flink and its peers, one run", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def goal_lines(rows: dict[str, dict[str, Any]]) -> list[str]:
    """Issue 16's goal (Flink at least 5x Quix), and how the peers' work was split or batched."""
    base = rows.get("Flink p2", {})
    out = []
    for name in ("Quix 1 process", "Quix 2 processes"):
        row = rows.get(name, {})
        if base.get("steady_events_per_s") and row.get("steady_events_per_s"):
            ratio = base["steady_events_per_s"] / row["steady_events_per_s"]
            out.append(f"Goal (issue 16) Flink >= 5x Quix: Flink p2 / {name} = **{ratio:.1f}x** steady "
                       f"({'met' if ratio >= 5 else 'not met'}), {row['wall_s'] / base['wall_s']:.1f}x wall.  ")
        if row.get("messages") and len(row["messages"]) > 1:
            out.append(f"{name}: messages read per process {', '.join(f'{m:,}' for m in row['messages'])} "
                       "(uneven: the processes start reading seconds apart, and the group rebalances when the second joins).  ")
    spark = rows.get("Spark local[2]", {})
    if spark.get("batches"):
        out.append("Spark micro-batches: " + "; ".join(
            f"batch {b['batch']}: {b['rows']:,} rows in {b['ms'] / 1000:.1f} s" for b in spark["batches"])
            + " (with availableNow the whole topic is one batch; the next, with no data, advances the watermark "
              "and writes the closed windows).")
    return [*out, ""] if out else []


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}" if unit != " s" else f"{value:,.1f} s"


def render(r: dict[str, Any], png: str) -> str:
    m, v, pv = r["machine"], r["versions"], r["peer_versions"]
    base = r["throughput"].get("Flink p2", {})
    lines = [f"# Flink and its peers, {r['time']} UTC", "",
             f"Command: `{r['command']}`  ",
             f"Machine: {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; load average at the start "
             f"{', '.join(str(x) for x in m.get('load_average_at_start', []))} (the machine is shared).  ",
             f"Versions: Flink {v['flink']}, Kafka {v['kafka']}, PostgreSQL {v['postgres']}, Python {v['python']}; "
             f"Quix Streams {pv.get('quix', 'not run')}; PySpark {pv.get('spark', 'not run')}"
             + (f" with {pv['spark_jars']}" if pv.get("spark_jars") else "") + ".", "",
             f"## Throughput: the tumbling job into PostgreSQL, {r['events']:,} synthetic events "
             f"({r['partitions']} partitions, keyed by zone, event-time order), one after the other", "",
             "| engine | wall: start to every row written | steady events/s | Flink p2 is ... x this "
             "| correct (closed windows) |",
             "|---|---|---|---|---|"]
    for name, row in r["throughput"].items():
        if "failed" in row:
            lines.append(f"| {name} | failed: {row['failed']} | | | |")
            continue
        c = row["correctness"]
        verdict = (f"yes, {c['windows']:,} rows equal" if c["ok"] else
                   f"**no**: of {c['windows']:,}, {c['missing']} missing, {c['extra']} extra, {c['differ']} differ"
                   + (f" ({'; '.join(c['examples'][:3])})" if c["examples"] else ""))
        ratio_steady = (f"{base['steady_events_per_s'] / row['steady_events_per_s']:.1f}"
                        if base.get("steady_events_per_s") and row.get("steady_events_per_s") else "-")
        ratio_wall = (f"{row['wall_s'] / base['wall_s']:.1f}" if base.get("wall_s") and row.get("wall_s") else "-")
        lines.append(f"| {name} | {_fmt(row.get('wall_s'), ' s')} | {_fmt(row.get('steady_events_per_s'))} | "
                     f"{ratio_steady} (steady), {ratio_wall} (wall) | {verdict} |")
    lines += ["", *goal_lines(r["throughput"]),
              "Steady rate: Flink, events over its source task's running time; Quix, events over the time from its "
              "first message read to its last (over all processes); Spark, events over its micro-batches' time. "
              "Wall: from submit (Flink: the PyFlink client, a bounded job) or process start (Quix, Spark "
              "`trigger(availableNow)`) to every closed window's row being in the engine's table.",
              "",
              f"Correctness: each engine's table against a DuckDB GROUP BY over the produced events, on the "
              f"{r['truth_windows_closed']:,} "
              f"(window, zone) rows of the windows closed by the stream (ending at least the {r['watermark_ms'] // 1000} s "
              f"watermark before the lowest partition's last event; {r['truth_windows_all']:,} rows in all): "
              "Quix `.final()` and Spark's append mode never write the windows still open at the end. Trips exactly, "
              "revenue, tips and avg_distance to a relative 1e-9.",
              "",
              f"![peers]({png})",
              "",
              f"## Freshness: {r['freshness_rate']:,.0f} events/s for {r['freshness_seconds']:.0f} s, each engine alone",
              "",
              "From a trip being produced to its window's row counting it, for the last trip of every 10th "
              "(window, zone) the stream closes; event time runs "
              f"{r['freshness_rate'] / EVENT_RATE:,.0f}x faster than the wall clock, so a 5-minute window lasts "
              f"{300 / (r['freshness_rate'] / EVENT_RATE):.2f} s.",
              "",
              "| engine | p50 | p99 | windows measured |",
              "|---|---|---|---|"]
    for f in r["freshness"]:
        if "failed" in f:
            lines.append(f"| {f['engine']} | failed: {f['failed']} | | |")
        else:
            lines.append(f"| {f['engine']} | {_fmt(f['p50_ms'], ' ms')} | {_fmt(f['p99_ms'], ' ms')} | "
                         f"{f['seen']} of {f['watched']} |")
    p99 = {f["engine"]: f["p99_ms"] for f in r["freshness"] if f.get("p99_ms")}
    spark = next((v for k, v in p99.items() if k.startswith("Spark") and k.endswith("update")), None)
    if spark:
        lines.append("")
        lines += [f"Goal (issue 16) Flink's p99 >= 10x better than Spark's (update mode, default trigger): "
                  f"{engine} **{spark / v:.1f}x**  " for engine, v in p99.items() if engine.startswith("Flink")]
    lines += ["", "## How each engine runs the job", "",
              "- **Flink**: the built-in `tumbling` job (updating aggregate, JDBC upsert sink, mini-batch 100 ms); "
              "throughput bounded at the topic's end (after one unmeasured warm-up run unless --no-warmup), freshness unbounded.",
              "- **Quix Streams**: `tumbling_window(...).agg(Count, Sum, Sum, Mean).final(closing_strategy=\"partition\")`, "
              "grace = the watermark delay, windows keyed by the message key (the zone), its PostgreSQLSink upserting; "
              "commit interval 5 s (its default). 2 processes: one consumer group.",
              "- **Spark**: `withWatermark` + `groupBy(window, zone)`, `foreachBatch` upserting with psycopg2 "
              "`execute_values`; `local[2]`, 2 shuffle partitions; append mode for throughput "
              "(`trigger(availableNow)`), no trigger set for freshness.",
              ""]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--freshness-rate", type=float, default=2000.0)
    parser.add_argument("--freshness-seconds", type=float, default=60.0)
    parser.add_argument("--freshness-parallelism", type=int, default=2, help="Flink's, in the freshness run")
    parser.add_argument("--spark-freshness-modes", default="update,append",
                        help="Spark output modes measured for freshness (update: as Flink's job; append: on close)")
    parser.add_argument("--peers", default="quix,spark", help="quix,spark | quix | spark | none")
    parser.add_argument("--no-warmup", action="store_true", help="skip Flink's unmeasured warm-up run")
    args = parser.parse_args()
    peers = [] if args.peers.strip() == "none" else [p.strip() for p in args.peers.split(",") if p.strip()]
    stack = Stack(load_settings())
    if not all(s.state == "up" for s in stack.status() if s.name in ("kafka", "flink", "postgres")):
        raise SystemExit("the stack is not up: .venv/bin/tripstream up")
    decl = builtin("tumbling").decl
    window_ms, watermark_ms = decl.window.size_ms, decl.watermark_ms
    run_id = uuid.uuid4().hex[:6]
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    command = ".venv/bin/python bench/peers_bench.py " + " ".join(
        f"--{k.replace('_', '-')}" + ("" if isinstance(v, bool) else f" {v}")
        for k, v in vars(args).items() if v is not False)

    python: dict[str, Path] = {}
    install_failed: dict[str, str] = {}
    for peer in peers:
        print(f"installing {peer} (skipped when done)...", flush=True)
        try:
            _check_plain_kafka(stack)
            python[peer] = ensure(peer)
        except (InstallError, PeerFailed) as exc:
            install_failed[peer] = str(exc)
            print(f"peer {peer} failed to install: {exc}", file=sys.stderr, flush=True)
        except Exception as exc:  # anything else the installer met: still one line, still a report
            install_failed[peer] = f"{peer}: {type(exc).__name__}: {one_line(exc)}"
            print(f"peer {peer} failed to install: {install_failed[peer]}", file=sys.stderr, flush=True)

    print(f"filling a topic with {args.events:,} synthetic events ({args.partitions} partitions)...", flush=True)
    filled = fill(stack, args.events, args.partitions, window_ms, watermark_ms)
    print(f"  {args.events / filled.produce_s:,.0f} events/s; truth: {len(filled.truth):,} closed (window, zone) rows "
          f"of {filled.windows_all:,}", flush=True)

    def attempt(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        print(f"{name}...", flush=True)
        try:
            row = fn()
        except (PeerFailed, InstallError) as exc:
            print(f"{name} failed: {exc}", file=sys.stderr, flush=True)
            return {"failed": one_line(exc)}
        except Exception as exc:  # one run's surprise (a timeout, a driver error) must not lose the report
            print(f"{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return {"failed": f"{type(exc).__name__}: {one_line(exc)}"}
        c = row["correctness"]
        print(f"  wall {row.get('wall_s')} s, steady {row.get('steady_events_per_s')} events/s, "
              f"correct: {c['ok']} ({c['windows']} windows, {c['missing']} missing, {c['extra']} extra, "
              f"{c['differ']} differ)", flush=True)
        return row

    def peer_row(peer: str, fn: Callable[[Path], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            if peer in install_failed:
                raise PeerFailed(install_failed[peer])
            return fn(python[peer])

        return run

    if not args.no_warmup:
        print("warming Flink up (one unmeasured run into the blackhole sink)...", flush=True)
        print(f"  {warm_up_flink(stack, filled):.1f} s", flush=True)
    throughput: dict[str, dict[str, Any]] = {}
    throughput["Flink p1"] = attempt("Flink p1", lambda: run_flink(stack, filled, 1, window_ms))
    throughput["Flink p2"] = attempt("Flink p2", lambda: run_flink(stack, filled, 2, window_ms))
    if "quix" in peers:
        for n in (1, 2):
            label = f"Quix {n} process{'es' if n > 1 else ''}"
            throughput[label] = attempt(label, peer_row("quix", lambda py, n=n: run_quix(
                stack, py, filled, n, window_ms, watermark_ms, run_id)))
    if "spark" in peers:
        throughput["Spark local[2]"] = attempt("Spark local[2]", peer_row("spark", lambda py: run_spark(
            stack, py, filled, window_ms, watermark_ms, run_id)))

    fresh: list[dict[str, Any]] = []
    runs: list[tuple[str, str, Callable[[], Callable[[str], Callable[[], None]]]]] = [
        (f"Flink p{args.freshness_parallelism}", "tumbling_zone_stats",
         lambda: flink_starter(stack, args.freshness_parallelism)),
        # What a user after freshness sets (README, Streaming jobs): shorter flushes at each hop.
        (f"Flink p{args.freshness_parallelism}, {SHORT_FLUSHES_FLAGS}", "tumbling_zone_stats",
         lambda: flink_starter(stack, args.freshness_parallelism, **SHORT_FLUSHES))]
    if "spark" in peers:
        for mode in [m.strip() for m in args.spark_freshness_modes.split(",") if m.strip()]:
            runs.append((f"Spark local[2] {mode}", f"peers_spark_fresh_{mode}",
                         lambda mode=mode: spark_starter(stack, python["spark"], f"peers_spark_fresh_{mode}", mode,
                                                         window_ms, watermark_ms, run_id)))
    for name, table, starter in runs:
        print(f"freshness, {name}...", flush=True)
        if name.startswith("Spark") and "spark" in install_failed:
            fresh.append({"engine": name, "failed": install_failed["spark"]})
            continue
        try:
            f = freshness(stack, name, table, args.freshness_rate, args.freshness_seconds, window_ms, watermark_ms,
                          starter())
        except Exception as exc:  # one run's failure is its row, not the end of the report
            print(f"freshness, {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            f = {"engine": name, "failed": one_line(exc) if isinstance(exc, PeerFailed)
                 else f"{type(exc).__name__}: {one_line(exc)}"}
        else:
            print(f"  p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms ({f['seen']} of {f['watched']} windows)", flush=True)
        fresh.append(f)

    delete_topics_of(stack, filled.topic)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    png = RESULTS / f"peers-{stamp}.png"
    report = {"time": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), "command": command,
              "machine": machine() | {"load_average_at_start": load_at_start}, "versions": versions(stack), "peer_versions": peer_versions(python),
              "events": args.events, "partitions": args.partitions, "watermark_ms": watermark_ms,
              "window_ms": window_ms, "truth_windows_closed": len(filled.truth), "truth_windows_all": filled.windows_all,
              "throughput": throughput, "freshness_rate": args.freshness_rate,
              "freshness_seconds": args.freshness_seconds, "freshness": fresh, "install_failed": install_failed}
    chart(report, png)
    md = render(report, png.name)
    (RESULTS / f"peers-{stamp}.md").write_text(md)
    (RESULTS / f"peers-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    print(md)


if __name__ == "__main__":
    main()
