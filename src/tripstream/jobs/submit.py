"""Submit, list and stop tripstream's jobs on the Flink cluster.

A job's spec (its options and the connections, the JDBC password among them) is handed to
`flink run` in a file private to the account the client runs as, and deleted as soon as the
client has returned: the job graph holds what it needs by then. What `verify` and `health` need
later (the options, never the connections) goes into the job's history line.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tripstream.config import sensitive_values
from tripstream.errors import TripstreamError
from tripstream.jobs.declaration import Declaration
from tripstream.jobs.migrations import migrate
from tripstream.jobs.options import JobOptions
from tripstream.jobs.registry import DeclaredJob, resolve
from tripstream.jobs.tables import check_owner, ensure_table, load_zones
from tripstream.jobs.windows import LATENESS_RULE
from tripstream.stack import Stack
from tripstream.stack.errors import SubmitError
from tripstream.stack.flink import rest_get
from tripstream.stack.process import give_to

ACTIVE = {"CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "RECONCILING", "CANCELLING", "FAILING"}


class JobError(TripstreamError):
    """A job cannot be submitted, found or stopped."""


def flink_jobs(stack: Stack) -> list[dict[str, Any]]:
    """Every job the cluster knows, newest first."""
    try:
        jobs = rest_get(stack.flink.rest, "/jobs/overview").get("jobs", [])
    except (OSError, ValueError, urllib.error.URLError):
        raise JobError(f"Flink's REST API at {stack.flink.rest_url} does not answer: tripstream up") from None
    return sorted(jobs, key=lambda j: j.get("start-time", 0), reverse=True)


def active_job(stack: Stack, name: str) -> dict[str, Any] | None:
    pipeline = f"tripstream-{name}"
    return next((j for j in flink_jobs(stack) if j["name"] == pipeline and j["state"] in ACTIVE), None)


def _history(stack: Stack, name: str) -> Path:
    return stack.settings.state_dir / "jobs" / f"{name}.history"


def restore_point(stack: Stack, name: str) -> Path:
    """The newest savepoint or retained checkpoint of the job called ``name``.

    Savepoints live in ``savepoints/<name>/``; checkpoints in ``checkpoints/<flink job id>/chk-N``
    for the Flink job ids this job had (kept in ``<state>/jobs/<name>.history``).
    """
    candidates = list((stack.flink.savepoints_dir / name).glob("savepoint-*/_metadata"))
    for jid in (entry["id"] for entry in submissions(stack, name)):
        candidates += (stack.flink.checkpoints_dir / jid).glob("chk-*/_metadata")
    if not candidates:
        raise JobError(f"no savepoint or retained checkpoint of {name!r} to resume from "
                       f"(looked in {stack.flink.savepoints_dir / name} and {stack.flink.checkpoints_dir})")
    return max(candidates, key=lambda p: p.stat().st_mtime).parent


def submissions(stack: Stack, name: str) -> list[dict[str, Any]]:
    """Every submission of the job called ``name`` (oldest first), as written by :func:`submit`."""
    try:
        lines = _history(stack, name).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def submitted_jobs(stack: Stack) -> list[str]:
    """Every job submitted here (built-in or declared), built-ins first."""
    from tripstream.jobs.registry import ordered

    folder = stack.settings.state_dir / "jobs"
    names = [p.name.removesuffix(".history") for p in folder.glob("*.history")] if folder.is_dir() else []
    return ordered([n for n in names if submissions(stack, n)])


def latest_declaration(stack: Stack, name: str) -> Declaration | None:
    """The declaration a declared job called ``name`` last ran with here (None: not one)."""
    runs = [r for r in submissions(stack, name) if r.get("declaration")]
    return Declaration.from_dict(runs[-1]["declaration"]) if runs else None


def _offsets_seen(stack: Stack, opts: JobOptions, restored: bool) -> dict[str, Any]:
    """The records this run will read: start offsets per partition, and the end when bounded.

    A restored run goes on from its checkpoint, so what the job has seen still starts where the
    run it was restored from started. ``tripstream verify`` reads the same range back.
    """
    from tripstream.kafka.topics import end_offsets, start_offsets

    start: dict[str, int] | None = None
    if restored:
        earlier = [s for s in submissions(stack, opts.job) if s.get("topic") == opts.topic and s.get("offsets")]
        if earlier:
            start = earlier[-1]["offsets"]["start"]
    if start is None:
        start = {str(p): o for p, o in start_offsets(stack.settings.kafka, opts.topic, opts.startup,
                                                      f"tripstream-{opts.job}").items()}
    end = {str(p): o for p, o in end_offsets(stack.settings.kafka, opts.topic).items()} if opts.until else None
    return {"start": start, "end": end}


def _taken_by(stack: Stack, name: str, restore_from: Path) -> dict[str, Any] | None:
    """The submission whose Flink job wrote the savepoint or checkpoint, when it was made here.

    Checkpoints live in ``checkpoints/<job id>/chk-N``; savepoints are named
    ``savepoint-<first 6 hex digits of the job id>-<random>``.
    """
    path = Path(restore_from).resolve()
    match = re.fullmatch(r"savepoint-([0-9a-f]{6})-[0-9a-f]+", path.name)
    runs = submissions(stack, name)
    if match:
        return next((r for r in reversed(runs) if r["id"].startswith(match.group(1))), None)
    return next((r for r in reversed(runs) if r["id"] == path.parent.name), None)


def check_restorable(stack: Stack, name: str, restore_from: Path) -> None:
    """Refuse a restore point taken under another lateness rule: its state would count differently.

    A job's state holds what decided lateness (the partition watermarks) and the windows built on
    it; a job of an older tripstream decided lateness by Flink's watermark, so its state cannot be
    carried on without miscounting. Submissions record the rule they ran under.
    """
    if not (Path(restore_from) / "_metadata").exists():
        raise JobError(f"{restore_from} is not a savepoint or checkpoint directory (no _metadata in it)")
    taken = _taken_by(stack, name, restore_from)
    rule = taken.get("lateness_rule", 1) if taken is not None else LATENESS_RULE
    if rule != LATENESS_RULE:
        raise JobError(f"{restore_from} was taken by an older tripstream that decided lateness by Flink's "
                       f"watermark (rule {rule}; this one decides it per partition, rule {LATENESS_RULE}), so its "
                       f"state cannot be carried on without miscounting: replay from earliest instead "
                       f"(tripstream submit {name} --startup earliest)")


def sniff_format(stack: Stack, topic: str, records: int = 20) -> str | None:
    """What the topic's first records look like: ``avro`` (Confluent wire format: magic byte 0),
    ``json`` (an object), or None (empty topic, or neither shape in the majority)."""
    from tripstream.kafka.topics import end_offsets, read_ranges, start_offsets

    start = start_offsets(stack.settings.kafka, topic, "earliest", "tripstream-sniff")
    end = end_offsets(stack.settings.kafka, topic)
    per_partition = max(1, records // max(1, len(end)))
    ranges = {p: (start.get(p, 0), min(end.get(p, 0), start.get(p, 0) + per_partition)) for p in end}
    votes = {"avro": 0, "json": 0, None: 0}
    for message in read_ranges(stack.settings.kafka, topic, ranges):
        value = message.value() or b""
        shape = "avro" if value[:1] == b"\x00" and len(value) >= 5 else \
            "json" if value.lstrip()[:1] == b"{" else None
        votes[shape] += 1
    best = max(votes, key=lambda k: votes[k])
    return best if votes[best] * 2 > sum(votes.values()) else None


def registry_connection(stack: Stack) -> dict[str, str]:
    """The schema registry settings an Avro job's functions use: url, basic auth, CA file, and the
    client certificate and key for mutual TLS (PEM paths, read on the TaskManagers)."""
    reg = stack.settings.schema_registry
    return {"url": reg.base_url, "username": reg.username, "password": reg.password, "ca_file": reg.ca_file,
            "client_cert": reg.client_cert, "client_key": reg.client_key}


@dataclass(frozen=True)
class _Prepared:
    """A job checked and its tables ready: the spec `flink run` reads, and its history line."""

    opts: JobOptions
    spec: dict[str, Any]
    record: dict[str, Any]
    secrets: list[str]


def _prepare(stack: Stack, opts: JobOptions, restore_from: Path | None, declaration: Declaration | None,
             notes: list[str] | None) -> _Prepared:
    """Everything before `flink run`: checks, tables, the format, the spec and the history line."""
    from tripstream.kafka.topics import topic_partitions

    job = resolve(opts.job, opts, declaration.as_dict() if declaration is not None else None)
    job.check(opts)
    if restore_from is not None:
        check_restorable(stack, opts.job, restore_from)
    if isinstance(job, DeclaredJob):  # another job's table: refused before Kafka or Flink is asked
        with stack.postgres.connect() as conn:
            migrate(conn)
            check_owner(conn, job.decl)
    running = active_job(stack, opts.job)
    if running:
        raise JobError(f"job {opts.job!r} is already running (Flink job {running['jid']}); "
                       f"stop it first: tripstream jobs stop {opts.job}")
    if topic_partitions(stack.settings.kafka, opts.topic) is None:
        raise JobError(f"topic {opts.topic!r} does not exist: produce events first (tripstream produce)")
    functions_jar = stack.settings.jars_dir / "functions" / "tripstream-flink-functions.jar"
    if not functions_jar.is_file():
        raise JobError(f"{functions_jar} is missing: run make bootstrap (it builds java/udf)")
    kafka = stack.settings.kafka
    protocol = str(kafka.client.get("security.protocol", "PLAINTEXT")).upper()
    if protocol != "PLAINTEXT" and not kafka.jobs_client:
        raise JobError(f"kafka.client sets security.protocol={protocol} for the Python clients, but kafka.jobs_client "
                       "is empty: Flink's Java Kafka client needs its own settings (sasl.jaas.config, "
                       "ssl.truststore.location; [kafka.jobs_client] or TRIPSTREAM_KAFKA_JOBS_CLIENT_PROPERTIES)")
    with stack.postgres.connect() as conn:
        migrate(conn)
        if isinstance(job, DeclaredJob):
            (notes if notes is not None else []).extend(ensure_table(conn, job.decl))
            if job.needs_zones:
                load_zones(conn, _zone_lookup())
    seen = sniff_format(stack, opts.topic)
    if opts.format == "auto":
        opts = replace(opts, format=seen or "json")
        if notes is not None:
            notes.append(f"format: {opts.format} (from the first records of topic {opts.topic!r})")
    if opts.format == "avro":
        stack.registry.client().ping()  # one line naming the registry when it does not answer
    if seen is not None and seen != opts.format and notes is not None:
        notes.append(f"warning: the first records of topic {opts.topic!r} look like {seen}, not {opts.format} "
                     f"(--format {opts.format}); records that do not decode go to bad_records")
    url, user, password = stack.postgres.jdbc()
    connections: dict[str, Any] = {}
    if opts.format == "avro":
        connections["schema_registry"] = registry_connection(stack)
    spec = {
        "options": opts.as_dict(),
        **job.as_record(),
        "connections": {
            "kafka_bootstrap": stack.settings.kafka.jobs_bootstrap_servers,
            "kafka_client": kafka.jobs_properties(),
            "jdbc_url": url, "jdbc_user": user, "jdbc_password": password,
            "functions_jar": str(functions_jar),
            **connections,
        },
    }
    record = {"options": opts.as_dict(), **job.as_record(), "topic": opts.topic, "format": opts.format,
              "offsets": _offsets_seen(stack, opts, restored=restore_from is not None),
              "lateness_rule": LATENESS_RULE, "restored_from": str(restore_from) if restore_from else None}
    secrets = [password, *sensitive_values(kafka.jobs_client), stack.settings.schema_registry.password]
    return _Prepared(opts, spec, record, secrets)


def _launch(stack: Stack, prepared: list[_Prepared], timeout: float, restore_from: Path | None) -> list[str]:
    """One `flink run` (one client JVM, one Python driver) submits every prepared job, in order."""
    from tripstream.jobs import runner

    names = "+".join(p.opts.job for p in prepared)
    spec_path = _write_spec(stack, names, {"jobs": [p.spec for p in prepared]})
    try:
        job_ids = stack.flink.submit_python(Path(runner.__file__), [str(spec_path)], timeout=timeout,
                                            restore_from=restore_from, jobs=len(prepared),
                                            secrets=[s for p in prepared for s in p.secrets])
    except SubmitError as exc:  # the jobs submitted before the failure run: verify and health need them
        _record(stack, prepared, exc.job_ids)
        raise
    finally:
        spec_path.unlink(missing_ok=True)
    _record(stack, prepared, job_ids)
    for job_id in job_ids:
        stack.flink.wait_job_state(job_id, {"RUNNING", "FINISHED"}, timeout, starting=True)
    return job_ids


def _record(stack: Stack, prepared: list[_Prepared], job_ids: list[str]) -> None:
    """A history line for each job submitted (the first ``len(job_ids)`` of ``prepared``)."""
    for p, job_id in zip(prepared, job_ids):
        with _history(stack, p.opts.job).open("a") as fh:
            fh.write(json.dumps({"id": job_id, "at": time.time(), **p.record}) + "\n")


def submit(stack: Stack, opts: JobOptions, timeout: float = 300.0, restore_from: Path | None = None,
           declaration: Declaration | None = None, notes: list[str] | None = None) -> str:
    """Create the tables, refuse a duplicate, submit (restored when asked), wait until it runs.

    ``declaration`` is a declared job's (a built-in declared job's is found by name); what was
    done to its table is appended to ``notes``, and so is the format ``auto`` chose, or a warning
    when the topic's first records do not look like the format asked for.
    """
    [job_id] = _launch(stack, [_prepare(stack, opts, restore_from, declaration, notes)], timeout, restore_from)
    return job_id


def submit_together(stack: Stack, jobs: list[tuple[JobOptions, Declaration | None]], timeout: float = 600.0,
                    notes: list[str] | None = None) -> list[str]:
    """Submit several jobs through one Flink client: the client's start (a JVM, the Python driver,
    the planner's warm-up) is paid once instead of once per job. Each is still its own Flink job,
    with its own history; all are checked and their tables made before any is submitted."""
    names = [opts.job for opts, _ in jobs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise JobError(f"job {twice[0]!r} is given twice: each job runs once")
    prepared = [_prepare(stack, opts, None, decl, notes) for opts, decl in jobs]
    return _launch(stack, prepared, timeout, None)


def _zone_lookup() -> list[tuple[int, str, str, str]]:
    """The TLC zone lookup (data/taxi_zone_lookup.csv) the zone keys are joined from."""
    from tripstream.events.zones import ZONE_LOOKUP_NAME, default_zone_lookup_path, load_zones as read_lookup

    path = default_zone_lookup_path()
    if path is None:
        raise JobError(f"the job joins zone names, but data/{ZONE_LOOKUP_NAME} is not here: run tripstream from "
                       f"the project directory")
    return [tuple(z) for z in read_lookup(path)]


def _write_spec(stack: Stack, job: str, spec: dict[str, Any]) -> Path:
    """The spec in a new file (0600) of the account `flink run` runs as, in ``<state>/jobs``."""
    user = stack.flink.run_user()
    spec_dir = stack.settings.state_dir / "jobs"
    give_to(user, spec_dir)
    spec_path = spec_dir / f"{job}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json"
    fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        if user is not None:
            os.fchown(fh.fileno(), user.uid, user.gid)
        json.dump(spec, fh, indent=2)
    return spec_path


def run_options(entry: dict[str, Any]) -> dict[str, Any]:
    """The options of one history entry: kept in the entry, or (older entries) in its spec file."""
    if "options" in entry:
        return dict(entry["options"])
    return dict(json.loads(Path(entry["spec"]).read_text())["options"])


def _watermark_ms(stack: Stack, jid: str, vertices: list[dict[str, Any]]) -> int | None:
    """The lowest input watermark of the job's last vertex, in epoch ms (wall clock read as UTC)."""
    try:
        marks = rest_get(stack.flink.rest, f"/jobs/{jid}/vertices/{vertices[-1]['id']}/watermarks")
    except (OSError, ValueError, urllib.error.URLError, IndexError, KeyError):
        return None
    values = [int(m["value"]) for m in marks if m.get("id", "").endswith("currentInputWatermark")]
    values = [v for v in values if v > 0]
    return min(values) if values else None


