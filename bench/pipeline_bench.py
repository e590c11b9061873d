"""Pipeline benchmarks: throughput through Flink into PostgreSQL, freshness, and what it costs.

All measured in one run on the running stack, each figure beside its baseline from the same run
(this machine is shared and noisy, so ratios travel better than absolute rates):

1. Throughput. A topic is filled beforehand with N synthetic events (4 partitions). Then, over
   exactly those records, bounded at the topic's end:
   - Kafka's ``ConsumerPerformance`` reads the topic: the broker's ceiling;
   - the ``tumbling`` job writing to Flink's blackhole sink: the engine's ceiling here;
   - the ``tumbling`` job writing to PostgreSQL: the product;
   - the same two for ``passthrough``, where every event is a row: the sink's own cost.
   Rates are records over the time the source task ran (Flink's REST API), not job start-up.
2. Freshness, under a steady produce rate (event-time order): from a trip being produced to its
   window's row counting it (tumbling), and from an event being produced to its row being
   visible (passthrough). p50 and p99.
3. Cost: CPU seconds and peak resident memory of each component over the whole run.

Writes ``bench/results/pipeline-<time>.md`` (with the chart ``pipeline-<time>.png``) and prints
the table. Run with the stack up:

    .venv/bin/python bench/pipeline_bench.py [--events 2000000] [--freshness-seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tripstream.config import load_settings
from tripstream.events.producer import TripProducer, synthetic_items
from tripstream.events.synthetic import SyntheticStream
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import builtin
from tripstream.jobs.submit import stop, submit
from tripstream.kafka.topics import count, ensure_topic
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get
from tripstream.stack.kafka import java_binary

RESULTS = Path(__file__).resolve().parent / "results"
START = datetime(2021, 3, 1, 0, 0)


# -- cost: CPU seconds and peak RSS per component, sampled over the run --------------------------
def _tree(pid: int) -> list[int]:
    """The pid and all its descendants (PostgreSQL forks a process per connection)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _cpu_rss(pids: list[int]) -> tuple[float, int]:
    ticks, rss = 0, 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK"), rss


@dataclass
class CostMeter:
    """Samples each component's process tree every second in the background."""

    roots: dict[str, int]
    cpu_start: dict[str, float] = field(default_factory=dict)
    cpu_last: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        for name, pid in self.roots.items():
            cpu, rss = _cpu_rss(_tree(pid))
            self.cpu_start.setdefault(name, cpu)
            self.cpu_last[name] = max(cpu, self.cpu_last.get(name, 0.0))
            self.peak_rss[name] = max(rss, self.peak_rss.get(name, 0))

    def __enter__(self) -> CostMeter:
        self.sample()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            self.sample()

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self.sample()

    def report(self) -> dict[str, dict[str, float]]:
        return {n: {"cpu_s": round(self.cpu_last[n] - self.cpu_start[n], 1),
                    "peak_rss_mib": round(self.peak_rss[n] / 2**20)} for n in self.roots}


# -- throughput -----------------------------------------------------------------------------------
def fill(stack: Stack, n: int) -> tuple[str, float]:
    topic = f"bench-pipeline-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=4)
    stream = SyntheticStream(11, START, rate=2.0, limit=n)
    t0 = time.monotonic()
    report = TripProducer(stack.settings.kafka, topic).send(synthetic_items(stream))
    assert report.ok and report.delivered == n, report
    return topic, time.monotonic() - t0


def consumer_performance(stack: Stack, topic: str, n: int) -> dict[str, Any]:
    cmd = [java_binary(), "-Xmx1g", "-cp", str(stack.settings.jars_dir / "kafka" / "*"),
           "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", stack.settings.kafka.bootstrap_servers,
           "--topic", topic, "--messages", str(n), "--timeout", "60000"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True).stdout.strip().splitlines()
    header = [h.strip() for h in out[0].split(",")]
    values = [v.strip() for v in out[-1].split(",")]
    row = dict(zip(header, values))
    return {"events_per_s": float(row["nMsg.sec"]), "mb_per_s": float(row["MB.sec"]),
            "command": " ".join(cmd[:1] + ["-cp", "build/jars/kafka/*"] + cmd[4:])}


def run_bounded(stack: Stack, opts: JobOptions) -> dict[str, Any]:
    """Run a bounded job to its end; the rate is records over the source task's running time."""
    jid = submit(stack, opts)
    stack.flink.wait_job_state(jid, {"FINISHED"}, 1800)
    detail = rest_get(stack.flink.rest, f"/jobs/{jid}")
    source = detail["vertices"][0]
    records = source["metrics"]["read-records"] if source["metrics"].get("read-records") else None
    records = records or source["metrics"].get("write-records")
    seconds = source["duration"] / 1000
    return {"job": opts.job, "sink": opts.sink, "parallelism": opts.parallelism, "seconds": round(seconds, 1),
            "job_seconds": round(detail["duration"] / 1000, 1), "records": records}


