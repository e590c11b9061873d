"""`tripstream verify JOB`: what streaming wrote against the batch truth, and the record accounting.

The verdict holds only when all of it holds:
- every closed window (or session, alert, row) in PostgreSQL equals the truth: none missing,
  none extra, none different; windows the job's watermark has not closed yet are reported open;
- the job's bad_records are exactly the records the rules reject, with the same reason;
- late_trips holds exactly the records the lateness rule makes late (derived from each
  partition's records in offset order), with the partition watermark each met;
- every record is accounted for once: counted + late + bad + pending + not applicable = read;
- the record-window pairs summed over the closed rows equal the truth's: none lost, none doubled.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from psycopg import sql

from tripstream.events.schema import FIELDS, wall_clock_ms
from tripstream.jobs.tables import read_zones
from tripstream.jobs.options import JobOptions
from tripstream.jobs.windows import LATENESS_RULE_TEXT
from tripstream.stack import Stack
from tripstream.verify.errors import VerifyError
from tripstream.verify.payloads import AvroPayloads, check, ms_to_datetime
from tripstream.verify.truth import compute, event_time, event_tuple, job_late

EXAMPLES = 5
_INF = float("inf")


@dataclass
class RowDiff:
    """Rows compared by key: closed truth rows against PostgreSQL's."""

    compared: int = 0
    equal: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    open: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.extra == 0 and self.different == 0


@dataclass
class Accounting:
    """What became of every record the job read."""

    records: int = 0
    counted: int = 0
    late: int = 0
    bad: int = 0
    pending: int = 0
    not_applicable: int = 0
    bad_expected: int = 0
    bad_problems: list[str] = field(default_factory=list)
    late_problems: list[str] = field(default_factory=list)
    pairs_expected: int | None = None  # record-window pairs in closed rows (window jobs)
    pairs_written: int | None = None

    @property
    def unaccounted(self) -> int:
        return self.records - (self.counted + self.late + self.bad + self.pending + self.not_applicable)

    @property
    def ok(self) -> bool:
        return (self.unaccounted == 0 and not self.bad_problems and not self.late_problems
                and self.pairs_expected == self.pairs_written)


@dataclass
class Verdict:
    job: str
    table: str
    flink_job: str | None
    state: str
    watermark: str
    source: str
    rows: RowDiff
    accounting: Accounting
    ok: bool = False
    caught_up: bool = True  # the job's watermark reached what the records it read imply
    lateness: str = ""  # which rule decided lateness
    unit: str = "windows"  # what one row of the job's table is
    not_applicable: str = ""  # why a good trip may not count for the job

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["accounting"]["unaccounted"] = self.accounting.unaccounted
        return data


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is None and b is None
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)
    return a == b


