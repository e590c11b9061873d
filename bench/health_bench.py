"""False alarms and detection times of `tripstream health`, on the running stack.

Why: an alert wired to `health` must stay quiet while a job keeps up and speak soon when it
does not. Both are measured the way cron would meet them: `tripstream health --job tumbling
--json` run as a command, with its default thresholds, back to back.

- **healthy**: the unbounded tumbling job reads a topic fed at a steady 10, 200 or 5,000 events/s
  in real time (event time runs with the wall clock, as in production); every run must say
  healthy.
- **failures**, each injected into a healthy job fed at 200 events/s while `health` runs back to
  back, 10 s into a run; the detection time runs from the fault to the end of the first run
  naming it:
  ``taskmanager-killed`` (SIGKILL, started again at once as a supervisor would),
  ``slower-than-producer`` (fed 5,000 events/s, the TaskManager gets a tenth of a CPU, as a
  throttled container would: the lag really grows), ``partition-held-back`` (one partition's events stop advancing in event time, a
  stuck upstream clock, while the others go on: the watermark stalls while newer records arrive),
  ``failing-checkpoint`` (the job's checkpoint directory turns into a file), ``postgres-stopped``.

Run with the stack up:  .venv/bin/python bench/health_bench.py [--runs 10] [--rates 10,200,5000]
[--faults all|name,...]. Writes bench/results/health-<time>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from tripstream.config import load_settings
from tripstream.events.producer import synthetic_items
from tripstream.events.schema import TripEvent, event_time_ms, format_epoch_seconds, wall_clock_ms
from tripstream.events.serializers import JsonSerializer
from tripstream.events.synthetic import SyntheticStream
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import active_job, describe_jobs, stop, submit
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.errors import WaitTimeout
from tripstream.stack.process import wait_until

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2024, 10, 1, 0, 0)
PARTITIONS = 4
FAULTS = ("taskmanager-killed", "slower-than-producer", "partition-held-back", "failing-checkpoint",
          "postgres-stopped")
# The check each fault must be named by (any of them).
EXPECTED = {"taskmanager-killed": {"state", "restarts"}, "slower-than-producer": {"consumer lag"},
            "partition-held-back": {"watermark"}, "failing-checkpoint": {"failed checkpoints"},
            "postgres-stopped": {"reachable"}}


# The feed of each fault's job, events/s: 200, but a throttled job must have more to fall behind on.
FEED_RATE = {"slower-than-producer": 5000}
CPU_SHARE = 0.1  # of its time the throttled TaskManager may run (--cpu-share)


class Feeder(threading.Thread):
    """Synthetic trips at a steady ``rate`` per second, stamped with a real-time event clock.

    Partitions are filled round-robin, so each gets a quarter of the stream; ``hold(p)`` freezes
    the event time of everything sent to partition ``p`` from then on (a stuck upstream clock).
    """

    def __init__(self, stack: Stack, topic: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.topic, self.rate = topic, rate
        self.producer = Producer(stack.settings.kafka.client_config(**{"linger.ms": 20}))
        self.events: Iterator[tuple[int | None, Any]] = synthetic_items(SyntheticStream(11, START, rate=50.0))
        self.stop_event = threading.Event()
        self.held: dict[int, int] = {}
        self.sent = 0
        self.origin_ms = wall_clock_ms(START)

    def hold(self, partition: int) -> None:
        self.held[partition] = self.clock_ms()

    def clock_ms(self) -> int:
        return self.origin_ms + int((time.monotonic() - self.started) * 1000)

    def _next_event(self, at_ms: int) -> TripEvent:
        while True:
            _, item = next(self.events)
            if isinstance(item, TripEvent):
                break
        shift = at_ms // 1000 * 1000 - event_time_ms(item.pickup_at)
        dropoff = (format_epoch_seconds((event_time_ms(item.dropoff_at) + shift) // 1000)
                   if item.dropoff_at else None)
        return item._replace(event_id=f"{self.topic}-{self.sent}", pickup_at=format_epoch_seconds(at_ms // 1000),
                             dropoff_at=dropoff)

    def run(self) -> None:
        serialize = JsonSerializer().serialize
        self.started = time.monotonic()
        while not self.stop_event.is_set():
            due = int((time.monotonic() - self.started) * self.rate)
            while self.sent < due:
                partition = self.sent % PARTITIONS
                at = self.held.get(partition, self.clock_ms())
                event = self._next_event(at)
                self.producer.produce(self.topic, value=serialize(event), partition=partition,
                                      timestamp=event_time_ms(event.pickup_at))
                self.sent += 1
                if self.sent % 500 == 0:
                    self.producer.poll(0)
            self.producer.poll(0)
            self.stop_event.wait(0.01)
        self.producer.flush(30)


@dataclass
class Run:
    """One `tripstream health` run: when it started and ended (s since the scenario began), its verdict."""

    start: float
    end: float
    code: int
    reasons: list[str] = field(default_factory=list)
    fresh: int | None = None

    def names(self, checks: set[str]) -> bool:
        return any(r.split(": ")[1] in checks for r in self.reasons if r.count(": ") >= 2)


def health_once(t0: float) -> Run:
    """`tripstream health --job tumbling --json` as a command, default thresholds."""
    start = time.monotonic() - t0
    result = subprocess.run([sys.executable, "-m", "tripstream.cli", "health", "--job", "tumbling", "--json"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    try:
        report = json.loads(result.stdout)
    except ValueError:
        report = {"reasons": [f"no JSON: {result.stderr.strip()[-300:]}"]}
    return Run(round(start, 1), round(time.monotonic() - t0, 1), result.returncode, report.get("reasons", []),
               report.get("fresh_samples"))


def _job_ready(stack: Stack) -> bool:
    row = next((r for r in describe_jobs(stack, metrics=True) if r["name"] == "tumbling"), {})
    return bool(row.get("state") == "RUNNING" and row.get("last_checkpoint") and row.get("source_offsets"))


@contextmanager
def fed_job(stack: Stack, rate: float, prefix: str) -> Iterator[Feeder]:
    """A fresh topic fed at ``rate`` events/s and the tumbling job reading it, with a checkpoint done."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=PARTITIONS)
    feeder = Feeder(stack, topic, rate)
    feeder.start()
    if active_job(stack, "tumbling"):
        stop(stack, "tumbling")
    submit(stack, JobOptions(job="tumbling", topic=topic))
    try:
        wait_until(lambda: _job_ready(stack), 180, "the tumbling job running, checkpointed, with source metrics")
        yield feeder
    finally:
        feeder.stop_event.set()
        feeder.join(60)
        if active_job(stack, "tumbling"):
            stop(stack, "tumbling")


