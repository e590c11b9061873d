"""The cluster profile's cost: its start, its idle memory, and the producer against it vs one broker.

Starts, in state dirs and ports of their own, the cluster profile (three brokers, ZooKeeper, two
JobManagers, two TaskManagers, PostgreSQL) and, beside it, a single broker. Reports:

- the cluster profile's start time (``up``, from nothing to every node registered) and its idle
  memory (the resident memory of every server process, summed, after ``--idle`` seconds);
- the path users take, ``tripstream produce FILE --speed max`` (``acks=all``, idempotent: the
  producer's defaults), into a fresh 4-partition topic of each, alternating within each round:
  replication 3 with ``min.insync.replicas=2`` on the cluster, replication 1 on the single broker.
  The ratio cluster / single broker is per round (machines here are noisy).

Writes ``bench/results/cluster-<time>.md`` and ``.json``.

    .venv/bin/python bench/cluster_bench.py [--rows 300000] [--rounds 3] [--idle 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tripstream.config import load_settings
from tripstream.kafka.topics import count
from tripstream.stack import Stack

from file_producer_bench import repeated_month

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
BASE = 1000  # the bench's ports: 10092..., below the ephemeral range, away from the dev stack's and the tests'

CLUSTER_ENV = {
    "TRIPSTREAM_PROFILE": "cluster",
    "TRIPSTREAM_STATE_DIR": str(ROOT / ".tripstream-bench-cluster"),
    "TRIPSTREAM_KAFKA_PORT": str(BASE + 9092), "TRIPSTREAM_KAFKA_CONTROLLER_PORT": str(BASE + 9093),
    "TRIPSTREAM_FLINK_PORT": str(BASE + 8081), "TRIPSTREAM_FLINK_STANDBY_PORT": str(BASE + 8082),
    "TRIPSTREAM_FLINK_RPC_PORT": str(BASE + 6123), "TRIPSTREAM_ZOOKEEPER_PORT": str(BASE + 2181),
    "TRIPSTREAM_POSTGRES_PORT": str(BASE + 5432), "TRIPSTREAM_SCHEMA_REGISTRY_PORT": str(BASE + 8085),
}
SINGLE_ENV = {
    "TRIPSTREAM_PROFILE": "single",
    "TRIPSTREAM_STATE_DIR": str(ROOT / ".tripstream-bench-single"),
    "TRIPSTREAM_KAFKA_PORT": str(BASE + 9192), "TRIPSTREAM_KAFKA_CONTROLLER_PORT": str(BASE + 9193),
}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPSTREAM_")}
    return {**env, **extra}


def resident_mb(pids: list[int]) -> float:
    """The resident memory of these processes, summed, in MB (VmRSS)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def produce(env: dict[str, str], path: Path, name: str) -> dict[str, Any]:
    topic = f"bench-cluster-{name}-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    result = subprocess.run([str(ROOT / ".venv" / "bin" / "tripstream"), "produce", str(path), "--topic", topic,
                             "--partitions", "4", "--speed", "max", "--quiet", "--json"],
                            capture_output=True, text=True, timeout=1800, env=env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"tripstream produce ({name}) failed: {result.stderr.strip().splitlines()[-1:]}")
    report = json.loads(result.stdout)
    held = count(load_settings(env=env).kafka, topic)
    if held != report["sent"]:
        raise RuntimeError(f"{name}: the topic holds {held} records, the producer sent {report['sent']}")
    return {"topic": topic, "seconds": round(seconds, 2), "sent": report["sent"],
            "rate": round(report["sent"] / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds idle before memory is read")
    args = parser.parse_args()

    cluster = Stack(load_settings(env=_env(CLUSTER_ENV)))
    single = Stack(load_settings(env=_env(SINGLE_ENV)))
    for stack in (cluster, single):
        stack.down(purge=True)
    results: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rows": args.rows}
    try:
        started = time.monotonic()
        timings = cluster.up("zookeeper,kafka,flink,postgres")
        results["cluster_start_s"] = round(time.monotonic() - started, 1)
        results["cluster_start_each_s"] = timings
        time.sleep(args.idle)  # idle on purpose: the memory of a cluster at rest  # noqa: TID251
        pids = {s.name: s.running_pids() for s in cluster.services()}
        results["idle_rss_mb"] = {name: resident_mb(p) for name, p in pids.items()}
        results["idle_rss_mb_total"] = round(sum(results["idle_rss_mb"].values()), 1)
        single.up("kafka")
        with tempfile.TemporaryDirectory() as tmp:
            path = repeated_month(args.rows, Path(tmp))
            rounds = []
            for i in range(args.rounds):
                order = [("single", SINGLE_ENV), ("cluster", CLUSTER_ENV)]
                if i % 2:
                    order.reverse()
                runs = {name: produce(_env(env), path, name) for name, env in order}
                runs["ratio"] = round(runs["cluster"]["rate"] / runs["single"]["rate"], 2)
                rounds.append(runs)
                print(f"round {i + 1}: single broker {runs['single']['rate']:,} rows/s, "
                      f"cluster {runs['cluster']['rate']:,} rows/s, cluster/single {runs['ratio']}", flush=True)
        results["rounds"] = rounds
        results["ratio_median"] = statistics.median(r["ratio"] for r in rounds)
    finally:
        for stack in (cluster, single):
            stack.down()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"cluster-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Cluster profile, {stamp} ({results['machine']})", "",
             f"`.venv/bin/python bench/cluster_bench.py --rows {args.rows} --rounds {args.rounds} --idle {args.idle:g}`", "",
             f"- start (zookeeper, 3 brokers, 2 JobManagers, 2 TaskManagers, PostgreSQL): {results['cluster_start_s']} s "
             f"(ready at, per component: {results['cluster_start_each_s']})",
             f"- idle resident memory: {results['idle_rss_mb_total']} MB ({results['idle_rss_mb']})", "",
             "| round | single broker (RF 1) rows/s | cluster (RF 3, min ISR 2) rows/s | cluster / single |",
             "|---|---|---|---|"]
    lines += [f"| {i + 1} | {r['single']['rate']:,} | {r['cluster']['rate']:,} | {r['ratio']} |"
              for i, r in enumerate(results["rounds"])]
    lines += ["", f"median ratio {results['ratio_median']}; `tripstream produce FILE --speed max` "
              f"(acks=all, idempotent), {results['rounds'][0]['single']['sent']:,} rows per run"]
    (RESULTS / f"cluster-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
