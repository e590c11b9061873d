"""The engine's ceiling, split into start-up and steady state, with and without each optimisation.

A bounded tumbling job reads a filled topic into the blackhole sink (the engine alone) and into
PostgreSQL, at parallelism 2. For each run, from the client's clock and Flink's own vertex
timestamps (not its REST metrics, which are cached for seconds):

- start-up: submit -> the client returns (the PyFlink driver: a JVM and the planner, then the
  wait for the job to be running), submit -> the source task running, and submit -> finished;
- steady state: events over the source task's running time, on a topic large enough that its
  own start (the Kafka consumer joining) is a small part of it.

Variants alternate within each round on the same topic, so every ratio compares runs made minutes
apart on the same machine. The variants are JobOptions fields (``mini_batch_ms=0`` is the plan
without mini-batch) and, with ``--baseline-jar``, another build of the functions jar (java/udf at
an older commit, say), without mini-batch unless ``--baseline-mini-batch-ms``: the baseline every
other variant is compared with. With ``--baseline-ref`` the baseline is an earlier commit
altogether: its own SQL, its own functions jar and its own defaults, submitted by its own code
(``bench/earlier.py``); its "submit -> client returns" includes starting that child Python.

    .venv/bin/python bench/engine_bench.py [--events 1500000] [--rounds 3] [--sinks blackhole,jdbc]
        [--baseline-jar OLD/tripstream-flink-functions.jar --baseline-name "PARSE_TRIP per field"]
        [--baseline-ref 7d4c0fb --baseline-name "before issue 16"]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import earlier  # noqa: E402
from freshness_bench import SHORT_FLUSHES, add_variant_argument, parse_variant  # noqa: E402

from tripstream.config import load_settings  # noqa: E402
from tripstream.events.producer import TripProducer, synthetic_items  # noqa: E402
from tripstream.events.synthetic import SyntheticStream  # noqa: E402
from tripstream.jobs.options import JobOptions  # noqa: E402
from tripstream.jobs.submit import submit  # noqa: E402
from tripstream.kafka.topics import ensure_topic  # noqa: E402
from tripstream.stack import Stack  # noqa: E402
from tripstream.stack.flink import rest_get  # noqa: E402

START = datetime(2021, 3, 1)
VARIANTS: dict[str, dict[str, Any]] = {
    "mini-batch off": {"mini_batch_ms": 0},
    "mini-batch 100 ms (default)": {},
}
def run(stack: Stack, opts: JobOptions, n: int, where: Path | None = None) -> dict[str, Any]:
    """One bounded run; times from the client's clock and from Flink's own vertex timestamps.

    ``where``: submitted by the earlier checkout there, with its defaults (the options set here
    are only what every version has: job, topic, until, sink, parallelism).
    """
    t0 = time.time()
    if where is None:
        job_id = submit(stack, opts, timeout=600)
    else:
        job_id = earlier.submit_at(where, job=opts.job, topic=opts.topic, until=opts.until, sink=opts.sink,
                                   parallelism=opts.parallelism)
    submitted = time.time()
    stack.flink.wait_job_state(job_id, {"FINISHED"}, 1800)
    finished = time.time()
    detail = rest_get(stack.flink.rest, f"/jobs/{job_id}")
    source = detail["vertices"][0]
    return {"submit_client_s": round(submitted - t0, 2),
            "submit_to_source_running_s": round(source["start-time"] / 1000 - t0, 2),
            "submit_to_finished_s": round(finished - t0, 2),
            "source_events_per_s": round(n / (source["duration"] / 1000)),
            "flink_job_s": round(detail["duration"] / 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--sinks", default="blackhole,jdbc", help="blackhole (the engine alone) and/or jdbc")
    parser.add_argument("--baseline-jar", type=Path, help="another functions jar, run as the first variant")
    parser.add_argument("--baseline-name", help="the baseline's name in the report")
    parser.add_argument("--baseline-ref", help="an earlier commit (its SQL, functions jar and defaults), run first")
    parser.add_argument("--baseline-mini-batch-ms", type=int, default=0, help="the baseline's --mini-batch")
    parser.add_argument("--short-flushes", action="store_true", help=f"also run with {SHORT_FLUSHES}")
    add_variant_argument(parser)
    parser.add_argument("--no-mini-batch-off", action="store_true", help="skip the variant without mini-batch")
    args = parser.parse_args()
    args.baseline_name = args.baseline_name or (
        f"commit {args.baseline_ref}" if args.baseline_ref else "baseline jar, mini-batch off")
    settings = load_settings()
    stack = Stack(settings)
    chosen = {name: fields for name, fields in VARIANTS.items() if not (args.no_mini_batch_off and fields)}
    if args.short_flushes:
        chosen["short flushes"] = SHORT_FLUSHES
    chosen.update(parse_variant(text) for text in args.variant)
    stacks = {name: stack for name in chosen}
    if args.baseline_jar:
        stacks = {args.baseline_name: Stack(replace(settings, jars_dir=earlier.jars_with(settings.jars_dir, args.baseline_jar, ROOT / "build" / "bench-jars"))),
                  **stacks}
    variants = ({args.baseline_name: {"mini_batch_ms": args.baseline_mini_batch_ms}, **chosen}
                if args.baseline_jar else chosen)
    worktrees: dict[str, Path] = {}
    if args.baseline_ref:
        if args.baseline_jar:
            raise SystemExit("--baseline-ref and --baseline-jar: choose one baseline")
        print(f"checking out {args.baseline_ref} and building its functions jar...", flush=True)
        worktrees[args.baseline_name] = earlier.checkout(args.baseline_ref, own_functions=True)
        stacks = {args.baseline_name: stack, **stacks}
        variants = {args.baseline_name: {}, **chosen}
    topic = f"bench-engine-{uuid.uuid4().hex[:8]}"
    ensure_topic(stack.settings.kafka, topic, partitions=4)
    report = TripProducer(stack.settings.kafka, topic).send(
        synthetic_items(SyntheticStream(11, START, rate=2.0, limit=args.events)))
    assert report.ok and report.delivered == args.events, report
    sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
    results: dict[str, list[dict[str, Any]]] = {f"{sink}, {name}": [] for sink in sinks for name in variants}
    for r in range(args.rounds):
        for sink in sinks:
            for name, fields in variants.items():
                if sink == "jdbc":  # every run inserts its rows afresh, none finds them there
                    with stack.postgres.connect() as conn:
                        conn.execute("TRUNCATE tumbling_zone_stats, late_trips, bad_records")
                opts = JobOptions(job="tumbling", topic=topic, until="latest", sink=sink,
                                  parallelism=args.parallelism, **fields)
                res = run(stacks[name], opts, args.events, worktrees.get(name))
                results[f"{sink}, {name}"].append(res)
                print(f"round {r} {sink}, {name}: {json.dumps(res)}", flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = ROOT / "bench" / "results" / f"engine-{stamp}"
    out.with_suffix(".json").write_text(json.dumps({"events": args.events, "parallelism": args.parallelism,
                                                     "command": " ".join(sys.argv), "results": results}, indent=2))
    out.with_suffix(".md").write_text(render(results, args))
    print(render(results, args))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def render(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    """Medians over the rounds; each variant's ratio is against the first variant of its sink."""
    lines = [f"# Engine: tumbling, {args.events:,} events from a filled topic, parallelism {args.parallelism}",
             "", f"`.venv/bin/python bench/engine_bench.py {shlex.join(sys.argv[1:])}`; "
             "medians over the rounds; each ratio is against the first variant "
             "with the same sink, measured in the same run.", "",
             "| variant | steady events/s | / base | submit -> client returns (job running) "
             "| submit -> source task running | submit -> finished | / base |",
             "|---|---|---|---|---|---|---|"]
    med = {name: {k: _median([r[k] for r in runs])
                  for k in ("source_events_per_s", "submit_client_s", "submit_to_source_running_s",
                            "submit_to_finished_s")}
           for name, runs in results.items()}
    for name, m in med.items():
        base = next(n for n in med if n.split(",")[0] == name.split(",")[0])
        lines.append(f"| {name} | {m['source_events_per_s']:,.0f} | "
                     f"{m['source_events_per_s'] / med[base]['source_events_per_s']:.2f} | "
                     f"{m['submit_client_s']:.1f} s | {m['submit_to_source_running_s']:.1f} s | "
                     f"{m['submit_to_finished_s']:.1f} s | "
                     f"{m['submit_to_finished_s'] / med[base]['submit_to_finished_s']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