def healthy(stack: Stack, rate: float, runs: int) -> dict[str, Any]:
    """``runs`` consecutive health runs on a job that keeps up with ``rate`` events/s."""
    with fed_job(stack, rate, f"health-ok-{int(rate)}") as feeder:
        t0 = time.monotonic()
        results = [health_once(t0) for _ in range(runs)]
        produced = feeder.sent / (time.monotonic() - feeder.started)
    return {"rate": rate, "produced_per_s": round(produced, 1), "runs": len(results),
            "unhealthy": sum(r.code != 0 for r in results),
            "reasons": [r.reasons for r in results if r.code != 0],
            "fresh_samples": [r.fresh for r in results], "run_s": [round(r.end - r.start, 1) for r in results]}


def _inject(stack: Stack, fault: str, feeder: Feeder) -> Callable[[], None]:
    """Cause ``fault``; return what undoes it."""
    if fault == "taskmanager-killed":
        stack.flink.process("taskmanager").kill()  # SIGKILL, then wait until it is gone
        stack.up("flink")  # what a supervisor does
        return lambda: None
    if fault == "slower-than-producer":
        # A CPU quota, the way a throttled container gets one: the TaskManager runs CPU_SHARE of
        # every 500 ms (SIGSTOP/SIGCONT), and falls behind a 5,000 events/s feed.
        pid = stack.flink.process("taskmanager").pid()
        done = threading.Event()

        def throttle() -> None:
            while not done.is_set():
                os.kill(pid, signal.SIGSTOP)
                done.wait(0.5 * (1 - CPU_SHARE))
                os.kill(pid, signal.SIGCONT)
                done.wait(0.5 * CPU_SHARE)

        thread = threading.Thread(target=throttle, daemon=True)
        thread.start()

        def undo() -> None:
            done.set()
            thread.join(10)
            os.kill(pid, signal.SIGCONT)
        return undo
    if fault == "partition-held-back":
        feeder.hold(0)
        return lambda: None
    if fault == "failing-checkpoint":
        job = active_job(stack, "tumbling")
        job_dir = stack.flink.checkpoints_dir / job["jid"]
        kept = job_dir.with_name(job_dir.name + ".kept")
        job_dir.rename(kept)
        job_dir.touch()

        def restore() -> None:
            job_dir.unlink()
            kept.rename(job_dir)
        return restore
    if fault == "postgres-stopped":
        stack.down("postgres")
        return lambda: stack.up("postgres")
    raise ValueError(fault)