def throughput(stack: Stack, topic: str, n: int, parallelism: int) -> dict[str, Any]:
    results: dict[str, Any] = {"consumer_performance": consumer_performance(stack, topic, n)}
    for job in ("tumbling", "passthrough"):
        for sink in ("blackhole", "jdbc"):
            with stack.postgres.connect() as conn:
                conn.execute("TRUNCATE trips, tumbling_zone_stats, late_trips, bad_records")
            r = run_bounded(stack, JobOptions(job=job, topic=topic, until="latest", sink=sink,
                                              parallelism=parallelism))
            r["events_per_s"] = n / r["seconds"]
            results[f"{job}->{sink}"] = r
            print(f"  {job}->{sink}: {r['events_per_s']:,.0f} events/s ({r['seconds']} s)", flush=True)
    return results


# -- freshness --------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def freshness(stack: Stack, rate: float, seconds: float, mini_batch_ms: int | None = None,
              jobs: tuple[str, ...] = ("tumbling", "passthrough"), **options: Any) -> dict[str, Any]:
    """Both jobs (or ``jobs``) run unbounded over one topic fed at ``rate`` events/s in event-time order.

    The tumbling job's windows update as trips arrive (lateness is decided per partition, so a
    row does not wait for the window to close): its freshness is from a trip being produced to its
    window's row counting it, taken for the last trip of every 10th (window, zone). The
    passthrough job's is from an event being produced to its row, for every 40th event.
    """
    topic = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=4)
    with stack.postgres.connect() as conn:
        conn.execute("TRUNCATE trips, tumbling_zone_stats, late_trips, bad_records")
    extra = dict(options) if mini_batch_ms is None else {"mini_batch_ms": mini_batch_ms, **options}
    ids = [submit(stack, JobOptions(job=j, topic=topic, startup="earliest", **extra)) for j in jobs]
    for jid in ids:
        stack.flink.wait_job_state(jid, {"RUNNING"}, 120)
    event_rate = 2.0
    speed = rate / event_rate
    # Generated up front (the stream is deterministic) so every 40th trip can be watched for by id:
    # the poll asks only for ids still missing, so it stays cheap however many rows arrive.
    items = list(synthetic_items(SyntheticStream(12, START, rate=event_rate, limit=int(rate * seconds))))
    watched = {e.event_id: clock for clock, e in items[::40]}
    window_ms = builtin("tumbling").decl.window.size_ms
    cells: dict[tuple[int, int], list[int]] = {}  # (window start ms, zone) -> [trips, last trip's clock]
    for clock, e in items:
        if e.pu_location_id is not None:
            cell = cells.setdefault((clock // window_ms * window_ms, e.pu_location_id), [0, 0])
            cell[0] += 1
            cell[1] = max(cell[1], clock)
    watched_cells = dict(sorted(cells.items())[::10])
    producer = TripProducer(stack.settings.kafka, topic)
    t0 = time.time()
    thread = threading.Thread(target=producer.send, args=(iter(items),), kwargs={"speed": speed})
    thread.start()
    start_ms = items[0][0]  # the pacer's origin: the first record's clock

    def produced_at(event_ms: int) -> float:  # the paced producer's wall time for this event time
        return t0 + (event_ms - start_ms) / 1000 / speed

    seen_cells: dict[tuple[int, int], float] = {}
    seen_trips: dict[str, float] = {}
    with stack.postgres.connect() as conn:
        while thread.is_alive():
            now = time.time()
            due = [k for k, (_, last) in watched_cells.items() if k not in seen_cells and produced_at(last) <= now]
            if due:
                rows = conn.execute(
                    "SELECT (extract(epoch FROM window_start) * 1000)::bigint, pu_location_id, trips "
                    "FROM tumbling_zone_stats WHERE window_start = ANY(%s)",
                    ([datetime.fromtimestamp(ws / 1000, timezone.utc).replace(tzinfo=None) for ws in {k[0] for k in due}],)).fetchall()
                for ws, zone, trips in rows:
                    if (ws, zone) in watched_cells and trips == watched_cells[(ws, zone)][0]:
                        seen_cells.setdefault((ws, zone), now)
            missing = [e for e in watched if e not in seen_trips] if "passthrough" in jobs else []
            for (event_id,) in conn.execute("SELECT event_id FROM trips WHERE event_id = ANY(%s)", (missing,)):
                seen_trips[event_id] = now
            conn.commit()
            time.sleep(0.05)  # the sampling period of the measurement, not a synchronisation
    for job in jobs:
        stop(stack, job)
    # Cells whose last trip came in the first 2 s are left out: the jobs were still warming up.
    window_lat = [seen - produced_at(watched_cells[k][1]) for k, seen in seen_cells.items()
                  if produced_at(watched_cells[k][1]) > t0 + 2]
    trip_lat = [seen - produced_at(watched[e]) for e, seen in seen_trips.items()]
    return {
        "rate_per_s": rate, "seconds": seconds, "mini_batch_ms": JobOptions(job="tumbling", **extra).mini_batch_ms,
        "options": options,
        "window_ms": {"p50": round(1000 * percentile(window_lat, 0.5)), "p99": round(1000 * percentile(window_lat, 0.99)),
                      "windows": len(window_lat), "watched": len(watched_cells)},
        "event_ms": {"p50": round(1000 * percentile(trip_lat, 0.5)), "p99": round(1000 * percentile(trip_lat, 0.99)),
                     "events": len(trip_lat)} if trip_lat else {"p50": None, "p99": None, "events": 0},
    }


# -- report -----------------------------------------------------------------------------------------
def versions(stack: Stack) -> dict[str, str]:
    statuses = {s.name: s for s in stack.status()}
    return {name: (statuses[name].version or "?") for name in ("kafka", "flink", "postgres")} | {
        "python": platform.python_version()}


def machine() -> dict[str, Any]:
    mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 2**20
    return {"cores": os.cpu_count(), "memory_gib": mem, "kernel": platform.release()}


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["consumer_performance", "tumbling->blackhole", "tumbling->jdbc", "passthrough->blackhole",
             "passthrough->jdbc"]
    labels = ["Kafka\nConsumerPerformance", "tumbling\nblackhole", "tumbling\nPostgreSQL", "passthrough\nblackhole",
              "passthrough\nPostgreSQL"]
    rates = [results[n]["events_per_s"] / 1000 for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.bar(labels, rates, color=["#888", "#4a7", "#27a", "#4a7", "#27a"])
    ax.bar_label(bars, labels=[f"{r:,.0f}k" for r in rates])
    ax.set_ylabel("thousand events / s")
    ax.set_title("Throughput over the same pre-filled topic (one run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--freshness-rate", type=float, default=2000.0)
    parser.add_argument("--freshness-seconds", type=float, default=40.0)
    parser.add_argument("--producer-events", type=int, default=500_000,
                        help="also run the producer benchmark over this many events (0: skip)")
    parser.add_argument("--recovery", action=argparse.BooleanOptionalAction, default=True,
                        help="also kill the TaskManager mid-stream and time the recovery")
    args = parser.parse_args()
    stack = Stack(load_settings())
    command = "make bench  (.venv/bin/python bench/pipeline_bench.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()) + ")"
    roots = {"kafka": stack.kafka.process("kafka").pid(), "jobmanager": stack.flink.process("jobmanager").pid(),
             "taskmanager": stack.flink.process("taskmanager").pid(), "postgres": stack.postgres.process("postgres").pid()}
    if None in roots.values():
        raise SystemExit(f"the local stack is not fully up ({roots}): make up")
    producers = None
    if args.producer_events:
        import producer_bench

        print(f"producers, {args.producer_events:,} events each...", flush=True)
        producers = producer_bench.run(stack.settings, args.producer_events)
    with CostMeter(roots) as meter:
        print(f"filling a topic with {args.events:,} synthetic events...", flush=True)
        topic, fill_s = fill(stack, args.events)
        print(f"  {args.events / fill_s:,.0f} events/s; {count(stack.settings.kafka, topic):,} in the topic", flush=True)
        results = throughput(stack, topic, args.events, args.parallelism)
        print("freshness...", flush=True)
        fresh = freshness(stack, args.freshness_rate, args.freshness_seconds)
    cost = meter.report()
    recovery = None
    if args.recovery:
        import recovery_bench

        print("recovery after a TaskManager kill...", flush=True)
        recovery = recovery_bench.run(stack, 1000.0, 60.0, 25.0)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    png = RESULTS / f"pipeline-{stamp}.png"
    chart(results, png)
    report = {"command": command, "machine": machine(), "versions": versions(stack), "events": args.events,
              "throughput": results, "freshness": fresh, "cost": cost, "producers": producers, "recovery": recovery}
    md = render(report, png.name)
    (RESULTS / f"pipeline-{stamp}.md").write_text(md)
    (RESULTS / f"pipeline-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    print(md)


def render(r: dict[str, Any], png: str) -> str:
    t = r["throughput"]
    cp = t["consumer_performance"]["events_per_s"]
    bh, pg = t["tumbling->blackhole"]["events_per_s"], t["tumbling->jdbc"]["events_per_s"]
    pbh, ppg = t["passthrough->blackhole"]["events_per_s"], t["passthrough->jdbc"]["events_per_s"]
    m, v = r["machine"], r["versions"]
    lines = [
        f"# Pipeline benchmark, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}.  ",
        f"Versions: Kafka {v['kafka']}, Flink {v['flink']}, PostgreSQL {v['postgres']}, Python {v['python']}.",
        "",
        f"## Throughput ({r['events']:,} synthetic events, 4 partitions, parallelism "
        f"{t['tumbling->jdbc']['parallelism']})",
        "",
        "| reader | events/s | ratio |",
        "|---|---|---|",
        f"| Kafka ConsumerPerformance (broker ceiling) | {cp:,.0f} | 1 |",
        f"| tumbling -> blackhole (engine ceiling) | {bh:,.0f} | {bh / cp:.2f} of the broker |",
        f"| **tumbling -> PostgreSQL** | **{pg:,.0f}** | **{pg / bh:.2f} of blackhole** (target 0.7) |",
        f"| passthrough -> blackhole | {pbh:,.0f} | {pbh / cp:.2f} of the broker |",
        f"| passthrough -> PostgreSQL (a row per event) | {ppg:,.0f} | {ppg / pbh:.2f} of blackhole |",
        "",
        f"![throughput]({png})",
        "",
        f"## Freshness ({r['freshness']['rate_per_s']:,.0f} events/s for {r['freshness']['seconds']:.0f} s)",
        "",
        "| from | to | p50 | p99 |",
        "|---|---|---|---|",
        f"| trip produced | its tumbling window's row counts it (mini-batch {r['freshness'].get('mini_batch_ms', 0)} ms) | "
        f"{r['freshness']['window_ms']['p50']} ms | {r['freshness']['window_ms']['p99']} ms |",
        f"| event produced | its passthrough row visible | {r['freshness']['event_ms']['p50']} ms | "
        f"{r['freshness']['event_ms']['p99']} ms |",
        "",
        *_producer_lines(r.get("producers")),
        *_recovery_lines(r.get("recovery")),
        "## Cost over the throughput and freshness runs",
        "",
        "| component | CPU seconds | peak resident memory |",
        "|---|---|---|",
        *[f"| {n} | {c['cpu_s']} | {c['peak_rss_mib']} MiB |" for n, c in r["cost"].items()],
        "",
    ]
    return "\n".join(lines)


def _producer_lines(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    rows = p["producers"]
    ts = rows["tripstream"]["events_per_s"]
    return [
        f"## Producer ({p['events']:,} synthetic events of {p['record_bytes']} B, one run)",
        "",
        "| producer | events/s | MB/s | ratio |",
        "|---|---|---|---|",
        f"| tripstream (confluent-kafka + orjson) | {ts:,.0f} | {rows['tripstream']['mb_per_s']:.1f} | 1 |",
        f"| kafka-python, the course's way | {rows['kafka-python']['events_per_s']:,.0f} | "
        f"{rows['kafka-python']['mb_per_s']:.1f} | tripstream {ts / rows['kafka-python']['events_per_s']:.1f}x faster |",
        f"| Kafka ProducerPerformance (Java) | {rows['java ProducerPerformance']['events_per_s']:,.0f} | "
        f"{rows['java ProducerPerformance']['mb_per_s']:.1f} | tripstream reaches "
        f"{ts / rows['java ProducerPerformance']['events_per_s']:.2f} |",
        "",
    ]


def _recovery_lines(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return []
    d, size = r["checkpoint_duration_ms"] or {}, r["checkpoint_size_bytes"] or {}
    return [
        f"## Recovery (TaskManager SIGKILL {r['killed_at_s']:.0f} s into a stream of {r['rate_per_s']:,} events/s, "
        f"checkpoints every {r['checkpoint_interval_s']:.0f} s)",
        "",
        "| from the kill to | seconds |",
        "|---|---|",
        f"| the JobManager noticing the lost TaskManager | {r['loss_noticed_s']} |",
        f"| the new TaskManager registered | {r['taskmanager_back_s']} |",
        f"| every task running again, restored from its last checkpoint | {r['running_again_s']} |",
        f"| its output caught up with the stream | {r['caught_up_s']} |",
        "",
        f"Checkpoints: {d.get('min')}-{d.get('max')} ms (mean {d.get('avg')} ms), "
        f"{size.get('min', 0) / 1000:.0f}-{size.get('max', 0) / 1000:.0f} KB. Verify after the run: {r['verify']}.",
        "",
    ]


if __name__ == "__main__":
    main()
