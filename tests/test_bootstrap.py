"""`make bootstrap` names what is missing in one line and exits non-zero (no network needed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "cat", "cut", "sha256sum", "id", "ls", "dirname", "sed", "head", "wc", "mkdir", "rm")


def _fake_path(tmp_path: Path, java_version: str | None, with_mvn: bool) -> str:
    """A PATH with the basic tools, Python, and only the Java/Maven the test wants."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed by this test"
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "python3.11").symlink_to(sys.executable)
    if java_version is not None:
        java = bin_dir / "java"
        java.write_text(f'#!/bin/sh\necho \'openjdk version "{java_version}" 2024-01-01\' >&2\n')
        java.chmod(0o755)
    if with_mvn:
        mvn = bin_dir / "mvn"
        mvn.write_text("#!/bin/sh\nexit 0\n")
        mvn.chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize(
    ("java", "mvn", "expected"),
    [
        (None, True, "Java not found: install OpenJDK 17"),
        ("11.0.2", True, "Java 17 or newer is needed, found 11"),
        ("17.0.15", False, "Maven not found: install Maven"),
    ],
)
def test_missing_prerequisite_is_named(tmp_path: Path, java: str | None, mvn: bool, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = _fake_path(tmp_path, java, mvn)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh")], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"bootstrap: {lines[0].removeprefix('bootstrap: ')}"]
    assert expected in lines[0]
