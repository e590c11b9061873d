"""Where a job's CPU goes: Flink's own flame graphs, summed into the hottest frames per vertex.

Submits a bounded job over a filled topic (or profiles a running job with ``--job-id``), asks the
REST API for each vertex's on-CPU flame graph (``rest.flamegraph.enabled``, set by ``tripstream
up``) while it runs, and prints per vertex the frames with the most samples, by self time (the
frame on top of the stack) and by total time (the frame anywhere in it).

    .venv/bin/python bench/flamegraph.py --topic TOPIC [--job tumbling] [--parallelism 2] [--top 15]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tripstream.config import load_settings  # noqa: E402
from tripstream.jobs.options import JobOptions  # noqa: E402
from tripstream.jobs.submit import submit  # noqa: E402
from tripstream.stack import Stack  # noqa: E402
from tripstream.stack.flink import rest_get  # noqa: E402


def _walk(node: dict[str, Any], path: tuple[str, ...], self_time: Counter[str], total: Counter[str]) -> None:
    name = node.get("name", "?")
    value = int(node.get("value", 0))
    children = node.get("children") or []
    here = (*path, name)
    child_sum = sum(int(c.get("value", 0)) for c in children)
    if value > child_sum:  # samples that ended in this frame
        self_time[name] += value - child_sum
        for frame in set(here[1:]):  # the root is the vertex itself
            total[frame] += value - child_sum
    for child in children:
        _walk(child, here, self_time, total)


def vertex_profile(stack: Stack, job_id: str, vertex_id: str, timeout: float) -> dict[str, Any] | None:
    """The vertex's on-CPU flame graph once Flink has sampled it (the first request starts it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        graph = rest_get(stack.flink.rest, f"/jobs/{job_id}/vertices/{vertex_id}/flamegraph?type=on_cpu")
        if graph.get("data", {}).get("children"):
            return graph["data"]
        time.sleep(0.5)  # Flink samples for a few seconds and answers empty until then
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic")
    parser.add_argument("--job", default="tumbling")
    parser.add_argument("--job-id", help="profile this running Flink job instead of submitting one")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--sink", default="blackhole")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, help="also write the raw flame graphs (JSON) here")
    args = parser.parse_args()
    stack = Stack(load_settings())
    job_id = args.job_id
    if job_id is None:
        if not args.topic:
            parser.error("give --topic (a filled topic to read) or --job-id")
        job_id = submit(stack, JobOptions(job=args.job, topic=args.topic, until="latest", sink=args.sink,
                                          parallelism=args.parallelism))
        stack.flink.wait_job_state(job_id, {"RUNNING"}, 120)
    raw = {}
    for vertex in rest_get(stack.flink.rest, f"/jobs/{job_id}")["vertices"]:
        graph = vertex_profile(stack, job_id, vertex["id"], 60)
        print(f"\n== {vertex['name'][:160]}")
        if graph is None:
            print("   no samples (the vertex finished or was idle)")
            continue
        raw[vertex["name"]] = graph
        self_time: Counter[str] = Counter()
        total: Counter[str] = Counter()
        _walk(graph, (), self_time, total)
        samples = sum(self_time.values()) or 1
        print(f"   {samples} samples; self time:")
        for frame, n in self_time.most_common(args.top):
            print(f"   {100 * n / samples:5.1f}%  {frame}")
        print("   total time (the frame anywhere on the stack), tripstream and Flink operator frames:")
        ours = [(f, n) for f, n in total.most_common() if "tripstream" in f or "operators" in f or "codegen" in f.lower()]
        for frame, n in ours[:args.top]:
            print(f"   {100 * n / samples:5.1f}%  {frame}")
    if args.out:
        args.out.write_text(json.dumps(raw))


if __name__ == "__main__":
    main()
