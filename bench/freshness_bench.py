"""Freshness alone, at several produce rates, with mini-batch off and at its default, in one run.

Each run is `pipeline_bench.freshness`: the tumbling and passthrough jobs unbounded over a new
topic fed in event-time order at the rate; p50/p99 from a trip being produced to its window's
row counting it, and to its passthrough row. Rates and variants alternate, so the ratios compare
runs made minutes apart.

    .venv/bin/python bench/freshness_bench.py [--rates 2000,20000] [--seconds 40] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_bench import freshness  # noqa: E402

from tripstream.config import load_settings  # noqa: E402
from tripstream.jobs.options import JobOptions  # noqa: E402
from tripstream.stack import Stack  # noqa: E402


# Every place that holds rows for company, held for less.
SHORT_FLUSHES: dict[str, int] = {"buffer_timeout_ms": 10, "watermark_interval_ms": 50, "sink_flush_ms": 50}
# The same as `tripstream submit` flags.
SHORT_FLUSHES_FLAGS = " ".join(f"--{k.removesuffix('_ms').replace('_', '-')} {v}ms" for k, v in SHORT_FLUSHES.items())


def parse_variant(text: str) -> tuple[str, dict[str, int]]:
    """``NAME:FIELD=N,FIELD=N`` (JobOptions fields in ms, as ``--variant`` takes them) -> (name, fields)."""
    name, _, given = text.partition(":")
    try:
        return name, {k.strip(): int(v) for k, v in (f.split("=", 1) for f in given.split(",") if f.strip())}
    except ValueError:
        raise SystemExit(f"--variant {text!r}: expected NAME:FIELD=MS,... such as 'old:sink_flush_ms=250'") from None


def add_variant_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:FIELD=MS,...",
                        help="also run with these JobOptions fields, e.g. 'old flushes:sink_flush_ms=250'")


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="2000,20000")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--short-flushes", action="store_true", help=f"also run with {SHORT_FLUSHES}")
    parser.add_argument("--no-mini-batch-off", action="store_true", help="skip the variant without mini-batch")
    parser.add_argument("--jobs", default="tumbling,passthrough", help="tumbling, passthrough or both")
    parser.add_argument("--parallelism", type=int, default=1)
    add_variant_argument(parser)
    args = parser.parse_args()
    stack = Stack(load_settings())
    defaults = JobOptions(job="tumbling")
    variants: dict[str, dict[str, Any]] = {
        **({} if args.no_mini_batch_off else {"mini-batch off": {"mini_batch_ms": 0}}),
        "defaults": {},
        **({"short flushes": SHORT_FLUSHES} if args.short_flushes else {}),
        **dict(parse_variant(text) for text in args.variant),
    }
    jobs = tuple(j.strip() for j in args.jobs.split(",") if j.strip())
    runs: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for rate in (float(x) for x in args.rates.split(",")):
            for name, options in variants.items():
                res = freshness(stack, rate, args.seconds, jobs=jobs, parallelism=args.parallelism, **options)
                res["variant"] = name
                runs.append(res)
                print(f"round {r}: {json.dumps(res)}", flush=True)
    lines = [f"# Freshness, {args.seconds:.0f} s per run", "",
             f"`.venv/bin/python bench/freshness_bench.py --rates {args.rates} --seconds {args.seconds:.0f} "
             f"--rounds {args.rounds}{' --short-flushes' if args.short_flushes else ''}"
             f"{' --no-mini-batch-off' if args.no_mini_batch_off else ''} --jobs {args.jobs} --parallelism {args.parallelism}"
             f"{''.join(f' --variant {shlex.quote(v)}' for v in args.variant)}`", "",
             f"Defaults: mini-batch {defaults.mini_batch_ms} ms, buffer timeout {defaults.buffer_timeout_ms} ms, "
             f"watermark interval {defaults.watermark_interval_ms} ms, sink flush {defaults.sink_flush_ms} ms. "
             f"Short flushes: {SHORT_FLUSHES}.", "",
             "| rate | variant | trip -> window row, p50 | p99 | windows | trip -> passthrough row, p50 | p99 |",
             "|---|---|---|---|---|---|---|"]
    for res in runs:
        w, e = res["window_ms"], res["event_ms"]
        lines.append(f"| {res['rate_per_s']:,.0f}/s | {res['variant']} | {_ms(w['p50'])} | {_ms(w['p99'])} | "
                     f"{w['windows']} | {_ms(e['p50'])} | {_ms(e['p99'])} |")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = ROOT / "bench" / "results" / f"freshness-{stamp}"
    out.with_suffix(".json").write_text(json.dumps({"command": " ".join(sys.argv), "runs": runs}, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