def _show(value: Any, is_time: bool) -> str:
    if value is None:
        return "null"
    if is_time:
        return ms_to_datetime(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _latest_run(stack: Stack, job: str) -> tuple[dict[str, Any], JobOptions]:
    from tripstream.jobs.submit import run_options, submissions

    runs = [r for r in submissions(stack, job) if r.get("offsets")]
    if not runs:
        raise VerifyError(f"job {job!r} has no submission recorded in {stack.settings.state_dir / 'jobs'}: "
                          f"submit it first (tripstream submit {job})")
    run = runs[-1]
    try:
        options = run_options(run)
    except (OSError, KeyError, ValueError) as exc:
        raise VerifyError(f"the options of job {job!r} are not recorded ({exc})") from None
    return run, JobOptions(**options)


def _flink_watermark(stack: Stack, jid: str) -> tuple[str, float]:
    """The job's state and the lowest input watermark of its non-source vertices (ms)."""
    from tripstream.jobs.submit import flink_jobs
    from tripstream.stack.flink import rest_get

    state = next((j["state"] for j in flink_jobs(stack) if j["jid"] == jid), "UNKNOWN")
    if state == "FINISHED":
        return state, _INF
    if state != "RUNNING":
        return state, math.nan
    detail = rest_get(stack.flink.rest, f"/jobs/{jid}")
    marks = []
    for vertex in detail.get("vertices", []):
        if vertex.get("name", "").startswith("Source"):
            continue
        values = rest_get(stack.flink.rest, f"/jobs/{jid}/vertices/{vertex['id']}/watermarks")
        marks += [int(m["value"]) for m in values if m.get("id", "").endswith("currentInputWatermark")]
    if not marks:
        return state, -_INF
    low = min(marks)
    return state, (-_INF if low <= -(2**62) else float(low))


def _read_records(stack: Stack, run: dict[str, Any], opts: JobOptions, file: Path | None
                  ) -> tuple[list[tuple[Any, ...]], str]:
    """(key, payload-or-event) of every record the job read; a file gives its events in order."""
    if file is not None:
        from tripstream.events.readers import open_trip_file

        events = open_trip_file(file).events()
        return [((opts.topic, -1, i), e) for i, e in enumerate(events)], f"file {file}"
    from tripstream.kafka.topics import end_offsets, read_ranges

    start = {int(p): o for p, o in run["offsets"]["start"].items()}
    end_given = run["offsets"].get("end")
    end = {int(p): o for p, o in end_given.items()} if end_given else end_offsets(stack.settings.kafka, opts.topic)
    ranges = {p: (start.get(p, 0), end.get(p, 0)) for p in sorted(set(start) | set(end))}
    records = [((opts.topic, m.partition(), m.offset()), m.value())
               for m in read_ranges(stack.settings.kafka, opts.topic, ranges)]
    span = ", ".join(f"p{p} {a}..{b}" for p, (a, b) in ranges.items())
    return records, f"topic {opts.topic} [{span}]"


def _to_ms(value: Any) -> Any:
    return wall_clock_ms(value) if isinstance(value, datetime) else value


def verify(stack: Stack, job: str, file: Path | None = None, now_ms: int | None = None) -> Verdict:
    """Compare ``job``'s table with the batch truth over the records its latest run read."""
    from tripstream.jobs.registry import resolve

    run, opts = _latest_run(stack, job)
    job_spec = resolve(job, opts, run.get("declaration"))
    spec = job_spec.result
    time_at = 3 + FIELDS.index(job_spec.time_field)
    state, watermark = _flink_watermark(stack, run["id"])
    records, source = _read_records(stack, run, opts, file)
    acc = Accounting(records=len(records))

    events: list[tuple[Any, ...]] = []
    bad_truth: dict[tuple[Any, ...], str] = {}
    classify = check
    if opts.format == "avro" and file is None:
        classify = AvroPayloads(stack.registry.client().schema_text_by_id).check
    for key, item in records:
        if file is not None:
            events.append(event_tuple(key, item))
            continue
        verdict = classify(item, opts.earliest_ms, opts.max_future_ms, now_ms)
        if verdict.reason is None:
            events.append((*key, *verdict.values))
        else:
            bad_truth[key] = verdict.reason
    acc.bad_expected = len(bad_truth)
    in_range = {e[:3] for e in events} | set(bad_truth)
    by_event_id = {e[3]: e[:3] for e in events}

    with stack.postgres.connect() as conn:
        bad_rows = conn.execute(
            "SELECT kafka_topic, kafka_partition, kafka_offset, reason FROM bad_records WHERE job = %s AND kafka_topic = %s",
            (job, opts.topic)).fetchall()
        late_rows = conn.execute(
            "SELECT kafka_topic, kafka_partition, kafka_offset, event_id, pickup_at, window_end, watermark_at "
            "FROM late_trips WHERE job = %s AND kafka_topic = %s", (job, opts.topic)).fetchall()
        table_rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, spec.columns)), sql.Identifier(spec.table))).fetchall()
        zones = read_zones(conn) if job_spec.needs_zones else []

    # Bad records: exactly the rejected ones, for the same reason.
    bad_pg = {tuple(r[:3]): r[3] for r in bad_rows if file is None and tuple(r[:3]) in in_range}
    for key, reason in bad_truth.items():
        if key not in bad_pg:
            acc.bad_problems.append(f"record {key[1]}:{key[2]} is bad ({reason}) but not in bad_records")
        elif bad_pg[key] != reason:
            acc.bad_problems.append(f"record {key[1]}:{key[2]}: bad_records says {bad_pg[key]!r}, truth {reason!r}")
    for key, reason in bad_pg.items():
        if key not in bad_truth:
            acc.bad_problems.append(f"record {key[1]}:{key[2]} is in bad_records ({reason}) but is a good trip")
    if file is not None and bad_rows:
        acc.bad_problems.append(f"{len(bad_rows)} bad_records rows for topic {opts.topic}, none expected from a file")
    acc.bad = len(bad_pg) if file is None else 0

    # Late records. From the topic, the rule gives the late set (truth.derive_late), and
    # late_trips must hold exactly those rows, each with the partition watermark it met. From a
    # file, which has no partitions, each late row must at least be plausible.
    events_by_key = {e[:3]: e for e in events}
    derived = job_late(job_spec, opts, events, zones) if file is None else None
    good_times = [t for t in (event_time(e, job_spec.time_field) for e in events) if t is not None]
    highest_possible = (max(good_times) - opts.watermark_ms) if good_times else -_INF
    late: list[tuple[Any, ...]] = []
    reported: set[tuple[Any, ...]] = set()
    for topic, partition, offset, event_id, pickup_at, window_end, watermark_at in late_rows:
        key = (topic, partition, offset) if file is None else by_event_id.get(event_id)
        if key is None or (file is None and key not in in_range):
            continue  # another run's record
        event = events_by_key.get(key)
        wm = wall_clock_ms(watermark_at)
        if event is None:
            acc.late_problems.append(f"late_trips has record {partition}:{offset}, which is not a good trip")
            continue
        reported.add(key)
        pickup = event[3 + FIELDS.index("pickup_at")]
        if event[3] != event_id or pickup != wall_clock_ms(pickup_at):
            acc.late_problems.append(f"late_trips row {partition}:{offset} does not match the record it names")
        if derived is not None:
            if key not in derived:
                acc.late_problems.append(f"record {partition}:{offset} is in late_trips (watermark {_show(wm, True)}), "
                                         f"but on time by the rule")
            elif derived[key] != wm:
                acc.late_problems.append(f"record {partition}:{offset}: late_trips says watermark {_show(wm, True)}, "
                                         f"the rule {_show(derived[key], True)}")
            else:
                late.append((*key, wm))
            continue
        first_end = job_spec.first_window_end(opts, event[time_at])
        if first_end - 1 + opts.allowed_lateness_ms > wm:
            acc.late_problems.append(f"record {partition}:{offset} reported late, but its first window "
                                     f"(ending {_show(first_end, True)}) was open at watermark {_show(wm, True)}")
        if wm > highest_possible:
            acc.late_problems.append(f"record {partition}:{offset}: watermark {_show(wm, True)} is ahead of "
                                     f"every trip read")
        late.append((*key, wm))
    if derived is not None:
        missing_late = sorted(k for k in derived if k not in reported)
        for key in missing_late:
            acc.late_problems.append(f"record {key[1]}:{key[2]} is late by the rule (watermark "
                                     f"{_show(derived[key], True)}) but not in late_trips")
        # The truth counts by the rule, whatever the table says.
        late = [(*key, wm) for key, wm in derived.items()]
    acc.late = len(reported)

    # The watermark the job reaches once it has read every record: each partition's highest
    # pickup less the delay, the lowest of those (an idle partition can only push it higher).
    per_partition: dict[int, int] = {}
    for e in events:
        at = event_time(e, job_spec.time_field)
        if at is not None:
            per_partition[e[1]] = max(per_partition.get(e[1], -(2**62)), at)
    reachable = float(min(per_partition.values()) - opts.watermark_ms) if per_partition else -_INF
    if math.isnan(watermark):
        watermark = reachable  # not running and not finished: as if it had read everything
    if job_spec.final_windows:
        # Surge writes a window once Flink's watermark has passed it: later ones are still open.
        caught_up = watermark >= reachable
        closed_at = watermark if watermark == _INF else min(watermark, reachable)
    else:
        # Every other job's rows are current as the records are processed (windows and sessions
        # are updated, never fired), so the comparison itself shows whether the job has caught
        # up; a window is final once every partition has passed it.
        caught_up = True
        closed_at = watermark if watermark == _INF else reachable

    truth = compute(job_spec, opts, events, late, closed_at, zones)
    acc.counted, acc.pending, acc.not_applicable = truth.counted_records, truth.pending_records, truth.not_applicable
    rows = _compare_rows(spec, truth, table_rows, closed_at)
    if job_spec.windowed and job_spec.count_column and not job_spec.final_windows:
        count_at = spec.columns.index(job_spec.count_column)
        acc.pairs_expected = truth.counted_in_rows
        end_at = spec.columns.index(spec.end)
        acc.pairs_written = sum(r[count_at] for r in table_rows if (wall_clock_ms(r[end_at]) - 1) <= closed_at)
    verdict = Verdict(job=job, table=spec.table, flink_job=run["id"], state=state,
                      watermark=("end of input" if watermark == _INF else "none yet" if watermark == -_INF
                                 else _show(int(watermark), True)),
                      source=source, rows=rows, accounting=acc,
                      unit=job_spec.unit, not_applicable=job_spec.not_applicable,
                      lateness=("none: the job has no windows" if not job_spec.windowed
                                else "as the job reported it (a file has no partitions to derive it from)"
                                if file is not None else LATENESS_RULE_TEXT))
    verdict.ok = rows.ok and acc.ok
    verdict.caught_up = caught_up
    return verdict


