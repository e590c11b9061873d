"""What Avro costs and saves against JSON, end to end, measured in one run on the running stack.

Three figures per format, each Avro figure as a ratio to the JSON one of the same run (this
machine has 2 shared cores: absolute rates move between runs, ratios much less):

1. Bytes per event: every event of the bundled month serialized both ways (JSON by orjson; Avro
   in the Confluent wire format, 5-byte header included, with the id the registry gives
   ``trip_event.avsc``).
2. Producer events/s on the bundled month: the same events, loaded before timing, sent by
   ``TripProducer`` into a fresh 4-partition topic per format and round; rounds alternate the
   formats so drift hits both alike; the best round of each is reported.
3. The engine's ceiling: ``tumbling`` into Flink's blackhole sink, bounded at the topic's end,
   over the same synthetic events in each format (parallelism 2), rounds alternating the
   formats, the best of each reported; records over the time the source task ran, not job
   start-up. Decoding is where the formats differ: one Jackson parse
   vs a registry-resolved Avro read in ``PARSE_TRIP``.

Writes ``bench/results/formats-<time>.md`` (and ``.json``) and prints the table. Run with the
stack up (the registry too):

    .venv/bin/python bench/format_bench.py [--rounds 2] [--engine-events 300000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from tripstream.config import load_settings
from tripstream.events.producer import TripProducer, file_items, synthetic_items
from tripstream.events.readers import open_trip_file
from tripstream.events.serializers import ConfluentAvroSerializer, JsonSerializer, Serializer, avro_schema_text
from tripstream.events.synthetic import SyntheticStream
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import submit
from tripstream.kafka.topics import count, ensure_topic
from tripstream.stack import Stack
from tripstream.stack.flink import rest_get

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
MONTH = ROOT / "data" / "green_tripdata_2024-10.parquet"
FORMATS = ("json", "avro")


def _topic(kind: str, fmt: str) -> str:
    return f"bench-{kind}-{fmt}-{uuid.uuid4().hex[:8]}"


def _serializer(stack: Stack, fmt: str, topic: str) -> Serializer:
    """JSON, or Confluent Avro with the id the registry gives the bundled schema for ``topic``."""
    if fmt == "json":
        return JsonSerializer()
    schema_id = stack.registry.client().prepare_value_schema(topic, avro_schema_text())
    return ConfluentAvroSerializer(schema_id)


def bytes_per_event(stack: Stack, events: list[Any]) -> dict[str, float]:
    sizes = {}
    for fmt in FORMATS:
        serializer = _serializer(stack, fmt, _topic("size", fmt))
        sizes[fmt] = sum(len(serializer.serialize(e)) for _, e in events) / len(events)
    return sizes


def producer_rates(stack: Stack, events: list[Any], rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {fmt: [] for fmt in FORMATS}
    for _ in range(rounds):
        for fmt in FORMATS:
            topic = _topic("produce", fmt)
            ensure_topic(stack.settings.kafka, topic, partitions=4)
            producer = TripProducer(stack.settings.kafka, topic, fmt=fmt, serializer=_serializer(stack, fmt, topic))
            report = producer.send(events)
            assert report.ok and report.delivered == len(events), report
            rates[fmt].append(report.sent / report.seconds)
            print(f"  produce {fmt}: {rates[fmt][-1]:,.0f} events/s", flush=True)
    return rates


def engine_ceiling(stack: Stack, n: int, parallelism: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """The same synthetic events in a topic per format; tumbling -> blackhole over each, rounds
    alternating the formats."""
    topics = {}
    for fmt in FORMATS:
        topic = topics[fmt] = _topic("engine", fmt)
        ensure_topic(stack.settings.kafka, topic, partitions=4)
        stream = SyntheticStream(11, datetime(2021, 3, 1), rate=2.0, limit=n)
        report = TripProducer(stack.settings.kafka, topic, fmt=fmt,
                              serializer=_serializer(stack, fmt, topic)).send(synthetic_items(stream))
        assert report.ok and count(stack.settings.kafka, topic) == n, report
    out: dict[str, list[dict[str, Any]]] = {fmt: [] for fmt in FORMATS}
    for _ in range(rounds):
        for fmt in FORMATS:
            jid = submit(stack, JobOptions(job="tumbling", topic=topics[fmt], until="latest", sink="blackhole",
                                           parallelism=parallelism, format=fmt), timeout=600)
            stack.flink.wait_job_state(jid, {"FINISHED"}, 1800)
            detail = rest_get(stack.flink.rest, f"/jobs/{jid}")
            seconds = detail["vertices"][0]["duration"] / 1000
            out[fmt].append({"events": n, "source_seconds": round(seconds, 1), "events_per_s": n / seconds,
                             "job_seconds": round(detail["duration"] / 1000, 1)})
            print(f"  tumbling->blackhole {fmt}: {n / seconds:,.0f} events/s ({seconds:.1f} s)", flush=True)
    return out


def render(r: dict[str, Any]) -> str:
    size, prod = r["bytes_per_event"], r["producer_events_per_s"]
    eng = {f: [x["events_per_s"] for x in runs] for f, runs in r["engine"].items()}
    best = {f: max(v) for f, v in prod.items()}
    top = {f: max(v) for f, v in eng.items()}
    return "\n".join([
        f"# JSON vs Avro (Confluent wire format), {r['at']}",
        "",
        f"Command: `{r['command']}`  ",
        f"Machine: {r['machine']}",
        "",
        "| what | JSON (baseline) | Avro | Avro / JSON |",
        "|---|---|---|---|",
        f"| bytes per event, the bundled month ({r['month_events']:,} events) | {size['json']:.1f} | "
        f"{size['avro']:.1f} | **{size['avro'] / size['json']:.2f}** |",
        f"| producer events/s on the month, best of {r['rounds']} (all: json "
        f"{', '.join(f'{x:,.0f}' for x in prod['json'])}; avro {', '.join(f'{x:,.0f}' for x in prod['avro'])}) | "
        f"{best['json']:,.0f} | {best['avro']:,.0f} | **{best['avro'] / best['json']:.2f}** |",
        f"| engine ceiling: tumbling -> blackhole, {r['engine_events']:,} events, parallelism {r['parallelism']}, "
        f"best of {r['rounds']} (all: json {', '.join(f'{x:,.0f}' for x in eng['json'])}; "
        f"avro {', '.join(f'{x:,.0f}' for x in eng['avro'])}) | "
        f"{top['json']:,.0f} | {top['avro']:,.0f} | **{top['avro'] / top['json']:.2f}** |",
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engine-events", type=int, default=300_000)
    parser.add_argument("--parallelism", type=int, default=2)
    args = parser.parse_args()
    stack = Stack(load_settings())
    stack.registry.client().ping()
    command = "python bench/format_bench.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    events = list(file_items(open_trip_file(MONTH)))
    print(f"{len(events):,} events of the month; bytes per event...", flush=True)
    sizes = bytes_per_event(stack, events)
    print(f"  json {sizes['json']:.1f}, avro {sizes['avro']:.1f}", flush=True)
    rates = producer_rates(stack, events, args.rounds)
    print("engine ceiling...", flush=True)
    engine = engine_ceiling(stack, args.engine_events, args.parallelism, args.rounds)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    report = {"at": stamp, "command": command,
              "machine": f"{platform.node()}, {platform.machine()}, {len(os.sched_getaffinity(0))} cores",
              "month_events": len(events), "rounds": args.rounds, "engine_events": args.engine_events,
              "parallelism": args.parallelism, "bytes_per_event": sizes, "producer_events_per_s": rates,
              "engine": engine}
    RESULTS.mkdir(exist_ok=True)
    md = render(report)
    (RESULTS / f"formats-{stamp}.md").write_text(md)
    (RESULTS / f"formats-{stamp}.json").write_text(json.dumps(report, indent=2))
    print(md)


if __name__ == "__main__":
    main()
