"""The `tripstream` command: a thin layer over the library, with rich output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from tripstream.config import COMPONENTS, Settings, load_settings
from tripstream.errors import TripstreamError

app = typer.Typer(
    help="Real-time NYC taxi trip analytics on Kafka, PyFlink and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


class _State:
    settings: Settings | None = None
    state_dir: Path | None = None
    config: Path | None = None


def settings() -> Settings:
    """The settings for this invocation (built once, after the global options are parsed)."""
    if _State.settings is None:
        _State.settings = load_settings(config_file=_State.config, state_dir=_State.state_dir)
    return _State.settings


@app.callback()
def _main(
    state_dir: Annotated[Optional[Path], typer.Option(
        "--state-dir", envvar="TRIPSTREAM_STATE_DIR",
        help="Where the local stack keeps data, config and logs (default .tripstream).")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", envvar="TRIPSTREAM_CONFIG", help="A tripstream.toml config file.")] = None,
) -> None:
    _State.state_dir = state_dir
    _State.config = config
    _State.settings = None


ComponentsOpt = Annotated[Optional[str], typer.Option(
    "--only", help=f"Comma-separated subset of: {', '.join(COMPONENTS)}.")]


@app.command()
def up(only: ComponentsOpt = None) -> None:
    """Start Kafka, Flink and PostgreSQL on 127.0.0.1 and wait until each is healthy.

    A component already healthy is left alone; one whose address points at an existing cluster
    (TRIPSTREAM_KAFKA_BOOTSTRAP, TRIPSTREAM_FLINK_REST, TRIPSTREAM_POSTGRES_DSN) is only checked.
    """
    from tripstream.stack import Stack

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
            extra = f"{len(d.get('topics') or [])} topics"
        state = "[green]up[/]" if s.state == "up" else "[red]down[/]"
        where = next(iter(s.address.values()))
        if not s.managed:
            where += " (external)"
        pid = d.get("pid")
        table.add_row(s.name, state, where, s.version or "-",
                      "-" if pid is None else str(pid).strip("[]"), extra)
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
    print(Stack(settings()).services(names)[0].logs(lines))


@app.command()
def dsn() -> None:
    """Print the pipeline's PostgreSQL DSN, password included (for psql "$(tripstream dsn)")."""
    from tripstream.stack import Stack

    print(Stack(settings()).postgres.dsn())


def main() -> None:
    """Entry point: one clear line and a non-zero exit for every expected error."""
    try:
        app(standalone_mode=False)
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
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
