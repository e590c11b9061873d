"""The state dir: made private by `up`, marked as ours, and deleted by `down --purge` only then.

`down --purge` deletes a whole directory tree, so it must be sure the tree is a state dir and
nothing else: ``TRIPSTREAM_STATE_DIR=$HOME`` or ``--state-dir .`` must not wipe a home or a
checkout. `up` writes a marker file (:data:`MARKER`) into the state dir it prepares, and purge
deletes only a directory that holds it, is not a symlink, and is neither ``/``, the home
directory, the current directory nor a parent of them.

The state dir is mode 0700. Run as root, it belongs to the unprivileged server user (Kafka and
Flink write under it; root can enter it anyway), so that no other account can read the
password, job specs or data in it.
"""

from __future__ import annotations

import os
from pathlib import Path

from tripstream.config import Settings
from tripstream.errors import TripstreamError
from tripstream.stack.errors import StackError
from tripstream.stack.process import RunAs, can_reach

MARKER = ".tripstream-state"
MARKER_TEXT = ("This directory is a tripstream state dir, prepared by `tripstream up`.\n"
               "`tripstream down --purge` deletes only a directory holding this file.\n")
# What a state dir may hold before `up` marks it: what tripstream itself creates there.
_OURS = {MARKER, "kafka", "flink", "postgres", "registry", "zookeeper", "run", "jobs", "rejects", "profile"}


class PurgeRefused(TripstreamError):
    """`down --purge` was pointed at something that is not a tripstream state dir."""

    exit_code = 2


def prepare(settings: Settings, owner: RunAs | None) -> None:
    """Create the state dir (0700, owned by ``owner`` when given) and mark it as ours.

    An existing directory is only taken when it is empty or holds nothing but what tripstream
    creates; anything else (a home, a checkout) is refused with one line. A state dir of an
    older tripstream whose PostgreSQL cluster lives inside it keeps its mode: the ``postgres``
    user must still reach that cluster (purge it and `up` again for the private layout).
    """
    state = settings.state_dir
    if settings.state_dir_link is not None and not state.exists():
        raise StackError(f"the state dir {settings.state_dir_link} is a symlink to {state}, which does not exist")
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker = state / MARKER
    if not marker.is_file():
        strangers = sorted(entry.name for entry in state.iterdir() if entry.name not in _OURS)
        if strangers:
            raise StackError(f"{state} is not empty and is not a tripstream state dir (it holds "
                             f"{', '.join(strangers[:3])}{'...' if len(strangers) > 3 else ''}): "
                             "choose another --state-dir / TRIPSTREAM_STATE_DIR")
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(MARKER_TEXT)
    inplace_cluster = (state / "postgres" / "data" / "PG_VERSION").exists() and \
        not (state / "postgres" / "server").is_symlink()
    if owner is not None and inplace_cluster:
        return
    if owner is not None and state.stat().st_uid != owner.uid:
        os.chown(state, owner.uid, owner.gid)
    os.chmod(state, 0o700)
    if not can_reach(owner, state):
        raise StackError(f"the `{owner.name if owner else ''}` user, which the servers run as when you are root, "
                         f"cannot enter {state}: choose a state dir whose parent directories others may enter "
                         "(not under /root or a 0700 temp dir)")


def check_purgeable(settings: Settings) -> None:
    """Raise :class:`PurgeRefused` unless the state dir may be deleted whole (see module doc)."""
    if settings.state_dir_link is not None:
        raise PurgeRefused(f"refusing to purge {settings.state_dir_link}: it is a symlink (to {settings.state_dir}); "
                           "delete what you mean to delete yourself")
    state = settings.state_dir
    if not state.exists():
        return
    real = state.resolve()
    for what, place in (("the root directory", Path("/")), ("your home directory", Path.home()),
                        ("the current directory", Path.cwd())):
        place = place.resolve()
        if real == place:
            raise PurgeRefused(f"refusing to purge {real}: it is {what}")
        if real in place.parents:
            raise PurgeRefused(f"refusing to purge {real}: it holds {what} ({place})")
    if not real.is_dir() or not (real / MARKER).is_file():
        raise PurgeRefused(f"refusing to purge {real}: it holds no {MARKER} marker, so `tripstream up` did not "
                           "prepare it as a state dir (one made by an older tripstream gets it at the next `up`)")
