"""What deciding lateness per partition costs: the tumbling job, this checkout against an earlier one.

Both versions of the job read the same topic (synthetic trips, out of order: 40 s of jitter, 8 %
ten minutes late) on the running stack, bounded at its end, into Flink's blackhole sink (the
engine's ceiling) and into PostgreSQL. The earlier version (``--baseline``, a git ref; by default
the last commit that decided lateness with Flink's watermark and window operators) is checked out
into build/ and submitted with its own code; the runs alternate, baseline then current, so both
see the same machine. Rates are records over the source task's running time; the figures to
read are the ratios, current over baseline, within this run. Like `make bench`, it empties the
tumbling, late_trips and bad_records tables (before each PostgreSQL run and at the end).

    .venv/bin/python bench/lateness_cost.py [--events 1000000] [--rounds 2] [--baseline REF]
"""

from __future__ import annotations

import argparse
import json
import uuid
from datetime import datetime
from pathlib import Path
from statistics import median

import earlier
from tripstream.config import load_settings
from tripstream.events.producer import TripProducer, synthetic_items
from tripstream.events.synthetic import SyntheticStream
from tripstream.kafka.topics import ensure_topic
from tripstream.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "19951c2"  # the last commit with lateness rule 1 (CURRENT_WATERMARK before window operators)
# Run in a child Python whose tripstream is the version under test (PYTHONPATH puts it first).
_RUN = """
import json, sys
from tripstream.config import load_settings
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import submit
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get
topic, sink, parallelism = sys.argv[1], sys.argv[2], int(sys.argv[3])
stack = Stack(load_settings())
if sink == "jdbc":
    with stack.postgres.connect() as conn:
        conn.execute("TRUNCATE tumbling_zone_stats, late_trips, bad_records")
jid = submit(stack, JobOptions(job="tumbling", topic=topic, until="latest", sink=sink, parallelism=parallelism))
stack.flink.wait_job_state(jid, {"FINISHED"}, 1800)
source = rest_get(stack.flink.rest, f"/jobs/{jid}")["vertices"][0]
print(json.dumps({"seconds": source["duration"] / 1000}))
"""


def _run(where: Path, topic: str, sink: str, parallelism: int) -> float:
    return float(json.loads(earlier.run_python(where, _RUN, topic, sink, str(parallelism)))["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--baseline", default=BASELINE)
    args = parser.parse_args()
    stack = Stack(load_settings())
    topic = f"bench-lateness-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=4)
    stream = SyntheticStream(13, datetime(2021, 3, 1), rate=20.0, limit=args.events, jitter_s=40,
                             late_fraction=0.08, late_by_s=600)
    report = TripProducer(stack.settings.kafka, topic).send(synthetic_items(stream))
    assert report.ok, report
    versions = {"baseline": earlier.checkout(args.baseline), "current": ROOT}
    rates: dict[str, list[float]] = {}
    for n in range(args.rounds):
        for sink in ("blackhole", "jdbc"):
            for name, where in versions.items():
                rate = report.delivered / _run(where, topic, sink, args.parallelism)
                rates.setdefault(f"{name} {sink}", []).append(rate)
                print(f"round {n + 1}: {name:<8} tumbling -> {sink:<9} {rate:>10,.0f} events/s", flush=True)
    with stack.postgres.connect() as conn:  # leave no benchmark windows behind for verify to trip on
        conn.execute("TRUNCATE tumbling_zone_stats, late_trips, bad_records")
    m = {k: median(v) for k, v in rates.items()}
    print(f"\n{report.delivered:,} events, parallelism {args.parallelism}, medians of {args.rounds} rounds "
          f"(baseline {args.baseline})")
    for name in versions:
        print(f"  {name:<8} blackhole {m[f'{name} blackhole']:>10,.0f}/s   PostgreSQL {m[f'{name} jdbc']:>10,.0f}/s   "
              f"PostgreSQL/blackhole {m[f'{name} jdbc'] / m[f'{name} blackhole']:.2f}")
    print(f"  current/baseline: blackhole {m['current blackhole'] / m['baseline blackhole']:.2f}, "
          f"PostgreSQL {m['current jdbc'] / m['baseline jdbc']:.2f}")


if __name__ == "__main__":
    main()
