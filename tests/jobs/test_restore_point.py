"""Which savepoint or checkpoint `--resume` picks (files only, no servers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tripstream.config import load_settings
from tripstream.jobs.submit import JobError, check_restorable, restore_point
from tripstream.stack import Stack


def _mark(directory: Path, mtime: float) -> Path:
    directory.mkdir(parents=True)
    (directory / "_metadata").write_bytes(b"x")
    os.utime(directory / "_metadata", (mtime, mtime))
    return directory


def test_resume_takes_the_newest_savepoint_or_retained_checkpoint(tmp_path: Path) -> None:
    stack = Stack(load_settings(env={"TRIPSTREAM_STATE_DIR": str(tmp_path)}))
    with pytest.raises(JobError, match="no savepoint or retained checkpoint of 'tumbling'"):
        restore_point(stack, "tumbling")

    savepoint = _mark(stack.flink.savepoints_dir / "tumbling" / "savepoint-aaa", 1000)
    _mark(stack.flink.savepoints_dir / "sliding" / "savepoint-bbb", 5000)  # another job's
    assert restore_point(stack, "tumbling") == savepoint

    history = tmp_path / "jobs" / "tumbling.history"
    history.parent.mkdir(parents=True)
    history.write_text(json.dumps({"id": "j1"}) + "\n")
    checkpoint = _mark(stack.flink.checkpoints_dir / "j1" / "chk-7", 2000)
    _mark(stack.flink.checkpoints_dir / "j2" / "chk-9", 9000)  # a job id that is not tumbling's
    assert restore_point(stack, "tumbling") == checkpoint


def test_a_restore_point_of_the_old_lateness_rule_is_refused_with_one_line(tmp_path: Path) -> None:
    """A checkpoint or savepoint taken by a job that decided lateness by Flink's watermark (its
    submission records no rule) cannot be carried on: the state would count differently."""
    from tests.conftest import run_cli

    env = {"TRIPSTREAM_STATE_DIR": str(tmp_path)}
    stack = Stack(load_settings(env=env))
    history = tmp_path / "jobs" / "tumbling.history"
    history.parent.mkdir(parents=True)
    old_id, new_id = "a1b2c3" + "0" * 26, "d4e5f6" + "0" * 26
    history.write_text(json.dumps({"id": old_id}) + "\n" + json.dumps({"id": new_id, "lateness_rule": 2}) + "\n")
    old_checkpoint = _mark(stack.flink.checkpoints_dir / old_id / "chk-3", 1000)
    old_savepoint = _mark(stack.flink.savepoints_dir / "tumbling" / "savepoint-a1b2c3-0123456789ab", 2000)
    for point in (old_checkpoint, old_savepoint):
        with pytest.raises(JobError, match=r"lateness by Flink's watermark \(rule 1.*replay from earliest"):
            check_restorable(stack, "tumbling", point)
        result = run_cli("submit", "tumbling", "--from-savepoint", str(point), env=env)
        assert result.returncode == 1
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "tripstream submit tumbling --startup earliest" in lines[0], result.stderr
    # Taken under the current rule, or somewhere else (no submission here): passed on to Flink.
    check_restorable(stack, "tumbling", _mark(stack.flink.checkpoints_dir / new_id / "chk-4", 3000))
    check_restorable(stack, "tumbling", _mark(tmp_path / "elsewhere" / "savepoint-ffffff-0123456789ab", 4000))
