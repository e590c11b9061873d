"""`down --purge` deletes only a state dir `up` prepared; every other target is refused in one line.

Nothing here needs a running server: `down` finds no pid files and stops nothing, so what is
tested is the refusal (exit 2, one line) and that the target is still there afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tripstream.config import load_settings
from tripstream.stack.statedir import MARKER, PurgeRefused, check_purgeable

from tests.conftest import PORT_OFFSET, run_cli


def _state_dir(path: Path) -> Path:
    """A directory shaped like a state dir `up` prepared: the marker and some data."""
    (path / "kafka" / "data").mkdir(parents=True)
    (path / "kafka" / "data" / "meta.properties").write_text("x\n")
    (path / MARKER).write_text("test\n")
    return path


def _refused(result, target: Path, why: str) -> None:  # noqa: ANN001 - CompletedProcess
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "refusing to purge" in lines[0] and why in lines[0], lines[0]
    assert target.exists()


def test_a_marked_state_dir_is_purged(tmp_path: Path) -> None:
    state = _state_dir(tmp_path / "state")
    result = run_cli("down", "--purge", env={"TRIPSTREAM_STATE_DIR": str(state)})
    assert result.returncode == 0, result.stderr
    assert not state.exists()


def test_a_dir_without_the_marker_is_refused(tmp_path: Path) -> None:
    state = _state_dir(tmp_path / "state")
    (state / MARKER).unlink()
    _refused(run_cli("down", "--purge", env={"TRIPSTREAM_STATE_DIR": str(state)}), state / "kafka", "marker")


def test_the_current_directory_is_refused(tmp_path: Path) -> None:
    state = _state_dir(tmp_path / "here")
    _refused(run_cli("--state-dir", ".", "down", "--purge", cwd=state), state / MARKER, "current directory")


def test_a_parent_of_the_current_directory_is_refused(tmp_path: Path) -> None:
    state = _state_dir(tmp_path / "here")
    (state / "sub").mkdir()
    _refused(run_cli("--state-dir", "..", "down", "--purge", cwd=state / "sub"), state / MARKER,
             "current directory")


def test_home_and_its_parents_are_refused(tmp_path: Path) -> None:
    home = _state_dir(tmp_path / "home")
    _refused(run_cli("down", "--purge", env={"HOME": str(home), "TRIPSTREAM_STATE_DIR": str(home)}),
             home / MARKER, "home directory")
    _state_dir(tmp_path / "top")
    parent = tmp_path / "top"
    (parent / "home").mkdir()
    _refused(run_cli("down", "--purge", env={"HOME": str(parent / "home"), "TRIPSTREAM_STATE_DIR": str(parent)}),
             parent / MARKER, "home directory")


def test_the_root_directory_is_refused() -> None:
    # Called directly, not through `down --purge`: a tripstream without this check would delete /.
    with pytest.raises(PurgeRefused, match="refusing to purge /: it is the root directory"):
        check_purgeable(load_settings(env={"TRIPSTREAM_STATE_DIR": "/"}))


def test_a_symlinked_state_dir_is_refused(tmp_path: Path) -> None:
    target = _state_dir(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(target)
    _refused(run_cli("down", "--purge", env={"TRIPSTREAM_STATE_DIR": str(link)}), target / MARKER, "symlink")
    assert link.is_symlink()


def test_a_postgres_link_out_of_the_server_root_is_refused(tmp_path: Path) -> None:
    state = _state_dir(tmp_path / "state")
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("x\n")
    (state / "postgres").mkdir()
    (state / "postgres" / "server").symlink_to(elsewhere)
    _refused(run_cli("down", "--purge", env={"TRIPSTREAM_STATE_DIR": str(state)}), elsewhere / "keep",
             "/var/lib/tripstream")
    assert (state / MARKER).exists()


@pytest.mark.stack
def test_up_refuses_a_directory_that_is_not_a_state_dir(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    base = 29492 + PORT_OFFSET
    env = {"TRIPSTREAM_STATE_DIR": str(tmp_path), "TRIPSTREAM_KAFKA_PORT": str(base),
           "TRIPSTREAM_KAFKA_CONTROLLER_PORT": str(base + 1), "TRIPSTREAM_FLINK_PORT": str(base + 2),
           "TRIPSTREAM_FLINK_RPC_PORT": str(base + 3), "TRIPSTREAM_POSTGRES_PORT": str(base + 4)}
    try:
        result = run_cli("up", "--only", "kafka", env=env, timeout=120)
    finally:
        run_cli("down", env=env)  # stops a broker that should never have started
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a tripstream state dir" in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