def _compare_rows(spec: Any, truth: Any, table_rows: list[tuple[Any, ...]], watermark: float) -> RowDiff:
    diff = RowDiff()
    n_key = len(spec.key)
    times = [c in spec.times for c in spec.columns]
    closed: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    open_keys: set[tuple[Any, ...]] = set()
    for row, end in zip(truth.rows, truth.ends):
        if end is not None and end - 1 > watermark:
            open_keys.add(tuple(row[:n_key]))
        else:
            closed[tuple(row[:n_key])] = row
    written = {}
    for row in table_rows:
        row = tuple(_to_ms(v) for v in row)
        written[row[:n_key]] = row
    diff.open = len(open_keys)

    def describe(row: tuple[Any, ...]) -> str:
        return ", ".join(f"{c}={_show(v, t)}" for c, v, t in zip(spec.columns, row, times))

    for key, row in closed.items():
        diff.compared += 1
        got = written.get(key)
        if got is None:
            diff.missing += 1
            if len(diff.examples) < EXAMPLES:
                diff.examples.append(f"missing: {describe(row)}")
        elif all(_same(a, b) for a, b in zip(row, got)):
            diff.equal += 1
        else:
            diff.different += 1
            if len(diff.examples) < EXAMPLES:
                changed = "; ".join(f"{c}: truth {_show(a, t)}, table {_show(b, t)}"
                                    for c, a, b, t in zip(spec.columns, row, got, times) if not _same(a, b))
                diff.examples.append(f"different at {describe(row[:n_key])}: {changed}")
    for key, row in written.items():
        if key not in closed and key not in open_keys:
            diff.extra += 1
            if len(diff.examples) < EXAMPLES:
                diff.examples.append(f"extra: {describe(row)}")
    return diff


def verify_until(stack: Stack, job: str, wait_s: float, file: Path | None = None) -> Verdict:
    """Verify, and while it fails or the job is still catching up (its watermark behind what the
    records read imply), retry for up to ``wait_s`` seconds: output may still be in flight."""
    deadline = time.monotonic() + wait_s
    while True:
        verdict = verify(stack, job, file)
        if (verdict.ok and verdict.caught_up) or time.monotonic() >= deadline:
            return verdict
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
