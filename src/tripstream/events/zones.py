"""The 265 TLC taxi zones (``taxi_zone_lookup.csv``), needed by the synthetic generator.

Kept apart from the generator so jobs and tests can load the lookup without pulling in numpy.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

from tripstream.events.errors import UnknownFormatError, UnreadableFileError

ZONE_LOOKUP_NAME = "taxi_zone_lookup.csv"


class Zone(NamedTuple):
    """One row of the TLC zone lookup."""

    location_id: int
    borough: str
    zone: str
    service_zone: str


def default_zone_lookup_path() -> Path | None:
    """``data/taxi_zone_lookup.csv`` in the working directory or the source checkout, if present.

    Looked up lazily (never at import) so an installed package without the data still imports.
    """
    candidates = (
        Path.cwd() / "data" / ZONE_LOOKUP_NAME,
        Path(__file__).resolve().parents[3] / "data" / ZONE_LOOKUP_NAME,
    )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def load_zones(path: str | Path) -> list[Zone]:
    """Read the zone lookup; one clear :class:`EventsError` line if it is missing or malformed."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UnreadableFileError(f"{path}: cannot read zone lookup ({exc})") from None
    if not rows or "LocationID" not in rows[0]:
        raise UnknownFormatError(f"{path}: not a zone lookup (expected a LocationID column)")
    zones: list[Zone] = []
    for line, row in enumerate(rows, start=2):
        try:
            location_id = int(row["LocationID"])
        except (TypeError, ValueError):
            raise UnknownFormatError(f"{path}:{line}: LocationID {row['LocationID']!r} is not an integer") from None
        zones.append(
            Zone(location_id, row.get("Borough") or "", row.get("Zone") or "", row.get("service_zone") or "")
        )
    return zones


def fallback_zones() -> list[Zone]:
    """Ids 1..265 without names: used only when no lookup file can be found."""
    return [Zone(i, "", "", "") for i in range(1, 266)]
