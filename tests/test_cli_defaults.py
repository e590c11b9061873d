"""The CLI's help states the job defaults JobOptions really has (pure logic, no stack).

The help texts are literal (the CLI imports the job modules lazily, to start fast), so this test
is what keeps them from drifting when a default changes.
"""

from __future__ import annotations

import re
from dataclasses import fields

import typer

from tripstream.cli import app
from tripstream.jobs.options import JobOptions

# --flag -> the JobOptions field whose default its help names, in milliseconds
FLAGS = {"mini_batch": "mini_batch_ms", "buffer_timeout": "buffer_timeout_ms",
         "watermark_interval": "watermark_interval_ms", "sink_flush": "sink_flush_ms"}


def test_submit_help_names_the_real_defaults() -> None:
    submit = typer.main.get_command(app).commands["submit"]  # type: ignore[attr-defined]
    helps = {p.name: p.help or "" for p in submit.params}
    defaults = {f.name: f.default for f in fields(JobOptions)}
    for flag, field_name in FLAGS.items():
        said = re.search(r"default (\d+)ms", helps[flag])
        assert said, f"--{flag.replace('_', '-')}'s help names no default: {helps[flag]!r}"
        assert int(said.group(1)) == defaults[field_name], f"--{flag.replace('_', '-')}: {helps[flag]!r}"
