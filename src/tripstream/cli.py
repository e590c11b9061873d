"""The `tripstream` command: a thin layer over the library, with rich output."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from tripstream.config import COMPONENTS, Settings, load_settings
from tripstream.deploy.cli import deploy_app
from tripstream.errors import ConfigError, TripstreamError

if TYPE_CHECKING:  # the commands import what they run lazily, so `tripstream --help` stays quick
    from tripstream.jobs.declaration import Declaration
    from tripstream.jobs.options import JobOptions
    from tripstream.jobs.registry import JobSpec

app = typer.Typer(
    help="Real-time NYC taxi trip analytics on Kafka, PyFlink and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
app.add_typer(deploy_app, name="deploy")


class _State:
    settings: Settings | None = None
    state_dir: Path | None = None
    config: Path | None = None
    profile: str | None = None


def settings() -> Settings:
    """The settings for this invocation (built once, after the global options are parsed)."""
    if _State.settings is None:
        _State.settings = load_settings(config_file=_State.config, state_dir=_State.state_dir,
                                        profile=_State.profile)
    return _State.settings


@app.callback()
def _main(
    state_dir: Annotated[Optional[Path], typer.Option(
        "--state-dir", envvar="TRIPSTREAM_STATE_DIR",
        help="Where the local stack keeps data, config and logs (default .tripstream).")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", envvar="TRIPSTREAM_CONFIG", help="A tripstream.toml config file.")] = None,
    profile: Annotated[Optional[str], typer.Option(
        "--profile", envvar="TRIPSTREAM_PROFILE",
        help="single (one broker, one JobManager, one TaskManager) or cluster (3 brokers, replication 3, "
             "min.insync.replicas 2; 2 TaskManagers; a JobManager and a standby under ZooKeeper HA). "
             "Default: the profile the running stack was started with, else single.")] = None,
) -> None:
    _State.state_dir = state_dir
    _State.config = config
    _State.profile = profile
    _State.settings = None


ComponentsOpt = Annotated[Optional[str], typer.Option(
    "--only", help=f"Comma-separated subset of: {', '.join(COMPONENTS)}.")]


@app.command()
def up(
    only: ComponentsOpt = None,
    profile: Annotated[Optional[str], typer.Option(
        "--profile", help="single or cluster (the same as `tripstream --profile ... up`).")] = None,
) -> None:
    """Start Kafka, Flink, PostgreSQL and the schema registry on 127.0.0.1; wait until each is healthy.

    A component already healthy is left alone; one whose address points at an existing cluster
    (TRIPSTREAM_KAFKA_BOOTSTRAP, TRIPSTREAM_FLINK_REST, TRIPSTREAM_POSTGRES_DSN,
    TRIPSTREAM_SCHEMA_REGISTRY_URL) is only checked. `--profile cluster` starts three Kafka brokers,
    ZooKeeper, two JobManagers (leader and standby) and two TaskManagers instead of one of each.
    """
    from tripstream.stack import Stack

    if profile is not None:
        _State.profile, _State.settings = profile, None
    stack = Stack(settings())
    with err.status("starting the stack..."):
        timings = stack.up(only)
    for name, secs in timings.items():
        err.print(f"[green]started[/] {name} in {secs:.1f} s")
    _print_status(stack.status(only))


@app.command()
def down(
    only: ComponentsOpt = None,
    purge: Annotated[bool, typer.Option("--purge", help="Also delete the state dir (all data).")] = False,
) -> None:
    """Stop what `up` started (Kafka flushed, PostgreSQL's fast shutdown); data is kept."""
    from tripstream.stack import Stack

    stopped = Stack(settings()).down(only, purge=purge)
    err.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}"
              + (f"; purged {settings().state_dir}" if purge else ""))


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    only: ComponentsOpt = None,
) -> None:
    """Each component's state, address, version and pid; Flink's TaskManagers, slots and jobs."""
    from tripstream.stack import Stack

    statuses = Stack(settings()).status(only)
    if as_json:
        print(json.dumps({s.name: s.as_dict() for s in statuses}, indent=2))
    else:
        _print_status(statuses)


def _print_status(statuses) -> None:  # noqa: ANN001
    table = Table(title="tripstream stack", title_justify="left")
    for col in ("component", "state", "address", "version", "pid", "details"):
        table.add_column(col)
    for s in statuses:
        d = s.as_dict()
        extra = ""
        if s.name == "flink" and s.state == "up":
            extra = (f"{d.get('taskmanagers')} TM, {d.get('slots_available')}/{d.get('slots_total')} slots free, "
                     f"{len(d.get('running_jobs') or [])} running jobs")
        if s.name == "kafka" and s.state == "up":
            extra = f"{d.get('brokers')} broker(s), {len(d.get('topics') or [])} topics"
        state = "[green]up[/]" if s.state == "up" else "[red]down[/]"
        where = next(iter(s.address.values()))
        if not s.managed:
            where += " (external)"
        nodes = d.pop("nodes", None) or {}
        pid = d.get("pid")
        table.add_row(s.name, state, where, s.version or "-",
                      "-" if pid is None or nodes else str(pid).strip("[]"), extra)
        for role, node in nodes.items():  # every process of a several-process engine, on its own row
            mark = {"up": "[green]up[/]", "stopped": "[yellow]stopped[/]"}.get(node["state"], "[red]down[/]")
            table.add_row(f"  {role}", mark, node["address"] or "", "", str(node["pid"] or "-"), "")
    out.print(table)


