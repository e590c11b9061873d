"""An earlier commit of tripstream beside this checkout, so a bench runs its jobs in the same run.

Ratios between runs made hours apart on this machine are mostly noise; a before/after is only
worth reading when both sides run minutes apart on the same stack. This module checks a git ref
out into ``build/baseline-<ref>`` (a worktree, kept for the next run) and submits that version's
jobs with that version's own code: a child Python whose ``tripstream`` is the worktree's. The
stack, the topics and the measuring stay this checkout's.

By default the worktree borrows this checkout's jars. With ``own_functions`` it gets the Flink
functions jar built from its own ``java/udf`` (Maven, the way bootstrap builds it), so the SQL and
the functions it calls are both the earlier version's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Run in the child Python: submit one job with the earlier version's JobOptions, print its id.
_SUBMIT = """
import json, sys
from tripstream.config import load_settings
from tripstream.jobs.options import JobOptions
from tripstream.jobs.submit import submit
from tripstream.stack import Stack
print(json.dumps({"job_id": submit(Stack(load_settings()), JobOptions(**json.loads(sys.argv[1])), timeout=600)}))
"""


def checkout(ref: str, own_functions: bool = False) -> Path:
    """The worktree of ``ref`` (created once), with its ``build/jars`` in place."""
    where = ROOT / "build" / f"baseline-{ref}"
    if not (where / "src" / "tripstream").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(where), ref],
                       check=True, capture_output=True)
    jars = where / "build" / "jars"
    if own_functions:
        _own_functions_jars(where, jars)
    elif not jars.exists():  # the earlier code finds this checkout's jars where it looks
        jars.parent.mkdir(parents=True, exist_ok=True)
        jars.symlink_to(ROOT / "build" / "jars")
    return where


def _own_functions_jars(where: Path, jars: Path) -> None:
    """``jars``: links to this checkout's connector jars, and the worktree's own functions jar."""
    built = where / "java" / "udf" / "target" / "tripstream-flink-functions.jar"
    if not built.is_file():
        log = where / "build" / "java-udf.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            done = subprocess.run(["mvn", "-q", "-B", "--color", "never", "-f", str(where / "java" / "udf" / "pom.xml"),
                                   "package"], stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"Maven could not build the functions jar of {where.name}: see {log}")
    if jars.is_symlink():
        jars.unlink()
    jars_with(ROOT / "build" / "jars", built, jars)


def jars_with(jars_dir: Path, functions_jar: Path, into: Path) -> Path:
    """``into``, made afresh: links to the parts of ``jars_dir``, with ``functions_jar`` as its functions jar."""
    shutil.rmtree(into, ignore_errors=True)
    into.mkdir(parents=True)
    for part in jars_dir.iterdir():
        if part.name != "functions":
            (into / part.name).symlink_to(part.resolve())
    (into / "functions").mkdir()
    shutil.copy(functions_jar, into / "functions" / "tripstream-flink-functions.jar")
    return into


def run_python(where: Path, code: str, *args: str, timeout: float = 3600) -> str:
    """The last line ``code`` prints, run by a Python whose ``tripstream`` is the worktree's."""
    env = {**os.environ, "PYTHONPATH": str(where / "src")}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, check=True, capture_output=True,
                         text=True, timeout=timeout).stdout.strip().splitlines()
    return out[-1]


def submit_at(where: Path, **options: Any) -> str:
    """Submit a job with the worktree's code; its Flink job id."""
    return str(json.loads(run_python(where, _SUBMIT, json.dumps(options), timeout=900))["job_id"])