def _watermark(stack: Stack, jid: str, vertices: list[dict[str, Any]]) -> str | None:
    """The lowest input watermark of the job's last vertex, as wall-clock time."""
    from tripstream.events.schema import format_epoch_seconds

    value = _watermark_ms(stack, jid, vertices)
    if value is None:
        return None
    if value >= 2**62:  # Flink's MAX_WATERMARK: every input ended (or reports itself done)
        return "end of input"
    return format_epoch_seconds(value // 1000)


def describe_jobs(stack: Stack, metrics: bool = False) -> list[dict[str, Any]]:
    """Name, state, uptime, last checkpoint and record counts of tripstream's jobs.

    ``metrics`` adds what health checks and the dashboard need (see :func:`_job_metrics`); it
    costs a few more REST calls per active job, so `tripstream jobs` leaves it off.
    """
    rows = []
    for job in flink_jobs(stack):
        if not job["name"].startswith("tripstream-"):
            continue
        row: dict[str, Any] = {"name": job["name"].removeprefix("tripstream-"), "id": job["jid"],
                               "state": job["state"], "uptime_s": round(job.get("duration", 0) / 1000)}
        try:
            detail = rest_get(stack.flink.rest, f"/jobs/{job['jid']}")
            vertices = detail.get("vertices", [])
            if metrics and job["state"] in ACTIVE:
                row.update(_job_metrics(stack, detail))
            if vertices:
                row["watermark_ms"] = _watermark_ms(stack, job["jid"], vertices)
                row["watermark"] = _watermark(stack, job["jid"], vertices) if row["watermark_ms"] else None
                # Read from Kafka by the source vertex; records reaching the last (sink) vertex.
                row["records_in"] = vertices[0].get("metrics", {}).get("read-records")
                if len(vertices) > 1:
                    row["records_out"] = vertices[-1].get("metrics", {}).get("read-records")
            cps = rest_get(stack.flink.rest, f"/jobs/{job['jid']}/checkpoints")
            last = (cps.get("latest") or {}).get("completed")
            if last:
                row["last_checkpoint"] = {"id": last.get("id"), "at_ms": last.get("latest_ack_timestamp"),
                                          "size_bytes": last.get("checkpointed_size", last.get("state_size"))}
            failed = (cps.get("latest") or {}).get("failed")
            if failed:
                row["last_failed_checkpoint"] = {"id": failed.get("id"), "at_ms": failed.get("failure_timestamp"),
                                                 "reason": failed.get("failure_message")}
            counts = cps.get("counts") or {}
            row["checkpoints"] = {k: counts.get(k, 0) for k in ("completed", "failed", "in_progress", "restored")}
        except (OSError, ValueError, urllib.error.URLError):
            pass
        rows.append(row)
    return rows


def _spec_topic(stack: Stack, name: str, jid: str) -> str | None:
    """The topic a job was submitted to read, from its spec (None for a job not submitted here)."""
    try:
        for line in _history(stack, name).read_text().splitlines():
            entry = json.loads(line) if line else {}
            if entry.get("id") == jid:
                return entry.get("topic") or run_options(entry)["topic"]
    except (OSError, ValueError, KeyError):
        return None
    return None


_OFFSET_METRIC = re.compile(r"^(\d+)\.Source__.*\.KafkaSourceReader\.topic\.(.+)\.partition\.(\d+)\.currentOffset$")


def _job_metrics(stack: Stack, detail: dict[str, Any]) -> dict[str, Any]:
    """Restarts, checkpoint interval, records/s in and out, and the source's Kafka positions.

    ``source_offsets`` maps topic -> partition -> the next offset the job will read (the Kafka
    source reports the last offset it consumed, -1 before the first), read live from Flink's
    metrics rather than the group's committed offsets, which only move on checkpoints.
    """
    base, jid = stack.flink.rest, detail["jid"]
    vertices = detail.get("vertices", [])
    out: dict[str, Any] = {"start_time_ms": detail.get("start-time"), "now_ms": detail.get("now"),
                           "job_type": detail.get("job-type")}
    topic = _spec_topic(stack, detail.get("name", "").removeprefix("tripstream-"), jid)
    if topic:
        out["topic"] = topic

    def get(path: str) -> Any:
        try:
            return rest_get(base, path)
        except (OSError, ValueError, urllib.error.URLError):
            return None

    job_metrics = {m["id"]: m.get("value") for m in get(f"/jobs/{jid}/metrics?get=numRestarts") or []}
    if job_metrics.get("numRestarts") is not None:
        out["restarts"] = int(float(job_metrics["numRestarts"]))
    if out.get("restarts") or detail.get("state") in ("RESTARTING", "FAILING"):
        history = (get(f"/jobs/{jid}/exceptions?maxExceptions=1") or {}).get("exceptionHistory") or {}
        for entry in history.get("entries", [])[:1]:
            message = (entry.get("exceptionName") or "") + ": " + (entry.get("stacktrace") or "").split("\n", 1)[0]
            out["last_exception"] = {"at_ms": entry.get("timestamp"), "message": message.split(": ", 1)[-1][:300]}
    config = get(f"/jobs/{jid}/checkpoints/config") or {}
    if isinstance(config.get("interval"), int) and 0 < config["interval"] < 2**62:
        out["checkpoint_interval_ms"] = config["interval"]
    if not vertices:
        return out

    def rate(vertex: dict[str, Any], name: str) -> float | None:
        values = get(f"/jobs/{jid}/vertices/{vertex['id']}/subtasks/metrics?get={name}") or []
        return round(float(values[0]["sum"]), 1) if values and "sum" in values[0] else None

    out["records_in_per_s"] = rate(vertices[0], "numRecordsInPerSecond")
    # Like records_out: what reaches the last (sink) vertex, whose own output is always zero.
    out["records_out_per_s"] = rate(vertices[-1], "numRecordsInPerSecond") if len(vertices) > 1 else None
    source = vertices[0]["id"]
    names = [m["id"] for m in get(f"/jobs/{jid}/vertices/{source}/metrics") or []]
    wanted = [n for n in names if _OFFSET_METRIC.match(n)]
    offsets: dict[str, dict[int, int]] = {}
    for start in range(0, len(wanted), 40):  # keep the query string short
        query = urllib.parse.quote(",".join(wanted[start:start + 40]), safe=",")
        for metric in get(f"/jobs/{jid}/vertices/{source}/metrics?get={query}") or []:
            match = _OFFSET_METRIC.match(metric["id"])
            if match and metric.get("value") is not None:
                topic, partition = match.group(2), int(match.group(3))
                offsets.setdefault(topic, {})[partition] = int(float(metric["value"])) + 1
    out["source_offsets"] = offsets
    return out


def stop(stack: Stack, name: str, savepoint: bool = False, timeout: float = 120.0) -> str | None:
    """Cancel the running job (or stop it with a savepoint); return the savepoint path."""
    from tripstream.stack.flink import rest_call
    from tripstream.stack.process import wait_until

    job = active_job(stack, name)
    if job is None:
        raise JobError(f"no running job named {name!r} (tripstream jobs lists them)")
    jid = job["jid"]
    if not savepoint:
        rest_call(stack.flink.rest, f"/jobs/{jid}", method="PATCH")
        stack.flink.wait_job_state(jid, {"CANCELED"}, timeout)
        return None
    target = stack.flink.savepoints_dir / name
    trigger = rest_call(stack.flink.rest, f"/jobs/{jid}/stop", method="POST",
                        body={"drain": False, "targetDirectory": target.as_uri()})
    request_id = trigger["request-id"]
    result: dict[str, Any] = {}

    def done() -> bool:
        status = rest_get(stack.flink.rest, f"/jobs/{jid}/savepoints/{request_id}")
        result.update(status)
        return status.get("status", {}).get("id") == "COMPLETED"

    wait_until(done, timeout, f"the savepoint of job {name!r}")
    operation = result.get("operation", {})
    if "failure-cause" in operation:
        raise JobError(f"savepoint of {name!r} failed: {operation['failure-cause'].get('stack-trace', '')[:200]}")
    location = operation.get("location")
    # Flink answers with a URI (file:/...); a local path is what `--from-savepoint` takes back.
    return urllib.parse.urlparse(location).path if location and location.startswith("file:") else location