@app.command()
def logs(
    component: Annotated[str, typer.Argument(help=f"One of: {', '.join(COMPONENTS)}.")],
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many lines of each log.")] = 40,
) -> None:
    """Show the tail of a component's log."""
    from tripstream.stack import Stack
    from tripstream.stack.stack import parse_components

    names = parse_components(component)
    if len(names) != 1:
        raise typer.BadParameter("name exactly one component")
    services = Stack(settings()).services(names)
    if not services:
        raise ConfigError(f"{names[0]} runs only with flink.high_availability = \"zookeeper\" "
                          "(the cluster profile: tripstream up --profile cluster)")
    print(services[0].logs(lines))


@app.command()
def dsn() -> None:
    """Print the pipeline's PostgreSQL DSN, password included (for programs; for psql: tripstream psql)."""
    from tripstream.stack import Stack

    print(Stack(settings()).postgres.dsn())


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(ctx: typer.Context) -> None:
    """Run psql on the pipeline's database: tripstream psql [-- psql options].

    The password reaches psql through its environment (PGPASSWORD), never its command line,
    where `ps` would show it to every user of the machine.
    """
    import os

    from tripstream.stack import Stack
    from tripstream.stack.postgres import psql_command

    argv, env = psql_command(Stack(settings()).postgres.dsn(), list(ctx.args))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, {**os.environ, **env})


def _parse_time(value: str | None, option: str):  # noqa: ANN202 - datetime | None
    from datetime import datetime

    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{option}: not an ISO date/time: {value!r} (e.g. 2024-10-01T06:00)") from None


def _client_overrides(pairs: list[str]) -> dict[str, str]:
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-X expects key=value (a Kafka client setting), got {pair!r}")
        conf[key.strip()] = value.strip()
    return conf


@app.command()
def produce(
    file: Annotated[Optional[Path], typer.Argument(help="A TLC trip file: parquet, csv or csv.gz (green or yellow).")] = None,
    synthetic: Annotated[bool, typer.Option("--synthetic", help="Generate trips instead of reading a file.")] = False,
    topic: Annotated[str, typer.Option(help="Kafka topic (created when missing).")] = "trips",
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of a newly created topic.")] = 4,
    replication: Annotated[Optional[int], typer.Option(min=1, help="Replication factor of a newly created topic (default kafka.replication_factor: 1, 3 in the cluster profile).")] = None,
    key: Annotated[str, typer.Option(help="Event field used as the message key.")] = "pu_location_id",
    fmt: Annotated[str, typer.Option("--format", help=(
        "Wire format: json, avro (registered as <topic>-value in the schema registry, Confluent wire "
        "format) or avro-schemaless."))] = "json",
    schema: Annotated[Optional[Path], typer.Option(
        "--schema", help="--format avro: the .avsc to register and write with (default: the bundled trip_event.avsc).")] = None,
    order: Annotated[str, typer.Option(help="file (as stored) or event-time (sorted by pickup).")] = "file",
    speed: Annotated[str, typer.Option(help="max, realtime, or N times faster than the event clock.")] = "max",
    limit: Annotated[Optional[int], typer.Option(min=0, help="Send at most this many events.")] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="Only pickups at or after this time.")] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Only pickups before this time.")] = None,
    seed: Annotated[int, typer.Option(help="Synthetic: random seed (same seed, same stream).")] = 42,
    rate: Annotated[float, typer.Option(help="Synthetic: mean trips per event-time second.")] = 5.0,
    start: Annotated[str, typer.Option(help="Synthetic: event time of the first trip.")] = "2024-10-01T00:00:00",
    jitter: Annotated[float, typer.Option(min=0, help="Synthetic: out-of-order jitter, seconds.")] = 0.0,
    late_fraction: Annotated[float, typer.Option(min=0, max=1, help="Synthetic: fraction of late events.")] = 0.0,
    late_by: Annotated[float, typer.Option(min=0, help="Synthetic: how late, seconds.")] = 60.0,
    duplicates: Annotated[float, typer.Option(min=0, max=1, help="Synthetic: fraction of re-sent events.")] = 0.0,
    malformed: Annotated[float, typer.Option(min=0, max=1, help="Synthetic: fraction of broken payloads.")] = 0.0,
    quiet_zones: Annotated[Optional[str], typer.Option(help="Synthetic: pickup zones that go quiet (1,2,3).")] = None,
    quiet_after: Annotated[Optional[str], typer.Option(help="Synthetic: when those zones go quiet.")] = None,
    client: Annotated[list[str], typer.Option("-X", help="Kafka client setting key=value (repeatable).")] = [],  # noqa: B006
    rejects: Annotated[Optional[Path], typer.Option(help="Where unconvertible rows go (JSON lines).")] = None,
    timestamp: Annotated[str, typer.Option(
        "--timestamp", help="Kafka record timestamp: produce (the time it is sent) or event (the pickup).")] = "produce",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary at the end.")] = False,
) -> None:
    """Send trip events to Kafka: a TLC file or a synthetic stream, keyed by pickup zone."""
    from tripstream.events.producer import TripProducer, parse_speed, synthetic_items
    from tripstream.kafka.topics import ensure_topic, topic_limits, topic_partitions

    # Everything is checked before a single record is sent.
    if synthetic == (file is not None):
        raise ConfigError("give a trip FILE or --synthetic (one of them)")
    if order not in ("file", "event-time"):
        raise ConfigError(f"--order must be file or event-time, got {order!r}")
    pace = parse_speed(speed)
    lo, hi = _parse_time(from_, "--from"), _parse_time(to, "--to")
    overrides = _client_overrides(client)
    if schema is not None and fmt != "avro":
        raise ConfigError("--schema goes with --format avro")
    # Kafka answers (a refused login or certificate is one line here) before a producer is built
    # and would retry it in the background.
    topic_partitions(settings().kafka, topic)
    # Avro: the registry answers and accepts the schema (checked against <topic>-value's rule,
    # then registered) before the topic is touched or anything is sent.
    serializer = _registered_avro(topic, schema) if fmt == "avro" else None
    total: int | None = limit
    if synthetic:
        from tripstream.events.synthetic import SyntheticStream

        zones = None
        if quiet_zones:
            try:
                zones = {int(z) for z in quiet_zones.split(",") if z.strip()}
            except ValueError:
                raise ConfigError(f"--quiet-zones expects zone ids like 1,2,3, got {quiet_zones!r}") from None
        stream = SyntheticStream(seed, _parse_time(start, "--start"), rate=rate, limit=limit, end=hi,
                                 jitter_s=jitter, late_fraction=late_fraction, late_by_s=late_by,
                                 duplicate_fraction=duplicates, malformed_fraction=malformed,
                                 quiet_zones=zones, quiet_after=_parse_time(quiet_after, "--quiet-after"))
        items = synthetic_items(stream)
        source_name = f"synthetic-seed{seed}"
    else:
        from tripstream.events.readers import open_trip_file

        source = open_trip_file(file)
        if total is None and lo is None and hi is None:
            total = len(source)
        source_name = file.name.split(".")[0]
    cfg = settings()
    producer = TripProducer(cfg.kafka, topic, fmt=fmt, key_field=key, client_overrides=overrides,
                            timestamps=timestamp, serializer=serializer)
    if not synthetic:
        items = producer.file_items(source, order=order, limit=limit, start=lo, end=hi)
    rejects_path = rejects or cfg.state_dir / "rejects" / f"{source_name}-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
    ensure_topic(cfg.kafka, topic, partitions=partitions, replication=replication)
    producer.limits = topic_limits(cfg.kafka, topic)
    if timestamp == "event" and producer.limits.retention_ms >= 0:
        days = producer.limits.retention_ms / 86_400_000
        err.print(f"warning: records are stamped with their pickup time and {topic!r} deletes records older "
                  f"than retention.ms={producer.limits.retention_ms} ({days:g} days): pickups older than that "
                  "become deletable as soon as their segment rolls (--timestamp produce avoids it)",
                  highlight=False)

    progress_cb = None
    bar = None
    if not quiet:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,} events"),
                       TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=True)
        task = bar.add_task(f"{topic}", total=total, rate="")

        def progress_cb(report) -> None:  # noqa: ANN001
            secs = max(report.seconds, 1e-9)
            bar.update(task, completed=report.sent,
                       rate=f"{report.sent / secs:,.0f} ev/s {report.bytes / 1e6 / secs:,.1f} MB/s")

        bar.start()
    try:
        report = producer.send(items, speed=pace, rejects_path=rejects_path, progress=progress_cb)
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    if report.rejects_file:
        err.print(f"{report.rejected} rows rejected, reasons in {report.rejects_file}", highlight=False)
    if report.first_error:
        err.print(f"first delivery error: {report.first_error}", highlight=False)
    err.print(report.last_line(), highlight=False)
    if not report.ok:
        raise typer.Exit(1)
    if report.interrupted:
        raise typer.Exit(130)


