"""Recovery after a TaskManager is killed, and what checkpoints cost, on the running stack.

The tumbling job runs unbounded with the product's settings (exactly-once checkpoints every
10 s) while synthetic trips flow in at a steady rate. Mid-stream the TaskManager gets SIGKILL and
is started again at once (what a supervisor does). Measured from the kill:

- ``loss noticed``: the JobManager counts no TaskManager (its heartbeat RPCs failed);
- ``taskmanager back``: the new TaskManager registered (its JVM started: the longest step);
- ``running``: every task of the job is RUNNING again, restored from the last completed
  checkpoint. (The job's own state says RUNNING seconds earlier, while its tasks still wait for
  slots: that is not running.)
- ``caught up``: the newest window in PostgreSQL is again the newest one the watermark of the
  events produced so far can close (the output is as fresh as before the kill).

With ``--spare`` (the cluster profile: two TaskManagers) the job runs at parallelism 2, one task
on each TaskManager; the second one is killed and not replaced, and the job restarts on the free
slots of the other: no ``taskmanager back`` step, no JVM to wait for.

Then the stream ends, and `tripstream verify` must pass: the recovery lost and doubled nothing.
Checkpoint figures (end-to-end duration, checkpointed size) come from Flink's REST API.

Run with the stack up:  .venv/bin/python bench/recovery_bench.py [--rate 1000] [--seconds 60] [--spare]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tripstream.config import load_settings
from tripstream.events.producer import TripProducer, synthetic_items
from tripstream.events.schema import wall_clock_ms
from tripstream.events.synthetic import SyntheticStream
from tripstream.jobs.migrations import migrate
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import resolve
from tripstream.jobs.submit import stop, submit
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get
from tripstream.stack.process import wait_until
from tripstream.verify.compare import verify_until

START = datetime(2021, 3, 1, 8, 0)
RESULTS = Path(__file__).resolve().parent / "results"
EVENT_RATE = 2.0  # trips per second of event time (the synthetic default shape)


def _checkpoints(stack: Stack, jid: str) -> dict[str, Any]:
    return rest_get(stack.flink.rest, f"/jobs/{jid}/checkpoints")


def _newest_window_end_ms(stack: Stack) -> int:
    with stack.postgres.connect() as conn:
        value = conn.execute("SELECT max(window_end) FROM tumbling_zone_stats").fetchone()[0]
    return wall_clock_ms(value) if value else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second produced")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the stream flows")
    parser.add_argument("--kill-after", type=float, default=25.0, help="seconds into the stream")
    parser.add_argument("--spare", action="store_true",
                        help="kill the second of two TaskManagers (the cluster profile) and do not replace it")
    args = parser.parse_args()
    stack = Stack(load_settings())
    if args.spare and stack.settings.flink.taskmanagers < 2:
        parser.error("--spare needs two TaskManagers: tripstream up --profile cluster")
    figures = run(stack, args.rate, args.seconds, args.kill_after, args.spare)
    out = RESULTS / f"recovery-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"command": " ".join(sys.argv), **figures}, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    print(f"written to {out}")


def run(stack: Stack, rate: float, seconds: float, kill_after: float, spare: bool = False) -> dict[str, Any]:
    """Kill the TaskManager ``kill_after`` s into a ``seconds``-long stream at ``rate`` events/s
    (``spare``: the second of two, not replaced)."""
    args = argparse.Namespace(rate=rate, seconds=seconds, kill_after=kill_after)
    topic = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=4)
    with stack.postgres.connect() as conn:
        migrate(conn)  # a fresh stack has no result tables yet
        conn.execute("TRUNCATE tumbling_zone_stats, late_trips, bad_records")
    if spare:
        stack.up("flink")  # both TaskManagers (the second may be missing since an earlier run)
    opts = JobOptions(job="tumbling", topic=topic, parallelism=2 if spare else 1)
    jid = submit(stack, opts)
    stack.flink.wait_job_state(jid, {"RUNNING"}, 120)

    speed = args.rate / EVENT_RATE  # event seconds per wall second
    events = int(args.rate * args.seconds)
    producer = TripProducer(stack.settings.kafka, topic)
    result: dict[str, Any] = {}
    items = list(synthetic_items(SyntheticStream(7, START, rate=EVENT_RATE, limit=events)))
    last_event_ms = max(clock for clock, _ in items if clock is not None)
    started = time.monotonic()
    thread = threading.Thread(target=lambda: result.update(report=producer.send(iter(items), speed=speed)))
    thread.start()

    def produced_until_ms() -> int:  # event time the paced producer has reached (it stops at the last event)
        return min(wall_clock_ms(START + timedelta(seconds=(time.monotonic() - started) * speed)), last_event_ms)

    wait_until(lambda: time.monotonic() - started >= args.kill_after, args.kill_after + 5, "the kill moment")
    before = _checkpoints(stack, jid)
    count_before = int((stack.flink.overview() or {}).get("taskmanagers", 1))
    killed = time.monotonic()
    stack.flink.process("taskmanager-2" if spare else "taskmanager").kill()  # SIGKILL, wait until it is gone
    expected_end = produced_until_ms()  # windows the output had reached, give or take one
    if not spare:
        stack.up("flink")
    phases: dict[str, float] = {}  # seconds from the kill to each step of the recovery, in the order they happen

    def taskmanagers() -> int:
        return int((stack.flink.overview() or {}).get("taskmanagers", -1))

    def tasks_restored() -> bool:
        restored = (_checkpoints(stack, jid).get("latest") or {}).get("restored") is not None
        vertices = rest_get(stack.flink.rest, f"/jobs/{jid}").get("vertices", [])
        return restored and bool(vertices) and all(v.get("status") == "RUNNING" for v in vertices)

    steps = (("loss_noticed_s", lambda: 0 <= taskmanagers() < count_before, "the JobManager to notice the lost TaskManager"),
             *(() if spare else (("taskmanager_back_s", lambda: taskmanagers() >= count_before,
                                  "the new TaskManager to register"),)),
             ("running_again_s", tasks_restored, "every task running again from the checkpoint"))
    for name, condition, what in steps:
        wait_until(condition, 300, what, interval=0.05)
        phases[name] = round(time.monotonic() - killed, 1)

    def caught_up() -> bool:
        window = resolve("tumbling", opts).decl.window.size_ms
        closable = (produced_until_ms() - opts.watermark_ms) // window * window
        return _newest_window_end_ms(stack) >= min(closable, max(expected_end // window * window, closable - window))

    wait_until(caught_up, 300, "the output to catch up with the stream", interval=0.05)
    phases["caught_up_s"] = round(time.monotonic() - killed, 1)
    thread.join()
    report = result["report"]
    verdict = verify_until(stack, "tumbling", 180)
    summary = _checkpoints(stack, jid).get("summary", {})
    stop(stack, "tumbling")
    latest = (before.get("latest") or {}).get("completed") or {}
    figures = {
        "events": report.delivered, "rate_per_s": round(report.rate()),
        "killed_at_s": args.kill_after, "spare_taskmanager": spare, "parallelism": opts.parallelism, **phases,
        "checkpoint_interval_s": opts.checkpoint_interval_ms / 1000,
        "checkpoint_duration_ms": summary.get("end_to_end_duration"),
        "checkpoint_size_bytes": summary.get("checkpointed_size", summary.get("state_size")),
        "last_checkpoint_before_kill": {"id": latest.get("id"), "duration_ms": latest.get("end_to_end_duration"),
                                        "size_bytes": latest.get("checkpointed_size")},
        "verify": "PASS" if verdict.ok and verdict.caught_up else "FAIL",
        "machine": {"cores": os.cpu_count()},
    }
    return figures


if __name__ == "__main__":
    main()
