"""Which savepoint or checkpoint `--resume` picks (files only, no servers)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tripstream.config import load_settings
from tripstream.jobs.submit import JobError, restore_point
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