def _registered_avro(topic: str, schema_file: Optional[Path]):  # noqa: ANN202 - ConfluentAvroSerializer
    """The Avro serializer for ``topic``: its schema checked, registered under ``<topic>-value``."""
    from tripstream.events.serializers import ConfluentAvroSerializer, avro_schema_text
    from tripstream.schemas.registry import Registry, load_schema_file, parse_schema_text

    if schema_file is not None:
        text, origin = load_schema_file(schema_file), str(schema_file)
    else:
        text, origin = avro_schema_text(), "the bundled trip_event.avsc"
    parse_schema_text(text, origin)
    cfg = settings()
    schema_id = Registry(cfg.schema_registry, cfg.secrets).prepare_value_schema(topic, text, origin)
    return ConfluentAvroSerializer(schema_id, json.loads(text))


def _registry():  # noqa: ANN202 - Registry
    from tripstream.schemas.registry import Registry

    cfg = settings()
    return Registry(cfg.schema_registry, cfg.secrets)


def _decoder(fmt: str):  # noqa: ANN202 - Serializer
    """How `topic tail` decodes values: avro looks writer schemas up in the registry by id."""
    from tripstream.events.serializers import ConfluentAvroSerializer, get_serializer

    if fmt.strip().lower() == "avro":
        registry = _registry()
        return ConfluentAvroSerializer(lookup=registry.schema_by_id)
    return get_serializer(fmt)


schema_app = typer.Typer(help="Avro schemas in the schema registry (subject <topic>-value, BACKWARD).",
                         no_args_is_help=True)
app.add_typer(schema_app, name="schema")
TopicOpt = Annotated[str, typer.Option("--topic", help="The topic whose value schema (subject <topic>-value).")]


