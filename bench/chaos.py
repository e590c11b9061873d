"""`make chaos`: the bundled month in file order, paced, with TaskManagers killed at random; then verify.

The month as stored is out of order (about 30 % of its trips are late against the 15 s watermark),
which is where a recovery that replays records differently would lose or double trips. Four jobs
(tumbling, sliding, session, passthrough) run unbounded with checkpoints every 5 s while the month
is produced at ``--speed`` times its event clock. At ``--kills`` random moments the TaskManager
gets SIGKILL and a new one is started (what a supervisor does); each kill prints a line with the
time until every job runs again from its last checkpoint. When the month has been produced, one
trip far ahead in event time goes to every partition so every window closes, and `verify` proves
each job. The last line is the verdict; the exit code is 1 on any difference.

It runs on a stack of its own (state in .tripstream-chaos, ports 2xxxx), so the demo stack's
tables are left alone; the stack is stopped at the end unless --keep.

    .venv/bin/python bench/chaos.py [--kills 5] [--speed 40000] [--seed N] [--parallelism 1]
                                    [--jobs tumbling,sliding,session,passthrough] [--checkpoint-interval 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from confluent_kafka import Producer

from tripstream.config import load_settings
from tripstream.events.producer import ProduceReport, TripProducer, file_items
from tripstream.events.readers import open_trip_file
from tripstream.jobs.migrations import migrate
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import stop, submit
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get
from tripstream.stack.process import wait_until
from tripstream.verify.compare import verify_until
from tripstream.verify.report import lines

ROOT = Path(__file__).resolve().parents[1]
MONTH = ROOT / "data" / "green_tripdata_2024-10.parquet"
JOBS = ("tumbling", "sliding", "session", "passthrough")
RESULT_TABLES = "trips, tumbling_zone_stats, sliding_zone_stats, pair_sessions, late_trips, bad_records"
CHAOS_ENV = {
    "TRIPSTREAM_STATE_DIR": str(ROOT / ".tripstream-chaos"),
    "TRIPSTREAM_KAFKA_PORT": "29092", "TRIPSTREAM_KAFKA_CONTROLLER_PORT": "29093",
    "TRIPSTREAM_FLINK_PORT": "28081", "TRIPSTREAM_FLINK_RPC_PORT": "26123", "TRIPSTREAM_POSTGRES_PORT": "25432",
    "TRIPSTREAM_FLINK_SLOTS": "8", "TRIPSTREAM_FLINK_TASKMANAGER_MEMORY": "2560m",
}


def _restored(stack: Stack, jid: str) -> bool:
    latest = rest_get(stack.flink.rest, f"/jobs/{jid}/checkpoints").get("latest") or {}
    return latest.get("restored") is not None and stack.flink.job_state(jid) == "RUNNING"


def _counts(stack: Stack, jid: str) -> dict[str, int]:
    return rest_get(stack.flink.rest, f"/jobs/{jid}/checkpoints").get("counts", {})


def _taskmanager_pid(stack: Stack) -> int:
    found: list[int] = []

    def alive() -> bool:
        pid = stack.flink.process("taskmanager").pid()
        found[:] = [pid] if pid is not None else []
        return bool(found)

    wait_until(alive, 60, "a TaskManager to kill")
    return found[0]


def run(stack: Stack, kills: int, speed: float, seed: int, parallelism: int, jobs: tuple[str, ...] = JOBS,
        checkpoint_ms: int = 5000) -> bool:
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=4)
    with stack.postgres.connect() as conn:
        migrate(conn)
        conn.execute(f"TRUNCATE {RESULT_TABLES}")

    def start(job: str) -> str:
        return submit(stack, JobOptions(job=job, topic=topic, parallelism=parallelism,
                                        checkpoint_interval_ms=checkpoint_ms), timeout=300)

    with ThreadPoolExecutor(len(jobs)) as pool:
        jids = dict(zip(jobs, pool.map(start, jobs)))
    source = open_trip_file(MONTH)
    items = list(file_items(source, order="file"))
    clocks = [c for c, _ in items if c is not None]
    seconds = (max(clocks) - min(clocks)) / 1000 / speed  # about how long the paced replay takes
    print(f"chaos: {len(items):,} records of {MONTH.name} in file order into {topic} (4 partitions) at "
          f"{speed:g}x, about {seconds:.0f} s; jobs {', '.join(jobs)} at parallelism {parallelism}; "
          f"{kills} TaskManager kills", flush=True)
    producer = TripProducer(stack.settings.kafka, topic)
    produced: dict[str, ProduceReport] = {}
    thread = threading.Thread(target=lambda: produced.update(report=producer.send(items, speed=speed)), daemon=True)
    started = time.monotonic()
    thread.start()

    rng = random.Random(seed)
    moments = sorted(rng.uniform(0.1, 0.9) * seconds for _ in range(kills))
    recoveries: list[float] = []
    for n, moment in enumerate(moments, 1):
        wait_until(lambda: time.monotonic() - started >= moment, moment + 600, f"kill {n}'s moment")
        before = {job: _counts(stack, jid) for job, jid in jids.items()}
        pid = _taskmanager_pid(stack)
        killed = time.monotonic()
        stack.flink.process("taskmanager").kill()
        stack.up("flink")
        for job, jid in jids.items():
            wait_until(lambda: _counts(stack, jid).get("restored", 0) > before[job].get("restored", 0)
                       and _restored(stack, jid), 300, f"{job} running again after kill {n}")
        recoveries.append(time.monotonic() - killed)
        # The next kill comes after a checkpoint of the new attempt, so each kill loses work.
        for job, jid in jids.items():
            done = _counts(stack, jid).get("completed", 0)
            wait_until(lambda: _counts(stack, jid).get("completed", 0) > done, 120, f"a checkpoint of {job}")
        print(f"kill {n}/{kills} at {killed - started:5.1f} s: TaskManager pid {pid} SIGKILL; every job running "
              f"again from its last checkpoint after {recoveries[-1]:.1f} s", flush=True)
    thread.join()
    report = produced.get("report")
    if report is None or not report.ok:
        print(f"chaos: the producer failed: {report}")
        return False
    closer = Producer(stack.settings.kafka.client_config(**{"enable.idempotence": True}))
    for p in range(4):
        closer.produce(topic, partition=p, value=(
            f'{{"event_id": "{topic}-close-{p}", "taxi_type": "green", "pickup_at": "2024-12-01 00:00:00", '
            f'"pu_location_id": 1, "total_amount": 1.0}}').encode())
    closer.flush(30)
    print(f"chaos: {report.delivered:,} records delivered in {time.monotonic() - started:.0f} s, then one trip "
          f"in December to each partition to close every window", flush=True)
    ok = True
    for job in jobs:
        verdict = verify_until(stack, job, 300)
        for line in lines(verdict):
            print(_plain(line))
        ok = ok and verdict.ok and verdict.caught_up
    for job in jobs:
        stop(stack, job)
    mean = sum(recoveries) / len(recoveries) if recoveries else 0.0
    print(f"chaos verdict: {'PASS' if ok else 'FAIL'}: {kills} TaskManager kills (running again after "
          f"{', '.join(f'{r:.1f}' for r in recoveries) or '-'} s; mean {mean:.1f} s); "
          + ("every job equals its truth, every record accounted for once" if ok else "see the differences above"))
    return ok


def _plain(markup: str) -> str:
    from rich.text import Text

    return Text.from_markup(markup).plain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5, help="TaskManager kills (default 5)")
    parser.add_argument("--speed", type=float, default=40000.0, help="times the event clock (default 40000)")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="where the kills fall")
    parser.add_argument("--parallelism", type=int, default=1, help="of every job (default 1)")
    parser.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated (default {','.join(JOBS)})")
    parser.add_argument("--checkpoint-interval", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--keep", action="store_true", help="leave the chaos stack running")
    args = parser.parse_args(argv)
    jobs = tuple(j.strip() for j in args.jobs.split(",") if j.strip())
    if args.kills < 0 or args.speed <= 0 or args.parallelism < 1 or args.checkpoint_interval <= 0:
        parser.error("--kills must be >= 0, --speed, --checkpoint-interval > 0 and --parallelism >= 1")
    if not jobs or not set(jobs) <= set(JOBS):
        parser.error(f"--jobs takes some of {', '.join(JOBS)}")
    stack = Stack(load_settings(env=CHAOS_ENV))
    stack.down(purge=True)
    stack.up()
    try:
        ok = run(stack, args.kills, args.speed, args.seed, args.parallelism, jobs, int(args.checkpoint_interval * 1000))
    finally:
        if not args.keep:
            stack.down()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