def detect(stack: Stack, fault: str, timeout: float = 240.0) -> dict[str, Any]:
    """Inject ``fault`` into a healthy job while health runs back to back; time until it is named."""
    with fed_job(stack, FEED_RATE.get(fault, 200), f"health-{fault}") as feeder:
        t0 = time.monotonic()
        runs: list[Run] = []
        stop_runs = threading.Event()

        def loop() -> None:
            while not stop_runs.is_set():
                runs.append(health_once(t0))

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        wait_until(lambda: len(runs) >= 1, 120, "a first health run before the fault")
        # Mid-run: the run under way when the fault strikes has half its samples from before it.
        wait_until(lambda: time.monotonic() - t0 >= runs[0].end + 10, 30, "the fault's moment, 10 s into a run")
        injected = time.monotonic() - t0
        undo = _inject(stack, fault, feeder)
        try:
            wait_until(lambda: any(r.end > injected and r.names(EXPECTED[fault]) for r in runs), timeout,
                       f"health naming {fault}")
        except WaitTimeout:
            pass  # reported as not detected, with every run's reasons
        finally:
            stop_runs.set()
            undo()
            thread.join(300)
        first = next((r for r in runs if r.end > injected and r.names(EXPECTED[fault])), None)
        return {"fault": fault, "feed_per_s": feeder.rate,
                "cpu_share": CPU_SHARE if fault == "slower-than-producer" else None, "injected_at_s": round(injected, 1),
                "detected_after_s": None if first is None else round(first.end - injected, 1),
                "before_fault": [{"code": r.code, "reasons": r.reasons} for r in runs if r.end <= injected],
                "reasons": [] if first is None else first.reasons,
                "runs": [{"start": r.start, "end": r.end, "code": r.code, "reasons": r.reasons} for r in runs]}


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# `tripstream health`: false alarms and detection ({result['at']})", "",
             f"Machine: {result['cores']} cores (shared). Default thresholds: 5 fresh samples 5 s apart "
             "(a 20 s window), lag limits 10,000 records or 10 s of event time.", "",
             "| healthy job at | produced | health runs | unhealthy verdicts |", "|---|---|---|---|"]
    for h in result["healthy"]:
        lines.append(f"| {h['rate']:,.0f} events/s | {h['produced_per_s']:,.0f}/s | {h['runs']} | {h['unhealthy']} |")
    lines += ["", "| fault | detected after | named by |", "|---|---|---|"]
    for d in result["faults"]:
        after = "not detected" if d["detected_after_s"] is None else f"{d['detected_after_s']} s"
        lines.append(f"| {d['fault']} (fed {d['feed_per_s']:,.0f}/s) | {after} | {'; '.join(d['reasons'])[:300]} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="health runs per healthy rate")
    parser.add_argument("--rates", default="10,200,5000", help="healthy rates, events/s ('' for none)")
    parser.add_argument("--faults", default="all", help="all, none, or names: " + ",".join(FAULTS))
    parser.add_argument("--cpu-share", type=float, default=CPU_SHARE,
                        help="slower-than-producer: the share of time the TaskManager may run")
    args = parser.parse_args()
    globals()["CPU_SHARE"] = args.cpu_share
    stack = Stack(load_settings())
    faults = FAULTS if args.faults == "all" else tuple(f for f in args.faults.split(",") if f and f != "none")
    result: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cores": os.cpu_count(),
                              "healthy": [], "faults": []}
    for rate in [float(r) for r in args.rates.split(",") if r]:
        result["healthy"].append(healthy(stack, rate, args.runs))
        print(json.dumps(result["healthy"][-1]), flush=True)
    for fault in faults:
        result["faults"].append(detect(stack, fault))
        print(json.dumps(result["faults"][-1]), flush=True)
    out = ROOT / "bench" / "results" / f"health-{time.strftime('%Y%m%dT%H%M%S')}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