@schema_app.command("show")
def schema_show(
    topic: TopicOpt = "trips",
    version: Annotated[str, typer.Option(help="A version number or latest.")] = "latest",
) -> None:
    """Print a version of the topic's value schema (the latest by default) as JSON."""
    from tripstream.schemas.registry import value_subject

    if version != "latest" and not version.isdigit():
        raise ConfigError(f"--version must be a number or latest, got {version!r}")
    registry = _registry()
    subject = value_subject(topic)
    found = registry.version(subject, version)
    if found is None:
        raise ConfigError(f"{subject} has no version {version} in the schema registry at {registry.url}")
    err.print(f"{subject} version {found.version}, schema id {found.schema_id}, "
              f"compatibility {registry.compatibility(subject)}", highlight=False)
    print(json.dumps(found.parsed, indent=2))


@schema_app.command("history")
def schema_history(
    topic: TopicOpt = "trips",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every version of the topic's value schema: id, field count, fields added and removed."""
    from tripstream.schemas.registry import value_subject

    registry = _registry()
    subject = value_subject(topic)
    rows = []
    previous: set[str] = set()
    for number in registry.versions(subject):
        found = registry.version(subject, number)
        if found is None:
            continue
        names = [f["name"] for f in found.parsed.get("fields", [])]
        rows.append({"version": found.version, "id": found.schema_id, "fields": len(names),
                     "added": [n for n in names if n not in previous] if previous else [],
                     "removed": sorted(previous - set(names))})
        previous = set(names)
    if not rows:
        raise ConfigError(f"{subject} has no versions in the schema registry at {registry.url}")
    if as_json:
        print(json.dumps({"subject": subject, "compatibility": registry.compatibility(subject),
                          "versions": rows}, indent=2))
        return
    table = Table(title=f"{subject} ({registry.compatibility(subject)})", title_justify="left")
    for col in ("version", "id", "fields", "added", "removed"):
        table.add_column(col)
    for row in rows:
        table.add_row(str(row["version"]), str(row["id"]), str(row["fields"]),
                      ", ".join(row["added"]) or "-", ", ".join(row["removed"]) or "-")
    out.print(table)


@schema_app.command("check")
def schema_check(
    file: Annotated[Path, typer.Argument(help="A candidate Avro schema (.avsc).")],
    topic: TopicOpt = "trips",
) -> None:
    """Test a candidate schema against the registry's rule for the topic; registers nothing."""
    from tripstream.schemas.registry import load_schema_file, value_subject

    text = load_schema_file(file)
    registry = _registry()
    subject = value_subject(topic)
    registry.ping()
    latest = registry.check(subject, text, str(file))
    if latest is None:
        print(f"{file}: {subject} has no versions yet; it would be version 1")
    else:
        print(f"{file}: compatible with {subject} version {latest.version} ({registry.compatibility(subject)})")


topic_app = typer.Typer(help="Look inside Kafka topics.", no_args_is_help=True)
app.add_typer(topic_app, name="topic")


@topic_app.command("describe")
def topic_describe(topic: str) -> None:
    """Partitions, leaders and offset ranges of a topic."""
    from tripstream.kafka.topics import describe

    table = Table(title=f"topic {topic}", title_justify="left")
    for col in ("partition", "leader", "replicas", "low", "high", "messages"):
        table.add_column(col, justify="right")
    parts = describe(settings().kafka, topic)
    for p in parts:
        table.add_row(str(p.partition), str(p.leader), str(p.replicas), str(p.low), str(p.high), f"{p.messages:,}")
    out.print(table)
    out.print(f"{sum(p.messages for p in parts):,} messages in {len(parts)} partitions")


@topic_app.command("count")
def topic_count(topic: str) -> None:
    """How many messages the topic holds."""
    from tripstream.kafka.topics import count

    print(count(settings().kafka, topic))


@topic_app.command("tail")
def topic_tail(
    topic: str,
    lines: Annotated[int, typer.Option("-n", "--lines", min=1, help="Last N messages of each partition.")] = 5,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new messages.")] = False,
    fmt: Annotated[str, typer.Option("--format", help="Decode values as json, avro (through the schema registry) or avro-schemaless.")] = "json",
) -> None:
    """Print the last messages of each partition, decoded, one JSON object per line."""
    from tripstream.kafka.topics import read

    decode = _decoder(fmt).deserialize
    for msg in read(settings().kafka, topic, last=lines, follow=follow):
        try:
            value: object = decode(msg.value())
        except Exception:  # noqa: BLE001 - a poison message is shown raw, not fatal
            value = {"undecodable": msg.value().decode("utf-8", "replace")}
        print(json.dumps({"partition": msg.partition(), "offset": msg.offset(),
                          "key": msg.key().decode() if msg.key() else None, "value": value}, default=str))


def _job_and_options(job: str, given: dict[str, object]) -> tuple[Declaration | None, JobSpec, JobOptions]:
    """(declaration or None, the job's spec, its JobOptions): the job named or declared in a file,
    with the options given on the command line over the declaration's defaults."""
    from tripstream.jobs.options import JobOptions
    from tripstream.jobs.registry import (
        DeclaredJob,
        builtin,
        builtin_names,
        declaration_from_file,
        is_declaration_path,
        option_defaults,
    )

    decl = declaration_from_file(job) if is_declaration_path(job) else None
    if decl is None and job not in builtin_names():
        from tripstream.jobs.submit import latest_declaration
        from tripstream.stack import Stack

        decl = latest_declaration(Stack(settings()), job)  # a declared job submitted here, by name
    spec = DeclaredJob(decl) if decl is not None else builtin(job)
    defaults = option_defaults(spec.decl) if isinstance(spec, DeclaredJob) else {}
    options = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    return decl, spec, JobOptions(job=spec.name, **options)


def _duration(value: Optional[str], option: str, allow_zero: bool = False) -> Optional[int]:
    from tripstream.jobs.options import parse_duration_ms

    return None if value is None else parse_duration_ms(value, option, allow_zero=allow_zero)


@app.command()
def submit(
    jobs: Annotated[list[str], typer.Argument(help="Built-in jobs (passthrough, tumbling, sliding, session, surge, anomalies) or declaration files (jobs/my_job.toml); several are submitted through one Flink client.", metavar="JOB")],
    topic: Annotated[Optional[str], typer.Option(help="The trips topic to read (default: the declaration's, or trips).")] = None,
    watermark: Annotated[Optional[str], typer.Option(help="Bounded out-of-orderness of the watermark (default: the declaration's, or 15s).")] = None,
    idle_timeout: Annotated[Optional[str], typer.Option(help="Mark a quiet partition idle after this (off: 0; default 5s).")] = None,
    startup: Annotated[str, typer.Option(help="earliest|latest|group|timestamp:<ISO>|specific:<p:o,...>")] = "earliest",
    until: Annotated[Optional[str], typer.Option(help="latest: stop at the offsets latest at start.")] = None,
    mode: Annotated[str, typer.Option(help="streaming or batch (batch needs --until latest).")] = "streaming",
    parallelism: Annotated[int, typer.Option(help="Job parallelism.")] = 1,
    checkpoint_interval: Annotated[str, typer.Option(help="Exactly-once checkpoint interval.")] = "10s",
    window: Annotated[Optional[str], typer.Option(help="Window size (default: the declaration's; surge 15min).")] = None,
    slide: Annotated[Optional[str], typer.Option(help="Hopping windows and surge: how often a window starts.")] = None,
    gap: Annotated[Optional[str], typer.Option(help="Session windows: the gap that ends a session.")] = None,
    allowed_lateness: Annotated[Optional[str], typer.Option(help="Windowed declared jobs: late events up to this still update their window.")] = None,
    state_retention: Annotated[str, typer.Option(help="Keep a window's state this long after its last update (off: 0).")] = "1d",
    surge_ratio: Annotated[float, typer.Option(help="surge: flag at this multiple of the baseline.")] = 2.0,
    surge_min_trips: Annotated[int, typer.Option(help="surge: and at least this many trips.")] = 5,
    earliest_event: Annotated[str, typer.Option(help="A pickup before this is a bad record.")] = "2009-01-01 00:00:00",
    max_future: Annotated[str, typer.Option(help="A pickup further ahead of now is a bad record.")] = "1d",
    sink: Annotated[str, typer.Option(help="jdbc (PostgreSQL) or blackhole (discard: the engine's ceiling).")] = "jdbc",
    mini_batch: Annotated[Optional[str], typer.Option(help="Aggregates buffer input this long before updating state (Flink mini-batch; off: 0; default 100ms).")] = None,
    buffer_timeout: Annotated[Optional[str], typer.Option(help="Longest a row waits between tasks for a fuller network buffer (Flink's buffer timeout; default 100ms; 0: never).")] = None,
    watermark_interval: Annotated[Optional[str], typer.Option(help="How often the source emits its watermark (default 50ms).")] = None,
    sink_flush: Annotated[Optional[str], typer.Option(help="The PostgreSQL sink writes its batch at least this often (default 50ms).")] = None,
    format: Annotated[str, typer.Option("--format", help="The topic's values: json, avro (Confluent wire format, schemas from the registry) or auto (from its first records; json when empty).")] = "auto",
    resume: Annotated[bool, typer.Option("--resume", help="Start from the job's latest savepoint or retained checkpoint.")] = False,
    from_savepoint: Annotated[Optional[Path], typer.Option(help="Start from this savepoint or checkpoint directory.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="With --until latest: return when the job has finished.")] = False,
) -> None:
    """Submit a job to the Flink cluster: a built-in, or your own declared in a TOML file.

    A declaration is checked first (a problem is one line naming the file and the key, exit 2);
    then its PostgreSQL table is created or migrated, and the job writes it by upsert. Several jobs
    are all checked first, then submitted through one Flink client (its start is paid once); each
    runs as its own Flink job.
    """
    from tripstream.jobs.submit import restore_point
    from tripstream.jobs.submit import submit as submit_job
    from tripstream.jobs.submit import submit_together
    from tripstream.stack import Stack

    given = {
        "topic": topic, "watermark_ms": _duration(watermark, "--watermark"),
        "idle_timeout_ms": _duration(idle_timeout, "--idle-timeout", allow_zero=True),
        "startup": startup, "until": until, "mode": mode, "parallelism": parallelism,
        "checkpoint_interval_ms": _duration(checkpoint_interval, "--checkpoint-interval"),
        "window_ms": _duration(window, "--window"), "slide_ms": _duration(slide, "--slide"),
        "gap_ms": _duration(gap, "--gap"),
        "allowed_lateness_ms": _duration(allowed_lateness, "--allowed-lateness", allow_zero=True),
        "state_retention_ms": _duration(state_retention, "--state-retention", allow_zero=True),
        "surge_ratio": surge_ratio, "surge_min_trips": surge_min_trips, "earliest_event": earliest_event,
        "max_future_ms": _duration(max_future, "--max-future", allow_zero=True), "sink": sink,
        "mini_batch_ms": _duration(mini_batch, "--mini-batch", allow_zero=True),
        "buffer_timeout_ms": _duration(buffer_timeout, "--buffer-timeout", allow_zero=True),
        "watermark_interval_ms": _duration(watermark_interval, "--watermark-interval"),
        "sink_flush_ms": _duration(sink_flush, "--sink-flush"),
        "format": format.strip().lower(),
    }
    from tripstream.jobs.registry import resolve

    chosen = [_job_and_options(job, given) for job in jobs]
    for decl, spec, opts in chosen:
        resolve(spec.name, opts, decl.as_dict() if decl is not None else None).check(opts)
    if resume and from_savepoint:
        raise ConfigError("give --resume or --from-savepoint, not both")
    if (resume or from_savepoint) and len(chosen) > 1:
        raise ConfigError("--resume and --from-savepoint restore one job: submit it alone")
    if wait and until is None:
        raise ConfigError("--wait needs --until latest (an unbounded job never finishes)")
    stack = Stack(settings())
    notes: list[str] = []
    names = ", ".join(spec.name for _, spec, _ in chosen)
    with err.status(f"submitting {names}..."):
        if len(chosen) == 1:
            decl, spec, opts = chosen[0]
            restore = restore_point(stack, spec.name) if resume else from_savepoint
            job_ids = [submit_job(stack, opts, restore_from=restore, declaration=decl, notes=notes)]
        else:
            restore = None
            job_ids = submit_together(stack, [(opts, decl) for decl, _, opts in chosen], notes=notes)
    for note in notes:
        err.print(note, highlight=False)
    for (_, spec, _), job_id in zip(chosen, job_ids):
        err.print(f"submitted {spec.name} as Flink job {job_id}" + (f", restored from {restore}" if restore else "")
                  + f"; UI: {stack.flink.rest_url}/#/job/running/{job_id}")
    if wait:
        with err.status(f"waiting for {names} to finish..."):
            for job_id in job_ids:
                stack.flink.wait_job_state(job_id, {"FINISHED"}, 1800)
        err.print(f"{names} finished")
    for job_id in job_ids:
        print(job_id)


@app.command()
def explain(
    job: Annotated[str, typer.Argument(help="A declaration file (.toml) or a built-in job's name.")],
) -> None:
    """Print what a job runs: its Flink SQL, its PostgreSQL table and the DuckDB truth verify uses."""
    from tripstream.jobs.explain import explain as explain_job

    from tripstream.jobs.registry import resolve

    decl, spec, opts = _job_and_options(job, {})
    shown = explain_job(resolve(spec.name, opts, decl.as_dict() if decl is not None else None), opts)
    out.print(f"[bold]{shown.job}[/]" + (f": {shown.description}" if shown.description else ""), highlight=False)
    out.print("\n[bold]-- Flink SQL[/] (one statement set: one Flink job)", highlight=False)
    for statement in shown.flink_sql:
        print(statement + "\n")
    out.print("[bold]-- PostgreSQL result table[/] (created or migrated by submit)", highlight=False)
    print(shown.table_ddl + "\n")
    out.print("[bold]-- DuckDB truth[/] (what tripstream verify compares the table with)", highlight=False)
    print(shown.truth_sql)
    if shown.answer_sql:
        out.print("\n[bold]-- The answer[/] (over the result table)", highlight=False)
        print(shown.answer_sql.strip())


@app.command()
def answer(
    job: Annotated[str, typer.Argument(help="A declaration file (.toml) with an [answer] section, or a declared job submitted here.")],
    file: Annotated[Optional[Path], typer.Option(help="Answer from this trip file, computed by DuckDB with nothing late, instead of from PostgreSQL.")] = None,
) -> None:
    """Answer a declared job's question: its [answer] SQL over what the job wrote to PostgreSQL,
    or (--file) over the batch truth of a trip file: the complete answer to hold the stream to."""
    from tripstream.jobs.registry import declaration_from_file, is_declaration_path
    from tripstream.verify.answers import batch_answer, file_events, format_answer

    if is_declaration_path(job):
        decl = declaration_from_file(job)
    else:
        from tripstream.jobs.submit import latest_declaration
        from tripstream.stack import Stack

        found = latest_declaration(Stack(settings()), job)
        if found is None:
            raise ConfigError(f"{job!r} is not a declared job submitted here: give its .toml file")
        decl = found
    if file is not None:
        from tripstream.events.zones import default_zone_lookup_path, load_zones

        lookup = default_zone_lookup_path()
        zones = [tuple(z) for z in load_zones(lookup)] if lookup else []
        columns, rows = batch_answer(decl, file_events(file), zones)
    else:
        from tripstream.stack import Stack
        from tripstream.verify.answers import stream_answer

        with Stack(settings()).postgres.connect() as conn:
            columns, rows = stream_answer(conn, decl)
    if decl.answer and decl.answer.question:
        err.print(decl.answer.question, highlight=False)
    print(format_answer(columns, rows))


@app.command()
def summary() -> None:
    """What the jobs wrote: busiest zones, longest session, late events, surges, anomalies."""
    from tripstream.jobs.summary import summarize
    from tripstream.stack import Stack

    for line in summarize(Stack(settings())):
        out.print(line, highlight=False)


@app.command()
def verify(
    job: Annotated[Optional[str], typer.Argument(help="The job to check, by name or declaration file (default: every job submitted here).")] = None,
    file: Annotated[Optional[Path], typer.Option(help="Take the events from this input file, not the topic.")] = None,
    wait: Annotated[float, typer.Option(help="Retry a failing check for up to this many seconds.")] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Prove a job's output: PostgreSQL against a batch truth, and every record accounted for.

    Exit 0 only when every closed window equals the truth and every record read is counted,
    late, bad or pending exactly once.
    """
    from tripstream.jobs.registry import builtin_names, declaration_from_file, is_declaration_path
    from tripstream.jobs.submit import submitted_jobs
    from tripstream.stack import Stack
    from tripstream.verify.compare import verify_until
    from tripstream.verify.report import lines

    stack = Stack(settings())
    if job is not None and is_declaration_path(job):
        job = declaration_from_file(job).name
    submitted = submitted_jobs(stack)
    if job is not None and job not in submitted and job not in builtin_names():
        raise ConfigError(f"unknown job {job!r}: not a built-in ({', '.join(builtin_names())}) and never "
                          f"submitted here")
    names = [job] if job else submitted
    if not names:
        raise ConfigError("no job has been submitted here yet: tripstream submit JOB first")
    verdicts = []
    for name in names:
        with err.status(f"verifying {name}..."):
            verdicts.append(verify_until(stack, name, wait, file))
        if not as_json:
            for line in lines(verdicts[-1]):
                out.print(line, highlight=False)
    if as_json:
        print(json.dumps([v.as_dict() for v in verdicts] if job is None else verdicts[0].as_dict(), indent=2))
    if not all(v.ok for v in verdicts):
        raise typer.Exit(1)


@app.command()
def watermarks(
    file: Annotated[Path, typer.Argument(help="A TLC trip file: parquet, csv or csv.gz (green or yellow).")],
    delays: Annotated[str, typer.Option(help="Watermark delays to compare, comma-separated.")] = "0s,5s,15s,1min,5min",
    order: Annotated[str, typer.Option(help="As produce would send it: file or event-time.")] = "file",
    window: Annotated[str, typer.Option(help="Tumbling window size, as the tumbling job's --window.")] = "5min",
    partitions: Annotated[int, typer.Option(help="Partitions of the topic produce would create.")] = 4,
    key: Annotated[str, typer.Option(help="Event field used as the message key, as produce's --key.")] = "pu_location_id",
    allowed_lateness: Annotated[str, typer.Option(help="As the tumbling job's --allowed-lateness.")] = "0",
    plot: Annotated[Path, typer.Option(help="Where the completeness/latency chart (PNG) goes.")] = Path("watermarks.png"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Weigh watermark delays before running a job: late trips and incomplete windows against latency.

    Replays FILE as produce would send it (same order, key and partitions) through the tumbling
    job's lateness rule, once per delay; latency is in event time (see tripstream.verify.watermarks).
    """
    from tripstream.jobs.options import parse_duration_ms
    from tripstream.verify.watermarks import ExplorerSettings, explore_file, show_duration, show_latency, write_plot

    items = [d.strip() for d in delays.split(",")]
    if not any(items) or not all(items):
        raise ConfigError(f"--delays expects durations separated by commas (e.g. 0s,15s,1min), got {delays!r}")
    cfg = ExplorerSettings(delays_ms=tuple(parse_duration_ms(d, "--delays", allow_zero=True) for d in items),
                           order=order, window_ms=parse_duration_ms(window, "--window"), partitions=partitions,
                           key_field=key, allowed_lateness_ms=parse_duration_ms(allowed_lateness, "--allowed-lateness",
                                                                                allow_zero=True))
    with err.status(f"replaying {file.name}..."):
        exploration = explore_file(file, cfg)
    points = write_plot(exploration, plot)
    if as_json:
        print(json.dumps({**exploration.as_dict(), "plot": str(plot)}, indent=2))
    else:
        stream = exploration.stream
        spread = ", ".join(f"p{p} {n:,}" for p, n in stream.partition_counts().items())
        table = Table(title=f"Watermark delays for {file.name}: {len(stream.events):,} trips, {order} order, "
                            f"{show_duration(cfg.window_ms)} tumbling windows per {cfg.key_field} key "
                            f"over {partitions} partitions")
        for name in ("delay", "late trips", "late %", "complete", "incomplete rows", "incomplete windows",
                     "latency p50", "latency p95"):
            table.add_column(name, justify="left" if name == "delay" else "right")
        for r in exploration.results:
            table.add_row(show_duration(r.delay_ms), f"{r.late:,}", f"{100 * r.late_fraction:.2f}",
                          f"{100 * r.completeness:.2f}%", f"{r.incomplete_rows:,} / {r.rows:,}",
                          f"{r.incomplete_windows:,} / {r.windows:,}", show_latency(r.latency_p50_ms),
                          show_latency(r.latency_p95_ms))
        out.print(table)
        notes = [f"partitions: {spread or 'none'}"]
        if stream.bad or stream.unreadable:
            notes.append(f"left out: {stream.bad:,} bad records (the jobs' payload rules), "
                         f"{stream.unreadable:,} unreadable rows")
        if stream.unkeyed:
            notes.append(f"{stream.unkeyed:,} trips without a {cfg.key_field}: their partition is a guess")
        notes.append("rows: (window, pickup zone) rows of tumbling_zone_stats; incomplete: losing a late trip")
        notes.append("latency: event time from a window's end until every partition's watermark passed it, "
                     f"over the windows final before the input ended ({', '.join(str(r.open_at_end) for r in exploration.results)} open then)")
        for note in notes:
            out.print(note, highlight=False)
    err.print(f"plot ({points} of {len(exploration.results)} delays) written to {plot}; "
              f"{exploration.seconds:.1f} s", highlight=False)


jobs_app = typer.Typer(help="List and stop tripstream's jobs.", invoke_without_command=True)
app.add_typer(jobs_app, name="jobs")


@jobs_app.callback()
def jobs_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Each job's name, state, uptime, last checkpoint and records in/out."""
    if ctx.invoked_subcommand is not None:
        return
    from tripstream.jobs.submit import describe_jobs
    from tripstream.stack import Stack

    rows = describe_jobs(Stack(settings()))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="tripstream jobs", title_justify="left")
    for col in ("name", "state", "uptime", "watermark", "last checkpoint", "records in", "records out", "flink job id"):
        table.add_column(col)
    for r in rows:
        cp = r.get("last_checkpoint")
        cp_text = f"#{cp['id']} {time.strftime('%H:%M:%S', time.localtime(cp['at_ms'] / 1000))} {cp['size_bytes']:,} B" if cp else "-"
        table.add_row(r["name"], r["state"], f"{r['uptime_s']} s", r.get("watermark") or "-", cp_text, str(r.get("records_in", "-")),
                      str(r.get("records_out", "-")), r["id"])
    out.print(table)


@jobs_app.command("stop")
def jobs_stop(
    name: str,
    savepoint: Annotated[bool, typer.Option("--savepoint", help="Stop with a savepoint (resume later).")] = False,
) -> None:
    """Cancel a running job, or stop it with a savepoint."""
    from tripstream.jobs.submit import stop
    from tripstream.stack import Stack

    location = stop(Stack(settings()), name, savepoint=savepoint)
    err.print(f"stopped {name}" + (f"; savepoint at {location}" if location else ""))


@app.command()
def health(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    job: Annotated[list[str], typer.Option("--job", help="Check only this job (repeatable); it must be running.")] = [],  # noqa: B006
    checkpoint_age: Annotated[float, typer.Option(min=0, help="Unhealthy when the last checkpoint is older than this many checkpoint intervals.")] = 3.0,
    max_failed_checkpoints: Annotated[Optional[int], typer.Option(min=0, help="Failed checkpoints a job may have had in all (default: only new failures count).")] = None,
    max_restarts: Annotated[int, typer.Option(min=0, help="Restarts a job may have had.")] = 0,
    sample_interval: Annotated[float, typer.Option(min=0, help="Seconds between consecutive samples.")] = 5.0,
    samples: Annotated[int, typer.Option(min=2, help="Fresh samples to take; lag growth and watermark progress are judged over (samples - 1) x interval.")] = 5,
    lag_records: Annotated[int, typer.Option(min=1, help="Consumer lag fires when it rose at every step between samples but one, and by at least this many records...")] = 10_000,
    lag_seconds: Annotated[float, typer.Option(min=0, help="... or by at least this many seconds of event time.")] = 10.0,
) -> None:
    """Check the running jobs against thresholds: exit 0 healthy, 1 unhealthy (reasons listed), 2 bad usage."""
    from tripstream.health import Thresholds, check_health
    from tripstream.stack import Stack

    thresholds = Thresholds(checkpoint_age_factor=checkpoint_age, max_failed_checkpoints=max_failed_checkpoints,
                            max_restarts=max_restarts, sample_interval_s=sample_interval, samples=samples,
                            lag_records=lag_records, lag_seconds=lag_seconds, jobs=tuple(job))
    try:
        report = check_health(Stack(settings()), thresholds)
    except TripstreamError as exc:
        if as_json and exc.exit_code != 2:
            print(json.dumps({"healthy": False, "reasons": [str(exc).splitlines()[0]], "error": str(exc)}, indent=2))
        raise
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        for f in report.findings:
            mark = "[green]ok[/]  " if f.ok else "[bold red]FAIL[/]"
            out.print(f"{mark} {f.subject}: {f.check}: {f.detail}", highlight=False)
        out.print("[green]healthy[/]" if report.healthy else f"[bold red]unhealthy[/]: {len(report.reasons)} problem(s)")
    if not report.healthy:
        raise typer.Exit(1)


@app.command()
def dashboard(
    port: Annotated[Optional[int], typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (default 8765, TRIPSTREAM_DASHBOARD_PORT).")] = None,
    refresh: Annotated[Optional[float], typer.Option(min=0.2, help="Seconds between the page's updates (default 2).")] = None,
) -> None:
    """Serve the live results dashboard on 127.0.0.1: PostgreSQL's results, Flink's jobs, Kafka's lag."""
    from tripstream.dashboard.server import DashboardServer
    from tripstream.stack import Stack

    cfg = settings().dashboard
    server = DashboardServer(Stack(settings()), cfg.port if port is None else port,
                             cfg.refresh_ms if refresh is None else int(refresh * 1000))
    err.print(f"dashboard at {server.url} (Ctrl-C stops it)", highlight=False)
    server.serve_forever()


def main() -> None:
    """Entry point: one clear line and a non-zero exit for every expected error."""
    try:
        # Non-standalone click returns typer.Exit's code instead of raising it.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except TripstreamError as exc:
        first, _, rest = str(exc).partition("\n")
        err.print(f"[bold red]error:[/] {first}", highlight=False, soft_wrap=True)
        if rest:
            err.print(rest, highlight=False, markup=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # usage errors arrive here in non-standalone mode
        # Typer's bundled Click exceptions (typer.TyperException): they know how to show themselves.
        if isinstance(exc, typer.TyperException) and hasattr(exc, "show"):
            exc.show()
            sys.exit(getattr(exc, "exit_code", 2))
        raise


if __name__ == "__main__":
    main()
